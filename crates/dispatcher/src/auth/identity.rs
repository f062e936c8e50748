//! Knative's `authentication-oidc` feature, sending side: the identity a
//! dispatcher or source adapter presents to a destination that declares an
//! OIDC audience (a broker or channel with OIDC on, or a `Destination`
//! with `audience`), so that the destination can authenticate the sender.
//!
//! Knative asks the Kubernetes API for a token of the sender's service
//! account; dispatchers here never talk to Kubernetes, so they sign their
//! own: a JWT with `iss` = [`IdentityArgs::oidc_token_issuer`], `sub` = the
//! sender's identity from the contract
//! (`system:serviceaccount:<ns>:<name>-oidc-<group>-<kind>`), `aud` = the
//! destination's audience, valid for [`TOKEN_LIFETIME`], cached per
//! (subject, audience) and re-signed [`RENEW_BEFORE`] its expiry.
//!
//! The key is `--oidc-signing-key` (a PEM private key: EC P-256/P-384,
//! Ed25519 or RSA ≥ 2048 bits). Every component given the same key accepts
//! the others' tokens at its own ingress; a subscriber verifies them with
//! the public keys the admin server publishes
//! (`GET /.well-known/openid-configuration`, `GET /openid/v1/jwks`).
//! Without the flag a process signs with an ephemeral P-256 key made at
//! start: its own ingress accepts its tokens (a trigger's reply into its
//! broker, a subscription delivering into another channel of the same
//! dispatcher), nobody else can until given its JWKS.

use anyhow::Context as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a signed token is valid (Knative's token requests ask for an hour).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is replaced this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(600);
/// The `iss` of signed tokens without `--oidc-token-issuer`.
pub const DEFAULT_TOKEN_ISSUER: &str = "knative-eventing-senders";
/// At most this many (subject, audience) tokens are cached.
const MAX_CACHED: usize = 10_000;

/// The flags of a sender's own identity (dispatchers and the source adapter).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IdentityArgs {
    /// PEM private key (EC P-256/P-384, Ed25519, RSA) this process signs
    /// its identity tokens with, for destinations that declare an OIDC
    /// audience. Give every dispatcher and the source adapter the same key
    /// (a mounted Secret): each then accepts the others' tokens. Without
    /// it an ephemeral key is made at start, trusted by this process only.
    #[arg(long, env = "KN_CHANNEL_OIDC_SIGNING_KEY")]
    pub oidc_signing_key: Option<PathBuf>,

    /// The `iss` claim of the tokens this process signs.
    #[arg(long, env = "KN_CHANNEL_OIDC_TOKEN_ISSUER", default_value = DEFAULT_TOKEN_ISSUER)]
    pub oidc_token_issuer: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// A signed token and its expiry (seconds since the epoch).
type Signed = (Arc<str>, u64);

/// A PEM parser of jsonwebtoken's.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// Signs identity tokens. Cheap to share (`Arc`).
pub struct Signer {
    issuer: String,
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
    /// The public key, for the JWKS and this process's own ingress.
    public: Jwk,
    /// Where the key came from, for messages.
    origin: String,
    cache: Mutex<HashMap<(String, String), Signed>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// The signer the flags ask for: the key file's, or an ephemeral one.
    pub fn from_args(args: &IdentityArgs) -> anyhow::Result<Signer> {
        match &args.oidc_signing_key {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read --oidc-signing-key {}", path.display())
                })?;
                Signer::from_pem(&pem, &args.oidc_token_issuer, &path.display().to_string())
                    .with_context(|| format!("--oidc-signing-key {}", path.display()))
            }
            None => Signer::ephemeral(&args.oidc_token_issuer),
        }
    }

    /// A signer with a fresh P-256 key that lives as long as the process.
    pub fn ephemeral(issuer: &str) -> anyhow::Result<Signer> {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate an ephemeral P-256 key"))?;
        Signer::new(
            EncodingKey::from_ec_der(pkcs8.as_ref()),
            Algorithm::ES256,
            issuer,
            "an ephemeral key",
        )
    }

    /// A signer with a PEM private key; the algorithm follows the key.
    pub fn from_pem(pem: &[u8], issuer: &str, origin: &str) -> anyhow::Result<Signer> {
        let candidates: [(Algorithm, PemParser); 4] = [
            (Algorithm::ES256, EncodingKey::from_ec_pem),
            (Algorithm::ES384, EncodingKey::from_ec_pem),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem),
            (Algorithm::RS256, EncodingKey::from_rsa_pem),
        ];
        for (alg, parse) in candidates {
            if let Ok(key) = parse(pem) {
                if let Ok(signer) = Signer::new(key, alg, issuer, origin) {
                    return Ok(signer);
                }
            }
        }
        anyhow::bail!(
            "not a usable PEM private key (PKCS#8 EC P-256/P-384, Ed25519, or RSA of at least 2048 bits)"
        )
    }

    fn new(key: EncodingKey, alg: Algorithm, issuer: &str, origin: &str) -> anyhow::Result<Signer> {
        let mut public = Jwk::from_encoding_key(&key, alg).context("no public key")?;
        // The key id: a digest of the public key, stable across restarts
        // for the same key file.
        let params = serde_json::to_vec(&public.algorithm).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &params);
        let kid = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &digest.as_ref()[..12],
        );
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(KeyAlgorithm::from(alg));
        let signer = Signer {
            issuer: issuer.to_owned(),
            alg,
            kid,
            key,
            public,
            origin: origin.to_owned(),
            cache: Mutex::new(HashMap::new()),
        };
        // A key that cannot sign, or whose public half does not verify what
        // it signs (a curve that does not fit the algorithm), is refused now.
        let token = signer.sign("probe", "probe", now())?;
        let decoding = DecodingKey::from_jwk(&signer.public).context("unusable public key")?;
        let mut validation = Validation::new(alg);
        validation.set_audience(&["probe"]);
        validation.set_issuer(&[issuer]);
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .context("the key does not verify its own signature")?;
        Ok(signer)
    }

    fn sign(&self, subject: &str, audience: &str, at: u64) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: &self.issuer,
            sub: subject,
            aud: audience,
            iat: at,
            nbf: at.saturating_sub(60),
            exp: at + TOKEN_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).context("cannot sign a token")
    }

    /// A token for `subject` to present to `audience`, from the cache
    /// while it has more than [`RENEW_BEFORE`] left.
    pub fn token(&self, subject: &str, audience: &str) -> Result<Arc<str>, String> {
        let at = now();
        let key = (subject.to_owned(), audience.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, exp)) = cache.get(&key) {
            if at + RENEW_BEFORE.as_secs() < *exp {
                return Ok(token.clone());
            }
        }
        let token: Arc<str> = self
            .sign(subject, audience, at)
            .map_err(|e| format!("{e:#}"))?
            .into();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, exp)| at + RENEW_BEFORE.as_secs() < *exp);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (token.clone(), at + TOKEN_LIFETIME.as_secs()));
        Ok(token)
    }

    /// The `iss` of the tokens signed here.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key set verifying the tokens signed here.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.public.clone()],
        }
    }

    /// The OpenID Connect discovery document, `jwks_uri` under `base`
    /// (the admin server's URL as the client reached it).
    pub fn discovery(&self, base: &str) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", base.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.alg)],
        })
    }

    /// Where the key came from (`an ephemeral key` or the file).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Where the admin server publishes [`Signer::jwks`].
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Where the admin server publishes [`Signer::discovery`].
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(signer: &Signer, token: &str, audience: &str) -> serde_json::Value {
        let key = DecodingKey::from_jwk(&signer.jwks().keys[0]).expect("jwk");
        let mut v = Validation::new(signer.alg);
        v.set_audience(&[audience]);
        v.set_issuer(&[signer.issuer()]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .expect("verifies")
            .claims
    }

    #[test]
    fn ephemeral_tokens_verify_with_the_published_key_and_are_cached() {
        let s = Signer::ephemeral("iss").expect("signer");
        let sub = "system:serviceaccount:shop:t-oidc-eventing.knative.dev-trigger";
        let t = s
            .token(sub, "eventing.knative.dev/broker/shop/default")
            .expect("token");
        let claims = verify(&s, &t, "eventing.knative.dev/broker/shop/default");
        assert_eq!(claims["sub"], sub);
        assert_eq!(claims["iss"], "iss");
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(exp >= now() + TOKEN_LIFETIME.as_secs() - 5);
        // The same pair gets the same token; another audience another one.
        assert_eq!(
            s.token(sub, "eventing.knative.dev/broker/shop/default")
                .unwrap(),
            t
        );
        assert_ne!(s.token(sub, "other").unwrap(), t);
        let jwks = serde_json::to_value(s.jwks()).expect("json");
        assert_eq!(jwks["keys"][0]["kid"], s.kid.as_str());
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "no private part: {jwks}"
        );
    }

    #[test]
    fn pem_keys_of_each_type_sign_and_junk_is_refused() {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "{args:?}");
            out.stdout
        };
        for (args, alg) in [
            (
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ][..],
                Algorithm::ES256,
            ),
            (
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                ][..],
                Algorithm::ES384,
            ),
            (&["genpkey", "-algorithm", "ED25519"][..], Algorithm::EdDSA),
            (
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ][..],
                Algorithm::RS256,
            ),
        ] {
            let pem = openssl(args);
            let s = Signer::from_pem(&pem, "iss", "test").expect("usable key");
            assert_eq!(s.alg, alg);
            let t = s.token("sub", "aud").expect("token");
            assert_eq!(verify(&s, &t, "aud")["sub"], "sub");
            // The key id follows the key: the same file, the same kid.
            assert_eq!(Signer::from_pem(&pem, "iss", "test").unwrap().kid, s.kid);
        }
        let err = Signer::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "iss",
            "t",
        )
        .expect_err("junk");
        assert!(
            format!("{err:#}").contains("not a usable PEM private key"),
            "{err:#}"
        );
    }
}

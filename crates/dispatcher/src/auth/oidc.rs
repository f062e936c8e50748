//! Knative's `authentication-oidc` feature, receiving side: verify the
//! `Authorization: Bearer <JWT>` a producer sends before anything is stored.
//!
//! The keys come from a JWKS ([`JwksSource`]): a file (a mounted ConfigMap or
//! Secret), a URL, or OpenID Connect discovery from the issuer. They are
//! reloaded every [`OidcConfig::refresh`] ([`Verifier::spawn_refresh`]), and
//! at once (at most every [`FORCED_REFRESH_MIN_INTERVAL`]) when a token names
//! a key id the set does not have: that is how a rotated key is accepted
//! without waiting for the period.
//!
//! Only asymmetric signatures are accepted (RS256/384/512, PS256/384/512,
//! ES256, ES384, EdDSA); `none` and HMAC never are, symmetric (`oct`) keys
//! in the JWKS are ignored, and the token's `alg` must fit the selected key.
//! Error messages never contain the token.

use anyhow::Context as _;
use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use url::Url;

/// The largest JWKS or discovery document read (file or HTTP).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How long one HTTP fetch (connect, head and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// An unknown key id refreshes the JWKS at most this often.
pub const FORCED_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// A verified token is accepted again without checking its signature for
/// at most this long (and never past its expiry): a rotated-out key stops
/// being accepted within this time.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// At most this many verified tokens are remembered.
const MAX_VERIFIED: usize = 10_000;
/// Longer `Authorization` values are refused without parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// RSA keys with a shorter modulus are ignored.
const MIN_RSA_BITS: usize = 2048;

/// Where and how tokens are verified.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The expected `iss` claim, exactly.
    pub issuer: String,
    /// Where the signing keys come from.
    pub jwks: JwksSource,
    /// Clock skew tolerated on `exp` and `nbf` (default 60 s).
    pub leeway: Duration,
    /// How often the JWKS is re-read or re-fetched (default 5 min).
    pub refresh: Duration,
}

impl OidcConfig {
    /// `issuer` and `jwks` with the default leeway and refresh period.
    pub fn new(issuer: impl Into<String>, jwks: JwksSource) -> OidcConfig {
        OidcConfig {
            issuer: issuer.into(),
            jwks,
            leeway: Duration::from_secs(60),
            refresh: Duration::from_secs(300),
        }
    }
}

/// Where the JSON Web Key Set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file (`{"keys": [...]}`).
    File(PathBuf),
    /// The JWKS URL itself.
    Url(Url),
    /// The issuer's base URL: `GET <issuer>/.well-known/openid-configuration`,
    /// then its `jwks_uri`.
    Discovery(Url),
    /// Keys this process holds: its own signing key's public half
    /// ([`super::identity::Signer::jwks`]).
    Own(JwkSet),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "JWKS file {}", p.display()),
            JwksSource::Url(u) => write!(f, "JWKS URL {}", redact(u)),
            JwksSource::Discovery(u) => write!(f, "OIDC discovery from {}", redact(u)),
            JwksSource::Own(_) => f.write_str("this process's own signing key"),
        }
    }
}

/// The verified identity of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    /// Every audience of the token (a single string becomes one element).
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Why a request is refused; the ingress answers 401 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("authentication required: no Authorization header")]
    Missing,
    /// Not `Bearer <JWT>`, or not a JWT.
    #[error("malformed credentials: {0}")]
    Malformed(String),
    /// A well-formed token that is not accepted.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The `WWW-Authenticate` value for the 401 (RFC 6750).
    pub fn www_authenticate(&self) -> &'static str {
        match self {
            AuthError::Missing => "Bearer",
            AuthError::Malformed(_) => "Bearer error=\"invalid_request\"",
            AuthError::Invalid(_) => "Bearer error=\"invalid_token\"",
        }
    }
}

fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::Invalid(msg.into())
}

fn malformed(msg: impl Into<String>) -> AuthError {
    AuthError::Malformed(msg.into())
}

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                KeyType::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyType::P256, Algorithm::ES256)
                | (KeyType::P384, Algorithm::ES384)
                | (KeyType::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// One usable verification key.
struct Key {
    kid: Option<String>,
    kind: KeyType,
    /// The JWK's own `alg`, when it names one: the token must use it.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// The usable keys of a JWKS document; the others are logged and left
    /// out. No usable key at all is an error.
    fn parse(doc: &[u8], origin: &str) -> anyhow::Result<KeySet> {
        let set: JwkSet = serde_json::from_slice(doc)
            .with_context(|| format!("{origin} is not a JSON Web Key Set"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            match usable(jwk) {
                Ok(k) => keys.push(k),
                Err(why) => tracing::warn!(
                    source = origin,
                    index = i,
                    kid = jwk.common.key_id.as_deref().unwrap_or(""),
                    "JWKS key ignored: {why}"
                ),
            }
        }
        if keys.is_empty() {
            anyhow::bail!(
                "{origin} has no usable signing key ({} keys, none RSA >= {MIN_RSA_BITS} bits, EC P-256/P-384 or Ed25519)",
                set.keys.len()
            );
        }
        Ok(KeySet { keys })
    }

    fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect()
    }

    /// The key for a token with `kid` and `alg`. `Ok(None)`: no key with
    /// that id (or, without an id, no key of the type), worth a refresh.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<&Key>, AuthError> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Ok(None);
                }
                match named.find(|k| k.fits(alg)) {
                    Some(k) => Ok(Some(k)),
                    None => Err(invalid(format!(
                        "the key the token names is not a {alg:?} key"
                    ))),
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (None, _) => Ok(None),
                    (Some(k), None) => Ok(Some(k)),
                    (Some(_), Some(_)) => Err(invalid(format!(
                        "the token has no key id (kid) and several {alg:?} keys could verify it"
                    ))),
                }
            }
        }
    }
}

/// A JWK as a verification key, or why it cannot be one.
fn usable(jwk: &Jwk) -> Result<Key, String> {
    if let Some(u) = &jwk.common.public_key_use {
        if *u != PublicKeyUse::Signature {
            return Err("its \"use\" is not \"sig\"".into());
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("its \"key_ops\" lack \"verify\"".into());
        }
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(
            a @ (KeyAlgorithm::HS256
            | KeyAlgorithm::HS384
            | KeyAlgorithm::HS512
            | KeyAlgorithm::UNKNOWN_ALGORITHM),
        ) => return Err(format!("algorithm {a:?} is not accepted")),
        Some(a) => match Algorithm::try_from(a) {
            Ok(a) => Some(a),
            Err(_) => return Err(format!("algorithm {a:?} is not a signature algorithm")),
        },
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64(&p.n).map_err(|_| "its modulus is not base64url".to_string())?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("its RSA modulus is too short (about {bits} bits)"));
            }
            KeyType::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyType::P256,
            EllipticCurve::P384 => KeyType::P384,
            ref c => return Err(format!("curve {c:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            ref c => return Err(format!("curve {c:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are never accepted".into())
        }
        _ => return Err("unknown key type".into()),
    };
    if let Some(a) = alg {
        if !kind.fits(a) {
            return Err(format!("its alg {a:?} does not fit its key type"));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        key,
    })
}

fn b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn http_client() -> HttpClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates; HTTPS JWKS fetches will fail verification");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A URL without its query and credentials, for messages.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

struct Inner {
    config: OidcConfig,
    keys: ArcSwap<KeySet>,
    /// Made on first use: only JWKS URLs and discovery need it (a client
    /// with the system's roots costs a few MiB).
    client: std::sync::OnceLock<HttpClient>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    /// When the last forced (unknown key id) refresh started.
    last_forced: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Tokens verified lately: SHA-256 of (audience, token) → the claims
    /// and until when they are taken without verifying again. Producers
    /// send the same token for many events; checking a signature costs
    /// far more than the lookup.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Claims, u64)>>,
}

/// Verifies bearer tokens against the issuer's keys. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.inner.keys.load();
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.config.issuer)
            .field("jwks", &self.inner.config.jwks.to_string())
            .field("kids", &keys.kids())
            .finish()
    }
}

impl Verifier {
    /// Load the JWKS once; an error names the file or URL.
    pub async fn new(config: OidcConfig) -> anyhow::Result<Verifier> {
        let client = std::sync::OnceLock::new();
        let keys = load(&client, &config.jwks).await?;
        tracing::info!(issuer = %config.issuer, jwks = %config.jwks, kids = ?keys.kids(), "OIDC verification keys loaded");
        Ok(Verifier {
            inner: Arc::new(Inner {
                config,
                keys: ArcSwap::from_pointee(keys),
                client,
                reloading: tokio::sync::Mutex::new(()),
                last_forced: tokio::sync::Mutex::new(None),
                verified: Default::default(),
            }),
        })
    }

    /// The configuration this verifier follows.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Reload the JWKS now; on failure the current keys stay.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let keys = load(&self.inner.client, &self.inner.config.jwks).await?;
        tracing::debug!(jwks = %self.inner.config.jwks, kids = ?keys.kids(), "OIDC verification keys reloaded");
        self.inner.keys.store(Arc::new(keys));
        // Tokens are checked against the new keys from now on.
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// Reload every [`OidcConfig::refresh`] until `stop`; a failed reload
    /// keeps the previous keys and is logged.
    pub fn spawn_refresh(&self, stop: CancellationToken) {
        let verifier = self.clone();
        let period = self.inner.config.refresh.max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => {}
                }
                if let Err(e) = verifier.reload().await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "OIDC keys not reloaded; the previous keys stay"
                    );
                }
            }
        });
    }

    /// Refresh because a token names an unknown key, unless one was forced
    /// less than [`FORCED_REFRESH_MIN_INTERVAL`] ago. Callers waiting while
    /// another forced refresh runs see its result.
    async fn forced_refresh(&self) {
        let mut last = self.inner.last_forced.lock().await;
        if last.is_some_and(|t| t.elapsed() < FORCED_REFRESH_MIN_INTERVAL) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        if let Err(e) = self.reload().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "OIDC keys not refreshed for an unknown key id"
            );
        }
    }

    /// Verify the `Authorization` header value for `audience`.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        audience: &str,
    ) -> Result<Claims, AuthError> {
        let token = bearer(authorization)?;
        let digest = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(audience.as_bytes());
            h.update([0]);
            h.update(token.as_bytes());
            <[u8; 32]>::from(h.finalize())
        };
        let at = now();
        if let Some((claims, until)) = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
        {
            if at < *until {
                return Ok(claims.clone());
            }
        }
        let claims = self.verify_token(token, audience).await?;
        // Remembered until the earlier of the TTL and the expiry (the
        // leeway is not extended: a cached token is never accepted later
        // than a fresh check would accept it).
        let until = claims.exp.min(at + VERIFIED_TTL.as_secs());
        let mut verified = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, (_, until)| at < *until);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(digest, (claims.clone(), until));
        Ok(claims)
    }

    async fn verify_token(&self, token: &str, audience: &str) -> Result<Claims, AuthError> {
        let (alg, kid) = token_header(token)?;
        let kid = kid.as_deref();

        let mut keys = self.inner.keys.load_full();
        if keys.select(kid, alg)?.is_none() {
            self.forced_refresh().await;
            keys = self.inner.keys.load_full();
        }
        let key = match keys.select(kid, alg)? {
            Some(k) => k,
            None if kid.is_some() => {
                return Err(invalid(
                    "the token's key id (kid) is not in the issuer's key set",
                ))
            }
            None => return Err(invalid(format!("the issuer has no {alg:?} key"))),
        };
        self.check(token, alg, key, audience)
    }

    fn check(
        &self,
        token: &str,
        alg: Algorithm,
        key: &Key,
        audience: &str,
    ) -> Result<Claims, AuthError> {
        let config = &self.inner.config;
        let mut validation = Validation::new(alg);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(&e, audience, &config.issuer))?;
        // The library checked; check again on our own terms (types
        // included), so a library quirk cannot let a token through.
        claims(&data.claims, audience, &config.issuer, config.leeway, now())
    }
}

/// The verifiers an ingress trusts: the `--oidc-issuer`'s, and this
/// process's own signing key's (its identity tokens). A token goes to the
/// verifier of the issuer it names (checked again when verified).
#[derive(Clone, Debug, Default)]
pub struct Verifiers {
    external: Option<Verifier>,
    own: Option<Verifier>,
}

impl Verifiers {
    pub fn new(external: Option<Verifier>, own: Option<Verifier>) -> Verifiers {
        Verifiers { external, own }
    }

    /// Whether producers' tokens can be verified (`--oidc-issuer` is set).
    pub fn has_external(&self) -> bool {
        self.external.is_some()
    }

    /// The verifier for this `Authorization` value: the one of the issuer
    /// the token names, else the `--oidc-issuer`'s; `None` when the token
    /// names another issuer and there is no `--oidc-issuer`.
    pub fn choose(&self, authorization: Option<&str>) -> Option<&Verifier> {
        let issuer = bearer(authorization).ok().and_then(unverified_issuer);
        let named = |v: &&Verifier| issuer.as_deref() == Some(v.config().issuer.as_str());
        self.own
            .iter()
            .find(named)
            .or(self.external.as_ref())
            .or(match issuer {
                // No token, or not one whose issuer can be read: the
                // verifier answers why.
                None => self.own.as_ref(),
                Some(_) => None,
            })
    }
}

/// The `iss` a token claims, before anything is verified.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let raw: Value = serde_json::from_slice(&b64(payload).ok()?).ok()?;
    raw.get("iss")?.as_str().map(str::to_owned)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The token of `Bearer <token>`.
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or("");
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("the Authorization scheme must be Bearer"));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(malformed("no token after Bearer"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(format!(
            "token longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 3
        || !parts.iter().all(|p| b64url(p))
        || parts[0].is_empty()
        || parts[1].is_empty()
    {
        return Err(malformed(
            "the bearer token is not a signed JWT (header.payload.signature)",
        ));
    }
    Ok(token)
}

/// The token's algorithm (an accepted one) and key id.
fn token_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
    let encoded = token.split('.').next().unwrap_or("");
    let raw: Value = b64(encoded)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the JWT header is not base64url JSON"))?;
    let alg = match raw.get("alg").and_then(Value::as_str) {
        None => return Err(malformed("the JWT header has no alg")),
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(invalid("unsigned tokens (alg none) are not accepted"))
        }
        Some(a) => match a {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            "HS256" | "HS384" | "HS512" => {
                return Err(invalid("symmetric (HMAC) signatures are not accepted"))
            }
            _ => return Err(invalid("the token's signature algorithm is not accepted")),
        },
    };
    // The library's own parse (it also refuses unknown critical headers).
    let header = jsonwebtoken::decode_header(token).map_err(|e| map_jwt_error(&e, "", ""))?;
    if header.alg != alg {
        return Err(malformed("the JWT header is inconsistent"));
    }
    Ok((alg, header.kid))
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error, audience: &str, issuer: &str) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => invalid("bad signature"),
        K::ExpiredSignature => invalid("the token has expired"),
        K::ImmatureSignature => invalid("the token is not valid yet (nbf)"),
        K::InvalidAudience => invalid(format!(
            "the token's audience does not include {audience:?}"
        )),
        K::InvalidIssuer => invalid(format!("the token's issuer is not {issuer:?}")),
        K::InvalidSubject => invalid("the token's subject is not accepted"),
        K::MissingRequiredClaim(c) => invalid(format!("the token has no {c:?} claim")),
        K::InvalidClaimFormat(c) => invalid(format!("the token's {c:?} claim has the wrong type")),
        K::InvalidAlgorithm
        | K::InvalidAlgorithmName
        | K::UnsupportedAlgorithm
        | K::MissingAlgorithm => invalid("the token's algorithm does not fit the key"),
        K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
            invalid("the verification key does not fit the token")
        }
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => malformed("not a valid JWT"),
        _ => invalid("the token cannot be verified"),
    }
}

/// A NumericDate: a non-negative number of seconds (fractions cut).
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn claims(
    payload: &Value,
    audience: &str,
    issuer: &str,
    leeway: Duration,
    now: u64,
) -> Result<Claims, AuthError> {
    let claim = |name: &str| payload.get(name).filter(|v| !v.is_null());
    let string = |name: &str| -> Result<String, AuthError> {
        match claim(name) {
            None => Err(invalid(format!("the token has no {name:?} claim"))),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(invalid(format!(
                "the token's {name:?} claim is not a non-empty string"
            ))),
        }
    };
    let sub = string("sub")?;
    let iss = string("iss")?;
    if iss != issuer {
        return Err(invalid(format!("the token's issuer is not {issuer:?}")));
    }
    let aud = match claim("aud") {
        None => return Err(invalid("the token has no \"aud\" claim")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("the token's \"aud\" claim is not a string or strings"))?,
        Some(_) => {
            return Err(invalid(
                "the token's \"aud\" claim is not a string or strings",
            ))
        }
    };
    if !aud.iter().any(|a| a == audience) {
        return Err(invalid(format!(
            "the token's audience does not include {audience:?}"
        )));
    }
    let leeway = leeway.as_secs();
    let exp = match claim("exp") {
        None => return Err(invalid("the token has no \"exp\" claim")),
        Some(v) => {
            numeric_date(v).ok_or_else(|| invalid("the token's \"exp\" claim is not a number"))?
        }
    };
    if exp.saturating_add(leeway) < now {
        return Err(invalid("the token has expired"));
    }
    if let Some(v) = claim("nbf") {
        let nbf =
            numeric_date(v).ok_or_else(|| invalid("the token's \"nbf\" claim is not a number"))?;
        if nbf > now.saturating_add(leeway) {
            return Err(invalid("the token is not valid yet (nbf)"));
        }
    }
    Ok(Claims { sub, iss, aud, exp })
}

/// Read or fetch the key set.
async fn load(
    client: &std::sync::OnceLock<HttpClient>,
    source: &JwksSource,
) -> anyhow::Result<KeySet> {
    let client = || client.get_or_init(http_client);
    let origin = source.to_string();
    let doc = match source {
        JwksSource::Own(set) => serde_json::to_vec(set).context("own JWKS")?,
        JwksSource::File(path) => read_file(path.clone())
            .await
            .with_context(|| format!("cannot read the JWKS file {}", path.display()))?,
        JwksSource::Url(url) => get(client(), url)
            .await
            .with_context(|| format!("cannot fetch the JWKS from {}", redact(url)))?,
        JwksSource::Discovery(issuer) => {
            let discovery = discovery_url(issuer)?;
            let doc = get(client(), &discovery).await.with_context(|| {
                format!(
                    "cannot fetch the OpenID configuration from {}",
                    redact(&discovery)
                )
            })?;
            let meta: Value = serde_json::from_slice(&doc).with_context(|| {
                format!(
                    "the OpenID configuration at {} is not JSON",
                    redact(&discovery)
                )
            })?;
            let jwks_uri = meta
                .get("jwks_uri")
                .and_then(Value::as_str)
                .with_context(|| {
                    format!(
                        "the OpenID configuration at {} has no jwks_uri",
                        redact(&discovery)
                    )
                })?;
            let jwks = Url::parse(jwks_uri)
                .with_context(|| format!("the jwks_uri of {} is not a URL", redact(&discovery)))?;
            if !matches!(jwks.scheme(), "http" | "https") {
                anyhow::bail!("the jwks_uri of {} is not http(s)", redact(&discovery));
            }
            get(client(), &jwks)
                .await
                .with_context(|| format!("cannot fetch the JWKS from {}", redact(&jwks)))?
        }
    };
    KeySet::parse(&doc, &origin)
}

/// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4).
fn discovery_url(issuer: &Url) -> anyhow::Result<Url> {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("the issuer URL {} is not http(s)", redact(issuer));
    }
    Ok(url)
}

async fn read_file(path: PathBuf) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(&path).await?;
    let mut buf = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() > MAX_DOCUMENT_BYTES {
        anyhow::bail!("larger than {MAX_DOCUMENT_BYTES} bytes");
    }
    Ok(buf)
}

async fn get(client: &HttpClient, url: &Url) -> anyhow::Result<Vec<u8>> {
    let request = http::Request::get(url.as_str())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "knative-rs-dispatcher")
        .body(Empty::<Bytes>::new())?;
    let fetch = async {
        let response = client.request(request).await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("HTTP {status}");
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no complete answer within {FETCH_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;

    const ISSUER: &str = "https://issuer.example";
    const AUD: &str = "channel.default.example";

    /// A private key generated by `openssl genpkey` (PKCS#8 PEM).
    fn genpkey(args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl genpkey {args:?} failed");
        out.stdout
    }

    struct TestKey {
        key: EncodingKey,
        alg: Algorithm,
    }

    fn rsa(n: usize) -> &'static TestKey {
        static KEYS: [OnceLock<TestKey>; 2] = [OnceLock::new(), OnceLock::new()];
        KEYS[n].get_or_init(|| TestKey {
            key: EncodingKey::from_rsa_pem(&genpkey(&[
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ]))
            .expect("RSA key"),
            alg: Algorithm::RS256,
        })
    }

    fn ec(n: usize) -> &'static TestKey {
        static KEYS: [OnceLock<TestKey>; 2] = [OnceLock::new(), OnceLock::new()];
        KEYS[n].get_or_init(|| TestKey {
            key: EncodingKey::from_ec_pem(&genpkey(&[
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ]))
            .expect("EC key"),
            alg: Algorithm::ES256,
        })
    }

    /// The public JWK of `key`, with `kid`.
    fn jwk(key: &TestKey, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&key.key, key.alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).expect("JWK as JSON")
    }

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn mint(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key.key).expect("token")
    }

    fn good_claims() -> Value {
        json!({ "iss": ISSUER, "aud": AUD, "sub": "system:serviceaccount:default:producer", "exp": now() + 600, "iat": now() })
    }

    fn bearer_of(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn write(path: &Path, content: &str) {
        // Write then rename: a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// A verifier reading a JWKS file holding `keys`.
    async fn file_verifier(keys: &[Value]) -> (Verifier, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        write(&path, &jwks(keys));
        let verifier = Verifier::new(OidcConfig::new(ISSUER, JwksSource::File(path.clone())))
            .await
            .expect("verifier");
        (verifier, dir, path)
    }

    async fn standard() -> (Verifier, tempfile::TempDir, PathBuf) {
        file_verifier(&[jwk(rsa(0), "rsa-a"), jwk(ec(0), "ec-a")]).await
    }

    fn assert_invalid(r: Result<Claims, AuthError>, needle: &str) {
        match r {
            Err(AuthError::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected Invalid({needle:?}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn valid_rs256_and_es256_tokens_pass() {
        let (v, _dir, _) = standard().await;
        let token = mint(rsa(0), Some("rsa-a"), &good_claims());
        let claims = v
            .verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("RS256");
        assert_eq!(claims.sub, "system:serviceaccount:default:producer");
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, vec![AUD.to_string()]);
        assert!(claims.exp > now());

        let mut c = good_claims();
        c["aud"] = json!(["other", AUD]);
        let token = mint(ec(0), Some("ec-a"), &c);
        let claims = v
            .verify(Some(&format!("bEaReR  {token} ")), AUD)
            .await
            .expect("ES256, array audience, lower-case scheme");
        assert_eq!(claims.aud, vec!["other".to_string(), AUD.to_string()]);
    }

    #[tokio::test]
    async fn eddsa_and_the_jwk_alg() {
        let ed = TestKey {
            key: EncodingKey::from_ed_pem(&genpkey(&["-algorithm", "ED25519"])).expect("Ed25519"),
            alg: Algorithm::EdDSA,
        };
        // An RSA JWK without "alg" verifies PS256 too; one with "alg": "RS256" does not.
        let mut any_rsa = jwk(rsa(0), "rsa-any");
        any_rsa.as_object_mut().expect("object").remove("alg");
        let (v, _dir, _) = file_verifier(&[jwk(&ed, "ed"), jwk(rsa(0), "rsa-a"), any_rsa]).await;
        let token = mint(&ed, Some("ed"), &good_claims());
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("EdDSA");

        let ps = TestKey {
            key: rsa(0).key.clone(),
            alg: Algorithm::PS256,
        };
        let token = mint(&ps, Some("rsa-any"), &good_claims());
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("PS256");
        let token = mint(&ps, Some("rsa-a"), &good_claims());
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "PS256");
    }

    #[tokio::test]
    async fn no_kid_uses_the_only_key_of_the_type() {
        let (v, _dir, _) = standard().await;
        let token = mint(ec(0), None, &good_claims());
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("the one EC key");
        let (v2, _dir2, _) = file_verifier(&[jwk(ec(0), "e1"), jwk(ec(1), "e2")]).await;
        assert_invalid(v2.verify(Some(&bearer_of(&token)), AUD).await, "several");
    }

    #[tokio::test]
    async fn time_claims_are_enforced_with_leeway() {
        let (v, _dir, _) = standard().await;
        let mut c = good_claims();
        c["exp"] = json!(now() - 120);
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "expired");

        c["exp"] = json!(now() - 20); // within the 60 s leeway
        let token = mint(rsa(0), Some("rsa-a"), &c);
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("within leeway");

        let mut c = good_claims();
        c["nbf"] = json!(now() + 600);
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(
            v.verify(Some(&bearer_of(&token)), AUD).await,
            "not valid yet",
        );

        // A string nbf is not "absent" (the jsonwebtoken type-confusion advisory).
        c["nbf"] = json!((now() + 600).to_string());
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert!(matches!(
            v.verify(Some(&bearer_of(&token)), AUD).await,
            Err(AuthError::Invalid(_))
        ));

        let mut c = good_claims();
        c.as_object_mut().expect("object").remove("exp");
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "exp");
    }

    #[tokio::test]
    async fn audience_issuer_and_subject_are_enforced() {
        let (v, _dir, _) = standard().await;
        let token = mint(rsa(0), Some("rsa-a"), &good_claims());
        assert_invalid(
            v.verify(Some(&bearer_of(&token)), "another.audience").await,
            "audience",
        );

        let mut c = good_claims();
        c["iss"] = json!("https://evil.example");
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "issuer");

        let mut c = good_claims();
        c.as_object_mut().expect("object").remove("sub");
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "sub");

        let mut c = good_claims();
        c["sub"] = json!(42);
        let token = mint(rsa(0), Some("rsa-a"), &c);
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "sub");
    }

    #[tokio::test]
    async fn unsigned_symmetric_and_foreign_tokens_are_refused() {
        let (v, _dir, _) = file_verifier(&[
            jwk(rsa(0), "rsa-a"),
            jwk(ec(0), "ec-a"),
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        ])
        .await;
        assert_eq!(v.inner.keys.load().keys.len(), 2, "the oct key is ignored");

        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "rsa-a", "typ": "JWT"})),
            b64(&good_claims())
        );
        assert_invalid(v.verify(Some(&bearer_of(&none)), AUD).await, "alg none");

        for (secret, kid) in [(&b"secret"[..], "hmac"), (&b"guessed"[..], "rsa-a")] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.to_owned());
            let hs = encode(
                &header,
                &good_claims(),
                &EncodingKey::from_secret(secret).expect("hmac key"),
            )
            .expect("HS256 token");
            assert_invalid(v.verify(Some(&bearer_of(&hs)), AUD).await, "HMAC");
        }

        // Another key, same kid: the signature does not verify.
        let forged = mint(rsa(1), Some("rsa-a"), &good_claims());
        assert_invalid(v.verify(Some(&bearer_of(&forged)), AUD).await, "signature");

        // The alg must fit the key the kid names.
        let mismatched = mint(ec(0), Some("rsa-a"), &good_claims());
        assert_invalid(v.verify(Some(&bearer_of(&mismatched)), AUD).await, "ES256");

        // A tampered payload.
        let token = mint(rsa(0), Some("rsa-a"), &good_claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut c = good_claims();
        c["sub"] = json!("admin");
        parts[1] = b64(&c);
        assert_invalid(
            v.verify(Some(&bearer_of(&parts.join("."))), AUD).await,
            "signature",
        );
    }

    #[tokio::test]
    async fn header_shapes() {
        let (v, _dir, _) = standard().await;
        assert_eq!(v.verify(None, AUD).await, Err(AuthError::Missing));
        assert_eq!(v.verify(Some("  "), AUD).await, Err(AuthError::Missing));
        let token = mint(rsa(0), Some("rsa-a"), &good_claims());
        for bad in [
            "Basic dXNlcjpwYXNzd29yZA==".to_string(),
            token.clone(),
            "Bearer".to_string(),
            "Bearer not-a-jwt".to_string(),
            "Bearer a.b.c.d".to_string(),
            "Bearer !!!.???.***".to_string(),
            "Bearer eyJub3QiOiJqc29uIn0.e30.c2ln".to_string(), // header without alg
            "Bearer Z2FyYmFnZQ.Z2FyYmFnZQ.Z2FyYmFnZQ".to_string(),
            format!("Bearer {}", "a".repeat(20_000)),
        ] {
            match v.verify(Some(&bad), AUD).await {
                Err(AuthError::Malformed(m)) => {
                    assert!(!m.contains(&token), "the message must not hold the token")
                }
                other => panic!("{bad:.40}: expected Malformed, got {other:?}"),
            }
        }
        // Messages never hold the token, whatever the failure.
        let err = v
            .verify(Some(&bearer_of(&token)), "x")
            .await
            .expect_err("wrong audience");
        assert!(!err.to_string().contains(&token));
        assert_eq!(err.www_authenticate(), "Bearer error=\"invalid_token\"");
        assert!(!format!("{v:?}").contains("BEGIN"));
    }

    #[tokio::test]
    async fn rotation_refreshes_once_for_an_unknown_kid() {
        let (v, _dir, path) = file_verifier(&[jwk(rsa(0), "k1")]).await;
        write(&path, &jwks(&[jwk(rsa(0), "k1"), jwk(rsa(1), "k2")]));
        let token = mint(rsa(1), Some("k2"), &good_claims());
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("the new key is fetched on first use");

        // A second unknown kid within 10 s: no refresh, refused.
        write(&path, &jwks(&[jwk(rsa(1), "k2"), jwk(ec(0), "k3")]));
        let token = mint(ec(0), Some("k3"), &good_claims());
        assert_invalid(v.verify(Some(&bearer_of(&token)), AUD).await, "kid");
        // The periodic reload (here: explicit) picks it up.
        v.reload().await.expect("reload");
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("after reload");
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_until_the_keys_change() {
        let (v, _dir, path) = file_verifier(&[jwk(rsa(0), "k1")]).await;
        let token = bearer_of(&mint(rsa(0), Some("k1"), &good_claims()));
        v.verify(Some(&token), AUD).await.expect("valid");
        assert_eq!(v.inner.verified.lock().unwrap().len(), 1);
        // Remembered for this audience only: another is checked afresh.
        assert_invalid(v.verify(Some(&token), "someone-else").await, "audience");
        // The key is rotated out: the remembered token still passes until
        // the keys are reloaded, then it is refused.
        write(&path, &jwks(&[jwk(rsa(1), "k2")]));
        v.verify(Some(&token), AUD).await.expect("remembered");
        v.reload().await.expect("reload");
        assert_invalid(v.verify(Some(&token), AUD).await, "kid");
        // A tampered token never matches a remembered one.
        let mut tampered = bearer_of(&mint(rsa(1), Some("k2"), &good_claims()));
        v.verify(Some(&tampered), AUD).await.expect("valid");
        tampered.push('A');
        assert_invalid(v.verify(Some(&tampered), AUD).await, "signature");
    }

    #[tokio::test]
    async fn tokens_go_to_the_verifier_of_their_issuer() {
        let (external, _dir, _) = standard().await;
        let signer = crate::auth::identity::Signer::ephemeral("own").expect("signer");
        let own = Verifier::new(OidcConfig::new("own", JwksSource::Own(signer.jwks())))
            .await
            .expect("own");
        let both = Verifiers::new(Some(external.clone()), Some(own.clone()));
        let mine = format!("Bearer {}", signer.token("me", AUD).expect("token"));
        let claims = both
            .choose(Some(&mine))
            .expect("a verifier")
            .verify(Some(&mine), AUD)
            .await
            .expect("own token");
        assert_eq!((claims.iss.as_str(), claims.sub.as_str()), ("own", "me"));
        let theirs = bearer_of(&mint(rsa(0), Some("rsa-a"), &good_claims()));
        both.choose(Some(&theirs))
            .expect("a verifier")
            .verify(Some(&theirs), AUD)
            .await
            .expect("the issuer's token");
        // Only the own key: another issuer's token has no verifier, a
        // missing header gets the own verifier's answer.
        let alone = Verifiers::new(None, Some(own));
        assert!(alone.choose(Some(&theirs)).is_none());
        assert_eq!(
            alone.choose(None).expect("own").verify(None, AUD).await,
            Err(AuthError::Missing)
        );
    }

    #[tokio::test]
    async fn periodic_refresh_keeps_old_keys_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        write(&path, &jwks(&[jwk(ec(0), "k1")]));
        let mut config = OidcConfig::new(ISSUER, JwksSource::File(path.clone()));
        config.refresh = Duration::from_millis(100);
        let v = Verifier::new(config).await.expect("verifier");
        let stop = CancellationToken::new();
        v.spawn_refresh(stop.clone());

        write(&path, "{ not json");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(v.inner.keys.load().kids(), vec!["k1"], "old keys kept");

        write(&path, &jwks(&[jwk(ec(1), "k2")]));
        let mut kids = Vec::new();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            kids = v
                .inner
                .keys
                .load()
                .kids()
                .into_iter()
                .map(str::to_owned)
                .collect();
            if kids == ["k2"] {
                break;
            }
        }
        assert_eq!(kids, vec!["k2"]);
        stop.cancel();
    }

    #[tokio::test]
    async fn load_errors_name_the_source() {
        let missing = PathBuf::from("/nonexistent/oidc/jwks.json");
        let err = Verifier::new(OidcConfig::new(ISSUER, JwksSource::File(missing)))
            .await
            .expect_err("no file");
        assert!(
            format!("{err:#}").contains("/nonexistent/oidc/jwks.json"),
            "{err:#}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        write(
            &path,
            &jwks(&[json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})]),
        );
        let err = Verifier::new(OidcConfig::new(ISSUER, JwksSource::File(path.clone())))
            .await
            .expect_err("only a symmetric key");
        assert!(
            format!("{err:#}").contains("no usable signing key"),
            "{err:#}"
        );
    }

    /// A tiny HTTP server answering `routes` (path → body), 404 otherwise.
    async fn serve(routes: impl FnOnce(&str) -> HashMap<String, String>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes = Arc::new(routes(&base));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let body = routes.get(req.uri().path()).cloned();
                            async move {
                                let mut response = http::Response::new(Full::new(Bytes::from(
                                    body.clone().unwrap_or_default(),
                                )));
                                if body.is_none() {
                                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                                }
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        base
    }

    #[tokio::test]
    async fn discovery_over_http() {
        let keys = jwks(&[jwk(rsa(0), "rsa-a")]);
        let base = serve(|base| {
            HashMap::from([
                (
                    "/issuer/.well-known/openid-configuration".to_string(),
                    json!({"issuer": ISSUER, "jwks_uri": format!("{base}/openid/v1/jwks")})
                        .to_string(),
                ),
                ("/openid/v1/jwks".to_string(), keys.clone()),
                ("/big".to_string(), " ".repeat(MAX_DOCUMENT_BYTES + 10)),
            ])
        })
        .await;
        let issuer = Url::parse(&format!("{base}/issuer/")).expect("url");
        let v = Verifier::new(OidcConfig::new(ISSUER, JwksSource::Discovery(issuer)))
            .await
            .expect("discovery");
        let token = mint(rsa(0), Some("rsa-a"), &good_claims());
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("verified with discovered keys");

        let direct = Url::parse(&format!("{base}/openid/v1/jwks")).expect("url");
        let v = Verifier::new(OidcConfig::new(ISSUER, JwksSource::Url(direct)))
            .await
            .expect("JWKS URL");
        v.verify(Some(&bearer_of(&token)), AUD)
            .await
            .expect("verified with fetched keys");

        let big = Url::parse(&format!("{base}/big")).expect("url");
        let err = Verifier::new(OidcConfig::new(ISSUER, JwksSource::Url(big)))
            .await
            .expect_err("too big");
        assert!(format!("{err:#}").contains("/big"), "{err:#}");

        let missing = Url::parse(&format!("{base}/nothing/")).expect("url");
        let err = Verifier::new(OidcConfig::new(ISSUER, JwksSource::Discovery(missing)))
            .await
            .expect_err("404");
        assert!(format!("{err:#}").contains("404"), "{err:#}");
    }

    #[test]
    fn discovery_url_appends_the_well_known_path() {
        let u = |s: &str| {
            discovery_url(&Url::parse(s).expect("url"))
                .expect("discovery")
                .to_string()
        };
        assert_eq!(
            u("https://kubernetes.default.svc"),
            "https://kubernetes.default.svc/.well-known/openid-configuration"
        );
        assert_eq!(
            u("https://idp.example/realms/x/"),
            "https://idp.example/realms/x/.well-known/openid-configuration"
        );
    }
}

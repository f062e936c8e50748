//! TLS on the ingress (Knative's `transport-encryption` feature).
//!
//! * `--transport-encryption disabled` (default): HTTP on `--listen` only.
//! * `permissive`: HTTP on `--listen` and HTTPS on `--tls-listen`.
//! * `strict`: HTTPS on `--tls-listen` only.
//!
//! The certificate chain and key are PEM files (`--tls-cert`, `--tls-key`;
//! what cert-manager writes into a Secret mounted as a volume). They are
//! watched: when either changes the pair is loaded again and new
//! connections get it, without a restart; a pair that does not load (a
//! half-written rotation, a key that does not match) is logged and the
//! previous one kept. ALPN offers HTTP/2 and HTTP/1.1.

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::{Args, ValueEnum};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Knative's transport-encryption modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum TransportEncryption {
    #[default]
    Disabled,
    Permissive,
    Strict,
}

/// The ingress's TLS flags.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// `disabled` (HTTP only), `permissive` (HTTP and HTTPS) or `strict`
    /// (HTTPS only).
    #[arg(
        long,
        env = "KN_CHANNEL_TRANSPORT_ENCRYPTION",
        value_enum,
        default_value_t
    )]
    pub transport_encryption: TransportEncryption,

    /// Address of the HTTPS ingress.
    #[arg(long, env = "KN_CHANNEL_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub tls_listen: SocketAddr,

    /// PEM certificate chain of the HTTPS ingress (watched).
    #[arg(long, env = "KN_CHANNEL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the HTTPS ingress (watched).
    #[arg(long, env = "KN_CHANNEL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificates HTTPS subscribers, replies and dead-letter sinks
    /// are verified against, beside the system's roots (read at start).
    #[arg(long, env = "KN_CHANNEL_DELIVERY_CA_CERTS")]
    pub delivery_ca_certs: Option<PathBuf>,
}

impl TlsArgs {
    /// Whether plain HTTP is served.
    pub fn serves_http(&self) -> bool {
        self.transport_encryption != TransportEncryption::Strict
    }

    /// The certificate files, when HTTPS is served.
    pub fn files(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        if self.transport_encryption == TransportEncryption::Disabled {
            return Ok(None);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            _ => anyhow::bail!(
                "--transport-encryption {:?} needs --tls-cert and --tls-key",
                self.transport_encryption
            ),
        }
    }
}

/// The certificates of a PEM bundle (none without a file).
pub fn read_ca_certs(path: Option<&Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the CA certificates {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// Load a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .with_context(|| format!("{}: unsupported private key", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// The current certificate, replaced when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    /// Load the pair now (an error names the file).
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Arc<ReloadingCert>> {
        let current = load(&cert, &key)?;
        Ok(Arc::new(ReloadingCert {
            current: ArcSwap::from_pointee(current),
            cert,
            key,
        }))
    }

    /// A TLS acceptor serving the current certificate.
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Reload the pair whenever its files change, until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let paths = [self.cert.clone(), self.key.clone()];
        let mut seen = crate::changes::fingerprint(&paths);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = crate::changes::fingerprint(&paths);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.cert, &self.key) {
                Ok(pair) => {
                    self.current.store(Arc::new(pair));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "the new TLS certificate does not load; keeping the previous one"
                    )
                }
            }
        }
    }
}

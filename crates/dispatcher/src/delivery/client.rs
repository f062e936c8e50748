//! The HTTP client that sends events: keep-alive HTTP/1.1 connections per
//! origin ([`super::connections`]), with a resolver that reaches channels served by this
//! dispatcher without cluster DNS, over HTTP or HTTPS. HTTPS destinations
//! are verified against the system's roots plus the dispatcher's
//! `--delivery-ca-certs`; a certificate that does not verify fails the
//! attempt like a refused connection (retried, then dead-lettered), the
//! reason naming the verification error.
//!
//! A destination may bring its own trust and identity requirements
//! ([`TargetAuth`], from Knative's `Destination.CACerts` and `audience`):
//! its CA certificates are added to the roots for that destination only
//! (one connection pool per distinct bundle), and for an audience the
//! request carries `Authorization: Bearer <token>` signed for the sender's
//! identity ([`Signer`]). A bundle that is not PEM, or a token that cannot
//! be signed, fails the attempt with the reason.

use super::connections::Connections;
use super::LocalRoutes;
use crate::auth::identity::Signer;
use bytes::Bytes;
use channel_core::contract::{DeliveryFormat, TargetAuth};
use channel_core::event::{encode_binary, encode_structured, Event};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Resolves local channel hosts to this dispatcher's ingress, everything
/// else through the system resolver.
#[derive(Clone, Debug)]
pub struct Resolver {
    pub(super) local: Option<Arc<dyn LocalRoutes>>,
}

impl Resolver {
    /// The addresses of `host` (a port of 0 means "the URL's"): this
    /// dispatcher's ingress for a local channel host, else the system
    /// resolver's.
    pub async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.local.as_ref().and_then(|l| l.resolve(host)) {
            return Ok(vec![addr]);
        }
        Ok(tokio::net::lookup_host((host, 0)).await?.collect())
    }
}

/// The outcome of one HTTP attempt.
#[derive(Debug)]
pub enum Attempt {
    /// A response arrived (any status). `body` holds at most the configured
    /// number of bytes; `truncated` tells when there was more.
    Response {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        truncated: bool,
    },
    /// No response: connection error or timeout.
    Failed { reason: String },
}

impl Attempt {
    pub fn status(&self) -> Option<u16> {
        match self {
            Attempt::Response { status, .. } => Some(*status),
            Attempt::Failed { .. } => None,
        }
    }
}

/// At most this many distinct destination CA bundles get a pool of their
/// own at once; more empty the set (pools are made again on use).
const MAX_CA_POOLS: usize = 256;

/// Sends events over keep-alive HTTP/1.1 connections, one set per origin.
#[derive(Debug, Clone)]
pub struct EventClient {
    client: Connections,
    max_body: usize,
    local: Option<Arc<dyn LocalRoutes>>,
    /// The roots every destination is verified against.
    roots: Arc<rustls::RootCertStore>,
    /// Pools of destinations with their own CA certificates, by bundle.
    by_ca: Arc<Mutex<HashMap<String, Result<Connections, String>>>>,
    /// Signs the tokens destinations with an audience get.
    signer: Option<Arc<Signer>>,
}

/// The roots HTTPS destinations are verified against: the system's and
/// `extra` (PEM certificates).
pub fn root_store(extra: &[rustls::pki_types::CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be read");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    let (extra_added, extra_ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    if extra_ignored > 0 {
        tracing::warn!(
            ignored = extra_ignored,
            "some --delivery-ca-certs certificates are not usable roots"
        );
    }
    tracing::debug!(system = added, extra = extra_added, "delivery roots");
    roots
}

static PREFER: HeaderName = HeaderName::from_static("prefer");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl EventClient {
    pub fn new(
        local: Option<Arc<dyn LocalRoutes>>,
        max_body: usize,
        roots: rustls::RootCertStore,
        signer: Option<Arc<Signer>>,
    ) -> Self {
        EventClient {
            client: pool(local.clone(), roots.clone()),
            max_body,
            local,
            roots: Arc::new(roots),
            by_ca: Arc::default(),
            signer,
        }
    }

    /// The pool of a destination with its own CA certificates (made on
    /// first use).
    fn pool_for(&self, pem: &str) -> Result<Connections, String> {
        let mut pools = self.by_ca.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(pem) {
            return p.clone();
        }
        use rustls::pki_types::pem::PemObject as _;
        let made = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the destination's CACerts are not PEM certificates: {e}"))
            .and_then(|certs| {
                let mut roots = (*self.roots).clone();
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err("the destination's CACerts hold no usable certificate".to_owned());
                }
                Ok(pool(self.local.clone(), roots))
            });
        if pools.len() >= MAX_CA_POOLS {
            pools.clear();
        }
        pools.insert(pem.to_owned(), made.clone());
        made
    }

    /// The `Authorization` value for a destination expecting a token for
    /// `audience`, presented as `identity`.
    fn bearer(&self, identity: Option<&str>, audience: &str) -> Result<HeaderValue, String> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            format!("the destination expects an OIDC token (audience {audience}) and this sender has no signing key")
        })?;
        let identity = identity.ok_or_else(|| {
            format!("the destination expects an OIDC token (audience {audience}) and the contract names no identity to present")
        })?;
        let token = signer.token(identity, audience)?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())
    }

    /// POST `event` to `uri` once, within `timeout` (connect, response head
    /// and body included).
    pub async fn send(
        &self,
        uri: &Uri,
        event: &Event,
        format: DeliveryFormat,
        timeout: Duration,
        target: Target<'_>,
    ) -> (Attempt, Duration) {
        let started = Instant::now();
        let failed = |reason: String| (Attempt::Failed { reason }, started.elapsed());
        // Most destinations use the shared pool, borrowed: no clone per send.
        let own_pool;
        let pool = match target.auth.and_then(|a| a.ca_certs.as_deref()) {
            None => &self.client,
            Some(pem) => match self.pool_for(pem) {
                Ok(p) => {
                    own_pool = p;
                    &own_pool
                }
                Err(reason) => return failed(reason),
            },
        };
        let authorization = match target.auth.and_then(|a| a.audience.as_deref()) {
            None => None,
            Some(audience) => match self.bearer(target.identity, audience) {
                Ok(v) => Some(v),
                Err(reason) => return failed(reason),
            },
        };
        let mut headers = HeaderMap::with_capacity(8 + event.extensions.len());
        let body = match format {
            DeliveryFormat::Binary => encode_binary(event, &mut headers),
            DeliveryFormat::Json => encode_structured(event, &mut headers),
        };
        headers.insert(PREFER.clone(), HeaderValue::from_static("reply"));
        if let Some(tp) = event.extension("traceparent") {
            if let Ok(v) = HeaderValue::from_str(&tp) {
                headers.insert(TRACEPARENT.clone(), v);
            }
        }
        if let Some(v) = authorization {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let mut request = Request::post(uri.clone());
        if let Some(h) = request.headers_mut() {
            *h = headers;
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return failed(format!("cannot build request: {e}")),
        };
        let exchange = async {
            let (response, lease) = pool.send(request).await?;
            let (parts, body) = response.into_parts();
            let (body, truncated) = match Limited::new(body, self.max_body).collect().await {
                Ok(collected) => {
                    // Read to its end: the connection serves the next send.
                    pool.give_back(lease);
                    (collected.to_bytes(), false)
                }
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    (Bytes::new(), true)
                }
                Err(e) => return Err(format!("reading the response body: {e}")),
            };
            Ok(Attempt::Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                truncated,
            })
        };
        let attempt = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(reason)) => Attempt::Failed { reason },
            Err(_) => Attempt::Failed {
                reason: format!("timed out after {timeout:?}"),
            },
        };
        (attempt, started.elapsed())
    }
}

/// Who sends to a destination, and what it expects beyond its URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The destination's CA certificates and audience.
    pub auth: Option<&'a TargetAuth>,
    /// The sender's OIDC subject, for a destination with an audience.
    pub identity: Option<&'a str>,
}

/// Keep-alive connections verifying HTTPS against `roots`.
fn pool(local: Option<Arc<dyn LocalRoutes>>, roots: rustls::RootCertStore) -> Connections {
    Connections::new(Resolver { local }, roots)
}

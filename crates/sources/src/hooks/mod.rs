//! Registering the webhooks of GitHubSources and GitLabSources with GitHub
//! and GitLab: the control plane's half of a webhook source.
//!
//! [`github`] and [`gitlab`] speak the two REST APIs (create, update,
//! delete; an existing hook with the same URL is adopted rather than
//! duplicated, so losing the recorded id never leaves two hooks).
//! [`Registrar`] keeps what is registered for a set of sources and applies
//! a new set by difference: a new source's hook is created, a changed one
//! (events, secret, URL) updated, a removed one deleted; unchanged ones
//! cost no request. Failures are kept per source and retried on the next
//! [`Registrar::reconcile`]. The provisioner (standalone and Kubernetes)
//! and the adapter in `--manifests` mode use it.
//!
//! Tokens travel only in request headers and bodies; errors name the
//! source and the API's answer, never a token.

pub mod github;
pub mod gitlab;

use crate::secrets::{SecretStore, SecretValue};
use bytes::Bytes;
use channel_core::sources::{SourceContract, SourceSettings};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// How long one API request may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest API answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why a hook could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// A secret could not be read.
    #[error("{0}")]
    Secret(String),
    /// The API refused the token (401, 403).
    #[error("{0}")]
    Unauthorized(String),
    /// The repository, organisation or project does not exist (or the
    /// token cannot see it).
    #[error("{0}")]
    NotFound(String),
    /// The API refused the hook (400, 422).
    #[error("{0}")]
    Invalid(String),
    /// The API could not be reached or failed (5xx, timeouts).
    #[error("{0}")]
    Unavailable(String),
}

impl HookError {
    /// The condition reason for status.
    pub fn reason(&self) -> &'static str {
        match self {
            HookError::Secret(_) => "SecretNotFound",
            HookError::Unauthorized(_) => "Unauthorized",
            HookError::NotFound(_) => "RepositoryNotFound",
            HookError::Invalid(_) => "WebhookRefused",
            HookError::Unavailable(_) => "ApiUnavailable",
        }
    }
}

/// An HTTP(S) client for the forges' APIs (system roots).
#[derive(Clone)]
pub struct ApiClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClient")
    }
}

impl ApiClient {
    pub fn new() -> ApiClient {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates; HTTPS APIs will fail verification");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(rustls_config_without_roots())
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        ApiClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Send a JSON request; the answer's status and JSON body (`Null`
    /// when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), HookError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .header("user-agent", "knative-rs-sources")
            .header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| HookError::Invalid(format!("{method} {url}: {e}")))?;
        let unavailable =
            |e: String| HookError::Unavailable(format!("{method} {}: {e}", redact(url)));
        let answer = tokio::time::timeout(API_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unavailable(format!("no answer within {API_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        let status = answer.status();
        let bytes = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json))
    }
}

impl Default for ApiClient {
    fn default() -> Self {
        Self::new()
    }
}

fn rustls_config_without_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// A URL without its query (tokens never go in queries here, but a
/// user-given API URL might carry one).
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The API's own message, for errors.
fn message(status: StatusCode, body: &Value) -> String {
    let text = body
        .get("message")
        .map(|m| match m {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .or_else(|| body.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let details = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|d| !d.is_empty());
    match details {
        Some(d) => format!("{status}: {text} ({d})"),
        None => format!("{status}: {text}"),
    }
}

/// Map an unexpected answer to the error.
pub(crate) fn failure(what: &str, status: StatusCode, body: &Value) -> HookError {
    let m = format!("{what}: {}", message(status, body));
    match status.as_u16() {
        401 | 403 => HookError::Unauthorized(m),
        404 => HookError::NotFound(m),
        400 | 409 | 422 => HookError::Invalid(m),
        _ => HookError::Unavailable(m),
    }
}

/// One forge's hook collection for a source, as [`ensure`] drives it.
pub(crate) trait HookCollection {
    /// Write the desired settings to hook `id`.
    async fn update(&self, id: u64) -> Result<(StatusCode, Value), HookError>;
    /// Every hook of the collection.
    async fn list(&self) -> Result<(StatusCode, Value), HookError>;
    /// Create the hook.
    async fn create(&self) -> Result<(StatusCode, Value), HookError>;
    /// The delivery URL of a listed hook.
    fn delivery_url(hook: &Value) -> Option<&str>;
}

/// Create or update the hook delivering to `webhook`; `known` is the id
/// recorded earlier. Order: the recorded hook if it still exists; else a
/// hook already delivering to the URL (an id lost with the state) is
/// adopted; else one is created. `what` names it in errors.
pub(crate) async fn ensure<C: HookCollection>(
    hooks: &C,
    what: &str,
    webhook: &Url,
    known: Option<u64>,
) -> Result<u64, HookError> {
    if let Some(id) = known {
        let (status, answer) = hooks.update(id).await?;
        match status {
            s if s.is_success() => return Ok(id),
            StatusCode::NOT_FOUND => {}
            s => return Err(failure(&format!("updating the {what}"), s, &answer)),
        }
    }
    let (status, list) = hooks.list().await?;
    if !status.is_success() {
        return Err(failure(
            &format!("listing the hooks for the {what}"),
            status,
            &list,
        ));
    }
    let existing = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| C::delivery_url(h) == Some(webhook.as_str()))
        .and_then(|h| h.get("id").and_then(Value::as_u64));
    if let Some(id) = existing {
        let (status, answer) = hooks.update(id).await?;
        return if status.is_success() {
            Ok(id)
        } else {
            Err(failure(&format!("updating the {what}"), status, &answer))
        };
    }
    let (status, answer) = hooks.create().await?;
    match (status, answer.get("id").and_then(Value::as_u64)) {
        (StatusCode::CREATED | StatusCode::OK, Some(id)) => Ok(id),
        (s, _) => Err(failure(&format!("creating the {what}"), s, &answer)),
    }
}

/// What one hook is registered as: its id and what it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub kind: String,
    pub id: u64,
    /// The API the hook lives at (the repository's or project's).
    pub hooks_url: String,
    pub webhook_url: String,
    /// The access token's reference (to delete the hook once the source
    /// is gone).
    pub access_token: channel_core::sources::secret::SecretRef,
    /// What the hook was last written from (settings and secret digest):
    /// a different fingerprint means update.
    pub fingerprint: String,
}

/// The registration of one source, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub webhook_url: String,
    /// `None` when registered; else the failure's reason and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<(String, String)>,
}

/// The webhook URL of a source: `<base>/<namespace>/<name>`, `https`
/// when the source asks GitHub for a secure hook.
pub fn webhook_url(base: &Url, source: &SourceContract) -> Url {
    let mut url = base.clone();
    let path = format!(
        "{}/{}/{}",
        base.path().trim_end_matches('/'),
        source.namespace,
        source.name
    );
    url.set_path(&path);
    if matches!(&source.settings, SourceSettings::GitHubSource(g) if g.secure) {
        let _ = url.set_scheme("https");
    }
    url
}

fn digest(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// First wait before a failed registration is tried again; it doubles
/// up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// A failed registration, and when to try again.
#[derive(Debug, Clone)]
struct Failure {
    /// What was tried (the fingerprint of the attempt's inputs).
    fingerprint: String,
    status: HookStatus,
    next: std::time::Instant,
    wait: Duration,
}

/// Keeps the hooks of a set of webhook sources registered.
#[derive(Debug)]
pub struct Registrar {
    api: ApiClient,
    base: Url,
    /// By source uid.
    registered: BTreeMap<String, Registered>,
    /// Failed registrations by source uid: retried with backoff (or at
    /// once when the source or its secrets change).
    failures: BTreeMap<String, Failure>,
}

impl Registrar {
    /// A registrar announcing hooks under `base`, starting from what was
    /// recorded (`registered`, by source uid).
    pub fn new(base: Url, registered: BTreeMap<String, Registered>) -> Registrar {
        Registrar {
            api: ApiClient::new(),
            base,
            registered,
            failures: BTreeMap::new(),
        }
    }

    /// What is registered, by source uid (to persist).
    pub fn registered(&self) -> &BTreeMap<String, Registered> {
        &self.registered
    }

    /// Register the hooks of the webhook sources among `sources`, delete
    /// those of sources that are gone. Returns each source's status.
    pub async fn reconcile(
        &mut self,
        sources: &[SourceContract],
        secrets: &SecretStore,
    ) -> Vec<HookStatus> {
        let wanted: BTreeMap<&str, &SourceContract> = sources
            .iter()
            .filter(|s| s.settings.is_webhook())
            .map(|s| (s.uid.as_str(), s))
            .collect();
        let gone: Vec<String> = self
            .registered
            .keys()
            .filter(|uid| !wanted.contains_key(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            let Some(r) = self.registered.get(&uid).cloned() else {
                continue;
            };
            match self.delete(&r, secrets).await {
                Ok(()) => {
                    self.registered.remove(&uid);
                }
                Err(e) => {
                    tracing::warn!(hook = r.id, url = %r.hooks_url, error = %e, "cannot delete the webhook of a removed source; retried later")
                }
            }
        }
        self.failures
            .retain(|uid, _| wanted.contains_key(uid.as_str()));
        let mut out = Vec::new();
        for (uid, source) in wanted {
            let url = webhook_url(&self.base, source);
            let inputs = self.inputs(source, &url, secrets).await;
            let fingerprint = inputs.as_ref().map(|i| i.2.clone()).unwrap_or_default();
            if let Some(f) = self.failures.get(uid) {
                if f.fingerprint == fingerprint && std::time::Instant::now() < f.next {
                    out.push(f.status.clone());
                    continue;
                }
            }
            let result = match inputs {
                Ok((token, secret, fingerprint)) => {
                    self.ensure(source, &url, &token, &secret, fingerprint)
                        .await
                }
                Err(e) => Err(e),
            };
            let status = HookStatus {
                kind: source.kind().to_owned(),
                namespace: source.namespace.clone(),
                name: source.name.clone(),
                id: None,
                webhook_url: url.to_string(),
                error: None,
            };
            match result {
                Ok(id) => {
                    self.failures.remove(uid);
                    out.push(HookStatus {
                        id: Some(id),
                        ..status
                    });
                }
                Err(e) => {
                    let wait = self
                        .failures
                        .get(uid)
                        .filter(|f| f.fingerprint == fingerprint)
                        .map_or(FIRST_RETRY, |f| (f.wait * 2).min(MAX_RETRY));
                    tracing::warn!(source = %source.key(), kind = source.kind(), reason = e.reason(), error = %e, retry_in = ?wait, "webhook not registered");
                    let status = HookStatus {
                        id: self.registered.get(uid).map(|r| r.id),
                        error: Some((e.reason().to_owned(), e.to_string())),
                        ..status
                    };
                    self.failures.insert(
                        uid.to_owned(),
                        Failure {
                            fingerprint,
                            status: status.clone(),
                            next: std::time::Instant::now() + wait,
                            wait,
                        },
                    );
                    out.push(status);
                }
            }
        }
        out
    }

    /// The tokens of a source and the fingerprint of what its hook is
    /// computed from.
    async fn inputs(
        &self,
        source: &SourceContract,
        url: &Url,
        secrets: &SecretStore,
    ) -> Result<(SecretValue, SecretValue, String), HookError> {
        let (access, secret) = match &source.settings {
            SourceSettings::GitHubSource(g) => (&g.access_token, &g.secret_token),
            SourceSettings::GitLabSource(g) => (&g.access_token, &g.secret_token),
            _ => return Err(HookError::Invalid("not a webhook source".into())),
        };
        let token = secrets.read(access).await.map_err(HookError::Secret)?;
        let secret = secrets.read(secret).await.map_err(HookError::Secret)?;
        let settings = serde_json::to_string(&source.settings).unwrap_or_default();
        let fingerprint = digest(&[&settings, url.as_str(), secret.expose(), token.expose()]);
        Ok((token, secret, fingerprint))
    }

    async fn ensure(
        &mut self,
        source: &SourceContract,
        url: &Url,
        token: &SecretValue,
        secret: &SecretValue,
        fingerprint: String,
    ) -> Result<u64, HookError> {
        let previous = self.registered.get(&source.uid);
        if let Some(p) = previous.filter(|p| p.fingerprint == fingerprint) {
            return Ok(p.id);
        }
        let known = previous.map(|p| p.id);
        let (id, hooks_url, access) = match &source.settings {
            SourceSettings::GitHubSource(g) => {
                let (id, hooks) = github::ensure(&self.api, g, token, secret, url, known).await?;
                (id, hooks, g.access_token.clone())
            }
            SourceSettings::GitLabSource(g) => {
                let (id, hooks) = gitlab::ensure(&self.api, g, token, secret, url, known).await?;
                (id, hooks, g.access_token.clone())
            }
            _ => return Err(HookError::Invalid("not a webhook source".into())),
        };
        tracing::info!(source = %source.key(), kind = source.kind(), hook = id, url = %url, "webhook registered");
        self.registered.insert(
            source.uid.clone(),
            Registered {
                kind: source.kind().to_owned(),
                id,
                hooks_url,
                webhook_url: url.to_string(),
                access_token: access,
                fingerprint,
            },
        );
        Ok(id)
    }

    /// Delete a removed source's hook, with the access token it was
    /// registered with. A token that can no longer be read (the secret
    /// went with the source) leaves the hook in place, with a warning.
    async fn delete(&self, r: &Registered, secrets: &SecretStore) -> Result<(), HookError> {
        let token = match secrets.read(&r.access_token).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(hook = r.id, url = %r.hooks_url, error = %e, "the webhook of a removed source is left in place: its access token cannot be read");
                return Ok(());
            }
        };
        let hooks = Url::parse(&r.hooks_url).map_err(|e| HookError::Invalid(e.to_string()))?;
        match r.kind.as_str() {
            "GitHubSource" => github::delete(&self.api, &hooks, &token, r.id).await,
            _ => gitlab::delete(&self.api, &hooks, &token, r.id).await,
        }
    }
}

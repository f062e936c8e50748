//! Fake GitHub and GitLab REST API servers on loopback, speaking the JSON
//! of their webhook APIs over HTTP/1.1, for end-to-end tests of anything
//! that registers webhooks (a GitHubSource / GitLabSource control plane)
//! and of the receivers those webhooks point at.
//!
//! [`FakeGitHub`] serves the repository and organization webhook endpoints
//! of the GitHub REST API v3 (`/repos/{owner}/{repo}/hooks[/{id}]`,
//! `/orgs/{org}/hooks[/{id}]`); [`FakeGitLab`] serves the project webhook
//! endpoints of the GitLab REST API v4
//! (`/api/v4/projects/{id}/hooks[/{hook_id}]`). Both CHECK the requests as
//! the real services document them (authentication header, request body
//! shape and types, known event names, absolute http/https hook URLs) and
//! answer with the same status codes and JSON bodies, so a client that
//! passes against them sends what the real services accept.
//!
//! The test drives the rest through the handle: which repositories,
//! organizations and projects exist, failures to inject
//! ([`FakeGitHub::fail_next`]), the request log, the hooks as stored (with
//! their real secrets), and deliveries made the way GitHub and GitLab make
//! them ([`FakeGitHub::deliver`], [`FakeGitLab::deliver`]: the same headers,
//! the `X-Hub-Signature-256` HMAC, the `X-Gitlab-Token`). Payload builders
//! ([`github_push_payload`], [`gitlab_push_payload`], ...) give small but
//! realistic event bodies.
//!
//! Everything is bounded: the request and delivery logs
//! ([`REQUEST_LOG_CAPACITY`]), request bodies ([`MAX_BODY_BYTES`], larger
//! ones are answered `413`), every delivery ([`DELIVERY_TIMEOUT`]), and the
//! server stops when its handle is dropped.

use crate::free_port;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many requests (and, separately, deliveries) each fake remembers;
/// the oldest go.
pub const REQUEST_LOG_CAPACITY: usize = 10_000;

/// The largest request body the fakes read; larger ones are answered `413`.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long a delivery waits for the receiver's answer (GitHub gives up
/// after 10 seconds).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest receiver answer body a delivery keeps.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The webhook event names [`FakeGitHub`] accepts in a hook's `events`
/// (`*` is every event).
pub const GITHUB_EVENTS: &[&str] = &[
    "*",
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "issue_comment",
    "issues",
    "label",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2_item",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_dispatch",
    "repository_import",
    "repository_vulnerability_alert",
    "secret_scanning_alert",
    "security_advisory",
    "star",
    "status",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

/// GitLab's `X-Gitlab-Event` values and the hook flag that subscribes to
/// each.
pub const GITLAB_EVENT_HEADERS: &[(&str, &str)] = &[
    ("Push Hook", "push_events"),
    ("Tag Push Hook", "tag_push_events"),
    ("Issue Hook", "issues_events"),
    ("Confidential Issue Hook", "confidential_issues_events"),
    ("Merge Request Hook", "merge_requests_events"),
    ("Note Hook", "note_events"),
    ("Confidential Note Hook", "confidential_note_events"),
    ("Job Hook", "job_events"),
    ("Pipeline Hook", "pipeline_events"),
    ("Wiki Page Hook", "wiki_page_events"),
    ("Deployment Hook", "deployment_events"),
    ("Release Hook", "releases_events"),
];

/// The boolean attributes of a GitLab project hook and their defaults.
const GITLAB_FLAGS: &[(&str, bool)] = &[
    ("push_events", true),
    ("tag_push_events", false),
    ("issues_events", false),
    ("confidential_issues_events", false),
    ("merge_requests_events", false),
    ("note_events", false),
    ("confidential_note_events", false),
    ("job_events", false),
    ("pipeline_events", false),
    ("wiki_page_events", false),
    ("deployment_events", false),
    ("releases_events", false),
    ("enable_ssl_verification", true),
];

const GITHUB_DOCS: &str = "https://docs.github.com/rest/repos/webhooks";

// ---------------------------------------------------------------------------
// Shared types
// ---------------------------------------------------------------------------

/// The body of a [`RecordedRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedBody {
    /// No body (or one too large to read).
    Empty,
    /// A body that parses as JSON.
    Json(Value),
    /// Anything else (form-encoded, malformed JSON), as text (lossy UTF-8).
    Raw(String),
}

/// One request a fake received, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, still percent-encoded (`/api/v4/projects/g%2Fp/hooks`).
    pub path: String,
    /// The raw query string (`""` when none).
    pub query: String,
    /// Header names in lower case; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body: RecordedBody,
}

impl RecordedRequest {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The JSON body, if the body was JSON.
    pub fn json(&self) -> Option<&Value> {
        match &self.body {
            RecordedBody::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// The outcome of one delivery to a hook's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The receiver's HTTP status; `0` when there was no answer (connection
    /// refused, timeout, an `https` URL) or the fake did not deliver (an
    /// inactive hook, an event the hook is not subscribed to); `body` then
    /// says why.
    pub status: u16,
    /// The receiver's answer body (lossy UTF-8, at most 1 MiB), or the reason
    /// for status `0`.
    pub body: String,
    /// `X-GitHub-Delivery` / `X-Gitlab-Event-UUID` of the delivery (`""` when
    /// not delivered).
    pub delivery_id: String,
}

/// One delivery a fake made (through `deliver` or a ping), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub hook_id: u64,
    /// The GitHub event name or the `X-Gitlab-Event` value.
    pub event: String,
    pub delivered: Delivered,
}

/// A delivery about to be sent: built by `delivery_request` exactly as
/// `deliver` would send it, so a test can tamper with it (a wrong signature,
/// a missing header) before [`DeliveryRequest::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl DeliveryRequest {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Set header `name` (replacing any value it had).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.remove_header(name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// Remove header `name` (any case).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// POST it (bounded by [`DELIVERY_TIMEOUT`]).
    pub async fn send(&self) -> Delivered {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        deliver_raw(&self.url, &headers, &self.body).await
    }
}

/// POST `body` with `headers` to `url` (http only), bounded by
/// [`DELIVERY_TIMEOUT`]. `delivery_id` of the result is the
/// `X-GitHub-Delivery` or `X-Gitlab-Event-UUID` header sent, if any.
pub async fn deliver_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Delivered {
    let delivery_id = headers
        .iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case("x-github-delivery")
                || k.eq_ignore_ascii_case("x-gitlab-event-uuid")
        })
        .map(|(_, v)| (*v).to_owned())
        .unwrap_or_default();
    let failed = |reason: String| Delivered {
        status: 0,
        body: reason,
        delivery_id: delivery_id.clone(),
    };
    let mut request = Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match request.body(Full::new(Bytes::copy_from_slice(body))) {
        Ok(request) => request,
        Err(e) => return failed(format!("invalid request: {e}")),
    };
    if request.uri().scheme_str() != Some("http") {
        return failed(format!("the fake delivers over http only, not to {url}"));
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, exchange).await {
        Ok(Ok((status, body))) => Delivered {
            status,
            body,
            delivery_id,
        },
        Ok(Err(e)) => failed(e),
        Err(_) => failed(format!("timed out after {DELIVERY_TIMEOUT:?}")),
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, the `X-Hub-Signature-256`
/// GitHub sends.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Request log, injected failures and delivery log, shared by both fakes.
#[derive(Debug, Default)]
struct Log {
    requests: VecDeque<RecordedRequest>,
    deliveries: VecDeque<DeliveryRecord>,
    fail: Option<(StatusCode, usize)>,
}

impl Log {
    fn record(&mut self, req: &ApiRequest) {
        if self.requests.len() >= REQUEST_LOG_CAPACITY {
            self.requests.pop_front();
        }
        let mut headers = BTreeMap::new();
        for (name, value) in &req.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body = if req.body.is_empty() {
            RecordedBody::Empty
        } else if let Ok(v) = serde_json::from_slice(&req.body) {
            RecordedBody::Json(v)
        } else {
            RecordedBody::Raw(String::from_utf8_lossy(&req.body).into_owned())
        };
        self.requests.push_back(RecordedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers,
            body,
        });
    }

    fn take_failure(&mut self) -> Option<StatusCode> {
        let (status, left) = self.fail?;
        self.fail = (left > 1).then_some((status, left - 1));
        Some(status)
    }

    fn fail_next(&mut self, status: u16, times: usize) {
        let status = StatusCode::from_u16(status).expect("an HTTP status code");
        self.fail = (times > 0).then_some((status, times));
    }

    fn delivered(&mut self, hook_id: u64, event: &str, delivered: &Delivered) {
        if self.deliveries.len() >= REQUEST_LOG_CAPACITY {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(DeliveryRecord {
            hook_id,
            event: event.to_owned(),
            delivered: delivered.clone(),
        });
    }
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The HTTP server
// ---------------------------------------------------------------------------

/// A request as the handlers see it: the body read (at most
/// [`MAX_BODY_BYTES`]).
#[derive(Debug)]
struct ApiRequest {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    /// The body was larger than [`MAX_BODY_BYTES`] (and was not read).
    too_large: bool,
}

impl ApiRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path's segments after the leading `/`, percent-decoded each;
    /// `None` if a segment does not decode.
    fn segments(&self) -> Option<Vec<String>> {
        self.path
            .strip_prefix('/')
            .unwrap_or(&self.path)
            .split('/')
            .map(percent_decode)
            .collect()
    }
}

type Answer = Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(ApiRequest) -> Answer + Send + Sync>;

/// The accept loop of one fake; stops (and drops its connections) when
/// dropped.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(what: &str, handler: Handler) -> Server {
        let mut attempts = 0;
        let listener = loop {
            attempts += 1;
            match tokio::net::TcpListener::bind(("127.0.0.1", free_port())).await {
                Ok(listener) => break listener,
                Err(e) if attempts >= 20 => panic!("fake {what} cannot bind: {e}"),
                Err(_) => continue,
            }
        };
        let addr = listener.local_addr().expect("bound address");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, handler, cancel.clone()));
        Server { addr, cancel, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

async fn serve(listener: tokio::net::TcpListener, handler: Handler, cancel: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (handler, cancel) = (handler.clone(), cancel.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(answer(&handler, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    connections.abort_all();
}

/// Read the body (bounded) and hand the request to `handler`.
async fn answer(handler: &Handler, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, too_large) = if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        (Bytes::new(), true)
    } else {
        match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => (collected.to_bytes(), false),
            Err(e) => (Bytes::new(), e.downcast_ref::<LengthLimitError>().is_some()),
        }
    };
    let mut response = handler(ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
        too_large,
    });
    if too_large {
        // The rest of the body was not read: the connection cannot be reused.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn no_content() -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn with_header(mut response: Answer, name: &'static str, value: &str) -> Answer {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An absolute `http`/`https` URL with a host, or why not.
fn check_hook_url(raw: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(raw).map_err(|_| "is not a valid URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must use http or https");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    Ok(())
}

fn now_github() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_gitlab() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A stable id for a name (FNV-1a, case-insensitive) in `[low, low + span)`,
/// so a payload builder and the fake agree on a repository's id without
/// sharing state.
fn stable_id(name: &str, low: u64, span: u64) -> u64 {
    let hash = name
        .to_ascii_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    low + hash % span
}

/// A random 40-hex-digit commit SHA.
fn random_sha() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

// ---------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------

/// Whether a GitHub hook belongs to a repository or an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookTarget {
    Repository,
    Organization,
}

/// A GitHub webhook as the fake stores it (with the real secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub id: u64,
    pub target: HookTarget,
    pub active: bool,
    pub events: Vec<String>,
    /// `config.url`.
    pub url: String,
    /// `config.content_type`: `json` or `form`.
    pub content_type: String,
    /// `config.insecure_ssl`: `"0"` or `"1"`.
    pub insecure_ssl: String,
    /// `config.secret`, unmasked.
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug)]
struct GhTarget {
    kind: HookTarget,
    /// `owner/repo` or `org`, as added.
    name: String,
    id: u64,
    hooks: BTreeMap<u64, Hook>,
}

impl GhTarget {
    /// `repos/owner/repo` or `orgs/org`.
    fn api_path(&self) -> String {
        match self.kind {
            HookTarget::Repository => format!("repos/{}", self.name),
            HookTarget::Organization => format!("orgs/{}", self.name),
        }
    }

    fn noun(&self) -> &'static str {
        match self.kind {
            HookTarget::Repository => "repository",
            HookTarget::Organization => "organization",
        }
    }
}

#[derive(Debug)]
struct GhState {
    token: String,
    base: String,
    /// Keyed by [`github_key`].
    targets: BTreeMap<String, GhTarget>,
    next_hook: u64,
    ping_on_create: bool,
    log: Log,
}

/// `repo:owner/repo` or `org:name`, lower case (GitHub names are
/// case-insensitive).
fn github_key(repo_or_org: &str) -> String {
    if repo_or_org.contains('/') {
        format!("repo:{}", repo_or_org.to_ascii_lowercase())
    } else {
        format!("org:{}", repo_or_org.to_ascii_lowercase())
    }
}

/// A fake GitHub REST API (webhooks of repositories and organizations);
/// stops when dropped.
#[derive(Debug)]
pub struct FakeGitHub {
    server: Server,
    state: Arc<Mutex<GhState>>,
}

impl FakeGitHub {
    /// Bind 127.0.0.1 on a free port and serve; requests must carry
    /// `Authorization: Bearer <token>` (or `token <token>`). No repository or
    /// organization exists until added.
    pub async fn start(token: &str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(GhState {
            token: token.to_owned(),
            base: String::new(),
            targets: BTreeMap::new(),
            next_hook: 1,
            ping_on_create: false,
            log: Log::default(),
        }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |req| github_handle(&shared, req));
        let server = Server::start("GitHub", handler).await;
        lock(&state).base = format!("http://{}/", server.addr);
        FakeGitHub { server, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The API base URL, `http://127.0.0.1:PORT/` (with the trailing slash,
    /// like `https://api.github.com/`): a GitHubSource's `githubAPIURL`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr)
    }

    /// Make repository `owner/repo` exist (its id is stable: the id
    /// [`github_push_payload`] puts in `repository.id`).
    pub fn add_repo(&self, full_name: &str) {
        assert!(
            full_name.split('/').count() == 2 && !full_name.split('/').any(str::is_empty),
            "a repository is owner/repo, not {full_name:?}"
        );
        self.add_target(HookTarget::Repository, full_name);
    }

    /// Make organization `org` exist.
    pub fn add_org(&self, org: &str) {
        assert!(
            !org.is_empty() && !org.contains('/'),
            "an organization has no '/': {org:?}"
        );
        self.add_target(HookTarget::Organization, org);
    }

    fn add_target(&self, kind: HookTarget, name: &str) {
        lock(&self.state)
            .targets
            .entry(github_key(name))
            .or_insert_with(|| GhTarget {
                kind,
                name: name.to_owned(),
                id: stable_id(name, 100_000_000, 900_000_000),
                hooks: BTreeMap::new(),
            });
    }

    /// Send a `ping` delivery to each new hook after answering its creation
    /// (as GitHub does); off by default. Pings show in [`Self::deliveries`].
    pub fn set_ping_on_create(&self, ping: bool) {
        lock(&self.state).ping_on_create = ping;
    }

    /// Answer the next `times` API requests, whatever they are, with
    /// `status` and a GitHub-style JSON message (`403` and `429` as a rate
    /// limit, with `x-ratelimit-remaining: 0` and `retry-after: 1`).
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code.
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state).log.fail_next(status, times);
    }

    /// Every API request so far (the latest [`REQUEST_LOG_CAPACITY`]), in
    /// arrival order, including failed and rejected ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).log.requests.iter().cloned().collect()
    }

    /// Every delivery so far (the latest [`REQUEST_LOG_CAPACITY`]).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.state).log.deliveries.iter().cloned().collect()
    }

    /// The hooks of repository `owner/repo` or organization `org` (a name
    /// with a `/` is a repository), by id; empty if it does not exist.
    pub fn hooks(&self, repo_or_org: &str) -> Vec<Hook> {
        lock(&self.state)
            .targets
            .get(&github_key(repo_or_org))
            .map(|t| t.hooks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The delivery [`Self::deliver`] would send, to tamper with.
    ///
    /// # Panics
    /// If there is no hook `hook_id` on `repo_or_org`.
    pub fn delivery_request(
        &self,
        repo_or_org: &str,
        hook_id: u64,
        event: &str,
        payload: &Value,
    ) -> DeliveryRequest {
        let state = lock(&self.state);
        let (target, hook) = github_hook(&state, repo_or_org, hook_id);
        github_delivery(target, hook, event, payload)
    }

    /// Deliver `event` with `payload` to hook `hook_id` as GitHub does: POST
    /// to its `config.url` with the `X-GitHub-*` headers and, when the hook
    /// has a secret, `X-Hub-Signature-256`; a `form` hook gets the JSON as
    /// the `payload` form field. Like GitHub, an inactive hook and an event
    /// the hook does not subscribe to (other than `ping`) are not delivered
    /// (status `0`).
    ///
    /// # Panics
    /// If there is no hook `hook_id` on `repo_or_org`.
    pub async fn deliver(
        &self,
        repo_or_org: &str,
        hook_id: u64,
        event: &str,
        payload: &Value,
    ) -> Delivered {
        let request = {
            let state = lock(&self.state);
            let (target, hook) = github_hook(&state, repo_or_org, hook_id);
            if !hook.active {
                return not_delivered(format!("hook {hook_id} is inactive"));
            }
            let subscribed = event == "ping" || hook.events.iter().any(|e| e == "*" || e == event);
            if !subscribed {
                return not_delivered(format!("hook {hook_id} is not subscribed to {event}"));
            }
            github_delivery(target, hook, event, payload)
        };
        let delivered = request.send().await;
        lock(&self.state).log.delivered(hook_id, event, &delivered);
        delivered
    }
}

fn not_delivered(reason: String) -> Delivered {
    Delivered {
        status: 0,
        body: reason,
        delivery_id: String::new(),
    }
}

fn github_hook<'a>(
    state: &'a GhState,
    repo_or_org: &str,
    hook_id: u64,
) -> (&'a GhTarget, &'a Hook) {
    let target = state
        .targets
        .get(&github_key(repo_or_org))
        .unwrap_or_else(|| panic!("{repo_or_org:?} was not added to the fake GitHub"));
    let hook = target
        .hooks
        .get(&hook_id)
        .unwrap_or_else(|| panic!("no hook {hook_id} on {repo_or_org:?}"));
    (target, hook)
}

/// The POST GitHub makes for `event` to `hook`.
fn github_delivery(
    target: &GhTarget,
    hook: &Hook,
    event: &str,
    payload: &Value,
) -> DeliveryRequest {
    let json = serde_json::to_string(payload).expect("JSON values serialize");
    let (content_type, body) = if hook.content_type == "form" {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &json)
            .finish();
        ("application/x-www-form-urlencoded", form.into_bytes())
    } else {
        ("application/json", json.into_bytes())
    };
    let agent = uuid::Uuid::new_v4().simple().to_string();
    let mut headers = vec![
        ("Accept".to_owned(), "*/*".to_owned()),
        ("Content-Type".to_owned(), content_type.to_owned()),
        (
            "User-Agent".to_owned(),
            format!("GitHub-Hookshot/{}", &agent[..7]),
        ),
        ("X-GitHub-Event".to_owned(), event.to_owned()),
        (
            "X-GitHub-Delivery".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        ("X-GitHub-Hook-ID".to_owned(), hook.id.to_string()),
        (
            "X-GitHub-Hook-Installation-Target-Type".to_owned(),
            target.noun().to_owned(),
        ),
        (
            "X-GitHub-Hook-Installation-Target-ID".to_owned(),
            target.id.to_string(),
        ),
    ];
    if let Some(secret) = &hook.secret {
        headers.push((
            "X-Hub-Signature-256".to_owned(),
            sign_github(secret.as_bytes(), &body),
        ));
    }
    DeliveryRequest {
        url: hook.url.clone(),
        headers,
        body,
    }
}

fn github_error(status: StatusCode, message: &str) -> Answer {
    let response = json_answer(
        status,
        &json!({
            "message": message,
            "documentation_url": GITHUB_DOCS,
            "status": status.as_str(),
        }),
    );
    with_header(response, "x-github-media-type", "github.v3; format=json")
}

fn github_not_found() -> Answer {
    github_error(StatusCode::NOT_FOUND, "Not Found")
}

/// `422 Validation Failed` with one custom error on `Hook`.
fn github_invalid(message: &str) -> Answer {
    let response = json_answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "message": "Validation Failed",
            "errors": [{ "resource": "Hook", "code": "custom", "message": message }],
            "documentation_url": GITHUB_DOCS,
            "status": "422",
        }),
    );
    with_header(response, "x-github-media-type", "github.v3; format=json")
}

fn github_failure(status: StatusCode) -> Answer {
    match status.as_u16() {
        403 | 429 => {
            let response = github_error(status, "API rate limit exceeded for user ID 1.");
            let response = with_header(response, "x-ratelimit-remaining", "0");
            let reset = (chrono::Utc::now().timestamp() + 1).to_string();
            let response = with_header(response, "x-ratelimit-reset", &reset);
            with_header(response, "retry-after", "1")
        }
        _ => {
            let message = status.canonical_reason().unwrap_or("Server Error");
            let response = github_error(status, message);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                with_header(response, "retry-after", "1")
            } else {
                response
            }
        }
    }
}

fn github_ok(status: StatusCode, value: &Value) -> Answer {
    let response = json_answer(status, value);
    let response = with_header(response, "x-github-media-type", "github.v3; format=json");
    let response = with_header(response, "x-github-api-version-selected", "2022-11-28");
    let response = with_header(response, "x-ratelimit-limit", "5000");
    with_header(response, "x-ratelimit-remaining", "4999")
}

/// What a GitHub API request addresses: the target key, then the hook.
#[derive(Debug)]
enum GhRoute {
    Hooks(String),
    Hook(String, u64),
    HookConfig(String, u64),
    Pings(String, u64),
}

fn github_route(segments: &[String]) -> Option<GhRoute> {
    let strs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (key, rest) = match strs.as_slice() {
        ["repos", owner, repo, "hooks", rest @ ..] if !owner.is_empty() && !repo.is_empty() => {
            (github_key(&format!("{owner}/{repo}")), rest)
        }
        ["orgs", org, "hooks", rest @ ..] if !org.is_empty() => (github_key(org), rest),
        _ => return None,
    };
    let id = |s: &str| s.parse::<u64>().ok();
    match rest {
        [] => Some(GhRoute::Hooks(key)),
        [hook] => Some(GhRoute::Hook(key, id(hook)?)),
        [hook, "config"] => Some(GhRoute::HookConfig(key, id(hook)?)),
        [hook, "pings"] => Some(GhRoute::Pings(key, id(hook)?)),
        _ => None,
    }
}

fn github_handle(shared: &Arc<Mutex<GhState>>, req: ApiRequest) -> Answer {
    let mut state = lock(shared);
    state.log.record(&req);
    if req.too_large {
        return github_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    }
    if let Some(status) = state.log.take_failure() {
        return github_failure(status);
    }
    let token = req
        .header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::trim);
    if token != Some(state.token.as_str()) {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(version) = req.header("x-github-api-version") {
        if chrono::NaiveDate::parse_from_str(version, "%Y-%m-%d").is_err() {
            return github_error(
                StatusCode::BAD_REQUEST,
                &format!("API version {version} is not supported."),
            );
        }
    }
    let Some(route) = req.segments().as_deref().and_then(github_route) else {
        return github_not_found();
    };
    let accept = req.header("accept").unwrap_or_default();
    if !(accept.contains("application/vnd.github") || accept.contains("application/json")) {
        return github_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Unsupported 'Accept' header: {accept:?}. Must accept 'application/json'."),
        );
    }
    let key = match &route {
        GhRoute::Hooks(k)
        | GhRoute::Hook(k, _)
        | GhRoute::HookConfig(k, _)
        | GhRoute::Pings(k, _) => k,
    };
    if !state.targets.contains_key(key) {
        return github_not_found();
    }
    let body = if matches!(req.method, Method::POST | Method::PATCH) {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => map,
            _ if req.body.is_empty() => Map::new(),
            _ => return github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    } else {
        Map::new()
    };
    let state = &mut *state;
    match (route, req.method) {
        (GhRoute::Hooks(key), Method::GET) => {
            let target = &state.targets[&key];
            let hooks: Vec<Value> = target
                .hooks
                .values()
                .map(|h| github_hook_json(&state.base, target, h))
                .collect();
            github_ok(StatusCode::OK, &Value::Array(hooks))
        }
        (GhRoute::Hooks(key), Method::POST) => github_create(shared, state, &key, &body),
        (GhRoute::Hook(key, id), method) => {
            let base = state.base.clone();
            let Some(target) = state.targets.get_mut(&key) else {
                return github_not_found();
            };
            if !target.hooks.contains_key(&id) {
                return github_not_found();
            }
            match method {
                Method::GET => github_ok(
                    StatusCode::OK,
                    &github_hook_json(&base, target, &target.hooks[&id]),
                ),
                Method::PATCH => github_update(&base, target, id, &body),
                Method::DELETE => {
                    target.hooks.remove(&id);
                    no_content()
                }
                _ => github_not_found(),
            }
        }
        (GhRoute::HookConfig(key, id), method) => {
            let Some(hook) = state
                .targets
                .get_mut(&key)
                .and_then(|t| t.hooks.get_mut(&id))
            else {
                return github_not_found();
            };
            match method {
                Method::GET => github_ok(StatusCode::OK, &github_config_json(hook)),
                Method::PATCH => {
                    let mut config = github_config_json(hook);
                    if let Some(secret) = &hook.secret {
                        config["secret"] = json!(secret);
                    }
                    if let Some(obj) = config.as_object_mut() {
                        obj.extend(body);
                    }
                    match parse_github_config(&config) {
                        Ok(parsed) => {
                            parsed.apply(hook);
                            hook.updated_at = now_github();
                            github_ok(StatusCode::OK, &github_config_json(hook))
                        }
                        Err(message) => github_invalid(&message),
                    }
                }
                _ => github_not_found(),
            }
        }
        (GhRoute::Pings(key, id), Method::POST) => {
            let Some(target) = state.targets.get(&key) else {
                return github_not_found();
            };
            let Some(hook) = target.hooks.get(&id) else {
                return github_not_found();
            };
            spawn_ping(shared, &state.base, target, hook);
            no_content()
        }
        _ => github_not_found(),
    }
}

/// A validated GitHub hook `config`.
#[derive(Debug)]
struct GhConfig {
    url: String,
    content_type: String,
    insecure_ssl: String,
    secret: Option<String>,
}

impl GhConfig {
    fn apply(self, hook: &mut Hook) {
        hook.url = self.url;
        hook.content_type = self.content_type;
        hook.insecure_ssl = self.insecure_ssl;
        hook.secret = self.secret;
    }
}

fn parse_github_config(config: &Value) -> Result<GhConfig, String> {
    let Some(config) = config.as_object() else {
        return Err("config must be an object".into());
    };
    let url = match config.get("url") {
        Some(Value::String(url)) if !url.is_empty() => url.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err("Config must contain URL for webhooks".into())
        }
        Some(other) => return Err(format!("config.url must be a string, not {other}")),
    };
    if let Err(why) = check_hook_url(&url) {
        return Err(format!("config.url {why}: {url:?}"));
    }
    let content_type = match config.get("content_type") {
        None | Some(Value::Null) => "form".to_owned(),
        Some(Value::String(t)) if t == "json" || t == "form" => t.clone(),
        Some(other) => {
            return Err(format!(
                "config.content_type must be json or form, not {other}"
            ))
        }
    };
    let insecure_ssl = match config.get("insecure_ssl") {
        None | Some(Value::Null) => "0".to_owned(),
        Some(Value::String(s)) if s == "0" || s == "1" => s.clone(),
        Some(Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "config.insecure_ssl must be \"0\" or \"1\", not {other}"
            ))
        }
    };
    let secret = match config.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("config.secret must be a string, not {other}")),
    };
    Ok(GhConfig {
        url,
        content_type,
        insecure_ssl,
        secret,
    })
}

/// A list of known event names (deduplicated, in order).
fn parse_github_events(field: &str, value: &Value) -> Result<Vec<String>, String> {
    let Some(items) = value.as_array() else {
        return Err(format!(
            "Invalid request. For 'properties/{field}', {value} is not an array."
        ));
    };
    let mut events = Vec::new();
    for item in items {
        let Some(name) = item.as_str() else {
            return Err(format!(
                "Invalid request. For 'items', {item} is not a string."
            ));
        };
        if !GITHUB_EVENTS.contains(&name) {
            return Err(format!("Invalid event: {name:?}"));
        }
        if !events.iter().any(|e: &String| e == name) {
            events.push(name.to_owned());
        }
    }
    Ok(events)
}

fn parse_github_active(body: &Map<String, Value>) -> Result<Option<bool>, String> {
    match body.get("active") {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "Invalid request. For 'properties/active', {other} is not a boolean."
        )),
    }
}

fn github_create(
    shared: &Arc<Mutex<GhState>>,
    state: &mut GhState,
    key: &str,
    body: &Map<String, Value>,
) -> Answer {
    match body.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if name == "web" => {}
        Some(other) => {
            return github_invalid(&format!("Invalid hook name {other}: must be \"web\""))
        }
    }
    let Some(config) = body.get("config") else {
        return github_invalid("Config must contain URL for webhooks");
    };
    let config = match parse_github_config(config) {
        Ok(config) => config,
        Err(message) => return github_invalid(&message),
    };
    let events = match body.get("events") {
        None | Some(Value::Null) => vec!["push".to_owned()],
        Some(value) => match parse_github_events("events", value) {
            Ok(events) if events.is_empty() => return github_invalid("Events must not be empty"),
            Ok(events) => events,
            Err(message) => return github_invalid(&message),
        },
    };
    let active = match parse_github_active(body) {
        Ok(active) => active.unwrap_or(true),
        Err(message) => return github_invalid(&message),
    };
    let Some(target) = state.targets.get_mut(key) else {
        return github_not_found();
    };
    if target.hooks.values().any(|h| h.url == config.url) {
        return github_invalid(&format!("Hook already exists on this {}", target.noun()));
    }
    let id = state.next_hook;
    state.next_hook += 1;
    let now = now_github();
    let mut hook = Hook {
        id,
        target: target.kind,
        active,
        events,
        url: String::new(),
        content_type: String::new(),
        insecure_ssl: String::new(),
        secret: None,
        created_at: now.clone(),
        updated_at: now,
    };
    config.apply(&mut hook);
    let answer = github_ok(
        StatusCode::CREATED,
        &github_hook_json(&state.base, target, &hook),
    );
    let location = format!("{}{}/hooks/{id}", state.base, target.api_path());
    if state.ping_on_create && hook.active {
        spawn_ping(shared, &state.base, target, &hook);
    }
    target.hooks.insert(id, hook);
    with_header(answer, "location", &location)
}

fn github_update(base: &str, target: &mut GhTarget, id: u64, body: &Map<String, Value>) -> Answer {
    // GitHub replaces the whole config (a secret not sent again is removed).
    let config = match body.get("config") {
        None | Some(Value::Null) => None,
        Some(config) => match parse_github_config(config) {
            Ok(config) => Some(config),
            Err(message) => return github_invalid(&message),
        },
    };
    let mut lists = Vec::new();
    for field in ["events", "add_events", "remove_events"] {
        match body.get(field) {
            None | Some(Value::Null) => lists.push(None),
            Some(value) => match parse_github_events(field, value) {
                Ok(events) => lists.push(Some(events)),
                Err(message) => return github_invalid(&message),
            },
        }
    }
    let active = match parse_github_active(body) {
        Ok(active) => active,
        Err(message) => return github_invalid(&message),
    };
    if let Some(config) = &config {
        if target
            .hooks
            .values()
            .any(|h| h.id != id && h.url == config.url)
        {
            return github_invalid(&format!("Hook already exists on this {}", target.noun()));
        }
    }
    let Some(hook) = target.hooks.get_mut(&id) else {
        return github_not_found();
    };
    let mut events = hook.events.clone();
    let mut lists = lists.into_iter();
    if let Some(Some(replace)) = lists.next() {
        events = replace;
    }
    if let Some(Some(add)) = lists.next() {
        for e in add {
            if !events.contains(&e) {
                events.push(e);
            }
        }
    }
    if let Some(Some(remove)) = lists.next() {
        events.retain(|e| !remove.contains(e));
    }
    if events.is_empty() {
        return github_invalid("Events must not be empty");
    }
    hook.events = events;
    if let Some(config) = config {
        config.apply(hook);
    }
    if let Some(active) = active {
        hook.active = active;
    }
    hook.updated_at = now_github();
    let hook = hook.clone();
    github_ok(StatusCode::OK, &github_hook_json(base, target, &hook))
}

fn github_config_json(hook: &Hook) -> Value {
    let mut config = json!({
        "content_type": hook.content_type,
        "insecure_ssl": hook.insecure_ssl,
        "url": hook.url,
    });
    if hook.secret.is_some() {
        config["secret"] = json!("********");
    }
    config
}

fn github_hook_json(base: &str, target: &GhTarget, hook: &Hook) -> Value {
    let api = format!("{base}{}/hooks/{}", target.api_path(), hook.id);
    let kind = match target.kind {
        HookTarget::Repository => "Repository",
        HookTarget::Organization => "Organization",
    };
    let mut value = json!({
        "type": kind,
        "id": hook.id,
        "name": "web",
        "active": hook.active,
        "events": hook.events,
        "config": github_config_json(hook),
        "updated_at": hook.updated_at,
        "created_at": hook.created_at,
        "url": api,
        "ping_url": format!("{api}/pings"),
        "deliveries_url": format!("{api}/deliveries"),
        "last_response": { "code": null, "status": "unused", "message": null },
    });
    if target.kind == HookTarget::Repository {
        value["test_url"] = json!(format!("{api}/test"));
    }
    value
}

/// Deliver a `ping` for `hook` in the background (recorded in the
/// delivery log).
fn spawn_ping(shared: &Arc<Mutex<GhState>>, base: &str, target: &GhTarget, hook: &Hook) {
    let mut payload = github_ping_payload(hook.id);
    payload["hook"] = github_hook_json(base, target, hook);
    match target.kind {
        HookTarget::Repository => payload["repository"] = github_repository(&target.name),
        HookTarget::Organization => {
            payload["organization"] = json!({
                "login": target.name,
                "id": target.id,
                "url": format!("https://api.github.com/orgs/{}", target.name),
            });
        }
    }
    payload["sender"] = github_sender();
    let request = github_delivery(target, hook, "ping", &payload);
    let (shared, hook_id) = (shared.clone(), hook.id);
    tokio::spawn(async move {
        let delivered = request.send().await;
        lock(&shared).log.delivered(hook_id, "ping", &delivered);
    });
}

// ---------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------

/// A GitLab project hook as the fake stores it (with the real token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabHook {
    pub id: u64,
    pub project_id: u64,
    pub url: String,
    /// The secret token, sent back as `X-Gitlab-Token`.
    pub token: Option<String>,
    pub push_events: bool,
    pub tag_push_events: bool,
    pub issues_events: bool,
    pub confidential_issues_events: bool,
    pub merge_requests_events: bool,
    pub note_events: bool,
    pub confidential_note_events: bool,
    pub job_events: bool,
    pub pipeline_events: bool,
    pub wiki_page_events: bool,
    pub deployment_events: bool,
    pub releases_events: bool,
    pub enable_ssl_verification: bool,
    pub push_events_branch_filter: Option<String>,
    pub created_at: String,
}

impl GitLabHook {
    /// Boolean attribute `name` (`push_events`, ...), `None` if unknown.
    pub fn flag(&self, name: &str) -> Option<bool> {
        Some(match name {
            "push_events" => self.push_events,
            "tag_push_events" => self.tag_push_events,
            "issues_events" => self.issues_events,
            "confidential_issues_events" => self.confidential_issues_events,
            "merge_requests_events" => self.merge_requests_events,
            "note_events" => self.note_events,
            "confidential_note_events" => self.confidential_note_events,
            "job_events" => self.job_events,
            "pipeline_events" => self.pipeline_events,
            "wiki_page_events" => self.wiki_page_events,
            "deployment_events" => self.deployment_events,
            "releases_events" => self.releases_events,
            "enable_ssl_verification" => self.enable_ssl_verification,
            _ => return None,
        })
    }

    fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "push_events" => &mut self.push_events,
            "tag_push_events" => &mut self.tag_push_events,
            "issues_events" => &mut self.issues_events,
            "confidential_issues_events" => &mut self.confidential_issues_events,
            "merge_requests_events" => &mut self.merge_requests_events,
            "note_events" => &mut self.note_events,
            "confidential_note_events" => &mut self.confidential_note_events,
            "job_events" => &mut self.job_events,
            "pipeline_events" => &mut self.pipeline_events,
            "wiki_page_events" => &mut self.wiki_page_events,
            "deployment_events" => &mut self.deployment_events,
            "releases_events" => &mut self.releases_events,
            "enable_ssl_verification" => &mut self.enable_ssl_verification,
            _ => return None,
        })
    }

    fn new(id: u64, project_id: u64) -> GitLabHook {
        let mut hook = GitLabHook {
            id,
            project_id,
            url: String::new(),
            token: None,
            push_events: false,
            tag_push_events: false,
            issues_events: false,
            confidential_issues_events: false,
            merge_requests_events: false,
            note_events: false,
            confidential_note_events: false,
            job_events: false,
            pipeline_events: false,
            wiki_page_events: false,
            deployment_events: false,
            releases_events: false,
            enable_ssl_verification: false,
            push_events_branch_filter: None,
            created_at: now_gitlab(),
        };
        for (name, default) in GITLAB_FLAGS {
            if let Some(flag) = hook.flag_mut(name) {
                *flag = *default;
            }
        }
        hook
    }

    fn to_json(&self) -> Value {
        let mut value = json!({
            "id": self.id,
            "url": self.url,
            "project_id": self.project_id,
            "push_events_branch_filter": self.push_events_branch_filter,
            "created_at": self.created_at,
            "alert_status": "executable",
            "disabled_until": null,
            "url_variables": [],
            "repository_update_events": false,
        });
        for (name, _) in GITLAB_FLAGS {
            value[*name] = json!(self.flag(name).unwrap_or_default());
        }
        value
    }
}

#[derive(Debug)]
struct GlProject {
    path: String,
    hooks: BTreeMap<u64, GitLabHook>,
}

#[derive(Debug)]
struct GlState {
    token: String,
    instance: String,
    projects: BTreeMap<u64, GlProject>,
    next_hook: u64,
    log: Log,
}

impl GlState {
    /// A project by numeric id or by (case-insensitive) path.
    fn project_id(&self, id_or_path: &str) -> Option<u64> {
        if let Ok(id) = id_or_path.parse::<u64>() {
            return self.projects.contains_key(&id).then_some(id);
        }
        self.projects
            .iter()
            .find(|(_, p)| p.path.eq_ignore_ascii_case(id_or_path))
            .map(|(id, _)| *id)
    }
}

/// A fake GitLab instance (the project webhooks API); stops when dropped.
#[derive(Debug)]
pub struct FakeGitLab {
    server: Server,
    state: Arc<Mutex<GlState>>,
}

impl FakeGitLab {
    /// Bind 127.0.0.1 on a free port and serve; requests must carry
    /// `PRIVATE-TOKEN: <token>` (or `Authorization: Bearer <token>`). No
    /// project exists until added.
    pub async fn start(token: &str) -> FakeGitLab {
        let state = Arc::new(Mutex::new(GlState {
            token: token.to_owned(),
            instance: String::new(),
            projects: BTreeMap::new(),
            next_hook: 1,
            log: Log::default(),
        }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |req| gitlab_handle(&shared, req));
        let server = Server::start("GitLab", handler).await;
        lock(&state).instance = format!("http://{}", server.addr);
        FakeGitLab { server, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The instance URL, `http://127.0.0.1:PORT` (no trailing slash); the
    /// API is under `/api/v4`, a project's URL is `<url>/<group>/<project>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// `<url>/<path>`, the project's web URL (a GitLabSource's
    /// `projectUrl`).
    pub fn project_url(&self, path: &str) -> String {
        format!("{}/{path}", self.url())
    }

    /// Make project `group/project` (groups may nest) exist; its numeric id
    /// (stable: the id [`gitlab_push_payload`] puts in `project.id`).
    /// Adding it again returns the same id.
    pub fn add_project(&self, path: &str) -> u64 {
        assert!(
            path.contains('/') && !path.split('/').any(str::is_empty),
            "a project is group/project, not {path:?}"
        );
        let mut state = lock(&self.state);
        if let Some(id) = state.project_id(path) {
            return id;
        }
        let mut id = gitlab_project_id(path);
        while state.projects.contains_key(&id) {
            id += 1;
        }
        state.projects.insert(
            id,
            GlProject {
                path: path.to_owned(),
                hooks: BTreeMap::new(),
            },
        );
        id
    }

    /// Answer the next `times` API requests, whatever they are, with
    /// `status` and a GitLab-style JSON message (`Retry-After: 1` on `429`
    /// and `503`).
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code.
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state).log.fail_next(status, times);
    }

    /// Every API request so far (the latest [`REQUEST_LOG_CAPACITY`]), in
    /// arrival order, including failed and rejected ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).log.requests.iter().cloned().collect()
    }

    /// Every delivery so far (the latest [`REQUEST_LOG_CAPACITY`]).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.state).log.deliveries.iter().cloned().collect()
    }

    /// The hooks of `project` (numeric id or path), by id; empty if it does
    /// not exist.
    pub fn hooks(&self, project: &str) -> Vec<GitLabHook> {
        let state = lock(&self.state);
        state
            .project_id(project)
            .and_then(|id| state.projects.get(&id))
            .map(|p| p.hooks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The delivery [`Self::deliver`] would send, to tamper with.
    ///
    /// # Panics
    /// If there is no hook `hook_id` on `project`.
    pub fn delivery_request(
        &self,
        project: &str,
        hook_id: u64,
        event_header: &str,
        payload: &Value,
    ) -> DeliveryRequest {
        let state = lock(&self.state);
        gitlab_delivery(
            &state.instance,
            gitlab_hook(&state, project, hook_id),
            event_header,
            payload,
        )
    }

    /// Deliver `payload` to hook `hook_id` of `project` as GitLab does: POST
    /// to its URL with `X-Gitlab-Event: <event_header>` ("Push Hook", "Issue
    /// Hook", ...), `X-Gitlab-Token` when the hook has a token, and the
    /// `X-Gitlab-Event-UUID`, `X-Gitlab-Webhook-UUID` and `X-Gitlab-Instance`
    /// headers. Like GitLab, a known event header whose flag is off on the
    /// hook (`Issue Hook` with `issues_events: false`) is not delivered
    /// (status `0`). `push_events_branch_filter` is not applied.
    ///
    /// # Panics
    /// If there is no hook `hook_id` on `project`.
    pub async fn deliver(
        &self,
        project: &str,
        hook_id: u64,
        event_header: &str,
        payload: &Value,
    ) -> Delivered {
        let request = {
            let state = lock(&self.state);
            let hook = gitlab_hook(&state, project, hook_id);
            let flag = GITLAB_EVENT_HEADERS
                .iter()
                .find(|(header, _)| *header == event_header)
                .and_then(|(_, flag)| hook.flag(flag));
            if flag == Some(false) {
                return not_delivered(format!(
                    "hook {hook_id} is not subscribed to {event_header}"
                ));
            }
            gitlab_delivery(&state.instance, hook, event_header, payload)
        };
        let delivered = request.send().await;
        lock(&self.state)
            .log
            .delivered(hook_id, event_header, &delivered);
        delivered
    }
}

fn gitlab_hook<'a>(state: &'a GlState, project: &str, hook_id: u64) -> &'a GitLabHook {
    state
        .project_id(project)
        .and_then(|id| state.projects.get(&id))
        .unwrap_or_else(|| panic!("project {project:?} was not added to the fake GitLab"))
        .hooks
        .get(&hook_id)
        .unwrap_or_else(|| panic!("no hook {hook_id} on project {project:?}"))
}

fn gitlab_delivery(
    instance: &str,
    hook: &GitLabHook,
    event_header: &str,
    payload: &Value,
) -> DeliveryRequest {
    let body = serde_json::to_vec(payload).expect("JSON values serialize");
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), "GitLab/17.0.0".to_owned()),
        ("X-Gitlab-Event".to_owned(), event_header.to_owned()),
        (
            "X-Gitlab-Event-UUID".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        (
            "X-Gitlab-Webhook-UUID".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        ("X-Gitlab-Instance".to_owned(), instance.to_owned()),
    ];
    if let Some(token) = &hook.token {
        headers.push(("X-Gitlab-Token".to_owned(), token.clone()));
    }
    DeliveryRequest {
        url: hook.url.clone(),
        headers,
        body,
    }
}

fn gitlab_message(status: StatusCode, message: Value) -> Answer {
    json_answer(status, &json!({ "message": message }))
}

fn gitlab_failure(status: StatusCode) -> Answer {
    let reason = status.canonical_reason().unwrap_or("Error");
    let response = gitlab_message(status, json!(format!("{} {reason}", status.as_u16())));
    if matches!(status.as_u16(), 429 | 503) {
        with_header(response, "retry-after", "1")
    } else {
        response
    }
}

/// A rejected GitLab request: status and JSON body (small, unlike an
/// [`Answer`]).
#[derive(Debug)]
struct GlReject(StatusCode, Value);

impl GlReject {
    /// Grape's `400` for a bad parameter: `{"error":"<what>"}`.
    fn bad_request(error: &str) -> GlReject {
        GlReject(StatusCode::BAD_REQUEST, json!({ "error": error }))
    }

    fn answer(self) -> Answer {
        json_answer(self.0, &self.1)
    }
}

fn gitlab_hook_not_found() -> Answer {
    gitlab_message(StatusCode::NOT_FOUND, json!("404 Not found"))
}

/// Grape's Boolean coercion.
fn gitlab_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" | "y" => Some(true),
            "false" | "0" | "f" | "no" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Debug)]
enum GlRoute {
    Hooks(String),
    Hook(String, String),
}

fn gitlab_route(segments: &[String]) -> Option<GlRoute> {
    let strs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["api", "v4", "projects", project, "hooks"] => Some(GlRoute::Hooks((*project).to_owned())),
        ["api", "v4", "projects", project, "hooks", hook] => {
            Some(GlRoute::Hook((*project).to_owned(), (*hook).to_owned()))
        }
        _ => None,
    }
}

/// The parameters of a POST or PUT: the JSON object or form fields of the
/// body, and the query parameters (as Grape merges them).
fn gitlab_params(req: &ApiRequest) -> Result<Map<String, Value>, GlReject> {
    let mut params = Map::new();
    for (k, v) in url::form_urlencoded::parse(req.query.as_bytes()) {
        params.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    let content_type = req.header("content-type").unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    } else if !req.body.is_empty() {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => params.extend(map),
            _ => {
                return Err(GlReject::bad_request(
                    "The provided content-type is not supported or the body is not valid JSON",
                ))
            }
        }
    }
    Ok(params)
}

/// Validated hook attributes of a POST or PUT.
#[derive(Debug)]
struct GlHookParams {
    url: String,
    /// `Some(None)`: sent as null.
    token: Option<Option<String>>,
    flags: Vec<(&'static str, bool)>,
    branch_filter: Option<Option<String>>,
}

fn parse_gitlab_hook(params: &Map<String, Value>) -> Result<GlHookParams, GlReject> {
    let url = match params.get("url") {
        None | Some(Value::Null) => return Err(GlReject::bad_request("url is missing")),
        Some(Value::String(url)) if url.is_empty() => {
            return Err(GlReject::bad_request("url is empty"))
        }
        Some(Value::String(url)) => url.clone(),
        Some(_) => return Err(GlReject::bad_request("url is invalid")),
    };
    let optional_string = |name: &str| match params.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(GlReject::bad_request(&format!("{name} is invalid"))),
    };
    let token = optional_string("token")?;
    let branch_filter = optional_string("push_events_branch_filter")?;
    let mut flags = Vec::new();
    for (name, _) in GITLAB_FLAGS {
        if let Some(value) = params.get(*name) {
            match gitlab_bool(value) {
                Some(b) => flags.push((*name, b)),
                None => return Err(GlReject::bad_request(&format!("{name} is invalid"))),
            }
        }
    }
    if let Err(why) = check_hook_url(&url) {
        let why = match why {
            "must use http or https" => "is blocked: Only allowed schemes are http, https",
            _ => "is blocked: URI is invalid",
        };
        return Err(GlReject(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "message": { "url": [why] } }),
        ));
    }
    Ok(GlHookParams {
        url,
        token,
        flags,
        branch_filter,
    })
}

impl GlHookParams {
    fn apply(self, hook: &mut GitLabHook) {
        // GitLab drops the token when the URL changes and no token is sent.
        if hook.url != self.url && self.token.is_none() {
            hook.token = None;
        }
        hook.url = self.url;
        if let Some(token) = self.token {
            hook.token = token.filter(|t| !t.is_empty());
        }
        if let Some(filter) = self.branch_filter {
            hook.push_events_branch_filter = filter.filter(|f| !f.is_empty());
        }
        for (name, value) in self.flags {
            if let Some(flag) = hook.flag_mut(name) {
                *flag = value;
            }
        }
    }
}

fn gitlab_handle(shared: &Arc<Mutex<GlState>>, req: ApiRequest) -> Answer {
    let mut state = lock(shared);
    state.log.record(&req);
    if req.too_large {
        return gitlab_message(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!("413 Request Entity Too Large"),
        );
    }
    if let Some(status) = state.log.take_failure() {
        return gitlab_failure(status);
    }
    let token = req.header("private-token").map(str::trim).or_else(|| {
        req.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    });
    if token != Some(state.token.as_str()) {
        return gitlab_message(StatusCode::UNAUTHORIZED, json!("401 Unauthorized"));
    }
    let Some(route) = req.segments().as_deref().and_then(gitlab_route) else {
        return json_answer(StatusCode::NOT_FOUND, &json!({ "error": "404 Not Found" }));
    };
    let project = match &route {
        GlRoute::Hooks(p) | GlRoute::Hook(p, _) => p,
    };
    let Some(project_id) = state.project_id(project) else {
        return gitlab_message(StatusCode::NOT_FOUND, json!("404 Project Not Found"));
    };
    let state = &mut *state;
    let next_hook = &mut state.next_hook;
    let Some(project) = state.projects.get_mut(&project_id) else {
        return gitlab_message(StatusCode::NOT_FOUND, json!("404 Project Not Found"));
    };
    match (route, req.method.clone()) {
        (GlRoute::Hooks(_), Method::GET) => {
            let hooks: Vec<Value> = project.hooks.values().map(GitLabHook::to_json).collect();
            json_answer(StatusCode::OK, &Value::Array(hooks))
        }
        (GlRoute::Hooks(_), Method::POST) => {
            let params = match gitlab_params(&req).and_then(|p| parse_gitlab_hook(&p)) {
                Ok(params) => params,
                Err(reject) => return reject.answer(),
            };
            let mut hook = GitLabHook::new(*next_hook, project_id);
            *next_hook += 1;
            params.apply(&mut hook);
            let answer = json_answer(StatusCode::CREATED, &hook.to_json());
            project.hooks.insert(hook.id, hook);
            answer
        }
        (GlRoute::Hook(_, hook_id), method) => {
            let Ok(hook_id) = hook_id.parse::<u64>() else {
                return GlReject::bad_request("hook_id is invalid").answer();
            };
            if !project.hooks.contains_key(&hook_id) {
                return gitlab_hook_not_found();
            }
            match method {
                Method::GET => json_answer(StatusCode::OK, &project.hooks[&hook_id].to_json()),
                Method::PUT => {
                    let params = match gitlab_params(&req).and_then(|p| parse_gitlab_hook(&p)) {
                        Ok(params) => params,
                        Err(reject) => return reject.answer(),
                    };
                    let Some(hook) = project.hooks.get_mut(&hook_id) else {
                        return gitlab_hook_not_found();
                    };
                    params.apply(hook);
                    json_answer(StatusCode::OK, &hook.to_json())
                }
                Method::DELETE => {
                    project.hooks.remove(&hook_id);
                    no_content()
                }
                _ => json_answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({ "error": "405 Not Allowed" }),
                ),
            }
        }
        _ => json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "405 Not Allowed" }),
        ),
    }
}

// ---------------------------------------------------------------------------
// Sample payloads
// ---------------------------------------------------------------------------

fn github_sender() -> Value {
    json!({
        "login": "octocat",
        "id": 583231,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "type": "User",
        "site_admin": false,
        "html_url": "https://github.com/octocat",
        "url": "https://api.github.com/users/octocat",
    })
}

/// The `repository` object of GitHub payloads for `owner/repo`; its `id` is
/// the one [`FakeGitHub::add_repo`] gives the repository.
fn github_repository(repo: &str) -> Value {
    let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
    json!({
        "id": stable_id(repo, 100_000_000, 900_000_000),
        "node_id": "R_kgDOAAAAAA",
        "name": name,
        "full_name": repo,
        "private": false,
        "owner": {
            "login": owner,
            "id": stable_id(owner, 100_000_000, 900_000_000),
            "type": "User",
            "html_url": format!("https://github.com/{owner}"),
        },
        "html_url": format!("https://github.com/{repo}"),
        "url": format!("https://api.github.com/repos/{repo}"),
        "clone_url": format!("https://github.com/{repo}.git"),
        "ssh_url": format!("git@github.com:{repo}.git"),
        "default_branch": "main",
        "fork": false,
    })
}

/// A GitHub `push` payload for `owner/repo`: one commit to `main`.
pub fn github_push_payload(repo: &str) -> Value {
    let (before, after) = (random_sha(), random_sha());
    let commit = json!({
        "id": after,
        "tree_id": random_sha(),
        "distinct": true,
        "message": "Update README.md",
        "timestamp": now_github(),
        "url": format!("https://github.com/{repo}/commit/{after}"),
        "author": { "name": "Mona Octocat", "email": "octocat@github.com", "username": "octocat" },
        "committer": { "name": "GitHub", "email": "noreply@github.com", "username": "web-flow" },
        "added": [],
        "removed": [],
        "modified": ["README.md"],
    });
    json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{repo}/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [commit.clone()],
        "head_commit": commit,
        "repository": github_repository(repo),
        "pusher": { "name": "octocat", "email": "octocat@github.com" },
        "sender": github_sender(),
    })
}

/// A GitHub `issues` payload (`action: opened`) for issue `number` of
/// `owner/repo`.
pub fn github_issues_payload(repo: &str, number: u64) -> Value {
    let now = now_github();
    json!({
        "action": "opened",
        "issue": {
            "id": stable_id(&format!("{repo}#{number}"), 1_000_000_000, 1_000_000_000),
            "node_id": "I_kwDOAAAAAA",
            "number": number,
            "title": "Found a bug",
            "body": "I'm having a problem with this.",
            "state": "open",
            "locked": false,
            "user": github_sender(),
            "labels": [],
            "assignees": [],
            "comments": 0,
            "html_url": format!("https://github.com/{repo}/issues/{number}"),
            "url": format!("https://api.github.com/repos/{repo}/issues/{number}"),
            "created_at": now,
            "updated_at": now,
            "closed_at": null,
            "author_association": "OWNER",
        },
        "repository": github_repository(repo),
        "sender": github_sender(),
    })
}

/// A GitHub `ping` payload for hook `hook_id` (a repository hook on `push`).
pub fn github_ping_payload(hook_id: u64) -> Value {
    json!({
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "type": "Repository",
            "id": hook_id,
            "name": "web",
            "active": true,
            "events": ["push"],
            "config": { "content_type": "json", "insecure_ssl": "0", "url": "" },
        },
    })
}

/// The id [`FakeGitLab::add_project`] gives `path` (unless taken).
fn gitlab_project_id(path: &str) -> u64 {
    stable_id(path, 1_000, 9_000_000)
}

/// `project` and `repository` objects of GitLab payloads for the project at
/// `project_url` (`http://host/group/project`).
fn gitlab_project(project_url: &str) -> (Value, Value) {
    let url = project_url.trim_end_matches('/');
    let parsed = url::Url::parse(url).ok();
    let path = parsed
        .as_ref()
        .map(|u| u.path().trim_matches('/').to_owned())
        .unwrap_or_default();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
    let ssh = format!("git@{host}:{path}.git");
    let http = format!("{url}.git");
    let project = json!({
        "id": gitlab_project_id(&path),
        "name": name,
        "description": "",
        "web_url": url,
        "avatar_url": null,
        "git_ssh_url": ssh,
        "git_http_url": http,
        "namespace": namespace,
        "visibility_level": 0,
        "path_with_namespace": path,
        "default_branch": "main",
        "ci_config_path": null,
        "homepage": url,
        "url": ssh,
        "ssh_url": ssh,
        "http_url": http,
    });
    let repository = json!({
        "name": name,
        "url": ssh,
        "description": "",
        "homepage": url,
        "git_http_url": http,
        "git_ssh_url": ssh,
        "visibility_level": 0,
    });
    (project, repository)
}

fn gitlab_user() -> Value {
    json!({
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "avatar_url": "https://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=80&d=identicon",
        "email": "[REDACTED]",
    })
}

fn gitlab_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// A GitLab push payload (`X-Gitlab-Event: Push Hook`) for the project at
/// `project_url`: one commit to `main`.
pub fn gitlab_push_payload(project_url: &str) -> Value {
    let (project, repository) = gitlab_project(project_url);
    let web_url = project["web_url"].as_str().unwrap_or_default().to_owned();
    let (before, after) = (random_sha(), random_sha());
    json!({
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": "refs/heads/main",
        "ref_protected": true,
        "checkout_sha": after,
        "message": null,
        "user_id": 1,
        "user_name": "Administrator",
        "user_username": "root",
        "user_email": "",
        "user_avatar": "https://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=80&d=identicon",
        "project_id": project["id"],
        "project": project,
        "commits": [{
            "id": after,
            "message": "Update README.md\n",
            "title": "Update README.md",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "url": format!("{web_url}/-/commit/{after}"),
            "author": { "name": "Administrator", "email": "admin@example.com" },
            "added": [],
            "modified": ["README.md"],
            "removed": [],
        }],
        "total_commits_count": 1,
        "push_options": {},
        "repository": repository,
    })
}

/// A GitLab issue payload (`X-Gitlab-Event: Issue Hook`, action `open`)
/// for issue `iid` of the project at `project_url`.
pub fn gitlab_issue_payload(project_url: &str, iid: u64) -> Value {
    let (project, repository) = gitlab_project(project_url);
    let web_url = project["web_url"].as_str().unwrap_or_default().to_owned();
    let now = gitlab_time();
    json!({
        "object_kind": "issue",
        "event_type": "issue",
        "user": gitlab_user(),
        "project": project,
        "object_attributes": {
            "id": stable_id(&format!("{web_url}#{iid}"), 1_000, 9_000_000),
            "iid": iid,
            "title": "Found a bug",
            "description": "It does not work.",
            "state": "opened",
            "action": "open",
            "confidential": false,
            "author_id": 1,
            "project_id": project["id"],
            "url": format!("{web_url}/-/issues/{iid}"),
            "created_at": now,
            "updated_at": now,
            "labels": [],
        },
        "labels": [],
        "changes": {},
        "repository": repository,
    })
}

/// A GitLab merge request payload (`X-Gitlab-Event: Merge Request Hook`,
/// action `open`) for merge request `iid` of the project at `project_url`.
pub fn gitlab_merge_request_payload(project_url: &str, iid: u64) -> Value {
    let (project, repository) = gitlab_project(project_url);
    let web_url = project["web_url"].as_str().unwrap_or_default().to_owned();
    let now = gitlab_time();
    let sha = random_sha();
    json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": gitlab_user(),
        "project": project,
        "object_attributes": {
            "id": stable_id(&format!("{web_url}!{iid}"), 1_000, 9_000_000),
            "iid": iid,
            "title": "Fix the bug",
            "description": "Closes #1",
            "state": "opened",
            "action": "open",
            "merge_status": "unchecked",
            "source_branch": "fix-bug",
            "target_branch": "main",
            "source_project_id": project["id"],
            "target_project_id": project["id"],
            "author_id": 1,
            "url": format!("{web_url}/-/merge_requests/{iid}"),
            "created_at": now,
            "updated_at": now,
            "last_commit": {
                "id": sha,
                "message": "Fix the bug\n",
                "title": "Fix the bug",
                "url": format!("{web_url}/-/commit/{sha}"),
                "author": { "name": "Administrator", "email": "admin@example.com" },
            },
            "source": project,
            "target": project,
        },
        "labels": [],
        "changes": {},
        "repository": repository,
    })
}

//! The webhook receiver of GitHubSources and GitLabSources.
//!
//! One listener (`--webhook-listen`, default `0.0.0.0:8088`) serves every
//! webhook source at `/<namespace>/<name>`; the control plane registers
//! that URL (under its `--webhook-base-url`) with GitHub or GitLab.
//! Every adapter replica serves every webhook source (a delivery may reach
//! any of them through a Service); only non-webhook sources are split
//! between replicas.
//!
//! A delivery is checked by its kind's module ([`github`], [`gitlab`])
//! before anything is sent on: refused with 401 (signature or token), 400
//! (malformed), 413 (over `--max-webhook-bytes`, 25 MiB by default as
//! GitHub's own cap), 415. A forwarded event goes through the source's
//! queue to the delivery engine, and the answer waits for its final
//! outcome, up to `--webhook-response-timeout` (9 s, under GitHub's 10 s):
//!
//! | outcome | answer |
//! |---|---|
//! | the sink accepted it | 200 |
//! | dead-lettered after the retries | 202 (it is kept in the dead-letter sink) |
//! | failed for good, no dead-letter sink | 502: the sender may redeliver it |
//! | still being retried at the timeout | 202: delivery goes on in the adapter |
//! | the queue is full | 503 with `Retry-After` |
//!
//! So an event the sender saw answered 200 has reached the sink; after a
//! 202 at the timeout it is in the adapter's memory only, as with
//! Knative's adapters.

pub mod github;
pub mod gitlab;

use crate::queue::Queued;
use crate::runner::SourceState;
use crate::secrets::SecretStore;
use crate::secrets::SecretValue;
use bytes::Bytes;
use channel_core::backend::Outcome;
use channel_core::event::Event;
use channel_core::sources::github::GitHubSettings;
use channel_core::sources::gitlab::GitLabSettings;
use channel_core::sources::secret::SecretRef;
use channel_core::sources::{SourceContract, SourceSettings};
use dispatcher::admin::respond;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a missing secret token is read again.
const SECRET_RETRY: Duration = Duration::from_secs(5);

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

/// What to do with a verified delivery.
#[derive(Debug)]
pub enum Verdict {
    /// Send this event on.
    Forward(Box<Event>),
    /// Acknowledge, send nothing (why).
    Ignore(String),
    /// A GitHub `ping`: answer it.
    Pong,
}

/// The kind of webhook a route receives.
#[derive(Debug, Clone)]
pub enum Receiver {
    GitHub(GitHubSettings),
    GitLab(GitLabSettings),
}

impl Receiver {
    /// The receiver of a webhook source's settings.
    pub fn of(settings: &SourceSettings) -> Option<Receiver> {
        match settings {
            SourceSettings::GitHubSource(g) => Some(Receiver::GitHub((**g).clone())),
            SourceSettings::GitLabSource(g) => Some(Receiver::GitLab((**g).clone())),
            _ => None,
        }
    }

    fn secret_token(&self) -> &SecretRef {
        match self {
            Receiver::GitHub(g) => &g.secret_token,
            Receiver::GitLab(g) => &g.secret_token,
        }
    }
}

/// Serve a webhook source until `stop`: read its secret token (retried
/// every few seconds while it cannot be, the source marked failed), then
/// add its route. The runner removes the route when it stops the source.
pub async fn route(
    source: SourceContract,
    receiver: Receiver,
    secrets: SecretStore,
    routes: Routes,
    queue: mpsc::Sender<Queued>,
    state: Arc<SourceState>,
    stop: CancellationToken,
) {
    let secret = loop {
        match secrets.read(receiver.secret_token()).await {
            Ok(secret) => break secret,
            Err(e) => {
                tracing::warn!(source = %source.key(), kind = source.kind(), error = %e, "webhook source waits for its secret token");
                state.failed(format!("secret token: {e}"));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SECRET_RETRY) => {}
        }
    };
    if stop.is_cancelled() {
        return;
    }
    routes.insert(
        path(&source.namespace, &source.name),
        Route {
            key: source.key(),
            receiver,
            secret,
            extensions: source.extensions.clone(),
            queue,
            state: state.clone(),
        },
    );
    state.running();
}

/// One webhook source, as the listener serves it.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name`.
    pub key: String,
    pub receiver: Receiver,
    pub secret: SecretValue,
    /// `ceOverrides.extensions`.
    pub extensions: BTreeMap<String, String>,
    pub queue: mpsc::Sender<Queued>,
    pub state: Arc<SourceState>,
}

/// The routes of the listener, by path `/<namespace>/<name>`; the runner
/// adds and removes them as sources start and stop.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, Arc<Route>>>>);

/// The path a source is served at.
pub fn path(namespace: &str, name: &str) -> String {
    format!("/{namespace}/{name}")
}

impl Routes {
    pub fn insert(&self, path: String, route: Route) {
        if let Ok(mut routes) = self.0.write() {
            routes.insert(path, Arc::new(route));
        }
    }

    pub fn remove(&self, path: &str) {
        if let Ok(mut routes) = self.0.write() {
            routes.remove(path);
        }
    }

    fn get(&self, path: &str) -> Option<Arc<Route>> {
        self.0.read().ok().and_then(|r| r.get(path).cloned())
    }
}

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub response_timeout: Duration,
}

fn text(status: StatusCode, message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", message)
}

/// Serve one request.
pub async fn serve(
    routes: Routes,
    limits: Limits,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let Some(route) = routes.get(&path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no GitHubSource or GitLabSource is served at {path}\n"),
        );
    };
    if req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{}: webhook deliveries are POSTed\n", route.key),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let counters = &route.state.counters;
    let too_large = || {
        counters.rejected.inc();
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{}: the payload is larger than {} bytes\n",
                route.key, limits.max_body
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limits.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large()
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{}: cannot read the body: {e}\n", route.key),
            )
        }
    };
    let verdict = match &route.receiver {
        Receiver::GitHub(s) => {
            github::handle(s, route.secret.expose().as_bytes(), &parts.headers, &body)
        }
        Receiver::GitLab(s) => {
            gitlab::handle(s, route.secret.expose().as_bytes(), &parts.headers, &body)
        }
    };
    let mut event = match verdict {
        Err(r) => {
            counters.rejected.inc();
            tracing::warn!(source = %route.key, status = r.status.as_u16(), "webhook delivery refused: {}", r.message);
            return text(r.status, format!("{}: {}\n", route.key, r.message));
        }
        Ok(Verdict::Pong) => {
            counters.ignored.inc();
            return text(StatusCode::OK, "pong\n");
        }
        Ok(Verdict::Ignore(why)) => {
            counters.ignored.inc();
            tracing::debug!(source = %route.key, "webhook delivery ignored: {why}");
            return text(StatusCode::ACCEPTED, format!("ignored: {why}\n"));
        }
        Ok(Verdict::Forward(event)) => *event,
    };
    for (name, value) in &route.extensions {
        event = event.with_extension(name, value.as_str());
    }
    let id = event.id.clone();
    let (queued, outcome) = Queued::tracked(event);
    if route.queue.try_send(queued).is_err() {
        counters.dropped.inc();
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}: too many events waiting for the sink; retry later\n",
                route.key
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    match tokio::time::timeout(limits.response_timeout, outcome).await {
        Ok(Ok(Outcome::Delivered)) => text(StatusCode::OK, format!("delivered {id}\n")),
        Ok(Ok(Outcome::DeadLettered)) => text(
            StatusCode::ACCEPTED,
            format!("{id}: the sink did not accept it; kept in the dead-letter sink\n"),
        ),
        Ok(Ok(Outcome::Dropped)) => text(
            StatusCode::BAD_GATEWAY,
            format!("{id}: the sink did not accept it and there is no dead-letter sink\n"),
        ),
        Ok(Ok(Outcome::Abandoned)) | Ok(Err(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{id}: the source stopped before the event was delivered; redeliver it\n"),
        ),
        Err(_) => text(
            StatusCode::ACCEPTED,
            format!("{id}: accepted; delivery to the sink goes on\n"),
        ),
    }
}

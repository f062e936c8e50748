//! Ingress: where producers POST CloudEvents to a channel.
//!
//! A request is routed by the Knative channel host or by path, its body read
//! up to the configured maximum, decoded and validated as a CloudEvent (HTTP
//! binary or structured mode), and handed to the backend. `202 Accepted` is
//! answered only after the backend reports the event durable.
//!
//! | situation | status |
//! |---|---|
//! | stored | 202 |
//! | not a valid CloudEvent | 400, body says why |
//! | no such channel | 404 |
//! | method other than POST/OPTIONS | 405 with `Allow: POST, OPTIONS` |
//! | body above `--max-body-bytes` | 413 |
//! | channel buffer full (slow subscribers) | 429 with `Retry-After` |
//! | backend unavailable | 503 (with `Retry-After` when known) |
//!
//! `OPTIONS` answers the CloudEvents webhook validation handshake.

use crate::dataplane::RouteTable;
use arc_swap::ArcSwap;
use bytes::Bytes;
use channel_core::backend::{Backend, PersistErrorKind};
use channel_core::event::{decode_http, ExtensionValue};
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;

const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("POST, OPTIONS");

/// Shared state of the ingress handler.
#[derive(Debug, Clone)]
pub struct Ingress {
    routes: Arc<ArcSwap<RouteTable>>,
    backend: Arc<dyn Backend>,
    max_body_bytes: usize,
}

fn respond(status: StatusCode, message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(message.into()));
    *response.status_mut() = status;
    if !response.body().size_hint().exact().is_some_and(|n| n == 0) {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

use hyper::body::Body as _;

impl Ingress {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        backend: Arc<dyn Backend>,
        max_body_bytes: usize,
    ) -> Self {
        Ingress {
            routes,
            backend,
            max_body_bytes,
        }
    }

    /// Handle one request. Never fails: every outcome is a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match *req.method() {
            Method::POST => {}
            Method::OPTIONS => return self.options(&req),
            _ => {
                let mut response = respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "channels accept events with POST\n",
                );
                response.headers_mut().insert(ALLOW, ALLOWED_METHODS);
                return response;
            }
        }
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let routes = self.routes.load();
        let Some(route) = routes.lookup(host, req.uri().path()).cloned() else {
            return respond(
                StatusCode::NOT_FOUND,
                format!("no channel at {}\n", req.uri().path()),
            );
        };
        drop(routes);
        let response = self.accept(route.channel.clone(), req).await;
        route.metrics.received(response.status().as_u16());
        response
    }

    async fn accept<B>(
        &self,
        channel: Arc<channel_core::ChannelContract>,
        req: Request<B>,
    ) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let too_large = || {
            respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event body exceeds the maximum of {} bytes\n",
                    self.max_body_bytes
                ),
            )
        };
        if let Some(len) = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.max_body_bytes as u64 {
                return too_large();
            }
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return too_large();
                }
                return respond(
                    StatusCode::BAD_REQUEST,
                    format!("failed to read the request body: {e}\n"),
                );
            }
        };
        let mut event = match decode_http(&parts.headers, body) {
            Ok(event) => event,
            Err(e) => return respond(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        // W3C trace context arriving as HTTP headers travels on as the
        // distributed-tracing extension, so every hop can continue the trace.
        for name in ["traceparent", "tracestate"] {
            if !event.extensions.contains_key(name) {
                if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                    event
                        .extensions
                        .insert(name.to_owned(), ExtensionValue::String(value.to_owned()));
                }
            }
        }
        let id = tracing::field::debug(event.id.clone());
        match self.backend.persist(&channel, event).await {
            Ok(()) => respond(StatusCode::ACCEPTED, Bytes::new()),
            Err(e) => {
                let (status, default_retry) = match e.kind {
                    PersistErrorKind::Full => (StatusCode::TOO_MANY_REQUESTS, Some(1)),
                    PersistErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
                    PersistErrorKind::UnknownChannel => (StatusCode::NOT_FOUND, None),
                    PersistErrorKind::Rejected => (StatusCode::BAD_REQUEST, None),
                };
                tracing::debug!(channel = %channel.key(), event_id = id, status = status.as_u16(), error = %e, "event not stored");
                let mut response = respond(status, format!("{e}\n"));
                let retry_after = e
                    .retry_after
                    .map(|d| d.as_secs_f64().ceil().max(1.0) as u64)
                    .or(default_retry);
                if let Some(secs) = retry_after {
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        response.headers_mut().insert(RETRY_AFTER, v);
                    }
                }
                response
            }
        }
    }

    fn options<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let mut response = respond(StatusCode::OK, Bytes::new());
        let headers = response.headers_mut();
        headers.insert(ALLOW, ALLOWED_METHODS);
        let origin = req
            .headers()
            .get("webhook-request-origin")
            .cloned()
            .unwrap_or(HeaderValue::from_static("*"));
        headers.insert("webhook-allowed-origin", origin);
        headers.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
        response
    }
}

//! Ingress: where producers POST CloudEvents to a channel.
//!
//! A request is routed by the Knative channel or broker host or by path
//! (see [`RouteTable::lookup`]), its body read
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
use tracing::Instrument as _;

const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("POST, OPTIONS");

/// Shared state of the ingress handler.
#[derive(Debug, Clone)]
pub struct Ingress {
    routes: Arc<ArcSwap<RouteTable>>,
    backend: Arc<dyn Backend>,
    max_body_bytes: usize,
    body_read_timeout: std::time::Duration,
    /// Verifies senders' tokens where OIDC authentication is on.
    oidc: crate::auth::oidc::Verifiers,
}

fn respond(status: StatusCode, message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(message.into()));
    *response.status_mut() = status;
    if response.body().size_hint().exact().is_none_or(|n| n != 0) {
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
            body_read_timeout: crate::server::ServerLimits::default().body_read_timeout,
            oidc: Default::default(),
        }
    }

    /// Verify tokens with `verifiers` where the contract turns OIDC on.
    pub fn with_oidc(mut self, verifiers: crate::auth::oidc::Verifiers) -> Self {
        self.oidc = verifiers;
        self
    }

    /// The sender's subject when `route` requires a token: `Err` is the
    /// 401 answer (before the body is read).
    async fn authenticate<B>(
        &self,
        auth: &crate::auth::authorize::RouteAuth,
        req: &Request<B>,
    ) -> Result<String, Response<Full<Bytes>>> {
        let unauthorized = |message: String| {
            let mut r = respond(StatusCode::UNAUTHORIZED, format!("{message}\n"));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            r
        };
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(verifier) = self.oidc.choose(header) else {
            return Err(unauthorized(
                "OIDC authentication is required here, and this dispatcher has no --oidc-issuer to verify tokens of other issuers with".into(),
            ));
        };
        verifier
            .verify(header, &auth.audience)
            .await
            .map(|claims| claims.sub)
            .map_err(|e| {
                let hint = if self.oidc.has_external() {
                    ""
                } else {
                    "; this dispatcher verifies only the identity tokens of components sharing its signing key: set --oidc-issuer to accept producers' tokens"
                };
                unauthorized(format!("{e} (audience {}){hint}", auth.audience))
            })
    }

    /// Answer 408 to a client that takes longer than `timeout` to send a
    /// request's body.
    pub fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_read_timeout = timeout;
        self
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
                format!("no channel or broker at {}\n", req.uri().path()),
            );
        };
        drop(routes);
        let sender = match &route.auth {
            None => None,
            Some(auth) => match self.authenticate(auth, &req).await {
                Ok(sub) => Some((auth.clone(), sub)),
                Err(refused) => {
                    route.metrics.received(refused.status().as_u16());
                    return refused;
                }
            },
        };
        let response = self
            .accept(
                route.channel.clone(),
                route.broker,
                route.event_types.as_deref(),
                sender,
                req,
            )
            .await;
        route.metrics.received(response.status().as_u16());
        response
    }

    async fn accept<B>(
        &self,
        channel: Arc<channel_core::ChannelContract>,
        broker: bool,
        event_types: Option<&crate::eventtypes::Seen>,
        sender: Option<(Arc<crate::auth::authorize::RouteAuth>, String)>,
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
        let read = Limited::new(body, self.max_body_bytes).collect();
        let Ok(read) = tokio::time::timeout(self.body_read_timeout, read).await else {
            return respond(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}\n",
                    self.body_read_timeout
                ),
            );
        };
        let body = match read {
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
        // Authorized before anything is stored: the EventPolicies applying
        // here, or the default authorization mode.
        if let Some((auth, sub)) = &sender {
            if let Err(why) = auth.authorize(sub, &event) {
                return respond(StatusCode::FORBIDDEN, format!("{why}\n"));
            }
        }
        if broker {
            crate::delivery::trigger::default_broker_ttl(&mut event);
        }
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
        // With trace export on, ingress is a span continuing the producer's
        // trace, and the event carries this span onwards.
        let span = if crate::telemetry::tracing_enabled() {
            let span = tracing::info_span!(
                "channel.ingress",
                otel.kind = "server",
                channel = %channel.key(),
                event_id = %event.id,
                event_type = %event.ty,
            );
            let tp = event.extension("traceparent").map(|v| v.into_owned());
            let ts = event.extension("tracestate").map(|v| v.into_owned());
            crate::telemetry::set_remote_parent(&span, tp.as_deref(), ts.as_deref());
            if let Some(tp) = crate::telemetry::current_traceparent(&span) {
                event
                    .extensions
                    .insert("traceparent".to_owned(), ExtensionValue::String(tp));
            }
            span
        } else {
            tracing::Span::none()
        };
        // Only an event stored registers its type (auto-creation is on).
        let pair = event_types.map(|_| (event.ty.clone(), event.source.clone()));
        match self.backend.persist(&channel, event).instrument(span).await {
            Ok(()) => {
                if let (Some(seen), Some((ty, source))) = (event_types, pair) {
                    seen.record(&ty, &source);
                }
                respond(StatusCode::ACCEPTED, Bytes::new())
            }
            Err(e) => {
                let (status, default_retry) = match e.kind {
                    PersistErrorKind::Full => (StatusCode::TOO_MANY_REQUESTS, Some(1)),
                    PersistErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
                    PersistErrorKind::UnknownChannel => (StatusCode::NOT_FOUND, None),
                    PersistErrorKind::Rejected => (StatusCode::BAD_REQUEST, None),
                };
                tracing::debug!(channel = %channel.key(), status = status.as_u16(), error = %e, "event not stored");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Dataplane, RouteTable};
    use crate::delivery::{Deliverer, DeliveryOptions};
    use crate::metrics::Metrics;
    use async_trait::async_trait;
    use channel_core::backend::{BackendError, DeliveryStream, Health, PersistError};
    use channel_core::contract::Ingress as IngressNames;
    use channel_core::{BackendKind, ChannelContract, Contract, Event, SubscriptionContract};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A backend that records persisted events, or refuses with a set error.
    #[derive(Debug, Default)]
    struct Recording {
        stored: Mutex<Vec<Event>>,
        refuse: Mutex<Option<PersistErrorKind>>,
    }

    #[async_trait]
    impl Backend for Recording {
        fn kind(&self) -> BackendKind {
            BackendKind::InMemory
        }
        async fn provision(&self, _: &ChannelContract) -> Result<(), BackendError> {
            Ok(())
        }
        async fn deprovision(&self, _: &ChannelContract) -> Result<(), BackendError> {
            Ok(())
        }
        async fn persist(&self, _: &ChannelContract, event: Event) -> Result<(), PersistError> {
            if let Some(kind) = *self.refuse.lock().unwrap() {
                let e = PersistError::new(kind, "refused for the test");
                return Err(if kind == PersistErrorKind::Unavailable {
                    e.with_retry_after(Duration::from_millis(2500))
                } else {
                    e
                });
            }
            self.stored.lock().unwrap().push(event);
            Ok(())
        }
        async fn subscribe(
            &self,
            _: &ChannelContract,
            _: &SubscriptionContract,
        ) -> Result<Box<dyn DeliveryStream>, BackendError> {
            Err(BackendError::new(
                channel_core::BackendErrorKind::Other,
                "no subscriptions in this test",
            ))
        }
        async fn unsubscribe(
            &self,
            _: &ChannelContract,
            _: &SubscriptionContract,
        ) -> Result<(), BackendError> {
            Ok(())
        }
        async fn health(&self) -> Health {
            Health::Healthy
        }
    }

    async fn setup(max_body: usize) -> (Ingress, Arc<Recording>, Arc<Metrics>) {
        let backend = Arc::new(Recording::default());
        let metrics = Arc::new(Metrics::new());
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let deliverer = Deliverer::new(
            metrics.clone(),
            DeliveryOptions::basic(Duration::from_secs(1), 1024),
        );
        let dp = Dataplane::new(backend.clone(), deliverer, metrics.clone(), routes.clone());
        let contract = Contract {
            generation: 1,
            backend: Some(BackendKind::InMemory),
            channels: vec![ChannelContract {
                uid: "u".into(),
                namespace: "default".into(),
                name: "orders".into(),
                kind: "Channel".into(),
                backend: BackendKind::InMemory,
                class: "in-memory-channel".into(),
                ingress: IngressNames::for_channel("default", "orders"),
                parameters: Default::default(),
                subscriptions: vec![],
                broker: None,
            }],
            ..Default::default()
        };
        dp.apply(contract, vec![]).await;
        (
            Ingress::new(routes, backend.clone(), max_body),
            backend,
            metrics,
        )
    }

    fn binary(uri: &str, body: &'static [u8]) -> http::request::Builder {
        let _ = body;
        Request::post(uri)
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-source", "/test")
            .header("ce-type", "t")
            .header("content-type", "text/plain")
    }

    #[tokio::test]
    async fn accepts_binary_and_structured_events() {
        let (ingress, backend, metrics) = setup(1024).await;
        let req = binary("/default/orders", b"hi")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap();
        assert_eq!(ingress.handle(req).await.status(), StatusCode::ACCEPTED);
        let req = Request::post("http://orders-kn-channel.default.svc.cluster.local/")
            .header("content-type", "application/cloudevents+json")
            .body(Full::new(Bytes::from_static(
                br#"{"specversion":"1.0","id":"2","source":"/s","type":"t","data":{"x":1}}"#,
            )))
            .unwrap();
        assert_eq!(ingress.handle(req).await.status(), StatusCode::ACCEPTED);
        let stored = backend.stored.lock().unwrap().clone();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].data.as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            stored[0].extension("traceparent").as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(stored[1].data.as_deref(), Some(&br#"{"x":1}"#[..]));
        assert!(metrics
            .encode()
            .contains(r#"channel="orders",response_code_class="2xx"} 2"#));
    }

    #[tokio::test]
    async fn answers_every_failure_with_its_status() {
        let (ingress, backend, _) = setup(16).await;
        let empty = || Full::new(Bytes::new());
        // Unknown channel.
        let r = ingress
            .handle(binary("/default/nope", b"").body(empty()).unwrap())
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Wrong method.
        let r = ingress
            .handle(Request::get("/default/orders").body(empty()).unwrap())
            .await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "POST, OPTIONS");
        // OPTIONS handshake.
        let r = ingress
            .handle(
                Request::options("/default/orders")
                    .header("webhook-request-origin", "example.com")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["webhook-allowed-origin"], "example.com");
        assert_eq!(r.headers()["webhook-allowed-rate"], "*");
        // Not a CloudEvent / invalid.
        let r = ingress
            .handle(
                Request::post("/default/orders")
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // Too large, by content-length and by streaming.
        let r = ingress
            .handle(
                binary("/default/orders", b"")
                    .body(Full::new(Bytes::from(vec![b'x'; 17])))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Backend refusals.
        *backend.refuse.lock().unwrap() = Some(PersistErrorKind::Full);
        let r = ingress
            .handle(binary("/default/orders", b"").body(empty()).unwrap())
            .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        *backend.refuse.lock().unwrap() = Some(PersistErrorKind::Unavailable);
        let r = ingress
            .handle(binary("/default/orders", b"").body(empty()).unwrap())
            .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        assert!(backend.stored.lock().unwrap().is_empty());
    }
}

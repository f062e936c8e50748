//! The admin server: `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! * `/healthz` answers 200 while the process runs.
//! * `/readyz` answers 200 once a contract is applied and the backend reports
//!   itself healthy, 503 with the reason otherwise.
//! * `/metrics` is the Prometheus (OpenMetrics) text exposition.
//! * `/status` is JSON: the applied contract generation, per-channel and
//!   per-subscription readiness, and configuration problems. The provisioner
//!   reads it to mark resources Ready.
//! * `/.well-known/openid-configuration` and `/openid/v1/jwks` publish the
//!   public key of the identity tokens this process presents
//!   ([`crate::auth::identity`]), so a subscriber can verify them.

use crate::dataplane::Dataplane;
use bytes::Bytes;
use channel_core::Health;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;

/// A response with a status, a content type and a body (also used by the
/// provisioner's own status servers).
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Handle one admin request.
/// The admin endpoints a token protects: what a dispatcher serves, and its
/// metrics. Health and readiness stay open for probes.
pub const PROTECTED: &[&str] = &["/metrics", "/status"];

/// With an admin token (`--admin-token`, `KN_ADMIN_TOKEN`), a request for a
/// [`PROTECTED`] endpoint without `Authorization: Bearer <token>` gets
/// 401 (the comparison takes constant time). `None`: let it through.
pub fn guard<B>(req: &Request<B>, token: Option<&str>) -> Option<Response<Full<Bytes>>> {
    use subtle::ConstantTimeEq as _;
    let token = token?;
    if !PROTECTED.contains(&req.uri().path()) {
        return None;
    }
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return None;
    }
    let mut r = respond(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        "this endpoint needs Authorization: Bearer <admin token>\n",
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

/// The OIDC discovery document or the JWKS of `signer`, for a `GET` of
/// their paths; `None` for every other request.
pub fn identity_keys<B>(
    req: &Request<B>,
    signer: &crate::auth::identity::Signer,
) -> Option<Response<Full<Bytes>>> {
    use crate::auth::identity::{DISCOVERY_PATH, JWKS_PATH};
    if req.method() != Method::GET {
        return None;
    }
    let body = match req.uri().path() {
        JWKS_PATH => serde_json::to_vec_pretty(&signer.jwks()),
        DISCOVERY_PATH => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            serde_json::to_vec_pretty(&signer.discovery(&format!("http://{host}")))
        }
        _ => return None,
    };
    Some(respond(
        StatusCode::OK,
        "application/json",
        body.unwrap_or_default(),
    ))
}

pub async fn handle<B>(dataplane: Arc<Dataplane>, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "admin endpoints accept GET\n",
        );
    }
    match req.uri().path() {
        "/healthz" | "/livez" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if !dataplane.has_contract() {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: no contract applied yet\n",
                );
            }
            match dataplane.backend().health().await {
                Health::Healthy => respond(StatusCode::OK, "text/plain", "ready\n"),
                Health::Unhealthy(reason) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "not ready: backend {} unhealthy: {reason}\n",
                        dataplane.backend().kind()
                    ),
                ),
            }
        }
        "/metrics" => {
            dataplane.refresh_gauges().await;
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                dataplane.metrics().encode(),
            )
        }
        "/eventtypes" => match dataplane.event_types() {
            Some(observed) => {
                let body = serde_json::to_vec_pretty(&observed).unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "EventType auto-creation is off: set eventtype-auto-create: enabled in ConfigMap knative-eventing/config-features\n",
            ),
        },
        "/status" => {
            let body = serde_json::to_vec_pretty(&dataplane.status()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /healthz /readyz /metrics /status /eventtypes /openid/v1/jwks\n",
        ),
    }
}

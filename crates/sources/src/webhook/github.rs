//! GitHub deliveries: signature check and mapping to a CloudEvent, as
//! Knative's GitHub source does it.
//!
//! A delivery is refused with 401 unless `X-Hub-Signature-256` is
//! `sha256=<hex>` of HMAC-SHA256(secret token, body), compared in constant
//! time — before the body is parsed or anything is sent on. Then:
//! `X-GitHub-Event` and `X-GitHub-Delivery` are required (400), the payload
//! must be JSON (`application/json`, or the `payload` field of a
//! form-encoded body, GitHub's other content type) (400, 415); a `ping`
//! is answered and not forwarded; an event not in `eventTypes` is
//! acknowledged and dropped.

use super::{Rejection, Verdict};
use channel_core::event::Event;
use channel_core::sources::github::{github_event_type, GitHubSettings};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check `X-Hub-Signature-256` against `body` (constant time).
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), Rejection> {
    let Some(signature) = signature else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256: deliveries must be signed with the webhook's secret",
        ));
    };
    let expected = signature
        .strip_prefix("sha256=")
        .and_then(unhex)
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 is not sha256=<hex>",
            )
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "unusable secret"))?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the body and the webhook's secret",
        )
    })
}

/// The JSON payload of a delivery, by its content type.
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Rejection> {
    let content_type = header(headers, "content-type")
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        Ok(body.to_vec())
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned().into_bytes())
            .ok_or_else(|| {
                Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "form-encoded delivery without a payload field",
                )
            })
    } else {
        Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?}: expected application/json"),
        ))
    }
}

fn last_path_portion(v: &Value) -> Option<String> {
    v.as_str()
        .and_then(|s| s.rsplit_once('/'))
        .map(|(_, last)| last.to_owned())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The subject of an event: what it is about, by event kind.
pub fn subject(event: &str, payload: &Value) -> Option<String> {
    let at = |pointer: &str| payload.pointer(pointer).and_then(scalar);
    match event {
        "check_suite" => at("/check_suite/id"),
        "check_run" => at("/check_run/id"),
        "commit_comment" | "issue_comment" => payload
            .pointer("/comment/html_url")
            .and_then(last_path_portion),
        "create" | "delete" => at("/ref_type"),
        "deployment" | "deployment_status" => at("/deployment/id"),
        "fork" => at("/forkee/id"),
        "gollum" => payload.get("pages").and_then(Value::as_array).map(|pages| {
            pages
                .iter()
                .filter_map(|p| p.get("page_name").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        }),
        "installation" | "integration_installation" => at("/installation/id"),
        "issues" => at("/issue/number"),
        "label" => at("/label/name"),
        "member" | "membership" => at("/member/id"),
        "milestone" => at("/milestone/number"),
        "organization" | "org_block" | "project" | "project_card" | "project_column" => {
            at("/action")
        }
        "page_build" => at("/id"),
        "ping" => at("/hook_id"),
        "public" | "repository" | "team_add" | "watch" | "star" => at("/repository/id"),
        "pull_request" => at("/pull_request/number").or_else(|| at("/number")),
        "pull_request_review" => at("/review/id"),
        "pull_request_review_comment" => at("/comment/id"),
        "push" => payload.get("compare").and_then(last_path_portion),
        "release" => at("/release/tag_name"),
        "status" => at("/sha"),
        "team" => at("/team/id"),
        "workflow_run" => at("/workflow_run/id"),
        "workflow_job" => at("/workflow_job/id"),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// Verify and map one delivery. `secret` is the webhook's secret token.
pub fn handle(
    settings: &GitHubSettings,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verdict, Rejection> {
    verify_signature(secret, body, header(headers, SIGNATURE_HEADER))?;
    let event = header(headers, EVENT_HEADER)
        .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header"))?;
    let data = payload(headers, body)?;
    let json: Value = serde_json::from_slice(&data).map_err(|e| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("the payload is not JSON: {e}"),
        )
    })?;
    if event == "ping" {
        return Ok(Verdict::Pong);
    }
    if !settings.event_types.iter().any(|t| t == event) {
        return Ok(Verdict::Ignore(format!(
            "event {event:?} is not in the source's eventTypes"
        )));
    }
    let id = header(headers, DELIVERY_HEADER).ok_or_else(|| {
        Rejection::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header")
    })?;
    let mut out = Event::new(id, settings.source_uri(), github_event_type(event));
    out.subject = subject(event, &json);
    out.datacontenttype = Some("application/json".to_owned());
    out.data = Some(data.into());
    Ok(Verdict::Forward(Box::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::sources::secret::SecretRef;
    use serde_json::json;

    fn settings() -> GitHubSettings {
        GitHubSettings {
            owner_and_repository: "knative/docs".into(),
            event_types: vec!["issues".into(), "push".into()],
            access_token: SecretRef::Env { name: "A".into() },
            secret_token: SecretRef::Env { name: "S".into() },
            api_url: url::Url::parse("https://api.github.com/").expect("url"),
            secure: false,
        }
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    fn headers(event: &str, signature: Option<String>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().expect("v"));
        h.insert(EVENT_HEADER, event.parse().expect("v"));
        h.insert(
            DELIVERY_HEADER,
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().expect("v"),
        );
        if let Some(s) = signature {
            h.insert(SIGNATURE_HEADER, s.parse().expect("v"));
        }
        h
    }

    #[test]
    fn a_signed_push_becomes_knatives_event() {
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "compare": "https://github.com/knative/docs/compare/a10867b14bb7...000000000000",
        }))
        .expect("json");
        let h = headers("push", Some(sign(b"s3cret", &body)));
        let Verdict::Forward(e) = handle(&settings(), b"s3cret", &h, &body).expect("ok") else {
            panic!("forwarded")
        };
        assert_eq!(e.ty, "dev.knative.source.github.push");
        assert_eq!(e.source, "https://github.com/knative/docs");
        assert_eq!(e.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(e.subject.as_deref(), Some("a10867b14bb7...000000000000"));
        assert_eq!(e.data.as_deref(), Some(body.as_slice()));
        e.validate().expect("a valid CloudEvent");
    }

    #[test]
    fn unsigned_and_badly_signed_deliveries_are_refused() {
        let body = br#"{"zen":"x"}"#;
        let bad = [
            None,
            Some("sha256=zz".to_owned()),
            Some("sha1=0000".to_owned()),
            Some(sign(b"other", body)),
            Some(sign(b"s3cret", b"another body")),
        ];
        for signature in bad {
            let h = headers("push", signature.clone());
            let r = handle(&settings(), b"s3cret", &h, body).expect_err("refused");
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{signature:?}");
        }
    }

    #[test]
    fn pings_and_unasked_events_are_not_forwarded_and_bad_payloads_are_400() {
        let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
        let h = headers("ping", Some(sign(b"k", body)));
        assert!(matches!(
            handle(&settings(), b"k", &h, body),
            Ok(Verdict::Pong)
        ));
        let h = headers("release", Some(sign(b"k", body)));
        assert!(matches!(
            handle(&settings(), b"k", &h, body),
            Ok(Verdict::Ignore(_))
        ));
        let garbage = b"{not json";
        let h = headers("push", Some(sign(b"k", garbage)));
        let r = handle(&settings(), b"k", &h, garbage).expect_err("bad json");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let mut h = headers("push", Some(sign(b"k", body)));
        h.remove(EVENT_HEADER);
        assert_eq!(
            handle(&settings(), b"k", &h, body)
                .expect_err("no event")
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn form_encoded_deliveries_carry_the_payload_field() {
        let body = b"payload=%7B%22issue%22%3A%7B%22number%22%3A7%7D%7D";
        let mut h = headers("issues", Some(sign(b"k", body)));
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().expect("v"),
        );
        let Verdict::Forward(e) = handle(&settings(), b"k", &h, body).expect("ok") else {
            panic!("forwarded")
        };
        assert_eq!(e.subject.as_deref(), Some("7"));
        assert_eq!(
            e.data.as_deref(),
            Some(br#"{"issue":{"number":7}}"#.as_slice())
        );
    }

    #[test]
    fn subjects_follow_the_event_kind() {
        let cases = [
            ("issues", json!({"issue": {"number": 2}}), Some("2")),
            (
                "pull_request",
                json!({"number": 5, "pull_request": {"number": 5}}),
                Some("5"),
            ),
            (
                "issue_comment",
                json!({"comment": {"html_url": "https://github.com/o/r/issues/2#issuecomment-39"}}),
                Some("2#issuecomment-39"),
            ),
            (
                "release",
                json!({"release": {"tag_name": "v1.0"}}),
                Some("v1.0"),
            ),
            ("create", json!({"ref_type": "tag"}), Some("tag")),
            (
                "gollum",
                json!({"pages": [{"page_name": "Home"}, {"page_name": "Main"}]}),
                Some("Home,Main"),
            ),
            ("status", json!({"sha": "abc"}), Some("abc")),
            ("workflow_dispatch", json!({}), None),
            ("issues", json!({}), None),
        ];
        for (event, payload, want) in cases {
            assert_eq!(subject(event, &payload).as_deref(), want, "{event}");
        }
    }
}

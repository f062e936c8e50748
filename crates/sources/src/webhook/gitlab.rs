//! GitLab deliveries: token check and mapping to a CloudEvent.
//!
//! A delivery is refused with 401 unless `X-Gitlab-Token` equals the
//! source's secret token (constant-time comparison), before the body is
//! parsed. Then `X-Gitlab-Event` is required (400) and the JSON payload's
//! `object_kind` names the event (400 without it); a kind the source's
//! `eventTypes` do not enable is acknowledged and dropped.

use super::{Rejection, Verdict};
use channel_core::event::Event;
use channel_core::sources::gitlab::{gitlab_event_type, GitLabSettings};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use subtle::ConstantTimeEq as _;

pub const TOKEN_HEADER: &str = "x-gitlab-token";
pub const EVENT_HEADER: &str = "x-gitlab-event";
pub const UUID_HEADER: &str = "x-gitlab-event-uuid";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Check `X-Gitlab-Token` (constant time).
pub fn verify_token(secret: &[u8], token: Option<&str>) -> Result<(), Rejection> {
    let Some(token) = token else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Gitlab-Token: the hook must carry the source's secret token",
        ));
    };
    if bool::from(token.as_bytes().ct_eq(secret)) {
        Ok(())
    } else {
        Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "X-Gitlab-Token does not match the source's secret token",
        ))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The subject of an event, by `object_kind`.
pub fn subject(object_kind: &str, payload: &Value) -> Option<String> {
    let at = |pointer: &str| payload.pointer(pointer).and_then(scalar);
    match object_kind {
        "push" | "tag_push" => at("/ref"),
        "issue" | "merge_request" => at("/object_attributes/iid"),
        "note" | "pipeline" => at("/object_attributes/id"),
        "build" => at("/build_id"),
        "wiki_page" => at("/object_attributes/slug"),
        "deployment" => at("/deployment_id"),
        "release" => at("/tag"),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// Verify and map one delivery. `secret` is the source's secret token.
pub fn handle(
    settings: &GitLabSettings,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verdict, Rejection> {
    verify_token(secret, header(headers, TOKEN_HEADER))?;
    let hook = header(headers, EVENT_HEADER)
        .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "missing X-Gitlab-Event header"))?;
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("the payload is not JSON: {e}"),
        )
    })?;
    let kind = json
        .get("object_kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("the {hook} payload has no object_kind"),
            )
        })?;
    if !settings.object_kinds().contains(&kind) {
        return Ok(Verdict::Ignore(format!(
            "{hook} ({kind}) is not enabled by the source's eventTypes"
        )));
    }
    let id = header(headers, UUID_HEADER)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut out = Event::new(id, settings.source_uri(), gitlab_event_type(kind));
    out.subject = subject(kind, &json);
    out.datacontenttype = Some("application/json".to_owned());
    out.data = Some(bytes::Bytes::copy_from_slice(body));
    Ok(Verdict::Forward(Box::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::sources::secret::SecretRef;
    use serde_json::json;

    fn settings() -> GitLabSettings {
        GitLabSettings {
            project_url: url::Url::parse("https://gitlab.com/group/project").expect("url"),
            event_types: vec!["merge_requests_events".into(), "push_events".into()],
            access_token: SecretRef::Env { name: "A".into() },
            secret_token: SecretRef::Env { name: "S".into() },
            ssl_verify: true,
        }
    }

    fn headers(hook: &str, token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(EVENT_HEADER, hook.parse().expect("v"));
        h.insert(
            UUID_HEADER,
            "f83c080f-c2af-48ff-8d8b-fd5b21c5938e".parse().expect("v"),
        );
        if let Some(t) = token {
            h.insert(TOKEN_HEADER, t.parse().expect("v"));
        }
        h
    }

    #[test]
    fn a_push_becomes_knatives_event() {
        let body = serde_json::to_vec(&json!({"object_kind": "push", "ref": "refs/heads/main"}))
            .expect("json");
        let Verdict::Forward(e) = handle(
            &settings(),
            b"tok",
            &headers("Push Hook", Some("tok")),
            &body,
        )
        .expect("ok") else {
            panic!("forwarded")
        };
        assert_eq!(e.ty, "dev.knative.sources.gitlab.push");
        assert_eq!(e.source, "https://gitlab.com/group/project");
        assert_eq!(e.id, "f83c080f-c2af-48ff-8d8b-fd5b21c5938e");
        assert_eq!(e.subject.as_deref(), Some("refs/heads/main"));
        e.validate().expect("valid");
    }

    #[test]
    fn a_wrong_or_missing_token_is_refused() {
        let body = br#"{"object_kind":"push"}"#;
        for token in [None, Some("nope"), Some("tok2"), Some("to")] {
            let r = handle(&settings(), b"tok", &headers("Push Hook", token), body)
                .expect_err("refused");
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
        }
    }

    #[test]
    fn kinds_not_enabled_are_ignored_and_malformed_payloads_are_400() {
        let issue = br#"{"object_kind":"issue","object_attributes":{"iid":3}}"#;
        assert!(matches!(
            handle(&settings(), b"t", &headers("Issue Hook", Some("t")), issue),
            Ok(Verdict::Ignore(_))
        ));
        for body in [
            &b"[1,2"[..],
            br#"{"no":"kind"}"#,
            br#"{"object_kind":"Push Hook"}"#,
        ] {
            let r = handle(&settings(), b"t", &headers("Push Hook", Some("t")), body)
                .expect_err("malformed");
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
        }
        let mr = br#"{"object_kind":"merge_request","object_attributes":{"iid":12}}"#;
        let Ok(Verdict::Forward(e)) = handle(
            &settings(),
            b"t",
            &headers("Merge Request Hook", Some("t")),
            mr,
        ) else {
            panic!("forwarded")
        };
        assert_eq!(e.subject.as_deref(), Some("12"));
    }
}

//! The CloudEvents HTTP protocol binding (binary and structured content modes).
//!
//! Decoding accepts both modes; encoding writes either. Header values in
//! binary mode are percent-encoded as the binding requires (space, `"`, `%`
//! and everything outside printable ASCII), and `content-type` carries
//! `datacontenttype`. The body is passed through as the event's data bytes.

use super::{Event, ExtensionValue, ValidationError, CONTEXT_ATTRIBUTES};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Prefix of binary-mode attribute headers.
pub const CE_HEADER_PREFIX: &str = "ce-";
/// Media type of a structured-mode JSON event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Characters that must be percent-encoded in a binary-mode header value:
/// controls, space, `"`, `%`, DEL and (implicitly, by `utf8_percent_encode`)
/// every non-ASCII byte.
const HEADER_VALUE_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%').add(0x7f);

/// Why a request does not carry a usable CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a CloudEvent: no ce-specversion header and content-type is not {STRUCTURED_CONTENT_TYPE}")]
    NotCloudEvent,
    #[error("batched CloudEvents ({BATCH_CONTENT_TYPE}) are not accepted by a channel")]
    BatchUnsupported,
    #[error("header {header} is not valid UTF-8 after percent-decoding")]
    HeaderEncoding { header: String },
    #[error("structured event is not valid JSON: {0}")]
    Json(String),
    #[error("structured event member {member:?}: {reason}")]
    Member { member: String, reason: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// An event encoded for HTTP: headers to add and the body.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn header_str<'a>(name: &str, value: &'a HeaderValue) -> Result<&'a str, DecodeError> {
    value.to_str().map_err(|_| DecodeError::HeaderEncoding {
        header: name.to_owned(),
    })
}

fn decode_header_value(name: &str, value: &HeaderValue) -> Result<String, DecodeError> {
    let raw = header_str(name, value)?;
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError::HeaderEncoding {
            header: name.to_owned(),
        })
}

/// The content-type header as text. Unlike a `ce-` header it is not
/// percent-encoded: [`encode_binary`] writes a `datacontenttype` as it is,
/// so UTF-8 beyond ASCII (`obs-text` to HTTP) is read back, not refused.
fn content_type_str(value: &HeaderValue) -> Result<&str, DecodeError> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| DecodeError::HeaderEncoding {
        header: "content-type".to_owned(),
    })
}

/// Whether the media type (ignoring parameters and case) equals `expected`.
fn media_type_is(content_type: &str, expected: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(expected)
}

/// Decode an HTTP request or response (headers and body) into a validated event.
pub fn decode_http(headers: &HeaderMap, body: Bytes) -> Result<Event, DecodeError> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = content_type_str(ct)?;
        if media_type_is(ct, STRUCTURED_CONTENT_TYPE) {
            let event = super::json::from_structured_json(&body)?;
            event.validate()?;
            return Ok(event);
        }
        if media_type_is(ct, BATCH_CONTENT_TYPE) {
            return Err(DecodeError::BatchUnsupported);
        }
    }
    decode_binary(headers, body)
}

fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, DecodeError> {
    let specversion = match headers.get("ce-specversion") {
        Some(v) => decode_header_value("ce-specversion", v)?,
        None => return Err(DecodeError::NotCloudEvent),
    };
    let mut event = Event::new(String::new(), String::new(), String::new());
    event.specversion = specversion;
    for (name, value) in headers {
        let name = name.as_str();
        let Some(attr) = name.strip_prefix(CE_HEADER_PREFIX) else {
            continue;
        };
        let value = decode_header_value(name, value)?;
        match attr {
            "specversion" => {}
            "id" => event.id = value,
            "source" => event.source = value,
            "type" => event.ty = value,
            "dataschema" => event.dataschema = Some(value),
            "subject" => event.subject = Some(value),
            "time" => event.time = Some(value),
            // datacontenttype travels as content-type in binary mode; a
            // ce-datacontenttype header is not part of the binding.
            "datacontenttype" => {
                return Err(DecodeError::Invalid(ValidationError::Reserved(
                    "datacontenttype".into(),
                )))
            }
            other => {
                event
                    .extensions
                    .insert(other.to_owned(), ExtensionValue::String(value));
            }
        }
    }
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        event.datacontenttype = Some(content_type_str(ct)?.to_owned());
    }
    if !body.is_empty() {
        event.data = Some(body);
    }
    event.validate()?;
    Ok(event)
}

fn encode_value(value: &str) -> HeaderValue {
    let encoded: std::borrow::Cow<'_, str> =
        utf8_percent_encode(value, HEADER_VALUE_ESCAPES).into();
    // After escaping, only visible ASCII remains, which is always a legal value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Add the binary-mode representation of `event` to `headers` and return the body.
pub fn encode_binary(event: &Event, headers: &mut HeaderMap) -> Bytes {
    headers.insert(
        HeaderName::from_static("ce-specversion"),
        encode_value(&event.specversion),
    );
    headers.insert(HeaderName::from_static("ce-id"), encode_value(&event.id));
    headers.insert(
        HeaderName::from_static("ce-source"),
        encode_value(&event.source),
    );
    headers.insert(HeaderName::from_static("ce-type"), encode_value(&event.ty));
    let optional = [
        ("ce-dataschema", &event.dataschema),
        ("ce-subject", &event.subject),
        ("ce-time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), encode_value(value));
        }
    }
    for (name, value) in &event.extensions {
        debug_assert!(!CONTEXT_ATTRIBUTES.contains(&name.as_str()));
        if let Ok(header) = HeaderName::from_bytes(format!("{CE_HEADER_PREFIX}{name}").as_bytes()) {
            headers.insert(header, encode_value(&value.as_canonical()));
        }
    }
    if let Some(ct) = &event.datacontenttype {
        if let Ok(ct) = HeaderValue::from_str(ct) {
            headers.insert(CONTENT_TYPE, ct);
        }
    }
    event.data.clone().unwrap_or_default()
}

/// Add the structured-mode (JSON) representation of `event` to `headers` and
/// return the body.
pub fn encode_structured(event: &Event, headers: &mut HeaderMap) -> Bytes {
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
    );
    Bytes::from(super::json::to_structured_json(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn decodes_binary_mode() {
        let h = binary_headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "abc"),
            ("ce-source", "/my/source"),
            ("ce-type", "dev.example"),
            ("ce-subject", "hello%20world%22%25"),
            ("ce-myext", "x"),
            ("content-type", "text/plain"),
        ]);
        let e = decode_http(&h, Bytes::from_static(b"payload")).unwrap();
        assert_eq!(e.id, "abc");
        assert_eq!(e.subject.as_deref(), Some("hello world\"%"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(e.extension("myext").as_deref(), Some("x"));
        assert_eq!(e.data.as_deref(), Some(&b"payload"[..]));
    }

    #[test]
    fn binary_round_trip_preserves_everything() {
        let e = Event::new("id 1", "/src/ü", "t")
            .with_data(
                "application/octet-stream",
                Bytes::from_static(&[0, 159, 146, 150]),
            )
            .with_extension(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .with_extension("comexampleext", "a\"b%c d");
        let mut h = HeaderMap::new();
        let body = encode_binary(&e, &mut h);
        assert_eq!(h["ce-id"], "id%201");
        assert_eq!(h["ce-source"], "/src/%C3%BC");
        let back = decode_http(&h, body).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn binary_round_trip_of_a_non_ascii_content_type() {
        // Found by fuzz/fuzz_targets/structured_json.rs: a structured event
        // whose datacontenttype is not ASCII was written in binary mode with
        // a content-type the binary decoder then refused.
        let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/json\ud83d\ude00"}"#;
        let e = crate::event::from_structured_json(body.as_bytes()).unwrap();
        assert_eq!(e.datacontenttype.as_deref(), Some("text/json\u{1f600}"));
        let mut h = HeaderMap::new();
        let body = encode_binary(&e, &mut h);
        assert_eq!(decode_http(&h, body).unwrap(), e);
        // Bytes that are not UTF-8 are still refused.
        let mut h = binary_headers(&[("ce-specversion", "1.0"), ("ce-id", "1")]);
        h.insert(CONTENT_TYPE, HeaderValue::from_bytes(b"text/\xff").unwrap());
        assert!(matches!(
            decode_http(&h, Bytes::new()),
            Err(DecodeError::HeaderEncoding { .. })
        ));
    }

    #[test]
    fn structured_round_trip_via_http() {
        let e = Event::new("1", "/s", "t")
            .with_data("application/json", Bytes::from_static(br#"{"a": [1, 2]}"#));
        let mut h = HeaderMap::new();
        let body = encode_structured(&e, &mut h);
        let back = decode_http(&h, body).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_non_cloudevents_and_batches() {
        let h = binary_headers(&[("content-type", "application/json")]);
        assert_eq!(
            decode_http(&h, Bytes::from_static(b"{}")),
            Err(DecodeError::NotCloudEvent)
        );
        let h = binary_headers(&[("content-type", "application/cloudevents-batch+json")]);
        assert_eq!(
            decode_http(&h, Bytes::from_static(b"[]")),
            Err(DecodeError::BatchUnsupported)
        );
    }

    #[test]
    fn rejects_invalid_binary_events() {
        let h = binary_headers(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")]);
        assert_eq!(
            decode_http(&h, Bytes::new()),
            Err(DecodeError::Invalid(ValidationError::Missing("source")))
        );
        let h = binary_headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-bad_name", "x"),
        ]);
        assert!(matches!(
            decode_http(&h, Bytes::new()),
            Err(DecodeError::Invalid(ValidationError::AttributeName(_)))
        ));
        let h = binary_headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "%FF%FE"),
        ]);
        assert!(matches!(
            decode_http(&h, Bytes::new()),
            Err(DecodeError::HeaderEncoding { .. })
        ));
    }
}

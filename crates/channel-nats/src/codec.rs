//! The CloudEvents NATS protocol binding.
//!
//! Events are written in **binary mode**: every context attribute and
//! extension is a NATS header `ce-<name>` (values percent-encoded as in the
//! HTTP binding), `datacontenttype` is the `content-type` header, and the
//! payload is `data`, byte for byte. **Structured mode** (the whole event as
//! JSON in the payload, with `content-type: application/cloudevents+json` or
//! with no headers at all, as the binding's 1.0 version wrote it) is read
//! too, so events published to the stream by other CloudEvents producers are
//! delivered.
//!
//! Both directions reuse the HTTP binding's header rules from
//! [`channel_core::event`], so an event read from NATS equals the event the
//! ingress accepted.

use async_nats::HeaderMap as NatsHeaders;
use bytes::Bytes;
use channel_core::event::{
    decode_http, encode_binary, DecodeError, Event, CE_HEADER_PREFIX, STRUCTURED_CONTENT_TYPE,
};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The JetStream deduplication header; set to the CloudEvent id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Encode `event` in binary mode: NATS headers and payload. The
/// `Nats-Msg-Id` header carries the event id, so a re-sent event is
/// deduplicated by the stream.
pub fn encode(event: &Event) -> (NatsHeaders, Bytes) {
    let mut http_headers = HeaderMap::with_capacity(8 + event.extensions.len());
    let payload = encode_binary(event, &mut http_headers);
    let mut headers = NatsHeaders::new();
    for (name, value) in &http_headers {
        if let Ok(value) = value.to_str() {
            headers.insert(name.as_str(), value);
        }
    }
    headers.insert(MSG_ID_HEADER, event.id.as_str());
    (headers, payload)
}

/// Decode a stored message: binary mode when a `ce-specversion` header is
/// present, else structured mode. The event is validated.
pub fn decode(headers: Option<&NatsHeaders>, payload: Bytes) -> Result<Event, DecodeError> {
    let mut http_headers = HeaderMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let is_content_type = name.eq_ignore_ascii_case("content-type");
            let is_ce = name.len() > CE_HEADER_PREFIX.len()
                && name.as_bytes()[..CE_HEADER_PREFIX.len()]
                    .eq_ignore_ascii_case(CE_HEADER_PREFIX.as_bytes());
            if !(is_content_type || is_ce) {
                continue;
            }
            let Some(value) = values.first() else {
                continue;
            };
            let header =
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    DecodeError::HeaderEncoding {
                        header: name.to_owned(),
                    }
                })?;
            let value =
                HeaderValue::from_str(value.as_str()).map_err(|_| DecodeError::HeaderEncoding {
                    header: name.to_owned(),
                })?;
            http_headers.insert(header, value);
        }
    }
    if !http_headers.contains_key("ce-specversion") && !http_headers.contains_key(CONTENT_TYPE) {
        // Structured mode without headers (NATS binding 1.0).
        http_headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
        );
    }
    decode_http(&http_headers, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::event::to_structured_json;

    fn sample() -> Event {
        let mut e = Event::new("id-1", "/src", "com.example.t")
            .with_data("application/json", &br#"{"a": 1}"#[..])
            .with_extension("partitionkey", "k1")
            .with_extension("traceparent", "00-abc-def-01");
        e.subject = Some("a subject with spaces and ü".into());
        e.time = Some("2024-01-01T00:00:00Z".into());
        e
    }

    #[test]
    fn binary_mode_round_trips() {
        let e = sample();
        let (headers, payload) = encode(&e);
        assert_eq!(
            headers.get("ce-id").map(|v| v.as_str().to_owned()),
            Some("id-1".into())
        );
        assert_eq!(
            headers.get(MSG_ID_HEADER).map(|v| v.as_str().to_owned()),
            Some("id-1".into())
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.as_str().to_owned()),
            Some("application/json".into())
        );
        assert_eq!(&payload[..], br#"{"a": 1}"#);
        assert_eq!(decode(Some(&headers), payload).unwrap(), e);
    }

    #[test]
    fn event_without_data_round_trips() {
        let e = Event::new("2", "/s", "t");
        let (headers, payload) = encode(&e);
        assert!(payload.is_empty());
        assert_eq!(decode(Some(&headers), payload).unwrap(), e);
    }

    #[test]
    fn structured_mode_is_read_with_or_without_headers() {
        let e = sample();
        let body = Bytes::from(to_structured_json(&e));
        assert_eq!(decode(None, body.clone()).unwrap(), e);
        let mut h = NatsHeaders::new();
        h.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
        assert_eq!(decode(Some(&h), body).unwrap(), e);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let mut h = NatsHeaders::new();
        h.insert("CE-SpecVersion", "1.0");
        h.insert("Ce-Id", "x");
        h.insert("ce-source", "/s");
        h.insert("ce-type", "t");
        let e = decode(Some(&h), Bytes::from_static(b"hi")).unwrap();
        assert_eq!(e.id, "x");
        assert_eq!(e.data.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for payload in [&b""[..], b"not json", b"{}", b"[1,2]", b"\xff\xfe"] {
            assert!(decode(None, Bytes::copy_from_slice(payload)).is_err());
        }
        let mut h = NatsHeaders::new();
        h.insert("ce-specversion", "1.0");
        assert!(
            decode(Some(&h), Bytes::new()).is_err(),
            "missing id/source/type"
        );
        let mut h = NatsHeaders::new();
        h.insert("content-type", "text/plain");
        assert!(decode(Some(&h), Bytes::from_static(b"hello")).is_err());
    }
}

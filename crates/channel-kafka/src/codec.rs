//! The CloudEvents Kafka protocol binding.
//!
//! Events are written in **binary** content mode: every context attribute
//! and extension becomes a `ce_<name>` header (UTF-8 value),
//! `datacontenttype` becomes the `content-type` header and `data` is the
//! record value, byte for byte. The `partitionkey` extension also becomes the
//! record key, so every event of one key lands in one partition and keeps its
//! order.
//!
//! Records in **structured** content mode (`content-type:
//! application/cloudevents+json`, the value a JSON event) are read too, so
//! events produced by other CloudEvents Kafka producers can be delivered.

use bytes::Bytes;
use channel_core::event::{from_structured_json, to_structured_json, DecodeError, ExtensionValue};
use channel_core::Event;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Prefix of the attribute headers in binary mode.
pub const CE_PREFIX: &str = "ce_";
/// The header carrying `datacontenttype` (binary) or the format (structured).
pub const CONTENT_TYPE: &str = "content-type";
/// Content type of a structured-mode record.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";
/// The extension mapped to the record key.
pub const PARTITION_KEY: &str = "partitionkey";

/// An event encoded as a Kafka record (topic and partition are the producer's).
#[derive(Debug)]
pub struct EncodedRecord {
    /// From the `partitionkey` extension.
    pub key: Option<String>,
    pub headers: OwnedHeaders,
    pub value: Option<Bytes>,
}

/// Encode `event` in binary content mode.
pub fn encode_binary(event: &Event) -> EncodedRecord {
    let mut headers = OwnedHeaders::new_with_capacity(8 + event.extensions.len());
    headers = put(headers, "specversion", &event.specversion);
    headers = put(headers, "id", &event.id);
    headers = put(headers, "source", &event.source);
    headers = put(headers, "type", &event.ty);
    if let Some(v) = &event.dataschema {
        headers = put(headers, "dataschema", v);
    }
    if let Some(v) = &event.subject {
        headers = put(headers, "subject", v);
    }
    if let Some(v) = &event.time {
        headers = put(headers, "time", v);
    }
    for (name, value) in &event.extensions {
        headers = put(headers, name, &value.as_canonical());
    }
    if let Some(ct) = &event.datacontenttype {
        headers = headers.insert(Header {
            key: CONTENT_TYPE,
            value: Some(ct.as_bytes()),
        });
    }
    EncodedRecord {
        key: event
            .extension(PARTITION_KEY)
            .map(std::borrow::Cow::into_owned),
        headers,
        value: event.data.clone(),
    }
}

fn put(headers: OwnedHeaders, name: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key: &format!("{CE_PREFIX}{name}"),
        value: Some(value.as_bytes()),
    })
}

/// Encode `event` in structured content mode (JSON).
pub fn encode_structured(event: &Event) -> EncodedRecord {
    let headers = OwnedHeaders::new().insert(Header {
        key: CONTENT_TYPE,
        value: Some(STRUCTURED_CONTENT_TYPE.as_bytes()),
    });
    EncodedRecord {
        key: event
            .extension(PARTITION_KEY)
            .map(std::borrow::Cow::into_owned),
        headers,
        value: Some(Bytes::from(to_structured_json(event))),
    }
}

/// Why a record is not a CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("header {0:?} is not valid UTF-8")]
    HeaderEncoding(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Decode a record in either content mode.
pub fn decode<H: Headers>(headers: Option<&H>, value: Option<&[u8]>) -> Result<Event, CodecError> {
    let mut content_type: Option<&[u8]> = None;
    let mut has_specversion = false;
    if let Some(headers) = headers {
        for h in headers.iter() {
            if h.key.eq_ignore_ascii_case(CONTENT_TYPE) {
                content_type = h.value;
            } else if h.key == "ce_specversion" {
                has_specversion = true;
            }
        }
    }
    let structured = content_type.is_some_and(|ct| {
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        ct.starts_with("application/cloudevents")
    });
    if structured && !has_specversion {
        return Ok(from_structured_json(value.unwrap_or_default())?);
    }
    let Some(headers) = headers.filter(|_| has_specversion) else {
        return Err(DecodeError::NotCloudEvent.into());
    };
    let mut event = Event::new("", "", "");
    event.specversion.clear();
    for h in headers.iter() {
        let Some(name) = h.key.strip_prefix(CE_PREFIX) else {
            if h.key.eq_ignore_ascii_case(CONTENT_TYPE) {
                event.datacontenttype = Some(utf8(h.key, h.value)?);
            }
            continue;
        };
        let value = utf8(h.key, h.value)?;
        match name {
            "specversion" => event.specversion = value,
            "id" => event.id = value,
            "source" => event.source = value,
            "type" => event.ty = value,
            "dataschema" => event.dataschema = Some(value),
            "subject" => event.subject = Some(value),
            "time" => event.time = Some(value),
            "datacontenttype" => {
                // Not a binary-mode header, but tolerate producers that set it.
                if event.datacontenttype.is_none() {
                    event.datacontenttype = Some(value);
                }
            }
            ext => {
                event
                    .extensions
                    .insert(ext.to_owned(), ExtensionValue::String(value));
            }
        }
    }
    event.data = value.map(Bytes::copy_from_slice);
    event.validate().map_err(DecodeError::from)?;
    Ok(event)
}

fn utf8(key: &str, value: Option<&[u8]>) -> Result<String, CodecError> {
    String::from_utf8(value.unwrap_or_default().to_vec())
        .map_err(|_| CodecError::HeaderEncoding(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Event {
        let mut e = Event::new("id-1", "/orders", "dev.example.created")
            .with_data("application/json", Bytes::from_static(b"{\"a\":1}"))
            .with_extension("partitionkey", "customer-7")
            .with_extension("traceparent", "00-abc-def-01");
        e.subject = Some("s".into());
        e.time = Some("2024-01-01T00:00:00Z".into());
        e.dataschema = Some("https://example.com/schema".into());
        e
    }

    #[test]
    fn binary_round_trip_and_key() {
        let e = sample();
        let r = encode_binary(&e);
        assert_eq!(r.key.as_deref(), Some("customer-7"));
        assert_eq!(r.value.as_deref(), Some(&b"{\"a\":1}"[..]));
        let names: Vec<&str> = r.headers.iter().map(|h| h.key).collect();
        assert!(names.contains(&"ce_id"));
        assert!(names.contains(&"content-type"));
        assert!(!names.contains(&"ce_datacontenttype"));
        let back = decode(Some(&r.headers), r.value.as_deref()).expect("decodes");
        assert_eq!(back, e);
    }

    #[test]
    fn structured_is_readable() {
        let e = sample();
        let r = encode_structured(&e);
        let back = decode(Some(&r.headers), r.value.as_deref()).expect("decodes");
        assert_eq!(back.id, e.id);
        assert_eq!(back.data, e.data);
        assert_eq!(
            back.extension("partitionkey").as_deref(),
            Some("customer-7")
        );
    }

    #[test]
    fn no_data_and_no_key() {
        let e = Event::new("x", "/s", "t");
        let r = encode_binary(&e);
        assert!(r.key.is_none());
        assert!(r.value.is_none());
        assert_eq!(decode(Some(&r.headers), None).expect("decodes"), e);
    }

    #[test]
    fn rejects_what_is_not_a_cloudevent() {
        let none: Option<&OwnedHeaders> = None;
        assert!(decode(none, Some(b"hello")).is_err());
        let h = OwnedHeaders::new().insert(Header {
            key: "ce_specversion",
            value: Some(&b"1.0"[..]),
        });
        // Missing id/source/type.
        assert!(decode(Some(&h), None).is_err());
        let h = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(STRUCTURED_CONTENT_TYPE.as_bytes()),
        });
        assert!(decode(Some(&h), Some(b"not json")).is_err());
        let h = OwnedHeaders::new()
            .insert(Header {
                key: "ce_specversion",
                value: Some(&b"1.0"[..]),
            })
            .insert(Header {
                key: "ce_id",
                value: Some(&[0xff, 0xfe][..]),
            });
        assert!(matches!(
            decode(Some(&h), None),
            Err(CodecError::HeaderEncoding(_))
        ));
    }

    proptest! {
        #[test]
        fn binary_round_trips_any_event(
            id in "[a-zA-Z0-9-]{1,20}",
            source in "/[a-z/]{0,20}",
            ty in "[a-z.]{1,20}",
            subject in proptest::option::of("[ -~]{0,30}"),
            ext in proptest::collection::btree_map("[a-z][a-z0-9]{0,10}", "[ -~]{0,20}", 0..5),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let mut e = Event::new(id, source, ty);
            e.subject = subject;
            for (k, v) in ext {
                if channel_core::event::CONTEXT_ATTRIBUTES.contains(&k.as_str()) || k == "data" || k == "data_base64" {
                    continue;
                }
                e.extensions.insert(k, ExtensionValue::String(v));
            }
            if let Some(d) = data {
                e.datacontenttype = Some("application/octet-stream".into());
                e.data = Some(Bytes::from(d));
            }
            let r = encode_binary(&e);
            let back = decode(Some(&r.headers), r.value.as_deref()).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(back, e);
        }

        #[test]
        fn decoding_garbage_never_panics(
            headers in proptest::collection::vec(("[a-z_-]{1,16}", proptest::collection::vec(any::<u8>(), 0..16)), 0..8),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let mut h = OwnedHeaders::new();
            for (k, v) in &headers {
                h = h.insert(Header { key: k, value: Some(v) });
            }
            let _ = decode(Some(&h), value.as_deref());
        }
    }
}

//! Property tests: any valid event survives both HTTP content modes
//! unchanged, and no input makes the decoders panic.

use super::*;
use ::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use bytes::Bytes;
use proptest::prelude::*;

fn attr_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,19}".prop_filter("not a reserved name", |n| {
        !CONTEXT_ATTRIBUTES.contains(&n.as_str()) && !RESERVED_JSON_MEMBERS.contains(&n.as_str())
    })
}

fn text() -> impl Strategy<Value = String> {
    // Printable and non-ASCII characters, spaces, quotes and percent signs:
    // everything the header escaping must get right.
    "[ -~àéü€😀\"%]{1,40}"
}

fn event() -> impl Strategy<Value = Event> {
    (
        text(),
        text(),
        text(),
        proptest::option::of(text()),
        proptest::option::of("2024-0[1-9]-1[0-9]T1[0-9]:00:00Z"),
        proptest::collection::btree_map(attr_name(), text(), 0..4),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 1..200)),
    )
        .prop_map(|(id, source, ty, subject, time, exts, data)| {
            let mut e = Event::new(id, source, ty);
            e.subject = subject;
            e.time = time;
            e.extensions = exts
                .into_iter()
                .map(|(k, v)| (k, ExtensionValue::String(v)))
                .collect();
            if let Some(data) = data {
                e.datacontenttype = Some("application/octet-stream".into());
                e.data = Some(Bytes::from(data));
            }
            e
        })
}

proptest! {
    #[test]
    fn binary_mode_round_trips(e in event()) {
        let mut headers = HeaderMap::new();
        let body = encode_binary(&e, &mut headers);
        prop_assert_eq!(decode_http(&headers, body).expect("decodes"), e);
    }

    #[test]
    fn structured_mode_round_trips(e in event()) {
        let mut headers = HeaderMap::new();
        let body = encode_structured(&e, &mut headers);
        prop_assert_eq!(decode_http(&headers, body).expect("decodes"), e);
    }

    #[test]
    fn structured_decoder_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(STRUCTURED_CONTENT_TYPE));
        let _ = decode_http(&headers, Bytes::from(body));
    }

    #[test]
    fn binary_decoder_never_panics(
        pairs in proptest::collection::vec(("ce-[a-z]{1,12}", "[ -~]{0,30}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                headers.insert(k, v);
            }
        }
        let _ = decode_http(&headers, Bytes::from(body));
    }
}

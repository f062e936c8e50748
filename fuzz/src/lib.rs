//! What the fuzz targets share: the text form of an HTTP request they read,
//! the events filters are evaluated against, and the round-trip checks of
//! the CloudEvents codecs.
//!
//! Every check panics (which libFuzzer reports as a crash) when a promise
//! of the code under test is broken; inputs the code rightly refuses are
//! not crashes.

use bytes::Bytes;
use channel_core::event::{
    decode_http, encode_binary, encode_structured, from_structured_json, to_structured_json, Event,
    ExtensionValue, STRUCTURED_CONTENT_TYPE,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// An HTTP request without its request line, as the seed corpus writes it:
/// `Name: value` lines, an empty line, then the body. Lines without a
/// colon, and names or values HTTP does not allow, are skipped (a server
/// would have refused them before the codec sees them); with no empty line
/// the body is empty. Header values are raw bytes, so non-ASCII (`obs-text`)
/// values reach the decoder.
pub fn http_request(data: &[u8]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    let mut body: &[u8] = &[];
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            body = rest;
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = trim_ows(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            // A map holds at most 32768 entries; more is not a codec input.
            let _ = headers.try_append(name, value);
        }
    }
    (headers, Bytes::copy_from_slice(body))
}

/// Strip HTTP optional whitespace (spaces and tabs) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether `ct` is a media type the HTTP binding reserves for structured or
/// batched events: an event carrying one as its `datacontenttype` cannot be
/// sent in binary mode (the receiver would read the body as the event).
fn is_reserved_media_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE)
        || essence.eq_ignore_ascii_case("application/cloudevents-batch+json")
}

/// The event binary mode can carry for `event`: every extension is a
/// string (headers carry no types) and empty data is no data.
fn as_binary(event: &Event) -> Event {
    let mut e = event.clone();
    for value in e.extensions.values_mut() {
        if !matches!(value, ExtensionValue::String(_)) {
            *value = ExtensionValue::String(value.as_canonical().into_owned());
        }
    }
    if e.data.as_ref().is_some_and(Bytes::is_empty) {
        e.data = None;
    }
    e
}

/// Whether a `datacontenttype` is JSON, as the JSON event format decides it
/// (`application/json`, `text/json` or a `+json` suffix).
fn is_json(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The event the JSON event format carries for `event`: data of a JSON
/// content type that is JSON (UTF-8, valid) is carried as a JSON value, so
/// the whitespace around it is not kept; any other data is carried as is.
fn as_structured(event: &Event) -> Event {
    let mut e = event.clone();
    let json_ct = e.datacontenttype.as_deref().is_some_and(is_json);
    if let (true, Some(data)) = (json_ct, &e.data) {
        let valid = std::str::from_utf8(data)
            .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
        if valid {
            let start = data
                .iter()
                .position(|b| !b" \t\r\n".contains(b))
                .unwrap_or(data.len());
            let end = data
                .iter()
                .rposition(|b| !b" \t\r\n".contains(b))
                .map_or(start, |i| i + 1);
            e.data = Some(data.slice(start..end));
        }
    }
    e
}

/// A valid event survives binary mode: decoding what `encode_binary` wrote
/// gives the event back (as binary mode can carry it).
pub fn check_binary_round_trip(event: &Event) {
    if let Some(ct) = &event.datacontenttype {
        if HeaderValue::from_str(ct).is_err() || is_reserved_media_type(ct) {
            // Not expressible as a binary-mode content-type.
            return;
        }
    }
    let mut headers = HeaderMap::new();
    let body = encode_binary(event, &mut headers);
    let back = match decode_http(&headers, body.clone()) {
        Ok(back) => back,
        Err(e) => {
            panic!("binary encoding of {event:?} does not decode: {e}\n{headers:?}\n{body:?}")
        }
    };
    assert_eq!(
        back,
        as_binary(event),
        "binary round trip changed the event"
    );
}

/// A valid event survives structured mode: decoding what
/// `encode_structured` wrote gives the event back.
pub fn check_structured_round_trip(event: &Event) {
    let mut headers = HeaderMap::new();
    let body = encode_structured(event, &mut headers);
    let back = match decode_http(&headers, body.clone()) {
        Ok(back) => back,
        Err(e) => panic!(
            "structured encoding of {event:?} does not decode: {e}\n{}",
            String::from_utf8_lossy(&body)
        ),
    };
    assert_eq!(
        back,
        as_structured(event),
        "structured round trip changed the event\n{}",
        String::from_utf8_lossy(&body)
    );
}

/// The JSON event format alone: what `from_structured_json` read (valid or
/// not) is written by `to_structured_json` so that it reads back the same.
pub fn check_json_round_trip(event: &Event) {
    let json = to_structured_json(event);
    let back = match from_structured_json(&json) {
        Ok(back) => back,
        Err(e) => panic!(
            "{event:?} written as JSON does not read back: {e}\n{}",
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(
        &back,
        event,
        "JSON round trip changed the event\n{}",
        String::from_utf8_lossy(&json)
    );
}

/// The events filters and CESQL expressions are evaluated against: a full
/// event with typed extensions, a minimal one, and one with no attribute at
/// all (not a valid CloudEvent, but filters must not care).
pub fn sample_events() -> Vec<Box<dyn event_filter::EventAttributes>> {
    let full = Event::new("order-1", "/shop/eu/fr", "com.example.order.created")
        .with_data("application/json; charset=utf-8", &br#"{"item":"pen"}"#[..])
        .with_extension("quantity", "12")
        .with_extension("count", ExtensionValue::Integer(7))
        .with_extension("negative", ExtensionValue::Integer(-2147483648))
        .with_extension("big", ExtensionValue::Integer(i64::MAX))
        .with_extension("flag", ExtensionValue::Boolean(true))
        .with_extension("text", "Ünïcödé ß İ %_\\ 😀");
    let mut full = full;
    full.subject = Some("orders/123".into());
    full.time = Some("2024-01-01T00:00:00Z".into());
    full.dataschema = Some("https://example.com/schema".into());
    vec![
        Box::new(full),
        Box::new(Event::new("1", "/s", "t")),
        Box::new(event_filter::MapEvent::empty()),
    ]
}

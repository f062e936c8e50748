//! The CloudEvents JSON event format (structured mode).
//!
//! `data` of a JSON content type is kept as the exact raw JSON text of the
//! member, so a structured event passes through byte for byte; `data_base64`
//! is decoded to bytes; a JSON string `data` of another content type becomes
//! its UTF-8 bytes.

use super::http::DecodeError;
use super::{Event, ExtensionValue, CONTEXT_ATTRIBUTES};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Whether a `datacontenttype` denotes JSON (`application/json`,
/// `text/json`, or any `+json` suffix).
pub(crate) fn is_json_content_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn member_err(member: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Member {
        member: member.to_owned(),
        reason: reason.into(),
    }
}

fn string_member(name: &str, raw: &RawValue) -> Result<Option<String>, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(raw.get()).map_err(|e| member_err(name, e.to_string()))?;
    match value {
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Null => Ok(None),
        other => Err(member_err(
            name,
            format!("expected a string, found {}", json_kind(&other)),
        )),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parse a structured-mode JSON body. The result is not yet validated.
pub fn from_structured_json(body: &[u8]) -> Result<Event, DecodeError> {
    let members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut event = Event::new(String::new(), String::new(), String::new());
    event.specversion = String::new();
    let mut data_raw: Option<&RawValue> = None;
    let mut data_base64: Option<&RawValue> = None;
    for (name, raw) in &members {
        match name.as_str() {
            "specversion" => event.specversion = string_member(name, raw)?.unwrap_or_default(),
            "id" => event.id = string_member(name, raw)?.unwrap_or_default(),
            "source" => event.source = string_member(name, raw)?.unwrap_or_default(),
            "type" => event.ty = string_member(name, raw)?.unwrap_or_default(),
            "datacontenttype" => event.datacontenttype = string_member(name, raw)?,
            "dataschema" => event.dataschema = string_member(name, raw)?,
            "subject" => event.subject = string_member(name, raw)?,
            "time" => event.time = string_member(name, raw)?,
            "data" => data_raw = Some(raw),
            "data_base64" => data_base64 = Some(raw),
            ext => {
                let value: serde_json::Value =
                    serde_json::from_str(raw.get()).map_err(|e| member_err(ext, e.to_string()))?;
                let value = match value {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => ExtensionValue::String(s),
                    serde_json::Value::Bool(b) => ExtensionValue::Boolean(b),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) if i32::try_from(i).is_ok() => ExtensionValue::Integer(i),
                        _ => {
                            return Err(member_err(
                                ext,
                                "extension integers must fit in 32 bits (CloudEvents Integer)",
                            ))
                        }
                    },
                    other => {
                        return Err(member_err(
                            ext,
                            format!(
                                "extension values must be strings, booleans or integers, found {}",
                                json_kind(&other)
                            ),
                        ))
                    }
                };
                event.extensions.insert(ext.to_owned(), value);
            }
        }
    }
    match (data_raw, data_base64) {
        (Some(_), Some(_)) => {
            return Err(member_err(
                "data",
                "an event must not carry both data and data_base64",
            ))
        }
        (None, Some(raw)) => {
            if let Some(text) = string_member("data_base64", raw)? {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| member_err("data_base64", format!("invalid base64: {e}")))?;
                event.data = Some(Bytes::from(bytes));
            }
        }
        (Some(raw), None) => {
            let json_ct = event
                .datacontenttype
                .as_deref()
                .is_none_or(is_json_content_type);
            if raw.get() == "null" {
                // JSON null data is the absence of data.
            } else if json_ct {
                event.data = Some(Bytes::copy_from_slice(raw.get().as_bytes()));
            } else if raw.get().starts_with('"') {
                let text = string_member("data", raw)?.unwrap_or_default();
                event.data = Some(Bytes::from(text));
            } else {
                event.data = Some(Bytes::copy_from_slice(raw.get().as_bytes()));
            }
        }
        (None, None) => {}
    }
    Ok(event)
}

fn push_member(out: &mut Vec<u8>, first: &mut bool, name: &str, value: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Serialize an event in the JSON event format.
pub fn to_structured_json(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + event.data.as_ref().map_or(0, |d| d.len() * 4 / 3));
    out.push(b'{');
    let mut first = true;
    push_member(&mut out, &mut first, "specversion", &event.specversion);
    push_member(&mut out, &mut first, "id", &event.id);
    push_member(&mut out, &mut first, "source", &event.source);
    push_member(&mut out, &mut first, "type", &event.ty);
    for (name, value) in [
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ] {
        if let Some(v) = value {
            push_member(&mut out, &mut first, name, v);
        }
    }
    for (name, value) in &event.extensions {
        debug_assert!(!CONTEXT_ATTRIBUTES.contains(&name.as_str()));
        match value {
            ExtensionValue::String(s) => push_member(&mut out, &mut first, name, s),
            ExtensionValue::Boolean(_) | ExtensionValue::Integer(_) => {
                out.push(b',');
                let _ = serde_json::to_writer(&mut out, name);
                out.push(b':');
                out.extend_from_slice(value.as_canonical().as_bytes());
            }
        }
    }
    if let Some(data) = &event.data {
        let json_ct = event
            .datacontenttype
            .as_deref()
            .is_some_and(is_json_content_type);
        // `from_slice` does not check that ignored strings are UTF-8, which
        // the decoder (and JSON) requires of the whole document.
        let is_valid_json = || {
            std::str::from_utf8(data)
                .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
        };
        // Data of a JSON content type is read back as raw JSON, so data
        // that is not valid JSON must go as base64 even when the type is
        // textual (`text/json`): as a JSON string it would come back with
        // its quotes.
        let textual = !json_ct
            && event
                .datacontenttype
                .as_deref()
                .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/"));
        if json_ct && is_valid_json() {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data);
        } else if let (true, Ok(text)) = (textual, std::str::from_utf8(data)) {
            push_member(&mut out, &mut first, "data", text);
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            push_member(&mut out, &mut first, "data_base64", &encoded);
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_kept_verbatim() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"b" : 2,  "a":1}}"#;
        let e = from_structured_json(body).unwrap();
        assert_eq!(e.data.as_deref(), Some(&br#"{"b" : 2,  "a":1}"#[..]));
        let out = to_structured_json(&e);
        assert_eq!(from_structured_json(&out).unwrap(), e);
    }

    #[test]
    fn data_base64_and_text() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC"}"#;
        let e = from_structured_json(body).unwrap();
        assert_eq!(e.data.as_deref(), Some(&[0u8, 1, 2][..]));
        let out = to_structured_json(&e);
        assert!(String::from_utf8_lossy(&out).contains("\"data_base64\":\"AAEC\""));

        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi \"there\""}"#;
        let e = from_structured_json(body).unwrap();
        assert_eq!(e.data.as_deref(), Some(&b"hi \"there\""[..]));
        assert_eq!(from_structured_json(&to_structured_json(&e)).unwrap(), e);
    }

    #[test]
    fn text_json_data_that_is_not_json_round_trips() {
        // Found by the structured round trip of fuzz/fuzz_targets/http_decode.rs:
        // `text/json` data that is not JSON was written as a JSON string
        // and read back as that string's raw text, quotes included.
        let e = Event::new("1", "/s", "t").with_data("text/json", &b" not json "[..]);
        let out = to_structured_json(&e);
        assert_eq!(from_structured_json(&out).unwrap(), e);
    }

    #[test]
    fn json_data_with_invalid_utf8_round_trips() {
        // Found by the structured round trip of fuzz/fuzz_targets/http_decode.rs:
        // binary-mode JSON data with bytes that are not UTF-8 in a string
        // was copied into the structured document, which then was not JSON.
        let e = Event::new("1", "/s", "t")
            .with_data("application/json", &b"{\"item\": \"pe\xff\xffn\"}"[..]);
        let out = to_structured_json(&e);
        assert!(std::str::from_utf8(&out).is_ok());
        assert_eq!(from_structured_json(&out).unwrap(), e);
    }

    #[test]
    fn typed_extensions_round_trip() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","flag":true,"count":7,"name":"x"}"#;
        let e = from_structured_json(body).unwrap();
        assert_eq!(e.extensions["flag"], ExtensionValue::Boolean(true));
        assert_eq!(e.extensions["count"], ExtensionValue::Integer(7));
        assert_eq!(from_structured_json(&to_structured_json(&e)).unwrap(), e);
    }

    #[test]
    fn malformed_json_is_reported() {
        assert!(matches!(
            from_structured_json(b"{not json"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            from_structured_json(br#"{"specversion":"1.0","id":5}"#),
            Err(DecodeError::Member { .. })
        ));
        assert!(matches!(
            from_structured_json(br#"{"specversion":"1.0","id":"1","ext":{"a":1}}"#),
            Err(DecodeError::Member { .. })
        ));
        assert!(matches!(
            from_structured_json(br#"{"data":1,"data_base64":"AA=="}"#),
            Err(DecodeError::Member { .. })
        ));
    }

    #[test]
    fn agrees_with_the_cloudevents_sdk() {
        let body = br#"{"specversion":"1.0","id":"42","source":"https://example.com/x","type":"com.example.t","subject":"s","time":"2024-01-01T00:00:00Z","datacontenttype":"application/json","data":{"k":"v"},"myext":"val"}"#;
        let ours = from_structured_json(body).unwrap();
        let sdk: cloudevents::Event = serde_json::from_slice(body).unwrap();
        use cloudevents::AttributesReader;
        assert_eq!(ours.id, sdk.id());
        assert_eq!(ours.source, sdk.source().to_string());
        assert_eq!(ours.ty, sdk.ty());
        assert_eq!(ours.subject.as_deref(), sdk.subject());
        assert_eq!(ours.extension("myext").as_deref(), Some("val"));
        // And the SDK reads what we write.
        let sdk_back: cloudevents::Event =
            serde_json::from_slice(&to_structured_json(&ours)).unwrap();
        assert_eq!(sdk_back.id(), "42");
        assert_eq!(
            sdk_back.data(),
            Some(&cloudevents::Data::Json(serde_json::json!({"k": "v"})))
        );
    }
}

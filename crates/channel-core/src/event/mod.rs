//! The CloudEvents 1.0 model: attributes plus opaque data.
//!
//! The channel layer moves events; it never interprets them. Attributes are
//! kept as the strings (or JSON scalars) they arrived as, and `data` is a
//! byte buffer that is never parsed or rewritten on the way through. The only
//! exception is structured-mode JSON, where `data` of a JSON content type is
//! kept as the exact raw JSON text of the member.

mod http;
mod json;
#[cfg(test)]
mod proptests;

pub use self::http::{
    decode_http, encode_binary, encode_structured, DecodeError, Encoded, CE_HEADER_PREFIX,
    STRUCTURED_CONTENT_TYPE,
};
pub use self::json::{from_structured_json, to_structured_json};

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// The only CloudEvents specification version this layer accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The value of an extension attribute.
///
/// In HTTP binary mode every value is a string; structured JSON may carry
/// booleans and integers, which are kept as such so that a structured event
/// re-encoded as structured is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionValue {
    String(String),
    Boolean(bool),
    Integer(i64),
}

impl ExtensionValue {
    /// The canonical string form used in HTTP headers (CloudEvents type system).
    pub fn as_canonical(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ExtensionValue::String(s) => std::borrow::Cow::Borrowed(s),
            ExtensionValue::Boolean(b) => {
                std::borrow::Cow::Borrowed(if *b { "true" } else { "false" })
            }
            ExtensionValue::Integer(i) => std::borrow::Cow::Owned(i.to_string()),
        }
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        ExtensionValue::String(s.to_owned())
    }
}

impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        ExtensionValue::String(s)
    }
}

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_canonical())
    }
}

/// A CloudEvent.
///
/// Context attributes are public fields; construct with [`Event::new`] and
/// check with [`Event::validate`] before trusting one from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub ty: String,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339 timestamp, kept as received.
    pub time: Option<String>,
    /// Extension attributes by (lower-case) name.
    pub extensions: BTreeMap<String, ExtensionValue>,
    /// Opaque payload; `None` when the event carries no data.
    pub data: Option<Bytes>,
}

/// Why an event is not a valid CloudEvent 1.0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("unsupported specversion {0:?}: only \"1.0\" is accepted")]
    SpecVersion(String),
    #[error("required attribute {0:?} is missing or empty")]
    Missing(&'static str),
    #[error("attribute name {0:?} is invalid: names are 1 to 20 characters of a-z and 0-9")]
    AttributeName(String),
    #[error("extension {0:?} shadows a context attribute")]
    Reserved(String),
}

/// Names of the context attributes defined by the CloudEvents 1.0 spec.
pub const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// Attribute names the JSON format reserves besides the context attributes.
pub(crate) const RESERVED_JSON_MEMBERS: &[&str] = &["data", "data_base64"];

/// Whether `name` is a legal CloudEvents attribute name: lower-case ASCII
/// letters and digits. The spec says names SHOULD NOT exceed 20 characters;
/// we accept up to 64 to interoperate with producers that exceed it.
pub fn is_valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Event {
    /// A minimal valid event with the required attributes.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Event {
            specversion: SPEC_VERSION.to_owned(),
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// Builder-style: set data and its content type.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self.data = Some(data.into());
        self
    }

    /// Builder-style: set an extension attribute.
    pub fn with_extension(mut self, name: &str, value: impl Into<ExtensionValue>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// The string value of an extension, if set.
    pub fn extension(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.extensions.get(name).map(ExtensionValue::as_canonical)
    }

    /// Check the event against the CloudEvents 1.0 rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.specversion != SPEC_VERSION {
            return Err(ValidationError::SpecVersion(self.specversion.clone()));
        }
        if self.id.is_empty() {
            return Err(ValidationError::Missing("id"));
        }
        if self.source.is_empty() {
            return Err(ValidationError::Missing("source"));
        }
        if self.ty.is_empty() {
            return Err(ValidationError::Missing("type"));
        }
        for name in self.extensions.keys() {
            if !is_valid_attribute_name(name) {
                return Err(ValidationError::AttributeName(name.clone()));
            }
            if CONTEXT_ATTRIBUTES.contains(&name.as_str())
                || RESERVED_JSON_MEMBERS.contains(&name.as_str())
            {
                return Err(ValidationError::Reserved(name.clone()));
            }
        }
        Ok(())
    }

    /// Approximate number of bytes this event occupies in memory; used by
    /// bounded buffers to account for what they hold.
    pub fn size_hint(&self) -> usize {
        let attrs = self.specversion.len()
            + self.id.len()
            + self.source.len()
            + self.ty.len()
            + self.datacontenttype.as_ref().map_or(0, String::len)
            + self.dataschema.as_ref().map_or(0, String::len)
            + self.subject.as_ref().map_or(0, String::len)
            + self.time.as_ref().map_or(0, String::len)
            + self
                .extensions
                .iter()
                .map(|(k, v)| k.len() + v.as_canonical().len() + 48)
                .sum::<usize>();
        std::mem::size_of::<Event>() + attrs + self.data.as_ref().map_or(0, Bytes::len)
    }
}

/// Filters read attributes straight from the event, without copying.
impl event_filter::EventAttributes for Event {
    fn attribute(&self, name: &str) -> Option<event_filter::AttributeValue<'_>> {
        use event_filter::AttributeValue as V;
        fn text(s: &Option<String>) -> Option<event_filter::AttributeValue<'_>> {
            s.as_deref().map(event_filter::AttributeValue::String)
        }
        match name {
            "specversion" => Some(V::String(&self.specversion)),
            "id" => Some(V::String(&self.id)),
            "source" => Some(V::String(&self.source)),
            "type" => Some(V::String(&self.ty)),
            "datacontenttype" => text(&self.datacontenttype),
            "dataschema" => text(&self.dataschema),
            "subject" => text(&self.subject),
            "time" => text(&self.time),
            _ => self.extensions.get(name).map(|v| match v {
                ExtensionValue::String(s) => V::String(s),
                ExtensionValue::Boolean(b) => V::Boolean(*b),
                ExtensionValue::Integer(i) => V::Integer(*i),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_required_attributes() {
        assert!(Event::new("1", "/src", "t").validate().is_ok());
        assert_eq!(
            Event::new("", "/src", "t").validate(),
            Err(ValidationError::Missing("id"))
        );
        assert_eq!(
            Event::new("1", "", "t").validate(),
            Err(ValidationError::Missing("source"))
        );
        assert_eq!(
            Event::new("1", "/s", "").validate(),
            Err(ValidationError::Missing("type"))
        );
        let mut e = Event::new("1", "/s", "t");
        e.specversion = "0.3".into();
        assert!(matches!(e.validate(), Err(ValidationError::SpecVersion(_))));
    }

    #[test]
    fn rejects_bad_extension_names() {
        let e = Event::new("1", "/s", "t").with_extension("Bad-Name", "x");
        assert!(matches!(
            e.validate(),
            Err(ValidationError::AttributeName(_))
        ));
        let e = Event::new("1", "/s", "t").with_extension("data", "x");
        assert!(matches!(e.validate(), Err(ValidationError::Reserved(_))));
        let e = Event::new("1", "/s", "t").with_extension("traceparent", "00-ab");
        assert!(e.validate().is_ok());
    }
}

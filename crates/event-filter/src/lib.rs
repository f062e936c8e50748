//! Knative Trigger filters and CloudEvents SQL.
//!
//! This crate owns the filter languages a Trigger may use, with no I/O, so
//! the control plane validates them when manifests load and the data plane
//! evaluates them per event:
//!
//! * [`cesql`]: CloudEvents SQL v1 — lexer, parser, static checks and an
//!   evaluator that allocates nothing on the common paths, checked against
//!   the specification's TCK.
//! * [`spec`]: Knative's filter spec types as users write them
//!   (`spec.filter.attributes`, the v1alpha1 `sourceAndType`, and the
//!   `spec.filters` dialects `exact`, `prefix`, `suffix`, `all`, `any`,
//!   `not`, `cesql`), with Knative's validation rules.
//! * [`filter`]: a compiled [`Filter`] with Knative's semantics, evaluated
//!   over any [`EventAttributes`].
//!
//! It must not know HTTP, backends, Kubernetes clients or the channel
//! layer's event type: events are seen only through [`EventAttributes`],
//! which the event's owner implements.

#![warn(missing_docs)]

pub mod cesql;
pub mod filter;
pub mod spec;

pub use filter::{Filter, FilterError, FilterResult};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A context attribute or extension value as a filter sees it (the
/// CloudEvents type system, with URI, timestamp and binary values already
/// in their canonical string form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeValue<'a> {
    /// A String (also URI, URI-reference, Timestamp and Binary values).
    String(&'a str),
    /// An Integer extension.
    Integer(i64),
    /// A Boolean extension.
    Boolean(bool),
}

impl AttributeValue<'_> {
    /// The canonical string form (CloudEvents type system): an Integer in
    /// decimal, a Boolean as `true` or `false`. Allocates only for an
    /// Integer; see [`AttributeValue::with_canonical`] for a form that never
    /// does.
    pub fn as_canonical(&self) -> Cow<'_, str> {
        match self {
            AttributeValue::String(s) => Cow::Borrowed(s),
            AttributeValue::Integer(n) => Cow::Owned(n.to_string()),
            AttributeValue::Boolean(b) => Cow::Borrowed(bool_str(*b)),
        }
    }

    /// Call `f` with the canonical string form, formatting an Integer on
    /// the stack (no allocation).
    pub fn with_canonical<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            AttributeValue::String(s) => f(s),
            AttributeValue::Integer(n) => f(DecimalBuf::new(*n).as_str()),
            AttributeValue::Boolean(b) => f(bool_str(*b)),
        }
    }
}

/// `true` / `false`, the canonical form of a Boolean.
pub(crate) fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The decimal form of an `i64`, formatted on the stack.
pub(crate) struct DecimalBuf {
    buf: [u8; 20],
    start: usize,
}

impl DecimalBuf {
    /// Format `n`.
    pub(crate) fn new(n: i64) -> DecimalBuf {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut m = n.unsigned_abs();
        loop {
            i -= 1;
            // `m % 10` is below 10: the cast cannot truncate.
            buf[i] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        DecimalBuf { buf, start: i }
    }

    /// The formatted number.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and '-' were written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

/// A CloudEvent's attributes as a filter sees them.
///
/// Implementations must be cheap: filters call [`EventAttributes::attribute`]
/// once per attribute reference per evaluation, on the delivery hot path.
pub trait EventAttributes {
    /// The value of context attribute or extension `name` (lower case);
    /// `None` when the event does not have it. The required attributes
    /// (`specversion`, `id`, `source`, `type`) are always present on a
    /// valid event.
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>>;
}

impl<T: EventAttributes + ?Sized> EventAttributes for &T {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        (**self).attribute(name)
    }
}

impl<T: EventAttributes + ?Sized> EventAttributes for Box<T> {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        (**self).attribute(name)
    }
}

impl<T: EventAttributes + ?Sized> EventAttributes for Arc<T> {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        (**self).attribute(name)
    }
}

/// A map of attribute names to string values is an event, for tests and
/// tools.
impl EventAttributes for BTreeMap<String, String> {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        self.get(name).map(|v| AttributeValue::String(v))
    }
}

/// An owned attribute value of a [`MapEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapValue {
    /// A String value.
    String(String),
    /// An Integer value.
    Integer(i64),
    /// A Boolean value.
    Boolean(bool),
}

impl From<&str> for MapValue {
    fn from(s: &str) -> Self {
        MapValue::String(s.to_owned())
    }
}

impl From<String> for MapValue {
    fn from(s: String) -> Self {
        MapValue::String(s)
    }
}

impl From<i64> for MapValue {
    fn from(n: i64) -> Self {
        MapValue::Integer(n)
    }
}

impl From<i32> for MapValue {
    fn from(n: i32) -> Self {
        MapValue::Integer(n.into())
    }
}

impl From<bool> for MapValue {
    fn from(b: bool) -> Self {
        MapValue::Boolean(b)
    }
}

/// A small owned event with typed attributes, for tests, tools and
/// benchmarks.
///
/// ```
/// use event_filter::{EventAttributes, MapEvent};
/// let event = MapEvent::new("1", "/shop", "com.example.order").with("quantity", 12);
/// assert!(event.attribute("quantity").is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEvent {
    attributes: BTreeMap<String, MapValue>,
}

impl MapEvent {
    /// A valid event: `specversion` 1.0 and the given `id`, `source` and
    /// `type`.
    pub fn new(id: &str, source: &str, ty: &str) -> MapEvent {
        MapEvent::empty()
            .with("specversion", "1.0")
            .with("id", id)
            .with("source", source)
            .with("type", ty)
    }

    /// An event with no attribute at all (not a valid CloudEvent, but
    /// useful to test missing attributes).
    pub fn empty() -> MapEvent {
        MapEvent::default()
    }

    /// This event with attribute `name` set to `value`.
    pub fn with(mut self, name: &str, value: impl Into<MapValue>) -> MapEvent {
        self.set(name, value);
        self
    }

    /// Set attribute `name` to `value`.
    pub fn set(&mut self, name: &str, value: impl Into<MapValue>) {
        self.attributes.insert(name.to_owned(), value.into());
    }

    /// Remove attribute `name`.
    pub fn remove(&mut self, name: &str) {
        self.attributes.remove(name);
    }
}

impl EventAttributes for MapEvent {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        self.attributes.get(name).map(|v| match v {
            MapValue::String(s) => AttributeValue::String(s),
            MapValue::Integer(n) => AttributeValue::Integer(*n),
            MapValue::Boolean(b) => AttributeValue::Boolean(*b),
        })
    }
}

/// Compile-time check: the trait is object safe.
const _: fn(&dyn EventAttributes) = |_| {};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for n in [0, 7, -7, 10, i64::MAX, i64::MIN, 1_234_567_890] {
            assert_eq!(DecimalBuf::new(n).as_str(), n.to_string());
            assert_eq!(AttributeValue::Integer(n).as_canonical(), n.to_string());
            AttributeValue::Integer(n).with_canonical(|s| assert_eq!(s, n.to_string()));
        }
        assert_eq!(AttributeValue::Boolean(true).as_canonical(), "true");
        AttributeValue::Boolean(false).with_canonical(|s| assert_eq!(s, "false"));
        assert_eq!(AttributeValue::String("x").as_canonical(), "x");
    }

    #[test]
    fn map_event() {
        let mut e = MapEvent::new("1", "/s", "t")
            .with("flag", true)
            .with("n", 3);
        assert_eq!(e.attribute("type"), Some(AttributeValue::String("t")));
        assert_eq!(e.attribute("flag"), Some(AttributeValue::Boolean(true)));
        assert_eq!(e.attribute("n"), Some(AttributeValue::Integer(3)));
        e.remove("n");
        assert_eq!(e.attribute("n"), None);
        let shared: Arc<dyn EventAttributes> = Arc::new(e);
        assert!(shared.attribute("id").is_some());
        let map = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        fn via_ref<T: EventAttributes>(e: T) -> bool {
            e.attribute("a") == Some(AttributeValue::String("b"))
        }
        assert!(via_ref(&map));
    }
}

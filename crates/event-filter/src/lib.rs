//! Knative Trigger filters and CloudEvents SQL.
//!
//! This crate owns the filter languages a Trigger (and later an
//! EventPolicy) may use, with no I/O, so the control plane validates them
//! when manifests load and the data plane evaluates them per event:
//!
//! * [`cesql`]: CloudEvents SQL v1 — lexer, parser, static checks and an
//!   evaluator that allocates nothing on the common paths.
//! * [`spec`]: Knative's filter spec types as users write them
//!   (`spec.filter.attributes`, the seeds' `sourceAndType`, and the new
//!   `spec.filters` dialects `exact`, `prefix`, `suffix`, `all`, `any`,
//!   `not`, `cesql`), with Knative's validation rules.
//! * [`filter`]: a compiled [`Filter`] with Knative's semantics, evaluated
//!   over any [`EventAttributes`].
//!
//! It knows nothing of HTTP, backends or the channel layer's event type:
//! events are seen through [`EventAttributes`].

pub mod cesql;
pub mod filter;
pub mod spec;

pub use filter::{Filter, FilterError, FilterResult};

use std::borrow::Cow;
use std::collections::BTreeMap;

/// A context attribute or extension value as a filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeValue<'a> {
    String(&'a str),
    Integer(i64),
    Boolean(bool),
}

impl AttributeValue<'_> {
    /// The canonical string form (CloudEvents type system).
    pub fn as_canonical(&self) -> Cow<'_, str> {
        match self {
            AttributeValue::String(s) => Cow::Borrowed(s),
            AttributeValue::Integer(n) => Cow::Owned(n.to_string()),
            AttributeValue::Boolean(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }
}

/// A CloudEvent's attributes as a filter sees them.
pub trait EventAttributes {
    /// The value of context attribute or extension `name` (lower case);
    /// `None` when the event does not have it.
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>>;
}

/// A map of attribute names to string values is an event, for tests and
/// tools.
impl EventAttributes for BTreeMap<String, String> {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        self.get(name).map(|v| AttributeValue::String(v))
    }
}

//! Compiled filters with Knative's semantics (`pkg/eventfilter/attributes`
//! and `pkg/eventfilter/subscriptionsapi`).
//!
//! * No filter passes every event ([`Filter::is_match_all`] lets the
//!   engine skip evaluation).
//! * `spec.filters`, when non-empty, wins and `spec.filter` is ignored;
//!   every entry must pass.
//! * `filter.attributes`: every listed attribute must exist and equal its
//!   value; an empty value (Knative's `TriggerAnyFilter`) accepts any
//!   non-empty value. Knative reads an optional context attribute the
//!   event lacks as `""`, so a missing attribute fails either way.
//! * `exact`, `prefix`, `suffix`: every listed attribute must exist and its
//!   canonical string (an Integer in decimal, a Boolean as `true`/`false`)
//!   equal / start with / end with the value.
//! * As in Knative, `schemaurl` reads `dataschema` and `datamediatype` the
//!   media type of `datacontenttype`.
//! * `all`, `any` and `not` combine Knative's three outcomes (pass, fail,
//!   no filter): an entry with no dialect (`{}`, `all: []`) has no opinion
//!   and is ignored — `all` fails if one entry fails and passes if one
//!   passes, `any` passes if one passes and fails if one fails, `not`
//!   swaps pass and fail, and no opinion at the top passes. (Knative
//!   returns the last entry's outcome, which depends on an order it
//!   shuffles at run time; this is the same wherever that is
//!   deterministic.)
//! * `cesql`: passes when the expression yields `true` without error; an
//!   evaluation error fails, like a `false`, and is kept in
//!   [`FilterResult::Error`] for counting. As in Knative, `not` turns such
//!   a failure into a pass.

use crate::cesql::{EvalError, Expression};
use crate::spec::{
    parse_cesql_filter, validate_attributes, validate_filters, SpecError, SubscriptionsApiFilter,
};
use crate::{AttributeValue, EventAttributes};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a filter cannot be compiled: its spec is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The spec breaks a validation rule (the error names the field).
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterResult {
    /// The event passes.
    Pass,
    /// The event does not pass.
    Fail,
    /// The event does not pass because a CESQL expression failed to
    /// evaluate (a missing attribute, a cast…): the first such error.
    Error(EvalError),
}

impl FilterResult {
    /// Whether the event passes.
    pub fn passes(&self) -> bool {
        matches!(self, FilterResult::Pass)
    }
}

/// A compiled trigger filter: built once when the configuration loads,
/// evaluated per event; `Send + Sync` and cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every event passes.
    node: Option<Arc<Node>>,
}

/// Where an attribute is read from.
#[derive(Debug)]
struct Attr {
    /// The attribute asked of the event.
    name: Box<str>,
    /// Keep only the media type (`datamediatype`).
    media_type: bool,
}

impl Attr {
    fn new(name: &str) -> Attr {
        match name {
            "schemaurl" => Attr {
                name: "dataschema".into(),
                media_type: false,
            },
            "datamediatype" => Attr {
                name: "datacontenttype".into(),
                media_type: true,
            },
            _ => Attr {
                name: name.into(),
                media_type: false,
            },
        }
    }

    fn read<'e>(&self, event: &'e dyn EventAttributes) -> Option<AttributeValue<'e>> {
        let v = event.attribute(&self.name)?;
        match v {
            AttributeValue::String(s) if self.media_type => Some(AttributeValue::String(
                s.split(';').next().unwrap_or_default().trim(),
            )),
            v => Some(v),
        }
    }
}

/// How an attribute's canonical string is tested.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Test {
    Exact,
    Prefix,
    Suffix,
    /// `filter.attributes` with `""`: any non-empty value.
    NonEmpty,
}

#[derive(Debug)]
enum Node {
    /// Every (attribute, value) passes the test.
    Match(Test, Vec<(Attr, Box<str>)>),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Cesql(Expression),
    /// No dialect: no opinion.
    Nothing,
}

/// Knative's three outcomes, with the CESQL error behind a failure.
#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(Option<EvalError>),
    NoOpinion,
}

impl Filter {
    /// A filter that passes every event.
    pub fn matches_all() -> Filter {
        Filter { node: None }
    }

    /// Compile a Trigger's `spec.filter.attributes` and `spec.filters`,
    /// validating them: when `filters` is non-empty it wins and
    /// `attributes` is ignored (Knative); all entries of `filters` must
    /// pass.
    pub fn compile(
        attributes: Option<&BTreeMap<String, String>>,
        filters: &[SubscriptionsApiFilter],
    ) -> Result<Filter, FilterError> {
        let node = if filters.is_empty() {
            match attributes {
                None => Node::Nothing,
                Some(attrs) => {
                    validate_attributes(attrs)?;
                    attributes_node(attrs)
                }
            }
        } else {
            validate_filters(filters)?;
            combine(filters.iter().map(node).collect(), Node::All)
        };
        Ok(match node {
            Node::Nothing => Filter::matches_all(),
            node => Filter {
                node: Some(Arc::new(node)),
            },
        })
    }

    /// Whether every event passes, without looking at it.
    pub fn is_match_all(&self) -> bool {
        self.node.is_none()
    }

    /// Evaluate against one event.
    pub fn evaluate(&self, event: &dyn EventAttributes) -> FilterResult {
        let Some(node) = &self.node else {
            return FilterResult::Pass;
        };
        match eval(node, event) {
            Outcome::Pass | Outcome::NoOpinion => FilterResult::Pass,
            Outcome::Fail(None) => FilterResult::Fail,
            Outcome::Fail(Some(e)) => FilterResult::Error(e),
        }
    }
}

/// `filter.attributes`; an empty map passes every event (Knative).
fn attributes_node(attrs: &BTreeMap<String, String>) -> Node {
    if attrs.is_empty() {
        return Node::Nothing;
    }
    let (any, exact): (Vec<_>, Vec<_>) = attrs.iter().partition(|(_, v)| v.is_empty());
    let tests = |list: Vec<(&String, &String)>| {
        list.into_iter()
            .map(|(k, v)| (Attr::new(k), v.as_str().into()))
            .collect::<Vec<_>>()
    };
    let mut nodes = Vec::new();
    if !exact.is_empty() {
        nodes.push(Node::Match(Test::Exact, tests(exact)));
    }
    if !any.is_empty() {
        nodes.push(Node::Match(Test::NonEmpty, tests(any)));
    }
    combine(nodes, Node::All)
}

/// `all`/`any` of `nodes`, without the entries with no opinion: none is
/// no opinion, one is itself.
fn combine(nodes: Vec<Node>, wrap: fn(Vec<Node>) -> Node) -> Node {
    let mut nodes: Vec<Node> = nodes
        .into_iter()
        .filter(|n| !matches!(n, Node::Nothing))
        .collect();
    match nodes.len() {
        0 => Node::Nothing,
        1 => nodes.pop().unwrap_or(Node::Nothing),
        _ => wrap(nodes),
    }
}

/// Compile one validated entry of `spec.filters`, dialects in Knative's
/// order.
fn node(f: &SubscriptionsApiFilter) -> Node {
    let matches = |test, map: &BTreeMap<String, String>| {
        Node::Match(
            test,
            map.iter()
                .map(|(k, v)| (Attr::new(k), v.as_str().into()))
                .collect(),
        )
    };
    if !f.exact.is_empty() {
        matches(Test::Exact, &f.exact)
    } else if !f.prefix.is_empty() {
        matches(Test::Prefix, &f.prefix)
    } else if !f.suffix.is_empty() {
        matches(Test::Suffix, &f.suffix)
    } else if !f.all.is_empty() {
        combine(f.all.iter().map(node).collect(), Node::All)
    } else if !f.any.is_empty() {
        combine(f.any.iter().map(node).collect(), Node::Any)
    } else if let Some(inner) = &f.not {
        match node(inner) {
            Node::Nothing => Node::Nothing,
            inner => Node::Not(Box::new(inner)),
        }
    } else if !f.cesql.is_empty() {
        match parse_cesql_filter(&f.cesql) {
            Ok(e) => Node::Cesql(e),
            // Validated before; never reached, and never a panic.
            Err(_) => Node::Nothing,
        }
    } else {
        Node::Nothing
    }
}

fn pass_if(b: bool) -> Outcome {
    if b {
        Outcome::Pass
    } else {
        Outcome::Fail(None)
    }
}

fn eval(node: &Node, event: &dyn EventAttributes) -> Outcome {
    match node {
        Node::Match(test, list) => pass_if(list.iter().all(|(attr, value)| {
            attr.read(event).is_some_and(|v| {
                v.with_canonical(|s| match test {
                    Test::Exact => s == &**value,
                    Test::Prefix => s.starts_with(&**value),
                    Test::Suffix => s.ends_with(&**value),
                    Test::NonEmpty => !s.is_empty(),
                })
            })
        })),
        Node::All(list) => {
            let mut outcome = Outcome::NoOpinion;
            for n in list {
                match eval(n, event) {
                    Outcome::Pass => outcome = Outcome::Pass,
                    Outcome::NoOpinion => {}
                    fail => return fail,
                }
            }
            outcome
        }
        Node::Any(list) => {
            let mut outcome = Outcome::NoOpinion;
            for n in list {
                match eval(n, event) {
                    Outcome::Pass => return Outcome::Pass,
                    Outcome::NoOpinion => {}
                    // Keep the first failure, or the first error.
                    Outcome::Fail(e) => match outcome {
                        Outcome::Fail(Some(_)) => {}
                        Outcome::Fail(None) if e.is_none() => {}
                        _ => outcome = Outcome::Fail(e),
                    },
                }
            }
            outcome
        }
        Node::Not(inner) => match eval(inner, event) {
            Outcome::Pass => Outcome::Fail(None),
            Outcome::Fail(_) => Outcome::Pass,
            Outcome::NoOpinion => Outcome::NoOpinion,
        },
        Node::Cesql(expr) => match expr.matches(event) {
            Ok(b) => pass_if(b),
            Err(e) => Outcome::Fail(Some(e)),
        },
        Node::Nothing => Outcome::NoOpinion,
    }
}

#[cfg(test)]
mod tests;

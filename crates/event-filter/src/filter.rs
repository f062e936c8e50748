//! Compiled filters with Knative's semantics.
//!
//! * `filter.attributes`: every listed attribute must be present and equal
//!   its value; an empty value (Knative's `TriggerAnyFilter`) accepts any
//!   value. As in Knative, the optional context attributes (`subject`,
//!   `time`, `dataschema`, `datacontenttype`) count as present with an
//!   empty value when the event lacks them, extensions do not.
//! * `filters`: every entry must pass; `exact`/`prefix`/`suffix` compare an
//!   attribute's canonical string (absent: no match); `all`, `any`, `not`
//!   combine as Knative's `allFilter`, `anyFilter` and `notFilter` do —
//!   an empty `all` or `any` has no opinion (passes), `not` of no opinion
//!   has none either; `cesql` passes for a Boolean `true` without errors.
//! * An evaluation error (CESQL) is sticky: the event does not pass even
//!   under `not`, and the error is reported for counting.
//! * No filter at all passes every event ([`Filter::is_match_all`] lets
//!   the engine skip evaluation).

use crate::cesql::{self, EvalError, Expression};
use crate::spec::{validate_filters, SpecError, SubscriptionsApiFilter};
use crate::{AttributeValue, EventAttributes};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter.attributes: {0:?} is not a CloudEvents attribute name")]
    AttributeName(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterResult {
    Pass,
    Fail,
    /// Evaluation failed (a CESQL error): the event does not pass.
    Error(EvalError),
}

/// A compiled trigger filter: cheap to clone and share between threads.
#[derive(Debug, Clone)]
pub struct Filter {
    node: Option<Arc<Node>>,
}

#[derive(Debug)]
enum Node {
    /// (name, Some(value) for an exact value, None for any value)
    Attributes(Vec<(String, Option<String>)>),
    Exact(String, String),
    Prefix(String, String),
    Suffix(String, String),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Cesql(Expression),
}

/// Knative's three-valued filter outcome, internally.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    NoFilter,
    Error(EvalError),
}

const OPTIONAL_CONTEXT: &[&str] = &["subject", "time", "dataschema", "datacontenttype"];

impl Filter {
    /// A filter that passes every event.
    pub fn matches_all() -> Filter {
        Filter { node: None }
    }

    /// Compile a trigger's `spec.filter.attributes` and `spec.filters`:
    /// when `filters` is non-empty it wins and `attributes` is ignored, as
    /// in Knative.
    pub fn compile(
        attributes: Option<&BTreeMap<String, String>>,
        filters: &[SubscriptionsApiFilter],
    ) -> Result<Filter, FilterError> {
        if !filters.is_empty() {
            validate_filters(filters)?;
            let nodes = filters.iter().map(node).collect::<Vec<_>>();
            return Ok(Filter {
                node: Some(Arc::new(Node::All(nodes))),
            });
        }
        match attributes {
            Some(attrs) if !attrs.is_empty() => {
                let mut list = Vec::with_capacity(attrs.len());
                for (name, value) in attrs {
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    {
                        return Err(FilterError::AttributeName(name.clone()));
                    }
                    list.push((name.clone(), (!value.is_empty()).then(|| value.clone())));
                }
                Ok(Filter {
                    node: Some(Arc::new(Node::Attributes(list))),
                })
            }
            _ => Ok(Filter::matches_all()),
        }
    }

    /// Whether the filter passes every event without looking at it.
    pub fn is_match_all(&self) -> bool {
        self.node.is_none()
    }

    /// Evaluate against one event.
    pub fn evaluate(&self, event: &dyn EventAttributes) -> FilterResult {
        let Some(node) = &self.node else {
            return FilterResult::Pass;
        };
        match eval(node, event) {
            Outcome::Pass | Outcome::NoFilter => FilterResult::Pass,
            Outcome::Fail => FilterResult::Fail,
            Outcome::Error(e) => FilterResult::Error(e),
        }
    }
}

/// Compile one validated spec entry.
fn node(f: &SubscriptionsApiFilter) -> Node {
    let single = |m: &BTreeMap<String, String>| {
        m.iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default()
    };
    if let Some(m) = &f.exact {
        let (k, v) = single(m);
        Node::Exact(k, v)
    } else if let Some(m) = &f.prefix {
        let (k, v) = single(m);
        Node::Prefix(k, v)
    } else if let Some(m) = &f.suffix {
        let (k, v) = single(m);
        Node::Suffix(k, v)
    } else if let Some(list) = &f.all {
        Node::All(list.iter().map(node).collect())
    } else if let Some(list) = &f.any {
        Node::Any(list.iter().map(node).collect())
    } else if let Some(inner) = &f.not {
        Node::Not(Box::new(node(inner)))
    } else if let Some(expr) = &f.cesql {
        match cesql::parse(expr) {
            Ok(e) => Node::Cesql(e),
            // Validated before: unreachable, but never a panic.
            Err(_) => Node::All(vec![Node::Exact(String::new(), String::new())]),
        }
    } else {
        // An empty entry has no opinion.
        Node::All(Vec::new())
    }
}

fn compare(event: &dyn EventAttributes, name: &str, test: impl Fn(&str) -> bool) -> Outcome {
    match event.attribute(name) {
        Some(AttributeValue::String(s)) => pass_if(test(s)),
        Some(other) => pass_if(test(&other.as_canonical())),
        None => Outcome::Fail,
    }
}

fn pass_if(b: bool) -> Outcome {
    if b {
        Outcome::Pass
    } else {
        Outcome::Fail
    }
}

fn eval(node: &Node, event: &dyn EventAttributes) -> Outcome {
    match node {
        Node::Attributes(list) => {
            for (name, value) in list {
                let present = event.attribute(name);
                let ok = match (present, value) {
                    (None, None) => OPTIONAL_CONTEXT.contains(&name.as_str()),
                    (None, Some(_)) => false,
                    (Some(_), None) => true,
                    (Some(AttributeValue::String(s)), Some(v)) => s == v,
                    (Some(other), Some(v)) => other.as_canonical() == v.as_str(),
                };
                if !ok {
                    return Outcome::Fail;
                }
            }
            Outcome::Pass
        }
        Node::Exact(name, value) => compare(event, name, |s| s == value),
        Node::Prefix(name, value) => compare(event, name, |s| s.starts_with(value.as_str())),
        Node::Suffix(name, value) => compare(event, name, |s| s.ends_with(value.as_str())),
        Node::All(list) => {
            let mut out = Outcome::NoFilter;
            for n in list {
                match eval(n, event) {
                    Outcome::Pass => out = Outcome::Pass,
                    Outcome::NoFilter => {}
                    failed => return failed,
                }
            }
            out
        }
        Node::Any(list) => {
            let mut out = Outcome::NoFilter;
            for n in list {
                match eval(n, event) {
                    Outcome::Pass => return Outcome::Pass,
                    Outcome::NoFilter => {}
                    // Remember the first failure (an error wins over a fail).
                    Outcome::Fail => {
                        if out == Outcome::NoFilter {
                            out = Outcome::Fail;
                        }
                    }
                    Outcome::Error(e) => {
                        if !matches!(out, Outcome::Error(_)) {
                            out = Outcome::Error(e);
                        }
                    }
                }
            }
            out
        }
        Node::Not(inner) => match eval(inner, event) {
            Outcome::Pass => Outcome::Fail,
            Outcome::Fail => Outcome::Pass,
            other => other,
        },
        Node::Cesql(expr) => match expr.matches(event) {
            Ok(b) => pass_if(b),
            Err(e) => Outcome::Error(e),
        },
    }
}

#[cfg(test)]
mod tests;

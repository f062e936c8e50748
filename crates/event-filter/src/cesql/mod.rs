//! CloudEvents SQL (CESQL) v1: parsing, static checks and evaluation.
//!
//! ```
//! use event_filter::cesql::{parse, Value};
//! use std::collections::BTreeMap;
//!
//! let expr = parse("type LIKE 'shop.%' AND INT(quantity) >= 10").unwrap();
//! let event = BTreeMap::from([
//!     ("type".to_owned(), "shop.order".to_owned()),
//!     ("quantity".to_owned(), "12".to_owned()),
//! ]);
//! let out = expr.evaluate(&event);
//! assert_eq!(out.value, Value::Boolean(true));
//! assert!(out.errors.is_empty());
//! ```
//!
//! What follows the specification to the letter: the grammar and its
//! precedence (see [`parser`](self) notes on `AND`/`OR`/`XOR`), the three
//! types and their casts, the implicit-cast rules (an ambiguous `=` casts
//! its left operand to the right operand's type, `IN` casts the set to the
//! left operand's type), every operator and built-in function, short
//! circuits, and the error model: evaluation never fails, it returns a
//! value and the errors met (parse, math, cast, missing attribute, missing
//! function, function evaluation). Every case of the CloudEvents SQL TCK
//! passes (`tests/tck.rs`). Beyond the spec, `IS_INT` and `IS_BOOL` are
//! provided, as the CloudEvents Go SDK (which Knative uses) does.

mod ast;
mod eval;
mod lexer;
mod like;
mod parser;

pub use ast::{BinaryOp, Expr, Function};
pub use eval::Type;
pub use like::Pattern;
pub use parser::MAX_DEPTH;

use crate::EventAttributes;
use std::borrow::Cow;
use std::fmt;

/// A value of the CESQL type system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Boolean(bool),
    /// 32-bit signed, as the spec defines integers.
    Integer(i32),
    String(Cow<'a, str>),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// An expression that does not parse, with the byte offset where it went
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct ParseError {
    /// Byte offset into the expression (0-based).
    pub position: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            position,
            message: message.into(),
        }
    }
}

/// The kinds of evaluation error the spec defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalErrorKind {
    Math,
    Cast,
    MissingAttribute,
    MissingFunction,
    FunctionEvaluation,
    Generic,
}

/// An error met while evaluating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub kind: EvalErrorKind,
    pub message: String,
}

/// The outcome of an evaluation: always a value, and the errors met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation<'a> {
    pub value: Value<'a>,
    pub errors: Vec<EvalError>,
}

/// A parsed CESQL expression, ready to evaluate any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    root: Expr,
}

/// Parse `input`.
pub fn parse(input: &str) -> Result<Expression, ParseError> {
    parser::parse(input).map(|root| Expression { root })
}

impl Expression {
    /// The expression tree.
    pub fn root(&self) -> &Expr {
        &self.root
    }

    /// Problems found without an event: calls to functions that do not
    /// exist (or not with that many arguments), which can only evaluate
    /// to an error. A filter refuses such an expression when it loads.
    pub fn check(&self) -> Result<(), ParseError> {
        fn walk(e: &Expr) -> Result<(), ParseError> {
            let children: Vec<&Expr> = match e {
                Expr::MissingFunction { name, args, at } => {
                    return Err(ParseError::new(
                        *at,
                        format!("no function {name} takes {} arguments", args.len()),
                    ))
                }
                Expr::Not(x) | Expr::Negate(x) => vec![x],
                Expr::Like { value, .. } => vec![value],
                Expr::Binary(_, l, r) => vec![l, r],
                Expr::In { value, set, .. } => std::iter::once(&**value).chain(set).collect(),
                Expr::Call(_, args) => args.iter().collect(),
                _ => Vec::new(),
            };
            children.into_iter().try_for_each(walk)
        }
        walk(&self.root)
    }

    /// Evaluate against an event.
    pub fn evaluate<'a>(&'a self, event: &'a dyn EventAttributes) -> Evaluation<'a> {
        let mut errors = Vec::new();
        let value = eval::eval(&self.root, event, &mut errors);
        Evaluation { value, errors }
    }

    /// Evaluate as a filter: `true` only for a Boolean `true` with no error
    /// (the spec's rule for filters); `Err` carries the first error.
    pub fn matches(&self, event: &dyn EventAttributes) -> Result<bool, EvalError> {
        let mut errors = Vec::new();
        let value = eval::eval(&self.root, event, &mut errors);
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        Ok(value == Value::Boolean(true))
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

#[cfg(test)]
mod tests;

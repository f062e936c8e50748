//! CloudEvents SQL (CESQL) v1.
//!
//! [`parse`] turns an expression into an [`Expression`], once; evaluating
//! it over an event ([`Expression::evaluate`], or [`Expression::matches`]
//! for a filter) is then cheap and allocation-free on the common paths.
//!
//! ```
//! use event_filter::cesql::{parse, Value};
//! use event_filter::MapEvent;
//!
//! let expr = parse("type LIKE 'com.example.%' AND INT(quantity) >= 10").unwrap();
//! let event = MapEvent::new("1", "/shop", "com.example.order").with("quantity", "12");
//! assert_eq!(expr.evaluate(&event).value, Value::Boolean(true));
//! assert_eq!(expr.matches(&event), Ok(true));
//! ```
//!
//! # The language, as implemented
//!
//! Everything CESQL v1 defines, checked against every case of its TCK:
//! literals (32-bit integers, `TRUE`/`FALSE`, `'…'` and `"…"` strings),
//! attribute identifiers (case-insensitive, lower-cased), `NOT`, unary
//! `-`, `* / %`, `+ -`, the comparisons, `AND OR XOR`, `[NOT] LIKE`,
//! `[NOT] IN`, `EXISTS`, the built-in functions `LENGTH`, `CONCAT`,
//! `CONCAT_WS`, `LOWER`, `UPPER`, `TRIM`, `LEFT`, `RIGHT`, `SUBSTRING`,
//! `ABS`, `INT`, `BOOL`, `STRING` (plus `IS_INT` and `IS_BOOL` of the
//! working draft), the implicit casts of section 3.7 and the error
//! semantics of section 3.3 (see [`EvalError`]).
//!
//! Where the specification leaves room, this implementation decides:
//!
//! * `AND`, `OR` and `XOR` share one precedence level and associate to the
//!   left, as section 3.6 says ("left to right when the precedence is
//!   equal"); the ANTLR grammar of the specification makes them
//!   right-associative. `a OR b AND c` is `(a OR b) AND c`.
//! * In a string literal, `\` escapes the delimiter and `\` itself, a
//!   doubled delimiter stands for itself (`'it''s'`), and any other `\` is
//!   kept, so LIKE escapes (`'a\_b'`) pass through.
//! * In a LIKE pattern, `\\` matches one backslash (besides `\%` and `\_`);
//!   `_` matches one Unicode character.
//! * Integer overflow in `+ - * /` and unary `-` is a _MathError_, with the
//!   result saturated, as `ABS` does.
//! * `NOT` of an Integer is a _CastError_ (cast result `false`), as the TCK
//!   requires, although the cast table allows Integer to Boolean
//!   elsewhere (`BOOL(5)`, `5 AND TRUE`).
//! * `EXISTS` of a required attribute is always true (3.4.4).
//! * An Integer attribute outside the 32-bit range is a String.
//! * A call of an unknown function, or with the wrong number of arguments,
//!   parses (the TCK wants a _MissingFunctionError_ at evaluation) but
//!   [`Expression::check`] reports it with its position.
//! * Nesting is limited to [`MAX_DEPTH`] levels.

mod ast;
mod error;
mod eval;
mod lexer;
mod like;
mod parser;
mod value;

pub use ast::{BinaryOp, Builtin, Call, Expr};
pub use error::{ErrorKind, EvalError, MathError, ParseError, StaticError};
pub use like::LikePattern;
pub use value::{Type, Value};

use crate::EventAttributes;
use std::fmt;
use std::str::FromStr;

/// The deepest an expression may nest — the depth of its tree, and of
/// the parentheses, sets, calls and prefix operators written — so that
/// neither parsing nor evaluation can exhaust the stack (the deepest
/// expressions take well under 1 MiB of stack, even unoptimized). A deeper
/// one is a [`ParseError`]. Chains of operators of one precedence level
/// (`a OR b OR …`, `1 + 2 - 3 …`) and long `IN` sets do not nest.
pub const MAX_DEPTH: usize = 64;

/// Parse a CESQL expression.
///
/// Unknown functions are not a parse error (their evaluation fails with
/// [`EvalError::MissingFunction`]); call [`Expression::check`] to refuse
/// them up front.
pub fn parse(expr: &str) -> Result<Expression, ParseError> {
    let parsed = parser::parse(expr)?;
    Ok(Expression {
        root: parsed.root,
        source: expr.into(),
        diagnostics: parsed.diagnostics,
    })
}

/// A parsed expression: immutable, `Send + Sync`, evaluated any number of
/// times.
#[derive(Debug, Clone)]
pub struct Expression {
    root: Expr,
    source: Box<str>,
    diagnostics: Vec<StaticError>,
}

/// The outcome of evaluating an expression: always a value, and the first
/// error met, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The value the specification defines, even when an error occurred.
    pub value: Value,
    /// The first error, if any.
    pub error: Option<EvalError>,
}

impl Expression {
    /// The expression as it was written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn ast(&self) -> &Expr {
        &self.root
    }

    /// The problems found when parsing that make evaluation fail on every
    /// event: calls of unknown functions, or with the wrong number of
    /// arguments. The first one, with its position.
    pub fn check(&self) -> Result<(), StaticError> {
        match self.diagnostics.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The type of the result when it does not depend on the event (`None`
    /// when the expression is a bare attribute).
    pub fn result_type(&self) -> Option<Type> {
        self.root.static_type()
    }

    /// Evaluate over `event`: the value, and the first error.
    pub fn evaluate(&self, event: &dyn EventAttributes) -> Evaluation {
        match self.root.eval(event) {
            Ok(v) => Evaluation {
                value: v.into_value(),
                error: None,
            },
            Err(f) => Evaluation {
                value: f.value.into_value(),
                error: Some(f.error),
            },
        }
    }

    /// Evaluate as a filter (section 1.2): `Ok(true)` passes; an error, or
    /// a result that is not a Boolean ([`EvalError::NotBoolean`]), does
    /// not. Allocation-free on the common paths.
    pub fn matches(&self, event: &dyn EventAttributes) -> Result<bool, EvalError> {
        match self.root.eval(event) {
            Ok(value::Val::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError::NotBoolean { found: other.ty() }),
            Err(f) => Err(f.error),
        }
    }
}

/// Two expressions are equal when their trees are (whatever the spacing,
/// letter case or parentheses they were written with).
impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for Expression {}

/// The canonical form: parsing it gives an equal expression.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests;

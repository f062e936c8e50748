//! CESQL errors: parse errors, static check errors and the evaluation
//! errors of the specification (section 3.3).

use super::value::{CastFailure, Type};
use std::sync::Arc;

/// An expression that does not parse (the specification's _ParseError_).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct ParseError {
    /// Byte offset into the expression where the problem is (0-based).
    pub position: usize,
    /// Line of `position` (1-based).
    pub line: usize,
    /// Column of `position` in characters (1-based).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// An error at byte offset `position` of `src`.
    pub(crate) fn new(src: &str, position: usize, message: impl Into<String>) -> ParseError {
        let (line, column) = line_column(src, position);
        ParseError {
            position,
            line,
            column,
            message: message.into(),
        }
    }
}

/// A problem found by [`super::Expression::check`]: the expression parses
/// but cannot evaluate without an error on any event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct StaticError {
    /// Byte offset into the expression (0-based).
    pub position: usize,
    /// Line of `position` (1-based).
    pub line: usize,
    /// Column of `position` in characters (1-based).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl StaticError {
    /// An error at byte offset `position` of `src`.
    pub(crate) fn new(src: &str, position: usize, message: impl Into<String>) -> StaticError {
        let (line, column) = line_column(src, position);
        StaticError {
            position,
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and character column of byte offset `position`.
fn line_column(src: &str, position: usize) -> (usize, usize) {
    let mut end = position.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The class of an error, as the specification (and its TCK) names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// _ParseError_: the expression does not parse.
    Parse,
    /// _MathError_: division by zero, overflow.
    Math,
    /// _CastError_: an implicit or explicit cast failed.
    Cast,
    /// _MissingAttributeError_: the event lacks an attribute the
    /// expression reads.
    MissingAttribute,
    /// _MissingFunctionError_: no function of that name and arity.
    MissingFunction,
    /// _FunctionEvaluationError_: a function's arguments are out of its
    /// domain.
    FunctionEvaluation,
    /// _GenericError_: anything else (a filter expression that does not
    /// yield a Boolean).
    Generic,
}

/// What went wrong in an arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathError {
    /// `/` or `%` by zero.
    DivisionByZero,
    /// The result does not fit a 32-bit integer.
    Overflow,
}

/// An error found while evaluating an expression. Evaluation never stops
/// on one: the expression still yields the value the specification
/// defines, and the error is reported alongside. Creating one never
/// allocates (names are shared with the expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The event has no attribute `name`.
    #[error("missing attribute {name}")]
    MissingAttribute {
        /// The attribute's name.
        name: Arc<str>,
    },
    /// A value of type `from` cannot be cast to `to`.
    #[error("cannot cast {from} to {to}")]
    Cast {
        /// The value's type.
        from: Type,
        /// The type required.
        to: Type,
    },
    /// An arithmetic operation failed.
    #[error("math error: {}", match .0 { MathError::DivisionByZero => "division by zero", MathError::Overflow => "integer overflow" })]
    Math(MathError),
    /// No function `name` takes `arity` arguments.
    #[error("no function {name} taking {arity} argument(s)")]
    MissingFunction {
        /// The function's name (upper case).
        name: Arc<str>,
        /// The number of arguments of the call.
        arity: usize,
    },
    /// A function's arguments are outside its domain.
    #[error("{function}: {reason}")]
    FunctionEvaluation {
        /// The function's name.
        function: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A filter expression yielded a value that is not a Boolean.
    #[error("the expression yields {found}, a filter needs a Boolean")]
    NotBoolean {
        /// The type of the value.
        found: Type,
    },
}

impl EvalError {
    /// The specification's class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::MissingAttribute { .. } => ErrorKind::MissingAttribute,
            EvalError::Cast { .. } => ErrorKind::Cast,
            EvalError::Math(_) => ErrorKind::Math,
            EvalError::MissingFunction { .. } => ErrorKind::MissingFunction,
            EvalError::FunctionEvaluation { .. } => ErrorKind::FunctionEvaluation,
            EvalError::NotBoolean { .. } => ErrorKind::Generic,
        }
    }
}

impl From<CastFailure> for EvalError {
    fn from(c: CastFailure) -> Self {
        EvalError::Cast {
            from: c.from,
            to: c.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_have_lines_and_columns() {
        let e = ParseError::new("a AND\n  é (", 10, "x");
        assert_eq!((e.line, e.column), (2, 4));
        assert_eq!(e.to_string(), "at position 10: x");
        let e = ParseError::new("abc", 99, "x");
        assert_eq!((e.line, e.column), (1, 4));
    }

    #[test]
    fn kinds() {
        assert_eq!(EvalError::Math(MathError::Overflow).kind(), ErrorKind::Math);
        assert_eq!(
            EvalError::Math(MathError::DivisionByZero).to_string(),
            "math error: division by zero"
        );
        assert_eq!(
            EvalError::NotBoolean {
                found: Type::Integer
            }
            .kind(),
            ErrorKind::Generic
        );
    }
}

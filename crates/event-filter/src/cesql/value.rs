//! The CESQL type system: values, types and the casts between them.

use crate::{bool_str, AttributeValue};
use std::borrow::Cow;
use std::fmt;

/// A CESQL primitive type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` or `false`.
    Boolean,
    /// A signed 32-bit integer.
    Integer,
    /// A sequence of Unicode characters.
    String,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Boolean => "Boolean",
            Type::Integer => "Integer",
            Type::String => "String",
        })
    }
}

/// A CESQL value: the result of an evaluation, or a literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A Boolean.
    Boolean(bool),
    /// An Integer (32-bit, as CESQL v1 defines it).
    Integer(i32),
    /// A String.
    String(String),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> Type {
        match self {
            Value::Boolean(_) => Type::Boolean,
            Value::Integer(_) => Type::Integer,
            Value::String(_) => Type::String,
        }
    }

    /// The zero value of a type (`false`, `0`, `""`).
    pub fn zero(ty: Type) -> Value {
        match ty {
            Type::Boolean => Value::Boolean(false),
            Type::Integer => Value::Integer(0),
            Type::String => Value::String(String::new()),
        }
    }

    /// The Boolean, when this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The Integer, when this is one.
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The String, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Integer(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

/// A value displays as a CESQL literal: `TRUE`, `-12`, `'it\'s'` (a
/// single-quoted string with `\` and `'` escaped), so that it parses back
/// to itself.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Value::Integer(n) => write!(f, "{n}"),
            Value::String(s) => write_string_literal(f, s),
        }
    }
}

/// Write `s` as a single-quoted CESQL string literal.
pub(crate) fn write_string_literal(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    let mut rest = s;
    while let Some(i) = rest.find(['\\', '\'']) {
        f.write_str(&rest[..i])?;
        f.write_str("\\")?;
        f.write_str(&rest[i..=i])?;
        rest = &rest[i + 1..];
    }
    f.write_str(rest)?;
    f.write_str("'")
}

/// A value during evaluation: strings are borrowed from the expression or
/// the event whenever possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Int(i32),
    Str(Cow<'a, str>),
}

impl<'a> Val<'a> {
    /// The value's type.
    pub(crate) fn ty(&self) -> Type {
        match self {
            Val::Bool(_) => Type::Boolean,
            Val::Int(_) => Type::Integer,
            Val::Str(_) => Type::String,
        }
    }

    /// The zero value of `ty`.
    pub(crate) fn zero(ty: Type) -> Val<'a> {
        match ty {
            Type::Boolean => Val::Bool(false),
            Type::Integer => Val::Int(0),
            Type::String => Val::Str(Cow::Borrowed("")),
        }
    }

    /// A borrowed view of a literal.
    pub(crate) fn of_literal(v: &'a Value) -> Val<'a> {
        match v {
            Value::Boolean(b) => Val::Bool(*b),
            Value::Integer(n) => Val::Int(*n),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
        }
    }

    /// An event attribute as a CESQL value: an Integer outside the 32-bit
    /// range is not a CESQL Integer and is represented as a String.
    pub(crate) fn of_attribute(v: AttributeValue<'a>) -> Val<'a> {
        match v {
            AttributeValue::String(s) => Val::Str(Cow::Borrowed(s)),
            AttributeValue::Boolean(b) => Val::Bool(b),
            AttributeValue::Integer(n) => match i32::try_from(n) {
                Ok(n) => Val::Int(n),
                Err(_) => Val::Str(Cow::Owned(n.to_string())),
            },
        }
    }

    /// The owned public form.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Bool(b) => Value::Boolean(b),
            Val::Int(n) => Value::Integer(n),
            Val::Str(s) => Value::String(s.into_owned()),
        }
    }

    /// Cast to String (always defined).
    pub(crate) fn into_str(self) -> Cow<'a, str> {
        match self {
            Val::Str(s) => s,
            Val::Int(n) => Cow::Owned(n.to_string()),
            Val::Bool(b) => Cow::Borrowed(bool_str(b)),
        }
    }

    /// Cast to Integer: a String must be a base-10 32-bit integer with an
    /// optional sign; on failure the cast yields `0` and an error.
    pub(crate) fn to_int(&self) -> (i32, Option<CastFailure>) {
        match self {
            Val::Int(n) => (*n, None),
            Val::Bool(b) => (i32::from(*b), None),
            Val::Str(s) => match s.parse::<i32>() {
                Ok(n) => (n, None),
                Err(_) => (
                    0,
                    Some(CastFailure {
                        from: Type::String,
                        to: Type::Integer,
                    }),
                ),
            },
        }
    }

    /// Cast to Boolean: a String must be `true` or `false` in any case, an
    /// Integer is `false` for 0 and `true` otherwise; on failure the cast
    /// yields `false` and an error.
    pub(crate) fn to_bool(&self) -> (bool, Option<CastFailure>) {
        match self {
            Val::Bool(b) => (*b, None),
            Val::Int(n) => (*n != 0, None),
            Val::Str(s) => match parse_bool(s) {
                Some(b) => (b, None),
                None => (
                    false,
                    Some(CastFailure {
                        from: Type::String,
                        to: Type::Boolean,
                    }),
                ),
            },
        }
    }

    /// Cast to `ty`.
    pub(crate) fn cast(self, ty: Type) -> (Val<'a>, Option<CastFailure>) {
        match ty {
            Type::Boolean => {
                let (b, e) = self.to_bool();
                (Val::Bool(b), e)
            }
            Type::Integer => {
                let (n, e) = self.to_int();
                (Val::Int(n), e)
            }
            Type::String => (Val::Str(self.into_str()), None),
        }
    }
}

/// `true` / `false` in any letter case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A cast that failed: from which type to which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CastFailure {
    pub(crate) from: Type,
    pub(crate) to: Type,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_follow_the_table() {
        assert_eq!(Val::Str("+12".into()).to_int(), (12, None));
        assert_eq!(Val::Str("-0".into()).to_int(), (0, None));
        assert_eq!(Val::Str("2147483648".into()).to_int().0, 0);
        assert!(Val::Str("2147483648".into()).to_int().1.is_some());
        assert!(Val::Str(" 1".into()).to_int().1.is_some());
        assert_eq!(Val::Bool(true).to_int(), (1, None));
        assert_eq!(Val::Int(-3).to_bool(), (true, None));
        assert_eq!(Val::Int(0).to_bool(), (false, None));
        assert_eq!(Val::Str("TrUe".into()).to_bool(), (true, None));
        assert!(Val::Str("yes".into()).to_bool().1.is_some());
        assert_eq!(Val::Int(-5).into_str(), "-5");
        assert_eq!(Val::Bool(false).into_str(), "false");
        assert_eq!(
            Val::of_attribute(AttributeValue::Integer(1 << 40)),
            Val::Str("1099511627776".into())
        );
    }

    #[test]
    fn literals_display_and_escape() {
        assert_eq!(
            Value::from("it's a \\ test").to_string(),
            r"'it\'s a \\ test'"
        );
        assert_eq!(Value::from(true).to_string(), "TRUE");
        assert_eq!(Value::from(-4).to_string(), "-4");
    }
}

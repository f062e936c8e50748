//! Evaluation: the CESQL type system, its casts and every operator and
//! built-in function, with the spec's error semantics.
//!
//! Every operator and function is total: it always yields a value, and
//! records errors beside it. When an operand's own evaluation recorded an
//! error (a missing attribute, a division by zero…), the operator yields
//! the zero value of its return type (`false`, `0`, `""`), which is how the
//! spec's "the subexpression referencing the missing attribute evaluates to
//! the zero value of its return type" composes, and what the TCK expects
//! (`true AND (1 != 1 / 0)` is `false` with a math error). A cast error in
//! the operator's own implicit cast yields the cast's zero value and the
//! operator goes on (`NOT 10` is `true` with a cast error).
//!
//! Strings are borrowed from the event and the expression wherever no new
//! string is computed, so the common comparisons allocate nothing.

use super::ast::{BinaryOp, Expr, Function};
use super::{EvalError, EvalErrorKind, Value};
use crate::{AttributeValue, EventAttributes};
use std::borrow::Cow;

/// The types of the CESQL type system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Boolean,
    Integer,
    String,
}

impl Value<'_> {
    /// The value's type.
    pub fn type_of(&self) -> Type {
        match self {
            Value::Boolean(_) => Type::Boolean,
            Value::Integer(_) => Type::Integer,
            Value::String(_) => Type::String,
        }
    }

    fn zero(t: Type) -> Value<'static> {
        match t {
            Type::Boolean => Value::Boolean(false),
            Type::Integer => Value::Integer(0),
            Type::String => Value::String(Cow::Borrowed("")),
        }
    }
}

/// Where evaluation records its errors.
pub(super) type Errors = Vec<EvalError>;

fn error(errs: &mut Errors, kind: EvalErrorKind, message: impl Into<String>) {
    errs.push(EvalError {
        kind,
        message: message.into(),
    });
}

/// `String -> Integer`: base 10, optional sign, 32 bits.
fn parse_int(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i32>().ok()
}

/// `String -> Boolean`: "true" or "false", any case.
fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn to_int(v: Value<'_>, errs: &mut Errors) -> i32 {
    match v {
        Value::Integer(n) => n,
        Value::Boolean(b) => i32::from(b),
        Value::String(s) => parse_int(&s).unwrap_or_else(|| {
            error(
                errs,
                EvalErrorKind::Cast,
                format!("cannot cast {s:?} to an integer"),
            );
            0
        }),
    }
}

/// Implicit casts to Boolean refuse integers (the TCK: `NOT 10` is a cast
/// error); the explicit `BOOL()` accepts them (`0` is false).
fn to_bool(v: Value<'_>, explicit: bool, errs: &mut Errors) -> bool {
    match v {
        Value::Boolean(b) => b,
        Value::Integer(n) if explicit => n != 0,
        Value::Integer(n) => {
            error(
                errs,
                EvalErrorKind::Cast,
                format!("cannot cast the integer {n} to a boolean"),
            );
            false
        }
        Value::String(s) => parse_bool(&s).unwrap_or_else(|| {
            error(
                errs,
                EvalErrorKind::Cast,
                format!("cannot cast {s:?} to a boolean"),
            );
            false
        }),
    }
}

fn to_string(v: Value<'_>) -> Cow<'_, str> {
    match v {
        Value::String(s) => s,
        Value::Integer(n) => Cow::Owned(n.to_string()),
        Value::Boolean(b) => Cow::Borrowed(if b { "true" } else { "false" }),
    }
}

fn cast<'a>(v: Value<'a>, t: Type, errs: &mut Errors) -> Value<'a> {
    match t {
        Type::Boolean => Value::Boolean(to_bool(v, false, errs)),
        Type::Integer => Value::Integer(to_int(v, errs)),
        Type::String => Value::String(to_string(v)),
    }
}

fn equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x == y,
        (Value::Integer(x), Value::Integer(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

fn attribute<'a>(event: &'a dyn EventAttributes, name: &str) -> Option<Value<'a>> {
    event.attribute(name).map(|v| match v {
        AttributeValue::String(s) => Value::String(Cow::Borrowed(s)),
        AttributeValue::Boolean(b) => Value::Boolean(b),
        // CESQL integers are 32 bits; a wider extension value is a string.
        AttributeValue::Integer(n) => match i32::try_from(n) {
            Ok(n) => Value::Integer(n),
            Err(_) => Value::String(Cow::Owned(n.to_string())),
        },
    })
}

/// Evaluate `e`, pushing errors to `errs`.
pub(super) fn eval<'a>(
    e: &'a Expr,
    event: &'a dyn EventAttributes,
    errs: &mut Errors,
) -> Value<'a> {
    // Evaluate an operand; `None` when it recorded an error.
    macro_rules! operand {
        ($x:expr) => {{
            let before = errs.len();
            let v = eval($x, event, errs);
            if errs.len() > before {
                None
            } else {
                Some(v)
            }
        }};
    }
    match e {
        Expr::Boolean(b) => Value::Boolean(*b),
        Expr::Integer(n) => Value::Integer(*n),
        Expr::String(s) => Value::String(Cow::Borrowed(s)),
        Expr::Attribute(name) => match attribute(event, name) {
            Some(v) => v,
            None => {
                error(
                    errs,
                    EvalErrorKind::MissingAttribute,
                    format!("the event has no attribute {name:?}"),
                );
                // The type is unknown here: Boolean, as the spec says.
                Value::Boolean(false)
            }
        },
        Expr::Exists(name) => Value::Boolean(event.attribute(name).is_some()),
        Expr::Not(x) => match operand!(x) {
            Some(v) => Value::Boolean(!to_bool(v, false, errs)),
            None => Value::Boolean(false),
        },
        Expr::Negate(x) => match operand!(x) {
            Some(v) => {
                let n = to_int(v, errs);
                Value::Integer(n.checked_neg().unwrap_or_else(|| {
                    error(errs, EvalErrorKind::Math, "integer overflow in negation");
                    n
                }))
            }
            None => Value::Integer(0),
        },
        Expr::Binary(op, l, r) => binary(*op, l, r, event, errs),
        Expr::Like {
            value,
            pattern,
            negated,
        } => match operand!(value) {
            Some(v) => Value::Boolean(pattern.matches(&to_string(v)) != *negated),
            None => Value::Boolean(false),
        },
        Expr::In {
            value,
            set,
            negated,
        } => {
            let Some(x) = operand!(value) else {
                return Value::Boolean(false);
            };
            let target = x.type_of();
            let mut found = false;
            for item in set {
                let Some(y) = operand!(item) else {
                    return Value::Boolean(false);
                };
                let y = cast(y, target, errs);
                if equal(&x, &y) {
                    found = true;
                    break;
                }
            }
            Value::Boolean(found != *negated)
        }
        Expr::Call(f, args) => call(*f, args, event, errs),
        Expr::MissingFunction { name, args, .. } => {
            error(
                errs,
                EvalErrorKind::MissingFunction,
                format!("no function {name} takes {} arguments", args.len()),
            );
            Value::Boolean(false)
        }
    }
}

fn binary<'a>(
    op: BinaryOp,
    l: &'a Expr,
    r: &'a Expr,
    event: &'a dyn EventAttributes,
    errs: &mut Errors,
) -> Value<'a> {
    use BinaryOp::*;
    let before = errs.len();
    let left = eval(l, event, errs);
    let left_failed = errs.len() > before;
    match op {
        And | Or | Xor => {
            if left_failed {
                return Value::Boolean(false);
            }
            let a = to_bool(left, false, errs);
            // Short circuit, as the spec requires.
            match (op, a) {
                (And, false) => return Value::Boolean(false),
                (Or, true) => return Value::Boolean(true),
                _ => {}
            }
            let before = errs.len();
            let right = eval(r, event, errs);
            if errs.len() > before {
                return Value::Boolean(false);
            }
            let b = to_bool(right, false, errs);
            Value::Boolean(match op {
                And => a && b,
                Or => a || b,
                _ => a != b,
            })
        }
        _ => {
            let before = errs.len();
            let right = eval(r, event, errs);
            let right_failed = errs.len() > before;
            let comparison = matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq);
            if left_failed || right_failed {
                return if comparison {
                    Value::Boolean(false)
                } else {
                    Value::Integer(0)
                };
            }
            match op {
                Eq | NotEq => {
                    // Ambiguous: the right operand's type decides.
                    let left = cast(left, right.type_of(), errs);
                    Value::Boolean(equal(&left, &right) == (op == Eq))
                }
                Lt | LtEq | Gt | GtEq => {
                    let (a, b) = (to_int(left, errs), to_int(right, errs));
                    Value::Boolean(match op {
                        Lt => a < b,
                        LtEq => a <= b,
                        Gt => a > b,
                        _ => a >= b,
                    })
                }
                _ => {
                    let (a, b) = (to_int(left, errs), to_int(right, errs));
                    let result = match op {
                        Add => a.checked_add(b),
                        Sub => a.checked_sub(b),
                        Mul => a.checked_mul(b),
                        Div | Mod if b == 0 => {
                            error(errs, EvalErrorKind::Math, "division by zero");
                            return Value::Integer(0);
                        }
                        Div => a.checked_div(b),
                        _ => a.checked_rem(b),
                    };
                    Value::Integer(result.unwrap_or_else(|| {
                        error(errs, EvalErrorKind::Math, "integer overflow");
                        0
                    }))
                }
            }
        }
    }
}

fn char_len(s: &str) -> i64 {
    s.chars().count() as i64
}

/// The characters of `s` from `start` (0-based) for `len` characters.
fn chars(s: &str, start: i64, len: i64) -> String {
    s.chars()
        .skip(usize::try_from(start.max(0)).unwrap_or(0))
        .take(usize::try_from(len.max(0)).unwrap_or(0))
        .collect()
}

fn call<'a>(
    f: Function,
    args: &'a [Expr],
    event: &'a dyn EventAttributes,
    errs: &mut Errors,
) -> Value<'a> {
    let before = errs.len();
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        values.push(eval(a, event, errs));
    }
    if errs.len() > before {
        return Value::zero(return_type(f));
    }
    let mut values = values.into_iter();
    let mut arg = || values.next().unwrap_or(Value::Boolean(false));
    let fail = |errs: &mut Errors, message: String| {
        error(errs, EvalErrorKind::FunctionEvaluation, message);
    };
    match f {
        Function::Length => {
            Value::Integer(i32::try_from(to_string(arg()).chars().count()).unwrap_or(i32::MAX))
        }
        Function::Concat => {
            let mut out = String::new();
            for v in args.iter().map(|_| arg()) {
                out.push_str(&to_string(v));
            }
            Value::String(Cow::Owned(out))
        }
        Function::ConcatWs => {
            let sep = to_string(arg()).into_owned();
            let parts: Vec<String> = args[1..]
                .iter()
                .map(|_| to_string(arg()).into_owned())
                .collect();
            Value::String(Cow::Owned(parts.join(&sep)))
        }
        Function::Lower => Value::String(Cow::Owned(to_string(arg()).to_lowercase())),
        Function::Upper => Value::String(Cow::Owned(to_string(arg()).to_uppercase())),
        Function::Trim => match to_string(arg()) {
            Cow::Borrowed(s) => Value::String(Cow::Borrowed(s.trim())),
            Cow::Owned(s) => Value::String(Cow::Owned(s.trim().to_owned())),
        },
        Function::Left | Function::Right => {
            let s = to_string(arg());
            let n = i64::from(to_int(arg(), errs));
            if n < 0 {
                fail(errs, format!("{}: the length {n} is negative", f.name()));
                return Value::String(s);
            }
            let len = char_len(&s);
            if n >= len {
                return Value::String(s);
            }
            Value::String(Cow::Owned(if f == Function::Left {
                chars(&s, 0, n)
            } else {
                chars(&s, len - n, n)
            }))
        }
        Function::Substring2 | Function::Substring3 => {
            let s = to_string(arg());
            let pos = i64::from(to_int(arg(), errs));
            let count = if f == Function::Substring3 {
                Some(i64::from(to_int(arg(), errs)))
            } else {
                None
            };
            let len = char_len(&s);
            if pos > len || pos < -len {
                fail(
                    errs,
                    format!("SUBSTRING: position {pos} is outside a string of {len} characters"),
                );
                return Value::String(Cow::Borrowed(""));
            }
            if let Some(c) = count {
                if c < 0 {
                    fail(errs, format!("SUBSTRING: the length {c} is negative"));
                    return Value::String(Cow::Borrowed(""));
                }
            }
            if pos == 0 {
                return Value::String(Cow::Borrowed(""));
            }
            let start = if pos > 0 { pos - 1 } else { len + pos };
            Value::String(Cow::Owned(chars(&s, start, count.unwrap_or(len))))
        }
        Function::Abs => {
            let n = to_int(arg(), errs);
            Value::Integer(n.checked_abs().unwrap_or_else(|| {
                error(errs, EvalErrorKind::Math, "ABS: integer overflow");
                i32::MAX
            }))
        }
        Function::Int => Value::Integer(to_int(arg(), errs)),
        Function::Bool => Value::Boolean(to_bool(arg(), true, errs)),
        Function::String => Value::String(to_string(arg())),
        Function::IsInt => Value::Boolean(match arg() {
            Value::Integer(_) | Value::Boolean(_) => true,
            Value::String(s) => parse_int(&s).is_some(),
        }),
        Function::IsBool => Value::Boolean(match arg() {
            Value::Boolean(_) | Value::Integer(_) => true,
            Value::String(s) => parse_bool(&s).is_some(),
        }),
    }
}

fn return_type(f: Function) -> Type {
    match f {
        Function::Length | Function::Abs | Function::Int => Type::Integer,
        Function::Bool | Function::IsInt | Function::IsBool => Type::Boolean,
        _ => Type::String,
    }
}

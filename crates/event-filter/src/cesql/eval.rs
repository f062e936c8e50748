//! The CESQL evaluator.
//!
//! Error semantics (sections 3.2, 3.3 and 4.1 of the specification, as its
//! TCK pins them down):
//!
//! * A node whose *own* operation fails (a cast, a division by zero, a
//!   function argument out of range) still yields the value the
//!   specification defines — the failed cast gives the zero value and the
//!   operation goes on with it (`NOT 'x'` is `true`), a function gives its
//!   documented value (`ABS(-2147483648)` is `2147483647`) — and reports
//!   the error.
//! * A node whose *operand* failed (a missing attribute, or any error
//!   below) stops there and yields the zero value of its own type, so the
//!   error travels up unchanged: `1 / missing` is `0` with a
//!   _MissingAttributeError_, `true AND (missing = "")` is `false`. This is
//!   the "fail fast" mode the specification recommends for filters.
//! * `AND` and `OR` short-circuit: the right operand of `false AND x` or
//!   `true OR x` is not evaluated, and its errors do not happen.
//! * Only the first error is reported.
//!
//! Strings are borrowed from the expression and the event; the common
//! paths (attribute lookups, comparisons, LIKE) do not allocate.

use super::ast::{BinaryOp, Builtin, Call, Expr};
use super::error::{EvalError, MathError};
use super::value::{parse_bool, Type, Val};
use crate::EventAttributes;
use std::borrow::Cow;

/// A failed evaluation: the error and the value the node yields anyway.
#[derive(Debug)]
pub(crate) struct Fail<'a> {
    pub(crate) error: EvalError,
    pub(crate) value: Val<'a>,
}

/// The outcome of evaluating a node.
pub(crate) type Eval<'a> = Result<Val<'a>, Fail<'a>>;

/// `value`, with `error` when the node's own operation reported one.
fn finish(value: Val<'_>, error: Option<EvalError>) -> Eval<'_> {
    match error {
        None => Ok(value),
        Some(error) => Err(Fail { error, value }),
    }
}

/// An operand's failure, seen from a node of type `ty`: the node yields
/// its zero value, and the first error so far (`earlier`) wins.
fn propagate<'a>(fail: Fail<'_>, ty: Type, earlier: Option<EvalError>) -> Fail<'a> {
    Fail {
        error: earlier.unwrap_or(fail.error),
        value: Val::zero(ty),
    }
}

/// The required context attributes, which `EXISTS` always finds.
fn is_required(name: &str) -> bool {
    matches!(name, "specversion" | "id" | "source" | "type")
}

/// `=` on two values of the same type.
fn equal(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        _ => false,
    }
}

/// Integer arithmetic: the value, and a math error if any. Overflow
/// saturates (as `ABS` does in the specification).
fn arithmetic(op: BinaryOp, a: i32, b: i32) -> (i32, Option<MathError>) {
    let checked = match op {
        BinaryOp::Add => a.checked_add(b).ok_or(a.saturating_add(b)),
        BinaryOp::Sub => a.checked_sub(b).ok_or(a.saturating_sub(b)),
        BinaryOp::Mul => a.checked_mul(b).ok_or(a.saturating_mul(b)),
        BinaryOp::Div if b == 0 => return (0, Some(MathError::DivisionByZero)),
        BinaryOp::Div => a.checked_div(b).ok_or(i32::MAX),
        BinaryOp::Mod if b == 0 => return (0, Some(MathError::DivisionByZero)),
        // i32::MIN % -1 is 0, which `wrapping_rem` gives.
        BinaryOp::Mod => Ok(a.wrapping_rem(b)),
        _ => Ok(0),
    };
    match checked {
        Ok(v) => (v, None),
        Err(v) => (v, Some(MathError::Overflow)),
    }
}

impl Expr {
    /// Evaluate the node over `event`. (Each kind of node is evaluated by
    /// a function of its own, which keeps this recursive frame small.)
    pub(crate) fn eval<'a>(&'a self, event: &'a dyn EventAttributes) -> Eval<'a> {
        match self {
            Expr::Literal(v) => Ok(Val::of_literal(v)),
            Expr::Attribute(name) => match event.attribute(name) {
                Some(v) => Ok(Val::of_attribute(v)),
                None => Err(missing_attribute(name)),
            },
            Expr::Exists(name) => Ok(Val::Bool(
                is_required(name) || event.attribute(name).is_some(),
            )),
            Expr::Not(e) => not(e, event),
            Expr::Negate(e) => negate(e, event),
            Expr::Binary { first, rest } => chain(first, rest, event),
            Expr::Like {
                operand,
                pattern,
                negated,
            } => {
                let v = operand
                    .eval(event)
                    .map_err(|f| propagate(f, Type::Boolean, None))?;
                let text = v.into_str();
                Ok(Val::Bool(pattern.matches(&text) != *negated))
            }
            Expr::In {
                operand,
                set,
                negated,
            } => in_set(operand, set, *negated, event),
            Expr::Call(c) => call(c, event),
        }
    }
}

/// A missing attribute: its type is unknown, so the value is a Boolean
/// (section 3.2).
#[cold]
fn missing_attribute<'a>(name: &std::sync::Arc<str>) -> Fail<'a> {
    Fail {
        error: EvalError::MissingAttribute { name: name.clone() },
        value: Val::Bool(false),
    }
}

fn not<'a>(e: &'a Expr, event: &'a dyn EventAttributes) -> Eval<'a> {
    let v = e
        .eval(event)
        .map_err(|f| propagate(f, Type::Boolean, None))?;
    let (b, error) = match v {
        // The TCK has `NOT 10` be a cast error (the cast gives false, so
        // the result is true), although the cast table allows Integer to
        // Boolean: only NOT refuses it.
        Val::Int(_) => (
            false,
            Some(EvalError::Cast {
                from: Type::Integer,
                to: Type::Boolean,
            }),
        ),
        v => {
            let (b, e) = v.to_bool();
            (b, e.map(EvalError::from))
        }
    };
    finish(Val::Bool(!b), error)
}

fn negate<'a>(e: &'a Expr, event: &'a dyn EventAttributes) -> Eval<'a> {
    let v = e
        .eval(event)
        .map_err(|f| propagate(f, Type::Integer, None))?;
    let (n, cast) = v.to_int();
    let (n, math) = match n.checked_neg() {
        Some(n) => (n, None),
        None => (i32::MAX, Some(EvalError::Math(MathError::Overflow))),
    };
    finish(Val::Int(n), cast.map(EvalError::from).or(math))
}

fn in_set<'a>(
    operand: &'a Expr,
    set: &'a [Expr],
    negated: bool,
    event: &'a dyn EventAttributes,
) -> Eval<'a> {
    let left = operand
        .eval(event)
        .map_err(|f| propagate(f, Type::Boolean, None))?;
    // The left operand's type is the target of the casts.
    let ty = left.ty();
    let mut error = None;
    let mut found = false;
    for e in set {
        let v = match e.eval(event) {
            Ok(v) => v,
            Err(f) => return Err(propagate(f, Type::Boolean, error)),
        };
        let (v, cast) = v.cast(ty);
        if error.is_none() {
            error = cast.map(EvalError::from);
        }
        if equal(&left, &v) {
            found = true;
            break;
        }
    }
    finish(Val::Bool(found != negated), error)
}

/// `first op1 x1 op2 x2 …`, left to right.
fn chain<'a>(
    first: &'a Expr,
    rest: &'a [(BinaryOp, Expr)],
    event: &'a dyn EventAttributes,
) -> Eval<'a> {
    // Once an operation fails, every later one sees a failed operand and
    // yields its zero value: the chain yields the last one's.
    let last = rest.len();
    let ty = rest
        .last()
        .map_or(Type::Boolean, |(op, _)| op.result_type());
    let mut acc = first.eval(event).map_err(|f| propagate(f, ty, None))?;
    for (i, (op, e)) in rest.iter().enumerate() {
        acc = match apply(*op, acc, e, event) {
            Ok(v) => v,
            Err(f) if i + 1 == last => return Err(f),
            Err(f) => return Err(propagate(f, ty, None)),
        };
    }
    Ok(acc)
}

/// `left op r`, `left` evaluated.
fn apply<'a>(op: BinaryOp, left: Val<'a>, r: &'a Expr, event: &'a dyn EventAttributes) -> Eval<'a> {
    let ty = op.result_type();
    match op {
        BinaryOp::And | BinaryOp::Or => {
            let (a, cast) = left.to_bool();
            let cast = cast.map(EvalError::from);
            // Short circuit.
            if (op == BinaryOp::And) != a {
                return finish(Val::Bool(a), cast);
            }
            let right = match r.eval(event) {
                Ok(v) => v,
                Err(f) => return Err(propagate(f, ty, cast)),
            };
            let (b, cast2) = right.to_bool();
            finish(Val::Bool(b), cast.or(cast2.map(EvalError::from)))
        }
        _ => {
            let right = r.eval(event).map_err(|f| propagate(f, ty, None))?;
            match op {
                BinaryOp::Xor => {
                    let (a, c1) = left.to_bool();
                    let (b, c2) = right.to_bool();
                    finish(Val::Bool(a != b), c1.or(c2).map(EvalError::from))
                }
                BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::LtGt => {
                    // Ambiguous operator: the right operand's type decides.
                    let (left, cast) = left.cast(right.ty());
                    let eq = equal(&left, &right);
                    finish(
                        Val::Bool(eq == (op == BinaryOp::Eq)),
                        cast.map(EvalError::from),
                    )
                }
                BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                    let (a, c1) = left.to_int();
                    let (b, c2) = right.to_int();
                    let v = match op {
                        BinaryOp::Lt => a < b,
                        BinaryOp::Le => a <= b,
                        BinaryOp::Gt => a > b,
                        _ => a >= b,
                    };
                    finish(Val::Bool(v), c1.or(c2).map(EvalError::from))
                }
                _ => {
                    let (a, c1) = left.to_int();
                    let (b, c2) = right.to_int();
                    let (v, math) = arithmetic(op, a, b);
                    let error = c1.or(c2).map(EvalError::from).or(math.map(EvalError::Math));
                    finish(Val::Int(v), error)
                }
            }
        }
    }
}

/// `s[start..end]` (byte offsets on character boundaries), keeping a
/// borrowed string borrowed.
fn slice(s: Cow<'_, str>, start: usize, end: usize) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(start..end).unwrap_or("")),
        Cow::Owned(o) => Cow::Owned(o.get(start..end).unwrap_or("").to_owned()),
    }
}

/// The byte offset of character `index` (the length when past the end).
fn char_offset(s: &str, index: usize) -> usize {
    s.char_indices().nth(index).map_or(s.len(), |(i, _)| i)
}

fn function_error(function: &'static str, reason: &'static str) -> EvalError {
    EvalError::FunctionEvaluation { function, reason }
}

/// The arguments of a call of a built-in.
struct Args<'a> {
    call: &'a Call,
    event: &'a dyn EventAttributes,
    /// The built-in's result type, which a failed argument makes it yield
    /// the zero value of.
    ty: Type,
}

impl<'a> Args<'a> {
    /// Argument `i`, evaluated.
    fn get(&self, i: usize) -> Eval<'a> {
        match self.call.args().get(i) {
            Some(e) => e.eval(self.event).map_err(|f| propagate(f, self.ty, None)),
            None => Err(missing_function(self.call)),
        }
    }

    fn len(&self) -> usize {
        self.call.args().len()
    }
}

/// No function of that name and arity: `false`, and a
/// _MissingFunctionError_ (3.5).
#[cold]
fn missing_function(c: &Call) -> Fail<'static> {
    Fail {
        error: EvalError::MissingFunction {
            name: c.shared_name().clone(),
            arity: c.args().len(),
        },
        value: Val::Bool(false),
    }
}

/// A call of a function. (Each group of built-ins has a function of its
/// own, which keeps the recursive frames small.)
fn call<'a>(c: &'a Call, event: &'a dyn EventAttributes) -> Eval<'a> {
    let Some(builtin) = c.builtin() else {
        return Err(missing_function(c));
    };
    let args = Args {
        call: c,
        event,
        ty: builtin.result_type(),
    };
    match builtin {
        Builtin::Length => {
            let s = args.get(0)?.into_str();
            Ok(Val::Int(
                i32::try_from(s.chars().count()).unwrap_or(i32::MAX),
            ))
        }
        Builtin::Concat => concat(&args, None),
        Builtin::ConcatWs => {
            let delimiter = args.get(0)?.into_str();
            concat(&args, Some(delimiter))
        }
        Builtin::Lower => change_case(args.get(0)?.into_str(), false),
        Builtin::Upper => change_case(args.get(0)?.into_str(), true),
        Builtin::Trim => {
            let s = args.get(0)?.into_str();
            let start = s.len() - s.trim_start().len();
            let end = start + s.trim().len();
            Ok(Val::Str(slice(s, start, end)))
        }
        Builtin::Left | Builtin::Right => left_right(&args, builtin == Builtin::Left),
        Builtin::Substring => substring(&args),
        Builtin::Abs => {
            let (n, cast) = args.get(0)?.to_int();
            let (n, math) = match n.checked_abs() {
                Some(n) => (n, None),
                None => (i32::MAX, Some(EvalError::Math(MathError::Overflow))),
            };
            finish(Val::Int(n), cast.map(EvalError::from).or(math))
        }
        Builtin::Int => {
            let (n, cast) = args.get(0)?.to_int();
            finish(Val::Int(n), cast.map(EvalError::from))
        }
        Builtin::Bool => {
            let (b, cast) = args.get(0)?.to_bool();
            finish(Val::Bool(b), cast.map(EvalError::from))
        }
        Builtin::String => Ok(Val::Str(args.get(0)?.into_str())),
        Builtin::IsInt => Ok(Val::Bool(match args.get(0)? {
            Val::Int(_) => true,
            Val::Str(s) => s.parse::<i32>().is_ok(),
            Val::Bool(_) => false,
        })),
        Builtin::IsBool => Ok(Val::Bool(match args.get(0)? {
            Val::Bool(_) => true,
            Val::Str(s) => parse_bool(&s).is_some(),
            Val::Int(_) => false,
        })),
    }
}

/// `CONCAT(x1, …)`, or `CONCAT_WS(delimiter, x1, …)` with the delimiter
/// evaluated.
fn concat<'a>(args: &Args<'a>, delimiter: Option<Cow<'a, str>>) -> Eval<'a> {
    let skip = usize::from(delimiter.is_some());
    let mut out = String::new();
    for i in skip..args.len() {
        if let (Some(d), true) = (&delimiter, i > skip) {
            out.push_str(d);
        }
        out.push_str(&args.get(i)?.into_str());
    }
    Ok(Val::Str(Cow::Owned(out)))
}

/// `LOWER(s)` / `UPPER(s)`, borrowing when nothing changes.
fn change_case(s: Cow<'_, str>, upper: bool) -> Eval<'_> {
    let unchanged = s.is_ascii()
        && !s.bytes().any(|b| {
            if upper {
                b.is_ascii_lowercase()
            } else {
                b.is_ascii_uppercase()
            }
        });
    Ok(Val::Str(match (unchanged, upper) {
        (true, _) => s,
        (false, true) => Cow::Owned(s.to_uppercase()),
        (false, false) => Cow::Owned(s.to_lowercase()),
    }))
}

/// `LEFT(s, n)` / `RIGHT(s, n)`.
fn left_right<'a>(args: &Args<'a>, left: bool) -> Eval<'a> {
    let s = args.get(0)?.into_str();
    let (n, cast) = args.get(1)?.to_int();
    let name = if left { "LEFT" } else { "RIGHT" };
    if n < 0 {
        let error = cast
            .map(EvalError::from)
            .unwrap_or_else(|| function_error(name, "the length is negative"));
        return Err(Fail {
            error,
            value: Val::Str(s),
        });
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let count = s.chars().count();
    let value = if n >= count {
        s
    } else if left {
        let end = char_offset(&s, n);
        slice(s, 0, end)
    } else {
        let start = char_offset(&s, count - n);
        let end = s.len();
        slice(s, start, end)
    };
    finish(Val::Str(value), cast.map(EvalError::from))
}

/// `SUBSTRING(s, pos)` / `SUBSTRING(s, pos, len)`.
fn substring<'a>(args: &Args<'a>) -> Eval<'a> {
    let s = args.get(0)?.into_str();
    let (pos, c1) = args.get(1)?.to_int();
    let len = if args.len() == 3 {
        Some(args.get(2)?.to_int())
    } else {
        None
    };
    let cast = c1.or(len.and_then(|(_, c)| c)).map(EvalError::from);
    let count = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    let empty = || Val::Str(Cow::Borrowed(""));
    if pos > count || pos < -count {
        let error = cast
            .unwrap_or_else(|| function_error("SUBSTRING", "the position is outside the string"));
        return Err(Fail {
            error,
            value: empty(),
        });
    }
    if len.is_some_and(|(l, _)| l < 0) {
        let error = cast.unwrap_or_else(|| function_error("SUBSTRING", "the length is negative"));
        return Err(Fail {
            error,
            value: empty(),
        });
    }
    if pos == 0 {
        return finish(empty(), cast);
    }
    let start = if pos > 0 { pos - 1 } else { count + pos };
    let end = match len {
        Some((l, _)) => (start + i64::from(l)).min(count),
        None => count,
    };
    let start = usize::try_from(start).unwrap_or(0);
    let end = usize::try_from(end).unwrap_or(0);
    let (bs, be) = (char_offset(&s, start), char_offset(&s, end));
    finish(Val::Str(slice(s, bs, be)), cast)
}

//! The CESQL syntax tree, and its canonical text form.
//!
//! [`Expr`]'s `Display` writes keywords and function names in upper case,
//! identifiers in lower case, strings single-quoted, and parentheses only
//! where precedence needs them, so that parsing the text gives back the
//! same tree (for the trees the parser builds), and nests no deeper than
//! the tree.

use super::like::LikePattern;
use super::value::{write_string_literal, Type, Value};
use std::fmt;
use std::sync::Arc;

/// A node of the syntax tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// A context attribute or extension, by its (lower-case) name.
    Attribute(Arc<str>),
    /// `EXISTS name`.
    Exists(Arc<str>),
    /// `NOT x`.
    Not(Box<Expr>),
    /// `-x`.
    Negate(Box<Expr>),
    /// `first op1 x1 op2 x2 …`: binary operators of one precedence level,
    /// applied left to right — `((first op1 x1) op2 x2) …` — so that long
    /// chains (`a OR b OR …`) do not nest. `rest` is never empty, and the
    /// parser puts only operators of one [`BinaryOp::level`] in it.
    Binary {
        /// The leftmost operand.
        first: Box<Expr>,
        /// The operators and their right operands, in order.
        rest: Vec<(BinaryOp, Expr)>,
    },
    /// `x [NOT] LIKE 'pattern'`.
    Like {
        /// The value matched.
        operand: Box<Expr>,
        /// The compiled pattern.
        pattern: LikePattern,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `x [NOT] IN (y1, y2, …)`.
    In {
        /// The value looked for.
        operand: Box<Expr>,
        /// The set (never empty).
        set: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// A function call.
    Call(Call),
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `<>` (same as `!=`, kept to write the expression back as it was)
    LtGt,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `XOR`
    Xor,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::LtGt => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Xor => "XOR",
        }
    }

    /// The precedence level: 0 for `AND OR XOR`, 1 for the comparisons,
    /// 2 for `+ -`, 3 for `* / %` (higher binds tighter).
    pub fn level(self) -> u8 {
        match self {
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => 0,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 3,
            BinaryOp::Add | BinaryOp::Sub => 2,
            _ => 1,
        }
    }

    /// The type of the result.
    pub fn result_type(self) -> Type {
        match self {
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Add | BinaryOp::Sub => {
                Type::Integer
            }
            _ => Type::Boolean,
        }
    }
}

/// A built-in function of CESQL v1 (plus `IS_INT` and `IS_BOOL` of the
/// working draft, which the TCK no longer requires but users may know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `LENGTH(x)`
    Length,
    /// `CONCAT(x1, …)`
    Concat,
    /// `CONCAT_WS(delimiter, x1, …)`
    ConcatWs,
    /// `LOWER(x)`
    Lower,
    /// `UPPER(x)`
    Upper,
    /// `TRIM(x)`
    Trim,
    /// `LEFT(x, n)`
    Left,
    /// `RIGHT(x, n)`
    Right,
    /// `SUBSTRING(x, pos)` and `SUBSTRING(x, pos, len)`
    Substring,
    /// `ABS(x)`
    Abs,
    /// `INT(x)`
    Int,
    /// `BOOL(x)`
    Bool,
    /// `STRING(x)`
    String,
    /// `IS_INT(x)`
    IsInt,
    /// `IS_BOOL(x)`
    IsBool,
}

impl Builtin {
    /// Every built-in function.
    pub const ALL: [Builtin; 15] = [
        Builtin::Length,
        Builtin::Concat,
        Builtin::ConcatWs,
        Builtin::Lower,
        Builtin::Upper,
        Builtin::Trim,
        Builtin::Left,
        Builtin::Right,
        Builtin::Substring,
        Builtin::Abs,
        Builtin::Int,
        Builtin::Bool,
        Builtin::String,
        Builtin::IsInt,
        Builtin::IsBool,
    ];

    /// The function's name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Length => "LENGTH",
            Builtin::Concat => "CONCAT",
            Builtin::ConcatWs => "CONCAT_WS",
            Builtin::Lower => "LOWER",
            Builtin::Upper => "UPPER",
            Builtin::Trim => "TRIM",
            Builtin::Left => "LEFT",
            Builtin::Right => "RIGHT",
            Builtin::Substring => "SUBSTRING",
            Builtin::Abs => "ABS",
            Builtin::Int => "INT",
            Builtin::Bool => "BOOL",
            Builtin::String => "STRING",
            Builtin::IsInt => "IS_INT",
            Builtin::IsBool => "IS_BOOL",
        }
    }

    /// Whether the function takes `n` arguments.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Builtin::Concat => true,
            Builtin::ConcatWs => n >= 1,
            Builtin::Left | Builtin::Right => n == 2,
            Builtin::Substring => n == 2 || n == 3,
            _ => n == 1,
        }
    }

    /// The arities, for messages.
    pub fn arity_text(self) -> &'static str {
        match self {
            Builtin::Concat => "any number of arguments",
            Builtin::ConcatWs => "one or more arguments",
            Builtin::Left | Builtin::Right => "2 arguments",
            Builtin::Substring => "2 or 3 arguments",
            _ => "1 argument",
        }
    }

    /// The type of the result.
    pub fn result_type(self) -> Type {
        match self {
            Builtin::Length | Builtin::Abs | Builtin::Int => Type::Integer,
            Builtin::Bool | Builtin::IsInt | Builtin::IsBool => Type::Boolean,
            _ => Type::String,
        }
    }

    /// The built-in called `name` (any letter case), whatever its arity.
    pub fn by_name(name: &str) -> Option<Builtin> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }
}

/// A function call, resolved against the built-ins once, when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    name: Arc<str>,
    args: Vec<Expr>,
    builtin: Option<Builtin>,
}

impl Call {
    /// A call of function `name` (any letter case) with `args`.
    pub fn new(name: &str, args: Vec<Expr>) -> Call {
        let builtin = Builtin::by_name(name).filter(|b| b.accepts(args.len()));
        Call {
            name: name.to_ascii_uppercase().into(),
            args,
            builtin,
        }
    }

    /// The function's name, in upper case.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments.
    pub fn args(&self) -> &[Expr] {
        &self.args
    }

    /// The built-in called, `None` when no function of that name takes
    /// that many arguments (evaluation then fails with
    /// `MissingFunction`).
    pub fn builtin(&self) -> Option<Builtin> {
        self.builtin
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }
}

impl Expr {
    /// `l op r`.
    pub fn binary(op: BinaryOp, l: Expr, r: Expr) -> Expr {
        Expr::Binary {
            first: Box::new(l),
            rest: vec![(op, r)],
        }
    }

    /// The type of the node's value when it does not depend on the event:
    /// `None` for an attribute. A call that cannot be dispatched is a
    /// Boolean (its value is `false`).
    pub fn static_type(&self) -> Option<Type> {
        match self {
            Expr::Literal(v) => Some(v.value_type()),
            Expr::Attribute(_) => None,
            Expr::Exists(_) | Expr::Not(_) | Expr::Like { .. } | Expr::In { .. } => {
                Some(Type::Boolean)
            }
            Expr::Negate(_) => Some(Type::Integer),
            Expr::Binary { rest, .. } => Some(
                rest.last()
                    .map_or(Type::Boolean, |(op, _)| op.result_type()),
            ),
            Expr::Call(c) => Some(c.builtin.map_or(Type::Boolean, Builtin::result_type)),
        }
    }

    /// How tightly the node binds in the canonical form: 7 for atoms, 6
    /// for prefix operators, 5 for LIKE and IN, 4 to 1 for chains of
    /// `* / %`, `+ -`, comparisons and `AND OR XOR`.
    fn rank(&self) -> u8 {
        match self {
            Expr::Literal(_) | Expr::Attribute(_) | Expr::Call(_) => 7,
            Expr::Not(_) | Expr::Negate(_) | Expr::Exists(_) => 6,
            Expr::Like { .. } | Expr::In { .. } => 5,
            Expr::Binary { rest, .. } => rest.last().map_or(7, |(op, _)| op.level() + 1),
        }
    }
}

/// An operand that must bind at least as tightly as `.1`, in parentheses
/// otherwise.
struct Operand<'a>(&'a Expr, u8);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.rank() >= self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "({})", self.0)
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Attribute(name) => f.write_str(name),
            Expr::Exists(name) => write!(f, "EXISTS {name}"),
            Expr::Not(e) => write!(f, "NOT {}", Operand(e, 6)),
            // With a space: `-5` would read back as a literal.
            Expr::Negate(e) => write!(f, "- {}", Operand(e, 6)),
            Expr::Binary { first, rest } => {
                // A chain the parser did not build may mix levels: the
                // parentheses keep its left-to-right meaning.
                let changes = rest
                    .windows(2)
                    .filter(|w| w[0].0.level() != w[1].0.level())
                    .count();
                for _ in 0..changes {
                    f.write_str("(")?;
                }
                let tighter = |op: &BinaryOp| op.level() + 2;
                write!(
                    f,
                    "{}",
                    Operand(first, rest.first().map_or(0, |(op, _)| tighter(op)))
                )?;
                let mut level = None;
                for (op, e) in rest {
                    if level.is_some_and(|l| l != op.level()) {
                        f.write_str(")")?;
                    }
                    level = Some(op.level());
                    write!(f, " {} {}", op.symbol(), Operand(e, tighter(op)))?;
                }
                Ok(())
            }
            Expr::Like {
                operand,
                pattern,
                negated,
            } => {
                write!(f, "{} ", Operand(operand, 5))?;
                if *negated {
                    f.write_str("NOT ")?;
                }
                f.write_str("LIKE ")?;
                write_string_literal(f, pattern.as_str())
            }
            Expr::In {
                operand,
                set,
                negated,
            } => {
                write!(f, "{} ", Operand(operand, 5))?;
                if *negated {
                    f.write_str("NOT ")?;
                }
                f.write_str("IN (")?;
                write_list(f, set)?;
                f.write_str(")")
            }
            Expr::Call(c) => {
                write!(f, "{}(", c.name)?;
                write_list(f, &c.args)?;
                f.write_str(")")
            }
        }
    }
}

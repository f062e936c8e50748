//! The parsed form of a CESQL expression.

use super::like::Pattern;
use std::fmt;

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Mul,
    Div,
    Mod,
    Add,
    Sub,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Xor => "XOR",
        }
    }
}

/// The built-in functions, resolved by name and arity at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring2,
    Substring3,
    Abs,
    Int,
    Bool,
    String,
    /// `IS_INT(x)`: whether `x` converts to an integer without error (as
    /// the CloudEvents Go SDK, which Knative uses, provides).
    IsInt,
    /// `IS_BOOL(x)`: whether `x` converts to a boolean without error.
    IsBool,
}

impl Function {
    /// The function `name` (upper case) taking `arity` arguments.
    pub fn resolve(name: &str, arity: usize) -> Option<Function> {
        Some(match (name, arity) {
            ("LENGTH", 1) => Function::Length,
            ("CONCAT", _) => Function::Concat,
            ("CONCAT_WS", n) if n >= 1 => Function::ConcatWs,
            ("LOWER", 1) => Function::Lower,
            ("UPPER", 1) => Function::Upper,
            ("TRIM", 1) => Function::Trim,
            ("LEFT", 2) => Function::Left,
            ("RIGHT", 2) => Function::Right,
            ("SUBSTRING", 2) => Function::Substring2,
            ("SUBSTRING", 3) => Function::Substring3,
            ("ABS", 1) => Function::Abs,
            ("INT", 1) => Function::Int,
            ("BOOL", 1) => Function::Bool,
            ("STRING", 1) => Function::String,
            ("IS_INT", 1) => Function::IsInt,
            ("IS_BOOL", 1) => Function::IsBool,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Length => "LENGTH",
            Function::Concat => "CONCAT",
            Function::ConcatWs => "CONCAT_WS",
            Function::Lower => "LOWER",
            Function::Upper => "UPPER",
            Function::Trim => "TRIM",
            Function::Left => "LEFT",
            Function::Right => "RIGHT",
            Function::Substring2 | Function::Substring3 => "SUBSTRING",
            Function::Abs => "ABS",
            Function::Int => "INT",
            Function::Bool => "BOOL",
            Function::String => "STRING",
            Function::IsInt => "IS_INT",
            Function::IsBool => "IS_BOOL",
        }
    }
}

/// A CESQL expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Boolean(bool),
    Integer(i32),
    String(String),
    /// A context attribute or extension, by lower-case name.
    Attribute(String),
    Exists(String),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Like {
        value: Box<Expr>,
        pattern: Pattern,
        negated: bool,
    },
    In {
        value: Box<Expr>,
        set: Vec<Expr>,
        negated: bool,
    },
    Call(Function, Vec<Expr>),
    /// A call no built-in function answers (name or arity): evaluates to
    /// `false` with a MissingFunctionError, as the spec requires.
    MissingFunction {
        name: String,
        args: Vec<Expr>,
        at: usize,
    },
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Fully parenthesised CESQL that parses back to the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr]| -> fmt::Result {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{e}")?;
            }
            Ok(())
        };
        match self {
            Expr::Boolean(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Expr::Integer(n) => write!(f, "{n}"),
            Expr::String(s) => f.write_str(&quote(s)),
            Expr::Attribute(a) => f.write_str(a),
            Expr::Exists(a) => write!(f, "(EXISTS {a})"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Negate(e) => write!(f, "(-({e}))"),
            Expr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::Like {
                value,
                pattern,
                negated,
            } => write!(
                f,
                "({value} {}LIKE {})",
                if *negated { "NOT " } else { "" },
                quote(pattern.source())
            ),
            Expr::In {
                value,
                set,
                negated,
            } => {
                write!(f, "({value} {}IN (", if *negated { "NOT " } else { "" })?;
                list(f, set)?;
                f.write_str("))")
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                list(f, args)?;
                f.write_str(")")
            }
            Expr::MissingFunction { name, args, .. } => {
                write!(f, "{name}(")?;
                list(f, args)?;
                f.write_str(")")
            }
        }
    }
}

//! The CESQL parser: recursive descent over the tokens of [`super::lexer`].
//!
//! Precedence, from loosest to tightest, as section 3.6 of the
//! specification orders it (operators of one level apply left to right):
//!
//! | level | operators |
//! |---|---|
//! | logic | `AND`, `OR`, `XOR` (one level: `a OR b AND c` is `(a OR b) AND c`) |
//! | comparison | `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=` |
//! | additive | `+`, `-` |
//! | multiplicative | `*`, `/`, `%` |
//! | postfix | `[NOT] LIKE 'pattern'`, `[NOT] IN (…)` |
//! | unary | `NOT x`, `-x`, `EXISTS name` |
//! | primary | literals, identifiers, function calls, `( … )` |
//!
//! So, as in the specification's grammar, `NOT a = b` is `(NOT a) = b` and
//! `-x LIKE '1%'` is `(-x) LIKE '1%'`.
//!
//! Both the depth of the tree and the depth of the parser's recursion
//! (parentheses, sets, calls, prefix operators) are bounded by
//! [`super::MAX_DEPTH`], so that neither parsing nor evaluation can exhaust
//! the stack; chains of binary operators of one level are one node, and
//! the canonical form of an accepted tree never recurses deeper than the
//! tree, so it parses back. The recursive functions keep small frames:
//! messages are built in separate cold functions.

use super::ast::{BinaryOp, Builtin, Call, Expr};
use super::error::{ParseError, StaticError};
use super::lexer::{tokenize, Tok, Token};
use super::like::LikePattern;
use super::value::Value;
use super::MAX_DEPTH;
use std::sync::Arc;

/// The result of parsing: the tree and what the static check found.
pub(crate) struct Parsed {
    pub(crate) root: Expr,
    pub(crate) diagnostics: Vec<StaticError>,
}

/// Parse `src`.
pub(crate) fn parse(src: &str) -> Result<Parsed, ParseError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        nesting: 0,
        diagnostics: Vec::new(),
    };
    let (root, _) = p.expression()?;
    if p.tok() != &Tok::Eof {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(Parsed {
        root,
        diagnostics: p.diagnostics,
    })
}

/// A node and the depth of its tree.
type Node = (Expr, usize);

struct Parser<'s> {
    src: &'s str,
    /// Never empty: ends with `Eof`.
    tokens: Vec<Token<'s>>,
    pos: usize,
    /// Current depth of recursion (parentheses, sets, calls, prefix
    /// operators).
    nesting: usize,
    diagnostics: Vec<StaticError>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Keyword {
    And,
    Or,
    Xor,
    Not,
    Like,
    In,
    Exists,
    True,
    False,
}

fn keyword(word: &str) -> Option<Keyword> {
    const KEYWORDS: [(&str, Keyword); 9] = [
        ("AND", Keyword::And),
        ("OR", Keyword::Or),
        ("XOR", Keyword::Xor),
        ("NOT", Keyword::Not),
        ("LIKE", Keyword::Like),
        ("IN", Keyword::In),
        ("EXISTS", Keyword::Exists),
        ("TRUE", Keyword::True),
        ("FALSE", Keyword::False),
    ];
    KEYWORDS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(word))
        .map(|(_, k)| *k)
}

fn tok_keyword(tok: &Tok<'_>) -> Option<Keyword> {
    match tok {
        Tok::Word(w) => keyword(w),
        _ => None,
    }
}

/// A token as a message names it.
fn describe(tok: &Tok<'_>) -> String {
    let symbol = match tok {
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::Comma => ",",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Eq => "=",
        Tok::NotEq => "!=",
        Tok::LtGt => "<>",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::Str(s) => return format!("string {}", Value::String(s.clone())),
        Tok::Int(d) => return format!("integer {d}"),
        Tok::Word(w) => {
            return match keyword(w) {
                Some(_) => format!("keyword {}", w.to_ascii_uppercase()),
                None => format!("{w:?}"),
            }
        }
        Tok::Eof => return "the end of the expression".into(),
    };
    format!("'{symbol}'")
}

/// `[a-zA-Z0-9]+`: a value identifier (matched case-insensitively).
fn is_identifier(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `[a-zA-Z][a-zA-Z_]*`: a function name.
fn is_function_name(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphabetic() || b == b'_')
}

/// The binary operator `tok` is.
fn binary_op(tok: &Tok<'_>) -> Option<BinaryOp> {
    Some(match tok {
        Tok::Star => BinaryOp::Mul,
        Tok::Slash => BinaryOp::Div,
        Tok::Percent => BinaryOp::Mod,
        Tok::Plus => BinaryOp::Add,
        Tok::Minus => BinaryOp::Sub,
        Tok::Eq => BinaryOp::Eq,
        Tok::NotEq => BinaryOp::NotEq,
        Tok::LtGt => BinaryOp::LtGt,
        Tok::Lt => BinaryOp::Lt,
        Tok::Le => BinaryOp::Le,
        Tok::Gt => BinaryOp::Gt,
        Tok::Ge => BinaryOp::Ge,
        Tok::Word(w) => match keyword(w)? {
            Keyword::And => BinaryOp::And,
            Keyword::Or => BinaryOp::Or,
            Keyword::Xor => BinaryOp::Xor,
            _ => return None,
        },
        _ => return None,
    })
}

impl<'s> Parser<'s> {
    /// The current token.
    fn token(&self) -> &Token<'s> {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn tok(&self) -> &Tok<'s> {
        &self.token().tok
    }

    /// The token after the current one.
    fn next_tok(&self) -> &Tok<'s> {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].tok
    }

    /// Step over the current token; its start.
    fn bump(&mut self) -> usize {
        let start = self.token().start;
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        start
    }

    /// Step over the current token if it is `want`.
    fn eat(&mut self, want: &Tok<'_>) -> bool {
        let found = self.tok() == want;
        if found {
            self.bump();
        }
        found
    }

    #[cold]
    #[inline(never)]
    fn error(&self, at: usize, message: String) -> ParseError {
        ParseError::new(self.src, at, message)
    }

    /// "expected `what`, found <the current token>".
    #[cold]
    #[inline(never)]
    fn unexpected(&self, what: &str) -> ParseError {
        let t = self.token();
        self.error(
            t.start,
            format!("expected {what}, found {}", describe(&t.tok)),
        )
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self, at: usize) -> ParseError {
        self.error(
            at,
            format!("the expression nests more than {MAX_DEPTH} levels deep"),
        )
    }

    /// Enter one level of recursion at `at`.
    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// A node over children at most `child_depth` deep, built from the
    /// operator at `at`: refused when the tree gets too deep.
    fn node(&self, expr: Expr, child_depth: usize, at: usize) -> Result<Node, ParseError> {
        let depth = child_depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok((expr, depth))
    }

    /// A whole expression, one level of recursion down.
    fn expression(&mut self) -> Result<Node, ParseError> {
        self.enter(self.token().start)?;
        let e = self.binary();
        self.leave();
        e
    }

    /// Binary operators of all levels and their operands, as chains (one
    /// per precedence level), without recursion: open chains wait on a
    /// stack, tighter levels on top.
    fn binary(&mut self) -> Result<Node, ParseError> {
        /// `first op1 x1 … pending` awaiting its right operand.
        struct Open {
            first: Expr,
            rest: Vec<(BinaryOp, Expr)>,
            pending: BinaryOp,
            /// The depth of the deepest operand so far.
            depth: usize,
            /// Where the chain's first operator is.
            at: usize,
        }
        let close = |p: &Self, open: Open, (operand, d): Node| -> Result<Node, ParseError> {
            let mut rest = open.rest;
            rest.push((open.pending, operand));
            let expr = Expr::Binary {
                first: Box::new(open.first),
                rest,
            };
            p.node(expr, open.depth.max(d), open.at)
        };
        let mut stack: Vec<Open> = Vec::new();
        let mut operand = self.postfix()?;
        while let Some(op) = binary_op(self.tok()) {
            let at = self.bump();
            // `operand` ends every open chain of a tighter level.
            while let Some(top) = stack.pop() {
                if top.pending.level() > op.level() {
                    operand = close(self, top, operand)?;
                } else {
                    stack.push(top);
                    break;
                }
            }
            let (e, d) = operand;
            match stack.last_mut() {
                Some(top) if top.pending.level() == op.level() => {
                    let pending = std::mem::replace(&mut top.pending, op);
                    top.rest.push((pending, e));
                    top.depth = top.depth.max(d);
                }
                _ => stack.push(Open {
                    first: e,
                    rest: Vec::new(),
                    pending: op,
                    depth: d,
                    at,
                }),
            }
            operand = self.postfix()?;
        }
        while let Some(top) = stack.pop() {
            operand = close(self, top, operand)?;
        }
        Ok(operand)
    }

    /// `x [NOT] LIKE 'p'`, `x [NOT] IN (…)`, repeated.
    fn postfix(&mut self) -> Result<Node, ParseError> {
        let mut operand = self.unary()?;
        loop {
            let at = self.token().start;
            let negated = tok_keyword(self.tok()) == Some(Keyword::Not);
            if negated {
                if !matches!(
                    tok_keyword(self.next_tok()),
                    Some(Keyword::Like | Keyword::In)
                ) {
                    self.bump();
                    return Err(self.unexpected("LIKE or IN after NOT"));
                }
                self.bump();
            }
            operand = match tok_keyword(self.tok()) {
                Some(Keyword::Like) => self.like(operand, negated, at)?,
                Some(Keyword::In) => self.in_set(operand, negated, at)?,
                _ => return Ok(operand),
            };
        }
    }

    fn like(&mut self, (operand, d): Node, negated: bool, at: usize) -> Result<Node, ParseError> {
        self.bump();
        let pattern = match self.tok() {
            Tok::Str(p) => LikePattern::new(p),
            _ => {
                return Err(self.unexpected(
                    "a string literal as the pattern of LIKE (it must be a string literal)",
                ))
            }
        };
        self.bump();
        let expr = Expr::Like {
            operand: Box::new(operand),
            pattern,
            negated,
        };
        self.node(expr, d, at)
    }

    fn in_set(&mut self, (operand, d): Node, negated: bool, at: usize) -> Result<Node, ParseError> {
        self.bump();
        if !self.eat(&Tok::LParen) {
            return Err(self.unexpected("'(' to open the set of IN"));
        }
        if self.tok() == &Tok::RParen {
            return Err(self.unexpected("a value (the set of IN must not be empty)"));
        }
        let mut set = Vec::new();
        let mut depth = d;
        loop {
            let (e, d) = self.expression()?;
            set.push(e);
            depth = depth.max(d);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if !self.eat(&Tok::RParen) {
            return Err(self.unexpected("',' or ')' in the set of IN"));
        }
        let expr = Expr::In {
            operand: Box::new(operand),
            set,
            negated,
        };
        self.node(expr, depth, at)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let (start, end) = (self.token().start, self.token().end);
        match self.tok() {
            Tok::Word(w) if keyword(w) == Some(Keyword::Not) => {
                self.bump();
                self.enter(start)?;
                let inner = self.unary();
                self.leave();
                let (e, d) = inner?;
                self.node(Expr::Not(Box::new(e)), d, start)
            }
            Tok::Word(w) if keyword(w) == Some(Keyword::Exists) => {
                self.bump();
                match self.tok() {
                    Tok::Word(n) if keyword(n).is_none() && is_identifier(n) => {
                        let name = Arc::from(n.to_ascii_lowercase());
                        self.bump();
                        Ok((Expr::Exists(name), 1))
                    }
                    _ => Err(self.unexpected("an attribute name after EXISTS")),
                }
            }
            Tok::Minus | Tok::Plus => {
                let negative = self.tok() == &Tok::Minus;
                self.bump();
                // A sign right before the digits is part of an integer
                // literal, which lets -2147483648 be written.
                if let (Tok::Int(digits), true) = (self.tok(), self.token().start == end) {
                    let n = self.integer(digits, negative, start)?;
                    self.bump();
                    return Ok((Expr::Literal(Value::Integer(n)), 1));
                }
                if !negative {
                    return Err(self.error(
                        start,
                        "'+' is only allowed as the sign of an integer literal".into(),
                    ));
                }
                self.enter(start)?;
                let inner = self.unary();
                self.leave();
                let (e, d) = inner?;
                self.node(Expr::Negate(Box::new(e)), d, start)
            }
            _ => self.primary(),
        }
    }

    /// The value of integer literal `digits` (with the sign read at
    /// `start`), which must fit 32 bits.
    fn integer(&self, digits: &str, negative: bool, start: usize) -> Result<i32, ParseError> {
        let magnitude = digits.trim_start_matches('0');
        let value = if magnitude.is_empty() {
            Some(0)
        } else if magnitude.len() > 10 {
            None
        } else {
            magnitude
                .parse::<i64>()
                .ok()
                .map(|m| if negative { -m } else { m })
                .and_then(|v| i32::try_from(v).ok())
        };
        value.ok_or_else(|| self.out_of_range(digits, negative, start))
    }

    #[cold]
    #[inline(never)]
    fn out_of_range(&self, digits: &str, negative: bool, start: usize) -> ParseError {
        let sign = if negative { "-" } else { "" };
        self.error(
            start,
            format!(
                "integer literal {sign}{digits} does not fit 32 bits (-2147483648 to 2147483647)"
            ),
        )
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let start = self.token().start;
        let expr = match self.tok() {
            Tok::LParen => {
                self.bump();
                let e = self.expression()?;
                if !self.eat(&Tok::RParen) {
                    return Err(self.unexpected("')'"));
                }
                return Ok(e);
            }
            Tok::Int(digits) => Expr::Literal(Value::Integer(self.integer(digits, false, start)?)),
            Tok::Str(s) => Expr::Literal(Value::String(s.clone())),
            Tok::Word(w) => match keyword(w) {
                Some(Keyword::True) => Expr::Literal(Value::Boolean(true)),
                Some(Keyword::False) => Expr::Literal(Value::Boolean(false)),
                Some(_) => return Err(self.unexpected("a value")),
                None if self.next_tok() == &Tok::LParen => return self.call(),
                None if is_identifier(w) => Expr::Attribute(Arc::from(w.to_ascii_lowercase())),
                None => return Err(self.not_an_identifier(start, w)),
            },
            _ => return Err(self.unexpected("a value")),
        };
        self.bump();
        Ok((expr, 1))
    }

    #[cold]
    #[inline(never)]
    fn not_an_identifier(&self, at: usize, word: &str) -> ParseError {
        self.error(
            at,
            format!("{word:?} is not an attribute name (letters and digits only)"),
        )
    }

    /// `name(args)`, at the name.
    fn call(&mut self) -> Result<Node, ParseError> {
        let start = self.token().start;
        let Tok::Word(name) = *self.tok() else {
            return Err(self.unexpected("a function name"));
        };
        if !is_function_name(name) {
            return Err(self.error(
                start,
                format!("{name:?} is not a function name (letters and '_' only)"),
            ));
        }
        self.bump();
        self.bump();
        self.enter(start)?;
        let args = self.arguments();
        self.leave();
        let (args, depth) = args?;
        let call = Call::new(name, args);
        if call.builtin().is_none() {
            self.unknown_function(&call, start);
        }
        self.node(Expr::Call(call), depth, start)
    }

    #[cold]
    #[inline(never)]
    fn unknown_function(&mut self, call: &Call, at: usize) {
        let message = match Builtin::by_name(call.name()) {
            Some(b) => format!(
                "{} takes {}, not {}",
                b.name(),
                b.arity_text(),
                call.args().len()
            ),
            None => format!("there is no function {}", call.name()),
        };
        self.diagnostics
            .push(StaticError::new(self.src, at, message));
    }

    /// The arguments of a call, after its `(`, and the depth of the
    /// deepest.
    fn arguments(&mut self) -> Result<(Vec<Expr>, usize), ParseError> {
        let mut args = Vec::new();
        let mut depth = 0;
        if self.eat(&Tok::RParen) {
            return Ok((args, depth));
        }
        loop {
            let (e, d) = self.binary()?;
            args.push(e);
            depth = depth.max(d);
            if self.eat(&Tok::RParen) {
                return Ok((args, depth));
            }
            if !self.eat(&Tok::Comma) {
                return Err(self.unexpected("',' or ')' in the arguments"));
            }
        }
    }
}

//! A recursive-descent parser following the precedence of the CESQL
//! grammar (`CESQLParser.g4`), tightest first: function calls and atoms;
//! `NOT` and unary `-`; `LIKE`; `EXISTS`; `IN`; `*` `/` `%`; `+` `-`;
//! comparisons; `AND` `OR` `XOR`. Binary operators associate to the left,
//! except `AND`/`OR`/`XOR`, which share one level and associate to the
//! right, as in the reference grammar (so `a AND b OR c` is
//! `a AND (b OR c)`): write parentheses when mixing them.

use super::ast::{BinaryOp, Expr, Function};
use super::lexer::{tokenize, Tok, Token};
use super::like::Pattern;
use super::ParseError;

/// Deepest nesting accepted; deeper input is a parse error, never a stack
/// overflow.
pub const MAX_DEPTH: usize = 64;

pub(super) fn parse(input: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(input)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = p.logic()?;
    let t = p.peek();
    if t.kind != Tok::Eof {
        return Err(ParseError::new(
            t.at,
            format!(
                "expected an operator or the end, found {}",
                t.kind.describe()
            ),
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].kind
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, kind: &Tok, what: &str) -> Result<Token, ParseError> {
        let t = self.next();
        if &t.kind == kind {
            Ok(t)
        } else {
            Err(ParseError::new(
                t.at,
                format!("expected {what}, found {}", t.kind.describe()),
            ))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(
                self.peek().at,
                format!("expression nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// `AND`, `OR`, `XOR`: one level, right-associative.
    fn logic(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let left = self.comparison()?;
        let op = match self.peek().kind {
            Tok::And => BinaryOp::And,
            Tok::Or => BinaryOp::Or,
            Tok::Xor => BinaryOp::Xor,
            _ => {
                self.depth -= 1;
                return Ok(left);
            }
        };
        self.next();
        let right = self.logic()?;
        self.depth -= 1;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.additive()?;
        loop {
            let op = match self.peek().kind {
                Tok::Eq => BinaryOp::Eq,
                Tok::NotEq => BinaryOp::NotEq,
                Tok::Lt => BinaryOp::Lt,
                Tok::LtEq => BinaryOp::LtEq,
                Tok::Gt => BinaryOp::Gt,
                Tok::GtEq => BinaryOp::GtEq,
                _ => return Ok(left),
            };
            self.next();
            let right = self.additive()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                Tok::Plus => BinaryOp::Add,
                Tok::Minus => BinaryOp::Sub,
                _ => return Ok(left),
            };
            self.next();
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.postfix()?;
        loop {
            let op = match self.peek().kind {
                Tok::Star => BinaryOp::Mul,
                Tok::Slash => BinaryOp::Div,
                Tok::Percent => BinaryOp::Mod,
                _ => return Ok(left),
            };
            self.next();
            let right = self.postfix()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    /// `x [NOT] LIKE 'pattern'` and `x [NOT] IN (a, b, …)`.
    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let negated =
                self.peek().kind == Tok::Not && matches!(self.peek_at(1), Tok::Like | Tok::In);
            if negated {
                self.next();
            }
            match self.peek().kind {
                Tok::Like => {
                    self.next();
                    let t = self.next();
                    let Tok::String(pattern) = t.kind else {
                        return Err(ParseError::new(
                            t.at,
                            format!(
                                "LIKE needs a string literal pattern, found {}",
                                t.kind.describe()
                            ),
                        ));
                    };
                    left = Expr::Like {
                        value: Box::new(left),
                        pattern: Pattern::compile(&pattern),
                        negated,
                    };
                }
                Tok::In => {
                    self.next();
                    self.expect(&Tok::LParen, "'(' opening the IN set")?;
                    let mut set = vec![self.logic()?];
                    while self.peek().kind == Tok::Comma {
                        self.next();
                        set.push(self.logic()?);
                    }
                    self.expect(&Tok::RParen, "',' or ')' in the IN set")?;
                    left = Expr::In {
                        value: Box::new(left),
                        set,
                        negated,
                    };
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().kind {
            Tok::Not => {
                self.next();
                self.enter()?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Tok::Minus => {
                let at = self.next().at;
                // A signed integer literal: `-2147483648` is in range.
                if let Tok::Integer(n) = *self.peek_at(0) {
                    if !matches!(self.peek_at(1), Tok::LParen) {
                        self.next();
                        let v = i64::try_from(n).ok().map(|n| -n);
                        return match v.and_then(|v| i32::try_from(v).ok()) {
                            Some(v) => Ok(Expr::Integer(v)),
                            None => Err(ParseError::new(
                                at,
                                format!("integer -{n} is out of range (32-bit signed)"),
                            )),
                        };
                    }
                }
                self.enter()?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Negate(Box::new(e)))
            }
            Tok::Plus if matches!(self.peek_at(1), Tok::Integer(_)) => {
                self.next();
                self.primary()
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.next();
        match t.kind {
            Tok::True => Ok(Expr::Boolean(true)),
            Tok::False => Ok(Expr::Boolean(false)),
            Tok::Integer(n) => i32::try_from(n).map(Expr::Integer).map_err(|_| {
                ParseError::new(t.at, format!("integer {n} is out of range (32-bit signed)"))
            }),
            Tok::String(s) => Ok(Expr::String(s)),
            Tok::Exists => {
                let id = self.next();
                match id.kind {
                    Tok::Ident(name) => Ok(Expr::Exists(name.to_ascii_lowercase())),
                    other => Err(ParseError::new(
                        id.at,
                        format!("EXISTS needs an attribute name, found {}", other.describe()),
                    )),
                }
            }
            Tok::LParen => {
                self.enter()?;
                let e = self.logic()?;
                self.depth -= 1;
                self.expect(&Tok::RParen, "')'")?;
                Ok(e)
            }
            Tok::Ident(name) if self.peek().kind == Tok::LParen => self.call(name, t.at),
            Tok::FunctionName(name) => {
                if self.peek().kind != Tok::LParen {
                    return Err(ParseError::new(
                        t.at,
                        format!("{name:?} is a function name: expected '(' after it"),
                    ));
                }
                self.call(name, t.at)
            }
            Tok::Ident(name) => {
                if !name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                {
                    return Err(ParseError::new(t.at, "invalid attribute name"));
                }
                Ok(Expr::Attribute(name.to_ascii_lowercase()))
            }
            other => Err(ParseError::new(
                t.at,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }

    fn call(&mut self, name: String, at: usize) -> Result<Expr, ParseError> {
        if name.bytes().any(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                at,
                format!("{name:?} is not a function name (letters and _ only)"),
            ));
        }
        self.expect(&Tok::LParen, "'('")?;
        self.enter()?;
        let mut args = Vec::new();
        if self.peek().kind != Tok::RParen {
            args.push(self.logic()?);
            while self.peek().kind == Tok::Comma {
                self.next();
                args.push(self.logic()?);
            }
        }
        self.depth -= 1;
        self.expect(&Tok::RParen, "',' or ')' closing the arguments")?;
        let upper = name.to_ascii_uppercase();
        Ok(match Function::resolve(&upper, args.len()) {
            Some(f) => Expr::Call(f, args),
            None => Expr::MissingFunction {
                name: upper,
                args,
                at,
            },
        })
    }
}

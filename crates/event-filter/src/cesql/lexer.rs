//! CESQL tokens. Keywords are case-insensitive; attribute identifiers are
//! lower-cased (CloudEvents attribute names are lower case, and the TCK
//! expects `EXISTS SOURCE` to find `source`).

use super::ParseError;

/// One token and where it starts (byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Tok,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// `[a-zA-Z0-9]+` that is not all digits nor a keyword, as written.
    Ident(String),
    /// `[a-zA-Z][a-zA-Z_]*` containing `_`: only a function name.
    FunctionName(String),
    Integer(u64),
    String(String),
    True,
    False,
    And,
    Or,
    Xor,
    Not,
    Like,
    Exists,
    In,
    LParen,
    RParen,
    Comma,
    Star,
    Slash,
    Percent,
    Plus,
    Minus,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::FunctionName(s) => format!("identifier {s:?}"),
            Tok::Integer(n) => format!("integer {n}"),
            Tok::String(s) => format!("string {s:?}"),
            Tok::Eof => "the end of the expression".to_owned(),
            other => format!("{:?}", symbol(other)),
        }
    }
}

fn symbol(t: &Tok) -> &'static str {
    match t {
        Tok::True => "TRUE",
        Tok::False => "FALSE",
        Tok::And => "AND",
        Tok::Or => "OR",
        Tok::Xor => "XOR",
        Tok::Not => "NOT",
        Tok::Like => "LIKE",
        Tok::Exists => "EXISTS",
        Tok::In => "IN",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::Comma => ",",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Eq => "=",
        Tok::NotEq => "!=",
        Tok::Lt => "<",
        Tok::LtEq => "<=",
        Tok::Gt => ">",
        Tok::GtEq => ">=",
        _ => "?",
    }
}

/// Split `input` into tokens, ending with [`Tok::Eof`].
pub(super) fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let at = i;
        let single = |kind| Token { kind, at };
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => out.push(single(Tok::LParen)),
            b')' => out.push(single(Tok::RParen)),
            b',' => out.push(single(Tok::Comma)),
            b'*' => out.push(single(Tok::Star)),
            b'/' => out.push(single(Tok::Slash)),
            b'%' => out.push(single(Tok::Percent)),
            b'+' => out.push(single(Tok::Plus)),
            b'-' => out.push(single(Tok::Minus)),
            b'=' => out.push(single(Tok::Eq)),
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                out.push(single(Tok::NotEq));
                i += 1;
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    out.push(single(Tok::LtEq));
                    i += 1;
                }
                Some(b'>') => {
                    out.push(single(Tok::NotEq));
                    i += 1;
                }
                _ => out.push(single(Tok::Lt)),
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    out.push(single(Tok::GtEq));
                    i += 1;
                } else {
                    out.push(single(Tok::Gt));
                }
            }
            b'\'' | b'"' => {
                let (value, end) = string_literal(input, i)?;
                out.push(Token {
                    kind: Tok::String(value),
                    at,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &input[start..i];
                out.push(Token {
                    kind: word_token(word, start)?,
                    at: start,
                });
                continue;
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                return Err(ParseError::new(at, format!("unexpected character {ch:?}")));
            }
        }
        i += 1;
    }
    out.push(Token {
        kind: Tok::Eof,
        at: input.len(),
    });
    Ok(out)
}

fn word_token(word: &str, at: usize) -> Result<Tok, ParseError> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return word.parse::<u64>().map(Tok::Integer).map_err(|_| {
            ParseError::new(
                at,
                format!("integer {word} is out of range (32-bit signed)"),
            )
        });
    }
    if word.contains('_') {
        let first = word.as_bytes()[0];
        if !first.is_ascii_alphabetic() || word.bytes().any(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                at,
                format!("{word:?} is neither an attribute name (a-z, 0-9) nor a function name (letters and _)"),
            ));
        }
        return Ok(Tok::FunctionName(word.to_owned()));
    }
    Ok(match word.to_ascii_uppercase().as_str() {
        "TRUE" => Tok::True,
        "FALSE" => Tok::False,
        "AND" => Tok::And,
        "OR" => Tok::Or,
        "XOR" => Tok::Xor,
        "NOT" => Tok::Not,
        "LIKE" => Tok::Like,
        "EXISTS" => Tok::Exists,
        "IN" => Tok::In,
        _ => Tok::Ident(word.to_owned()),
    })
}

/// A string literal starting at `start` (its quote): its value and the
/// offset after the closing quote. Inside `'…'`, `\'` and `''` stand for
/// `'`; inside `"…"`, `\"` and `""` for `"`; every other character,
/// backslashes included, is itself (so a LIKE pattern keeps its `\%`).
fn string_literal(input: &str, start: usize) -> Result<(String, usize), ParseError> {
    let bytes = input.as_bytes();
    let quote = bytes[start];
    let mut value = String::new();
    let mut i = start + 1;
    let mut run = i;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' && bytes.get(i + 1) == Some(&quote) {
            value.push_str(&input[run..i]);
            value.push(quote as char);
            i += 2;
            run = i;
        } else if c == quote {
            if bytes.get(i + 1) == Some(&quote) {
                value.push_str(&input[run..i]);
                value.push(quote as char);
                i += 2;
                run = i;
            } else {
                value.push_str(&input[run..i]);
                return Ok((value, i + 1));
            }
        } else {
            i += 1;
        }
    }
    Err(ParseError::new(start, "unterminated string literal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn keywords_are_case_insensitive_and_strings_unescape_their_quote() {
        assert_eq!(
            kinds("a aNd 'x\\'y' <> \"q\"\"r\" >= 12"),
            [
                Tok::Ident("a".into()),
                Tok::And,
                Tok::String("x'y".into()),
                Tok::NotEq,
                Tok::String("q\"r".into()),
                Tok::GtEq,
                Tok::Integer(12),
                Tok::Eof
            ]
        );
        assert_eq!(kinds("'a\\%b'"), [Tok::String("a\\%b".into()), Tok::Eof]);
        assert_eq!(
            kinds("CONCAT_WS("),
            [Tok::FunctionName("CONCAT_WS".into()), Tok::LParen, Tok::Eof]
        );
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(tokenize("a = 'x").unwrap_err().position, 4);
        assert_eq!(tokenize("a # b").unwrap_err().position, 2);
        assert!(tokenize("99999999999999999999999").is_err());
    }
}

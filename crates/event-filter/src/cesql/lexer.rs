//! The CESQL lexer: turns an expression into tokens with byte spans.
//!
//! * Whitespace is space, tab, CR and LF.
//! * A *word* is a run of ASCII letters, digits and `_`: all digits is an
//!   integer literal (its sign is the parser's business), anything else is
//!   a keyword, an identifier or a function name, told apart by the parser.
//! * A string literal is delimited by `'` or `"`. Inside it, `\` followed
//!   by the delimiter or by `\` stands for that character, and the
//!   delimiter doubled (`''`, as in SQL) stands for itself; any other `\`
//!   is kept as it is, so LIKE escapes such as `\%` and `\_` reach the
//!   pattern untouched.

use super::error::ParseError;

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    /// `!=`
    NotEq,
    /// `<>`
    LtGt,
    Lt,
    Le,
    Gt,
    Ge,
    /// A string literal, unescaped.
    Str(String),
    /// The digits of an integer literal.
    Int(&'s str),
    /// A keyword, identifier or function name as written.
    Word(&'s str),
    Eof,
}

/// A token and its byte span in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'s> {
    pub(crate) tok: Tok<'s>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Split `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let simple = |tok, len| Token {
            tok,
            start,
            end: start + len,
        };
        let next = bytes.get(i + 1).copied();
        let token = match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => simple(Tok::LParen, 1),
            b')' => simple(Tok::RParen, 1),
            b',' => simple(Tok::Comma, 1),
            b'+' => simple(Tok::Plus, 1),
            b'-' => simple(Tok::Minus, 1),
            b'*' => simple(Tok::Star, 1),
            b'/' => simple(Tok::Slash, 1),
            b'%' => simple(Tok::Percent, 1),
            b'=' => simple(Tok::Eq, 1),
            b'!' if next == Some(b'=') => simple(Tok::NotEq, 2),
            b'<' if next == Some(b'>') => simple(Tok::LtGt, 2),
            b'<' if next == Some(b'=') => simple(Tok::Le, 2),
            b'<' => simple(Tok::Lt, 1),
            b'>' if next == Some(b'=') => simple(Tok::Ge, 2),
            b'>' => simple(Tok::Gt, 1),
            b'\'' | b'"' => string(src, start)?,
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                let text = &src[start..start + len];
                let tok = if text.bytes().all(|b| b.is_ascii_digit()) {
                    Tok::Int(text)
                } else {
                    Tok::Word(text)
                };
                simple(tok, len)
            }
            _ => {
                let c = src[start..].chars().next().unwrap_or('\u{fffd}');
                let message = if c == '!' {
                    "unexpected '!' (the not-equal operator is '!=')".to_owned()
                } else {
                    format!("unexpected character {c:?}")
                };
                return Err(ParseError::new(src, start, message));
            }
        };
        i = token.end;
        out.push(token);
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(out)
}

/// The string literal opening at `start`.
fn string(src: &str, start: usize) -> Result<Token<'_>, ParseError> {
    let quote = src.as_bytes()[start] as char;
    let mut value = String::new();
    let mut chars = src[start + 1..].char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        if c == quote {
            if chars.peek().map(|(_, c)| *c) == Some(quote) {
                chars.next();
                value.push(quote);
                continue;
            }
            return Ok(Token {
                tok: Tok::Str(value),
                start,
                end: start + 1 + offset + 1,
            });
        }
        if c == '\\' {
            match chars.peek().map(|(_, c)| *c) {
                Some(n) if n == quote || n == '\\' => {
                    chars.next();
                    value.push(n);
                }
                Some(_) => value.push('\\'),
                None => break,
            }
            continue;
        }
        value.push(c);
    }
    Err(ParseError::new(
        src,
        start,
        format!("unterminated string literal (no closing {quote})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok<'_>> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_words() {
        assert_eq!(
            toks("a!=1<>b<=c>=d<e>f"),
            vec![
                Tok::Word("a"),
                Tok::NotEq,
                Tok::Int("1"),
                Tok::LtGt,
                Tok::Word("b"),
                Tok::Le,
                Tok::Word("c"),
                Tok::Ge,
                Tok::Word("d"),
                Tok::Lt,
                Tok::Word("e"),
                Tok::Gt,
                Tok::Word("f"),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("CONCAT_WS(1abc,-2)"),
            vec![
                Tok::Word("CONCAT_WS"),
                Tok::LParen,
                Tok::Word("1abc"),
                Tok::Comma,
                Tok::Minus,
                Tok::Int("2"),
                Tok::RParen,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            toks(r#"'a"b\'c'"#),
            vec![Tok::Str("a\"b'c".into()), Tok::Eof]
        );
        assert_eq!(
            toks(r#""a'b\"c""#),
            vec![Tok::Str("a'b\"c".into()), Tok::Eof]
        );
        assert_eq!(
            toks(r"'ab\c\%\_'"),
            vec![Tok::Str(r"ab\c\%\_".into()), Tok::Eof]
        );
        assert_eq!(toks(r"'a\\'"), vec![Tok::Str(r"a\".into()), Tok::Eof]);
        assert_eq!(toks("'it''s'"), vec![Tok::Str("it's".into()), Tok::Eof]);
        assert_eq!(toks("''"), vec![Tok::Str(String::new()), Tok::Eof]);
        assert_eq!(toks("'é'").len(), 2);
    }

    #[test]
    fn errors_have_positions() {
        let e = tokenize("a = 'abc").unwrap_err();
        assert_eq!(e.position, 4);
        let e = tokenize(r"'abc\'").unwrap_err();
        assert_eq!(e.position, 0);
        let e = tokenize("a ! b").unwrap_err();
        assert_eq!(e.position, 2);
        let e = tokenize("a = é").unwrap_err();
        assert_eq!(e.position, 4);
        assert!(e.message.contains('é'));
    }
}

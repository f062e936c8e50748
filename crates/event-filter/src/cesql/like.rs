//! LIKE patterns, compiled once at parse time.
//!
//! `%` matches any sequence of characters (possibly empty), `_` exactly one
//! character (a Unicode scalar value), anything else itself, case
//! sensitively. `\%`, `\_` and `\\` match `%`, `_` and `\` literally; a `\`
//! before any other character, or at the end, is itself.
//!
//! The common shapes (`abc`, `abc%`, `%abc`, `%abc%`, `%`) compile to plain
//! string comparisons; everything else to segments between the `%`s,
//! matched greedily left to right (fixed-length segments make the leftmost
//! match of each one optimal), so matching is linear in practice and never
//! backtracks exponentially.

use std::fmt;

/// A compiled LIKE pattern.
#[derive(Clone)]
pub struct LikePattern {
    source: Box<str>,
    matcher: Matcher,
}

impl LikePattern {
    /// Compile `pattern` (the value of the string literal).
    pub fn new(pattern: &str) -> LikePattern {
        LikePattern {
            source: pattern.into(),
            matcher: Matcher::compile(pattern),
        }
    }

    /// The pattern as written (after string-literal unescaping).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches the pattern.
    pub fn matches(&self, text: &str) -> bool {
        self.matcher.matches(text)
    }
}

impl PartialEq for LikePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for LikePattern {}

impl fmt::Debug for LikePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LikePattern").field(&self.source).finish()
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcard.
    Exact(Box<str>),
    /// `lit%`
    Prefix(Box<str>),
    /// `%lit`
    Suffix(Box<str>),
    /// `%lit%`
    Contains(Box<str>),
    /// Only `%`s.
    Anything,
    General(Box<General>),
}

/// One element of a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Elem {
    Char(char),
    /// `_`
    One,
}

/// A run of the pattern without `%`.
#[derive(Debug, Clone, Default)]
struct Segment {
    elems: Vec<Elem>,
    /// The text, when there is no `_` (set by [`Segment::seal`]).
    text: Option<Box<str>>,
}

impl Segment {
    /// Compute `text`, once the segment is complete.
    fn seal(mut self) -> Segment {
        self.text = self.literal().map(String::into_boxed_str);
        self
    }

    /// The literal text, when the segment has no `_`.
    fn literal(&self) -> Option<String> {
        self.elems
            .iter()
            .map(|e| match e {
                Elem::Char(c) => Some(*c),
                Elem::One => None,
            })
            .collect()
    }

    /// The byte length of the match of this segment at the start of
    /// `text`, if it matches there.
    fn match_at(&self, text: &str) -> Option<usize> {
        let mut chars = text.char_indices();
        for e in &self.elems {
            let (_, c) = chars.next()?;
            if let Elem::Char(want) = e {
                if *want != c {
                    return None;
                }
            }
        }
        Some(chars.next().map_or(text.len(), |(i, _)| i))
    }

    /// The leftmost match in `text`: (start, end) byte offsets.
    fn find(&self, text: &str) -> Option<(usize, usize)> {
        if let Some(lit) = &self.text {
            return text.find(&**lit).map(|i| (i, i + lit.len()));
        }
        text.char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .find_map(|i| self.match_at(&text[i..]).map(|len| (i, i + len)))
    }
}

/// A pattern with `%` and `_` anywhere.
#[derive(Debug, Clone)]
struct General {
    /// Before the first `%` (must match at the start).
    head: Segment,
    /// Between `%`s, non-empty, in order.
    middle: Vec<Segment>,
    /// After the last `%` (must match at the end).
    tail: Segment,
    /// Whether there is any `%` at all (otherwise `head` is everything).
    wildcard: bool,
}

impl General {
    fn matches(&self, text: &str) -> bool {
        if !self.wildcard {
            return self.head.match_at(text) == Some(text.len());
        }
        let Some(mut pos) = self.head.match_at(text) else {
            return false;
        };
        // The tail is anchored at the end: find where it must start.
        let tail_chars = self.tail.elems.len();
        let tail_start = if tail_chars == 0 {
            text.len()
        } else {
            match text.char_indices().rev().nth(tail_chars - 1) {
                Some((i, _)) => i,
                None => return false,
            }
        };
        if tail_start < pos || self.tail.match_at(&text[tail_start..]).is_none() {
            return false;
        }
        for seg in &self.middle {
            match seg.find(&text[pos..tail_start]) {
                Some((_, end)) => pos += end,
                None => return false,
            }
        }
        true
    }
}

impl Matcher {
    fn compile(pattern: &str) -> Matcher {
        // Split into segments at unescaped '%'.
        let mut segments = vec![Segment::default()];
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let elem = match c {
                '\\' => match chars.peek() {
                    Some(&n @ ('%' | '_' | '\\')) => {
                        chars.next();
                        Elem::Char(n)
                    }
                    _ => Elem::Char('\\'),
                },
                '%' => {
                    segments.push(Segment::default());
                    continue;
                }
                '_' => Elem::One,
                c => Elem::Char(c),
            };
            if let Some(last) = segments.last_mut() {
                last.elems.push(elem);
            }
        }
        let wildcard = segments.len() > 1;
        let tail = if wildcard {
            segments.pop().unwrap_or_default()
        } else {
            Segment::default()
        };
        let head = if segments.is_empty() {
            Segment::default()
        } else {
            segments.remove(0)
        };
        let middle: Vec<Segment> = segments
            .into_iter()
            .filter(|s| !s.elems.is_empty())
            .map(Segment::seal)
            .collect();

        // The common shapes.
        let (h, t) = (head.literal(), tail.literal());
        match (wildcard, middle.len(), h, t) {
            (false, _, Some(h), _) => return Matcher::Exact(h.into()),
            (true, 0, Some(h), Some(t)) if h.is_empty() && t.is_empty() => {
                return Matcher::Anything
            }
            (true, 0, Some(h), Some(t)) if t.is_empty() => return Matcher::Prefix(h.into()),
            (true, 0, Some(h), Some(t)) if h.is_empty() => return Matcher::Suffix(t.into()),
            (true, 1, Some(h), Some(t)) if h.is_empty() && t.is_empty() => {
                if let Some(m) = middle[0].literal() {
                    return Matcher::Contains(m.into());
                }
            }
            _ => {}
        }
        Matcher::General(Box::new(General {
            head,
            middle,
            tail,
            wildcard,
        }))
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(s) => text == &**s,
            Matcher::Prefix(s) => text.starts_with(&**s),
            Matcher::Suffix(s) => text.ends_with(&**s),
            Matcher::Contains(s) => text.contains(&**s),
            Matcher::Anything => true,
            Matcher::General(g) => g.matches(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::new(pattern).matches(text)
    }

    /// A slow reference matcher (recursive, exponential): the compiled
    /// matcher must agree with it.
    pub(crate) fn reference(text: &[char], pat: &[char]) -> bool {
        match pat.split_first() {
            None => text.is_empty(),
            Some(('\\', rest)) if matches!(rest.first(), Some('%' | '_' | '\\')) => {
                text.first() == rest.first() && reference(&text[1..], &rest[1..])
            }
            Some(('%', rest)) => (0..=text.len()).any(|i| reference(&text[i..], rest)),
            Some(('_', rest)) => !text.is_empty() && reference(&text[1..], rest),
            Some((c, rest)) => text.first() == Some(c) && reference(&text[1..], rest),
        }
    }

    #[test]
    fn shapes() {
        assert!(like("abc", "abc"));
        assert!(!like("abcd", "abc"));
        assert!(like("abcd", "ab%"));
        assert!(like("xabc", "%bc"));
        assert!(like("xabcx", "%bc%"));
        assert!(like("", "%"));
        assert!(like("", "%%"));
        assert!(!like("", "_"));
        assert!(like("é", "_"));
        assert!(like("aé.b", "a__b"));
        assert!(like(".ab.cde.", ".%.%."));
        assert!(!like("ab.cde", ".%.%."));
        assert!(like("a_b_c", r"a\_b\_c"));
        assert!(!like("azbzc", r"a\_b\_c"));
        assert!(like(r"ab\c", r"ab\c"));
        assert!(like(r"a\", r"a\"));
        assert!(like(r"a\x", r"a\\%"));
        assert!(like("abc123123%456_dzf", r"abc%123\%456\_d_f"));
        assert!(like("aXbXb", "a%b"));
        assert!(!like("ab", "a%b%b"));
        assert!(like("abab", "%ab"));
        assert!(like("aab", "a_%b"));
        assert!(!like("ab", "a_%b"));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_reference_on_random_input(
            text in "[ab%_\\\\é]{0,10}",
            pattern in "[ab%_\\\\é]{0,8}",
        ) {
            let tc: Vec<char> = text.chars().collect();
            let pc: Vec<char> = pattern.chars().collect();
            proptest::prop_assert_eq!(like(&text, &pattern), reference(&tc, &pc));
        }
    }

    #[test]
    fn agrees_with_reference() {
        let alphabet = ['a', 'b', '%', '_', '\\'];
        let texts = [
            "", "a", "b", "ab", "ba", "aab", "abab", "a%b", "a_b", r"a\b", "bbb", "%", "_", r"\",
        ];
        // Every pattern of up to 4 symbols.
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &patterns {
                for c in alphabet {
                    next.push(format!("{p}{c}"));
                }
            }
            patterns.extend(next);
        }
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for t in texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(like(t, p), reference(&tc, &pc), "{t:?} LIKE {p:?}");
            }
        }
    }
}

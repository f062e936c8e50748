//! `LIKE` patterns, compiled once at parse time.
//!
//! `%` matches any run of characters (none included), `_` exactly one
//! character, `\%` and `\_` the characters themselves; every other
//! character, a lone backslash included, matches itself (case-sensitive).
//! The common shapes — exact, `prefix%`, `%suffix`, `%infix%` — are matched
//! with plain string operations; the rest by a backtracking matcher that is
//! linear for one `%` and bounded by (value × pattern) in general.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// A literal run of characters.
    Text(String),
    /// `_`
    One,
    /// `%`
    Any,
}

/// A compiled LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    General(Vec<Part>),
}

impl Pattern {
    /// Compile the pattern text (the string literal's value).
    pub fn compile(source: &str) -> Pattern {
        let mut parts: Vec<Part> = Vec::new();
        let mut chars = source.chars().peekable();
        let push_char = |parts: &mut Vec<Part>, c: char| match parts.last_mut() {
            Some(Part::Text(t)) => t.push(c),
            _ => parts.push(Part::Text(c.to_string())),
        };
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('%' | '_')) => {
                    let escaped = chars.next().unwrap_or('\\');
                    push_char(&mut parts, escaped);
                }
                '%' => {
                    if parts.last() != Some(&Part::Any) {
                        parts.push(Part::Any);
                    }
                }
                '_' => parts.push(Part::One),
                c => push_char(&mut parts, c),
            }
        }
        let shape = match parts.as_slice() {
            [] => Shape::Exact(String::new()),
            [Part::Text(t)] => Shape::Exact(t.clone()),
            [Part::Text(t), Part::Any] => Shape::Prefix(t.clone()),
            [Part::Any, Part::Text(t)] => Shape::Suffix(t.clone()),
            [Part::Any, Part::Text(t), Part::Any] => Shape::Contains(t.clone()),
            [Part::Any] => Shape::Prefix(String::new()),
            _ => Shape::General(parts),
        };
        Pattern {
            source: source.to_owned(),
            shape,
        }
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.shape {
            Shape::Exact(t) => value == t,
            Shape::Prefix(t) => value.starts_with(t.as_str()),
            Shape::Suffix(t) => value.ends_with(t.as_str()),
            Shape::Contains(t) => value.contains(t.as_str()),
            Shape::General(parts) => general(parts, value),
        }
    }
}

/// Match `value` against `parts`, backtracking only to the last `%`.
fn general(parts: &[Part], value: &str) -> bool {
    let mut p = 0; // index into parts
    let mut v = 0; // byte offset into value
                   // The last `%` seen: (part index after it, value offset it resumes at).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < parts.len() {
            match &parts[p] {
                Part::Any => {
                    p += 1;
                    star = Some((p, v));
                    continue;
                }
                Part::One => {
                    if let Some(c) = value[v..].chars().next() {
                        p += 1;
                        v += c.len_utf8();
                        continue;
                    }
                }
                Part::Text(t) => {
                    if value[v..].starts_with(t.as_str()) {
                        p += 1;
                        v += t.len();
                        continue;
                    }
                }
            }
        } else if v == value.len() {
            return true;
        }
        // Mismatch: let the last `%` swallow one more character.
        match star {
            Some((sp, sv)) => match value[sv..].chars().next() {
                Some(c) => {
                    let sv = sv + c.len_utf8();
                    star = Some((sp, sv));
                    p = sp;
                    v = sv;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(value: &str, pattern: &str) -> bool {
        Pattern::compile(pattern).matches(value)
    }

    #[test]
    fn wildcards_escapes_and_shapes() {
        assert!(like("abc", "abc"));
        assert!(like("azzzbzzzc", "a%b%c"));
        assert!(!like("ab.cde", ".%.%."));
        assert!(like("azbzc", "a_b_c"));
        assert!(!like("abc", "a_b_c"));
        assert!(like("a_b_c", "a\\_b\\_c"));
        assert!(!like("azbzc", "a\\_b\\_c"));
        assert!(like("a%b%c", "a\\%b\\%c"));
        assert!(like("ab\\c", "ab\\c"), "a lone backslash is itself");
        assert!(like("shop.order", "shop.%"));
        assert!(like("x.error", "%.error"));
        assert!(like("xyz", "%y%"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("é", "_"), "one character, not one byte");
        assert!(like("abc123123%456_dzf", "abc%123\\%456\\_d_f"));
    }
}

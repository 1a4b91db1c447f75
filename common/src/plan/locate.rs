//! Finds the line of a field path in block-style YAML.
//!
//! serde_norway does not report where values it parsed successfully came
//! from, so semantic errors need their own locator. This one reads lines,
//! not YAML: each line becomes its indentation column plus, for `- ` items,
//! one sequence marker per dash. A key is found among the entries at the
//! mapping's column; a sequence item is the N-th dash at the sequence's
//! column; a value's extent is everything indented deeper. Comments, blank
//! lines and block-scalar bodies (always indented deeper than their key) do
//! not disturb this. When a segment cannot be found (flow style, a missing
//! key) the deepest line found so far is the answer, and line 1 when nothing
//! matched (a missing top-level key).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use super::errors::Seg;

#[derive(Debug)]
struct Token<'a> {
    line: usize,
    col: usize,
    /// A `- ` sequence-item marker rather than content.
    dash: bool,
    text: &'a str,
}

fn tokenize(source: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    for (n, raw) in source.lines().enumerate() {
        let content = raw.trim_start_matches(' ');
        let is_marker = |m: &str| content == m || content.starts_with(&format!("{m} "));
        if content.trim().is_empty() || content.starts_with('#') || is_marker("---") || is_marker("...") {
            continue;
        }
        let mut col = raw.len() - content.len();
        let mut rest = content;
        loop {
            if rest == "-" || rest.starts_with("- ") {
                tokens.push(Token { line: n + 1, col, dash: true, text: "-" });
                let after = &rest[1..];
                let trimmed = after.trim_start_matches(' ');
                col += 1 + after.len() - trimmed.len();
                rest = trimmed;
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
            } else {
                tokens.push(Token { line: n + 1, col, dash: false, text: rest });
                break;
            }
        }
    }
    tokens
}

/// The key of a `key: value` or `key:` line, unquoted.
fn key_of(text: &str) -> Option<&str> {
    let (key, rest) = match text.chars().next()? {
        q @ ('"' | '\'') => {
            let close = text[1..].find(q)? + 1;
            (&text[1..close], &text[close + 1..])
        }
        _ => {
            let colon = text.find(": ").or_else(|| text.strip_suffix(':').map(str::len))?;
            (text[..colon].trim_end(), &text[colon..])
        }
    };
    let rest = rest.trim_start();
    (rest == ":" || rest.starts_with(": ")).then_some(key)
}

/// The 1-based line of `path` in `source` (see the module docs).
pub(crate) fn line_of(source: &str, path: &[Seg]) -> usize {
    Locator::new(source).line_of(path)
}

/// The tokens directly inside a range (see [`Locator`]).
type Children = Rc<Vec<usize>>;

/// [`line_of`] for many paths of one document: the text is tokenized
/// once, and each value's items and extent are found once, so locating
/// every step of a large catalog stays linear in its size (times the
/// nesting depth) instead of rescanning the whole text for each.
pub(crate) struct Locator<'a> {
    tokens: Vec<Token<'a>>,
    /// Per range: the tokens at its first token's column and kind.
    children: RefCell<HashMap<(usize, usize), Children>>,
    /// Per token: the end of its value's extent.
    ends: RefCell<HashMap<usize, usize>>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(source: &'a str) -> Locator<'a> {
        Locator { tokens: tokenize(source), children: Default::default(), ends: Default::default() }
    }

    fn children(&self, range: &Range<usize>) -> Rc<Vec<usize>> {
        let key = (range.start, range.end);
        if let Some(c) = self.children.borrow().get(&key) {
            return Rc::clone(c);
        }
        let first = &self.tokens[range.start];
        let (col, dash) = (first.col, first.dash);
        let c: Rc<Vec<usize>> =
            Rc::new(range.clone().filter(|&t| self.tokens[t].col == col && self.tokens[t].dash == dash).collect());
        self.children.borrow_mut().insert(key, Rc::clone(&c));
        c
    }

    /// The end of token `t`'s value within `range`: the first later
    /// token that is not deeper (`key_seq`: a sequence may sit at its
    /// key's own column).
    fn end(&self, t: usize, range: &Range<usize>) -> usize {
        if let Some(&e) = self.ends.borrow().get(&t) {
            return e;
        }
        let tok = &self.tokens[t];
        let col = tok.col;
        let end = (t + 1..range.end)
            .find(|&u| {
                let u = &self.tokens[u];
                match (tok.dash, u.dash) {
                    (false, true) => u.col < col,
                    _ => u.col <= col,
                }
            })
            .unwrap_or(range.end);
        self.ends.borrow_mut().insert(t, end);
        end
    }

    fn find_key(&self, range: Range<usize>, key: &str) -> Option<(usize, Range<usize>)> {
        let first = self.tokens.get(range.start).filter(|_| !range.is_empty())?;
        if first.dash {
            return None;
        }
        let kids = self.children(&range);
        let t = kids.iter().copied().find(|&t| key_of(self.tokens[t].text) == Some(key))?;
        Some((t, t + 1..self.end(t, &range)))
    }

    fn find_item(&self, range: Range<usize>, index: usize) -> Option<(usize, Range<usize>)> {
        let first = self.tokens.get(range.start).filter(|_| !range.is_empty())?;
        if !first.dash {
            return None;
        }
        let t = *self.children(&range).get(index)?;
        Some((t, t + 1..self.end(t, &range)))
    }

    /// The 1-based line of `path` (see the module docs).
    pub(crate) fn line_of(&self, path: &[Seg]) -> usize {
        let mut range = 0..self.tokens.len();
        let mut line = 1;
        for seg in path {
            let found = match seg {
                Seg::Key(k) => self.find_key(range.clone(), k),
                Seg::Index(i) => self.find_item(range.clone(), *i),
            };
            match found {
                Some((t, inner)) => {
                    line = self.tokens[t].line;
                    range = inner;
                }
                None => break,
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys() {
        assert_eq!(key_of("name: x"), Some("name"));
        assert_eq!(key_of("name:"), Some("name"));
        assert_eq!(key_of("name:   # comment"), Some("name"));
        assert_eq!(key_of("\"my key\": 1"), Some("my key"));
        assert_eq!(key_of("'k' : 1"), Some("k"));
        assert_eq!(key_of("\"http://a:80\""), None);
        assert_eq!(key_of("http://a:80"), None);
        assert_eq!(key_of("{ role: db }"), Some("{ role"));
        assert_eq!(key_of("plain scalar"), None);
    }
}

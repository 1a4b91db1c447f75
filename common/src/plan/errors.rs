//! Plan errors and where they point: [`PlanError`] (file, line, field,
//! message), the field paths it names, the file being read ([`Src`]) and
//! serde_norway's own messages split into field and message.

use std::fmt;

use super::locate;

/// A plan error that names the file, the line (when known) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PlanError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, e.g. `groups[1].checks[0].http.url`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldPath(pub(crate) Vec<Seg>);

impl FieldPath {
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    pub(crate) fn idx(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }

    /// A path as printed (`releases[1].steps.migrate[0]`) back into segments.
    pub(super) fn parse(text: &str) -> FieldPath {
        let mut path = FieldPath::default();
        for part in text.split('.') {
            let mut pieces = part.split('[');
            if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
                path = path.key(key);
            }
            for idx in pieces {
                if let Ok(n) = idx.trim_end_matches(']').parse() {
                    path = path.idx(n);
                }
            }
        }
        path
    }

    pub(super) fn join(&self, rest: &FieldPath) -> FieldPath {
        FieldPath(self.0.iter().chain(&rest.0).cloned().collect())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The file being read, to turn a field path and a message into a [`PlanError`].
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub(crate) file: &'a str,
    pub(crate) source: &'a str,
}

impl Src<'_> {
    pub(crate) fn err(&self, path: &FieldPath, message: impl Into<String>) -> PlanError {
        PlanError {
            file: self.file.to_string(),
            line: Some(locate::line_of(self.source, &path.0)),
            field: path.to_string(),
            message: message.into(),
        }
    }
}

/// Turn a serde_norway error into a [`PlanError`]: its location gives the
/// line, and the path it prefixes to its message (`groups[0].strategy: ...`)
/// gives the field.
pub(super) fn yaml_error(file: &str, err: &serde_norway::Error) -> PlanError {
    let line = err.location().map_or(1, |l| l.line());
    let text = plain_type_names(&strip_marks(&err.to_string()));
    let (path, message) = match text.split_once(": ") {
        Some((path, message)) if looks_like_path(path) => (path.to_string(), message.to_string()),
        _ => (String::new(), text),
    };
    let unknown =
        message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name.to_string());
    let field = match (unknown, path.is_empty()) {
        (Some(name), true) => name,
        (Some(name), false) => format!("{path}.{name}"),
        (None, false) => path,
        (None, true) => "(yaml)".to_string(),
    };
    PlanError { file: file.to_string(), line: Some(line), field, message }
}

/// serde_norway appends " at line L column C" (sometimes twice, for libyaml's
/// context); the line is reported separately.
pub(super) fn strip_marks(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find(" at line ") {
        let tail = &out[start + " at line ".len()..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let Some(after_col) = tail[digits..].strip_prefix(" column ") else { break };
        let col_digits = after_col.chars().take_while(char::is_ascii_digit).count();
        let end = out.len() - after_col.len() + col_digits;
        out.replace_range(start..end, "");
    }
    out
}

/// serde names the Rust type it expected ("expected struct RawStrategy");
/// the operator only needs to know a mapping was expected there.
pub(super) fn plain_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("struct Raw") {
        out.push_str(&rest[..i]);
        out.push_str("a mapping");
        let tail = &rest[i + "struct Raw".len()..];
        rest = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-' | '?'))
}

pub(super) fn required(src: Src<'_>, value: Option<String>, path: &FieldPath) -> Result<String, PlanError> {
    let last = match path.0.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "value",
    };
    match value {
        None => Err(src.err(path, format!("missing required field '{last}'"))),
        Some(v) if v.trim().is_empty() => Err(src.err(path, "must not be empty")),
        Some(v) => Ok(v),
    }
}

//! The bounds every plan and catalog is held to, checked before the
//! expensive work so that no input can exhaust memory, overflow arithmetic
//! or stall whoever parses it.
//!
//! The text is checked first ([`check_source`]): its size and how deeply its
//! YAML nests, by a linear scan that never builds a tree, so a hostile
//! document is refused before the YAML parser sees it. Numbers and durations
//! are bounded where they are parsed (`plan::parse_duration`, amounts,
//! retries), and counts (groups, steps, hosts) where they are built. The
//! values are documented in `docs/plan-limits.md`.

use std::time::Duration;

use crate::plan::PlanError;

/// The largest plan or catalog accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// How deeply a document's mappings and sequences may nest.
pub const MAX_NESTING: usize = 64;
/// The most groups a plan may have (hooks included).
pub const MAX_GROUPS: usize = 10_000;
/// The most steps (or checks) one list may have.
pub const MAX_STEPS: usize = 1_000;
/// The most hosts a plan may expand to.
pub const MAX_HOSTS: usize = 100_000;
/// The longest duration any field may hold (30 days).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest count a field may hold (`max_parallel`, `retries`, ...).
pub const MAX_COUNT: usize = 1_000_000;
/// The most retries a check may have.
pub const MAX_RETRIES: u32 = 100_000;

fn too_big(file: &str, message: String) -> PlanError {
    PlanError { file: file.to_string(), line: None, field: "(document)".into(), message }
}

/// Checks a plan or catalog text before it is parsed, and returns it without
/// a UTF-8 byte-order mark (editors on some systems write one).
pub fn check_source<'a>(file: &str, source: &'a str) -> Result<&'a str, PlanError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(too_big(
            file,
            format!("{} bytes is larger than the limit of {} bytes", source.len(), MAX_SOURCE_BYTES),
        ));
    }
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    if let Some((line, depth)) = too_deep(source) {
        return Err(PlanError {
            file: file.to_string(),
            line: Some(line),
            field: "(document)".into(),
            message: format!("nested {depth} levels deep; at most {MAX_NESTING} are allowed"),
        });
    }
    Ok(source)
}

/// The first line whose nesting passes [`MAX_NESTING`], and its depth. It
/// counts block indentation levels, `- ` sequence entries that open on one
/// line, and flow brackets, skipping quoted text and comments; it may
/// overcount a little, never undercount by much, and it is linear.
fn too_deep(source: &str) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (i, line) in source.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if flow == 0 {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut dashes = 0;
        let mut rest = body;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| (rest == "-").then_some("")) {
            dashes += 1;
            rest = r.trim_start_matches(' ');
        }
        let mut quote: Option<char> = None;
        for c in rest.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    let depth = indents.len() + dashes + flow;
                    if depth > MAX_NESTING {
                        return Some((i + 1, depth));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                (None, _) => {}
            }
        }
        let depth = indents.len() + dashes + flow;
        if depth > MAX_NESTING {
            return Some((i + 1, depth));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass_and_keep_their_text() {
        let doc = "name: a\ngroups:\n  - name: g\n    steps:\n      - exec: { command: x, args: [\"[{\", '{{'] }\n";
        assert_eq!(check_source("p.yaml", doc), Ok(doc));
        assert_eq!(check_source("p.yaml", &format!("\u{feff}{doc}")), Ok(doc), "a BOM is dropped");
    }

    #[test]
    fn deep_flow_block_and_dash_nesting_are_refused_with_a_line() {
        let flow = format!("name: a\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = check_source("p.yaml", &flow).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("nested"), "{err}");
        let block: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(check_source("p.yaml", &block).is_err());
        let dashes = format!("x:\n  {}1\n", "- ".repeat(200));
        assert!(check_source("p.yaml", &dashes).is_err());
    }

    #[test]
    fn oversized_documents_are_refused_before_anything_else() {
        let big = "a".repeat(MAX_SOURCE_BYTES + 1);
        assert!(check_source("p.yaml", &big).unwrap_err().message.contains("larger than the limit"));
    }
}

//! Bounds on what a plan may ask for, and the cheap checks that enforce the
//! structural ones before any expensive work (see `docs/plan-limits.md`).
//!
//! A plan comes from outside and is handled by a long-running coordinator, so
//! nothing in it may make parsing, validation, expansion or the engine panic,
//! stall or allocate without bound. Two kinds of bounds:
//! - fixed bounds on every number and duration ([`MAX_DURATION`],
//!   [`MAX_RETRIES`]), far above any real rollout's needs, low enough that
//!   sums of them can never overflow;
//! - structural limits ([`PlanLimits`]: bytes, nesting, groups, hosts, steps,
//!   vars)
//!   that a coordinator may tune. Bytes and nesting are checked on the raw
//!   text, before the YAML parser sees it: a deeply nested document is what
//!   makes the parser slow, so it must be refused without parsing it.

use std::time::Duration;

use crate::plan::PlanError;

/// The longest duration any plan or catalog field may give (30 days).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most retries a check may declare.
pub const MAX_RETRIES: u32 = 1000;

/// Structural limits on a plan, checked with clear errors before the work
/// they bound. The defaults are generous for real fleets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Size of the plan text (and of each catalog), in bytes.
    pub max_bytes: usize,
    /// YAML nesting depth (mappings and sequences inside one another).
    pub max_depth: usize,
    /// Groups the plan declares (hook groups not counted).
    pub max_groups: usize,
    /// Hosts a rollout may cover (and hosts a group may list).
    pub max_hosts: usize,
    /// Steps plus checks of one group (or one hook, or one catalog release).
    pub max_steps: usize,
    /// Entries of one `vars:` or `env:` map (plan or group).
    pub max_vars: usize,
    /// Bytes of one `vars:` or `env:` value.
    pub max_var_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            max_groups: 100_000,
            max_hosts: 100_000,
            max_steps: 1000,
            max_vars: 1000,
            max_var_bytes: 16 * 1024,
        }
    }
}

fn error(file: &str, line: usize, field: &str, message: String) -> PlanError {
    PlanError { file: file.to_string(), line: Some(line), field: field.to_string(), message }
}

/// The plan's bytes as text: at most `limits.max_bytes` long, UTF-8, a
/// leading byte-order mark dropped. Errors name the line of the first bad byte.
pub fn decode<'a>(file: &str, bytes: &'a [u8], limits: &PlanLimits) -> Result<&'a str, PlanError> {
    check_size(file, bytes.len(), limits)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        error(file, line, "(encoding)", format!("not UTF-8: invalid byte 0x{:02x} at offset {at}", bytes[at]))
    })?;
    Ok(strip_bom(text))
}

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

fn check_size(file: &str, len: usize, limits: &PlanLimits) -> Result<(), PlanError> {
    if len > limits.max_bytes {
        return Err(error(
            file,
            1,
            "(size)",
            format!("the file is {len} bytes, more than the limit of {} bytes", limits.max_bytes),
        ));
    }
    Ok(())
}

/// Refuse text over `limits.max_bytes` or nested deeper than
/// `limits.max_depth`, in one linear pass over the text.
///
/// The depth is an upper bound of what the YAML parser would build: each
/// indentation level deeper than the enclosing one, each `- ` starting a
/// sequence inside a line, and each open `[`/`{` (outside quotes and
/// comments) counts one. Block scalar bodies (`|`, `>`) are skipped.
pub fn check_text(file: &str, text: &str, limits: &PlanLimits) -> Result<(), PlanError> {
    check_size(file, text.len(), limits)?;
    let mut indents: Vec<usize> = Vec::new();
    let mut flow: usize = 0;
    // The indentation a block scalar's body must exceed, while in one.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let content = line.trim_start_matches([' ', '\t']);
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(parent) = block_scalar {
            if indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if flow == 0 {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut depth = indents.len();
        let mut rest = content;
        while flow == 0 && (rest == "-" || rest.starts_with("- ")) {
            depth += 1;
            rest = rest[1..].trim_start_matches(' ');
        }
        let (opened, ends_block_scalar) = scan_flow(rest, &mut flow);
        depth += opened.max(flow);
        if depth > limits.max_depth {
            return Err(error(
                file,
                n + 1,
                "(yaml)",
                format!("nested more than {} levels deep (the limit of the plan format)", limits.max_depth),
            ));
        }
        if ends_block_scalar {
            block_scalar = Some(indent);
        }
    }
    Ok(())
}

/// Update the flow depth `flow` over one line's content (quotes and comments
/// skipped); returns the deepest flow depth reached on the line and whether
/// the line ends with a block scalar indicator (`key: |`, `- >-`).
fn scan_flow(content: &str, flow: &mut usize) -> (usize, bool) {
    let mut deepest = *flow;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut end = content.len();
    for (i, c) in content.char_indices() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') if matches!(prev, ' ' | '[' | '{' | ',' | ':') => quote = Some(c),
            (None, '#') if prev == ' ' || i == 0 => {
                end = i;
                break;
            }
            (None, '[' | '{') => {
                *flow += 1;
                deepest = deepest.max(*flow);
            }
            (None, ']' | '}') => *flow = flow.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    let tail = content[..end].trim_end();
    let indicator = tail.rsplit([' ', '\t']).next().unwrap_or("");
    let is_block = quote.is_none()
        && *flow == 0
        && (tail.len() > indicator.len() || tail == indicator)
        && indicator.starts_with(['|', '>'])
        && indicator[1..].chars().all(|c| matches!(c, '-' | '+' | '1'..='9'));
    (deepest, is_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        check_text("p.yaml", text, &PlanLimits { max_depth: max, ..PlanLimits::default() }).is_ok()
    }

    #[test]
    fn block_nesting_counts_levels() {
        let doc = "a:\n  b:\n    c: 1\n";
        assert!(depth_ok(doc, 3));
        assert!(!depth_ok(doc, 2));
    }

    #[test]
    fn inline_dashes_and_flow_count() {
        assert!(!depth_ok("- - - - x\n", 3));
        assert!(depth_ok("- - x\n", 3));
        assert!(!depth_ok("a: [[[[1]]]]\n", 4));
        assert!(depth_ok("a: [[1], [2]]\n", 3));
    }

    #[test]
    fn quotes_comments_and_block_scalars_are_not_nesting() {
        assert!(depth_ok("a: \"[[[[[[\"\nb: '{{{{{{' # [[[[[[\n", 2));
        let doc = "a: |\n  if [ x ]; then {\n        deeply\n            indented\nb: 1\n";
        assert!(depth_ok(doc, 1));
    }

    #[test]
    fn bom_and_utf8() {
        let limits = PlanLimits::default();
        assert_eq!(decode("p", "\u{feff}a: 1".as_bytes(), &limits), Ok("a: 1"));
        let e = decode("p", b"a: 1\nb: \xff\n", &limits).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "(encoding)"));
    }
}

//! What a check requires of a command's standard output, beside its exit
//! code: exec checks' `stdout_equals` / `stdout_contains` / `stdout_matches`
//! and the same conditions in a leader check's answers.
//!
//! Rules:
//! - The text read is the outcome's `stdout_tail`: the last 4 KiB the agent
//!   keeps of the output (so a command printing more is judged on its end).
//! - `equals` compares with trailing whitespace (the final newline of
//!   `echo t`, `psql -tA`) trimmed on both sides; leading whitespace counts.
//! - `matches` is a regex (the `regex` crate's syntax) found anywhere unless
//!   anchored, read like `equals` with trailing whitespace trimmed, so
//!   `^t$` matches the output of `echo t` (add `(?m)` to anchor on lines).
//! - `contains` is a plain substring of the output as it is. Patterns are bounded ([`MAX_PATTERN`] characters and a compiled
//!   size cap) and checked when the plan is read, so a bad one names its line.
//! - Every condition given must hold; a failure says which one and shows the
//!   end of the output.

/// The longest regex a check may give, in bytes.
pub const MAX_PATTERN: usize = 1024;

/// Compiled size cap, well above any pattern of [`MAX_PATTERN`] bytes that
/// is not an explosion of repetitions (`a{1000}{1000}`).
const COMPILED_LIMIT: usize = 1 << 20;

/// Compile an output regex within the bounds, or say why not (on one line).
pub fn compile(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!("regex of {} bytes, more than the limit of {MAX_PATTERN}", pattern.len()));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(COMPILED_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {}", crate::capture::regex_error(&e)))
}

/// The conditions on an output, borrowed from whichever spec holds them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    pub equals: Option<&'a str>,
    pub contains: Option<&'a str>,
    pub matches: Option<&'a str>,
}

impl Expect<'_> {
    /// `Ok` when `stdout` meets every condition; else what was expected and
    /// the end of what was seen.
    pub fn check(&self, stdout: &str) -> Result<(), String> {
        if let Some(want) = self.equals
            && stdout.trim_end() != want.trim_end()
        {
            return Err(format!("expected stdout to equal {:?}{}", want.trim_end(), crate::capture::shown(stdout)));
        }
        if let Some(want) = self.contains
            && !stdout.contains(want)
        {
            return Err(format!("expected stdout to contain {want:?}{}", crate::capture::shown(stdout)));
        }
        if let Some(pattern) = self.matches {
            let re = compile(pattern).map_err(|e| format!("stdout_matches {pattern:?}: {e}"))?;
            if !re.is_match(stdout.trim_end()) {
                return Err(format!("expected stdout to match {pattern:?}{}", crate::capture::shown(stdout)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect<'a>(equals: Option<&'a str>, contains: Option<&'a str>, matches: Option<&'a str>) -> Expect<'a> {
        Expect { equals, contains, matches }
    }

    #[test]
    fn equals_ignores_trailing_whitespace_only() {
        assert!(expect(Some("t"), None, None).check("t\n").is_ok());
        assert!(expect(Some("t\n"), None, None).check("t  \r\n").is_ok());
        let e = expect(Some("t"), None, None).check(" t\n").unwrap_err();
        assert_eq!(e, "expected stdout to equal \"t\"; stdout ends with:  t");
        let e = expect(Some("t"), None, None).check("").unwrap_err();
        assert_eq!(e, "expected stdout to equal \"t\"; stdout is empty");
        assert!(expect(Some(""), None, None).check("\n").is_ok());
    }

    #[test]
    fn all_given_conditions_must_hold() {
        let all = expect(Some("role=primary ok"), Some("primary"), Some(r"^role=\w+"));
        assert!(all.check("role=primary ok\n").is_ok());
        let e = expect(None, Some("primary"), Some("^x")).check("role=primary").unwrap_err();
        assert!(e.starts_with("expected stdout to match \"^x\""), "{e}");
        let e = expect(None, Some("replica"), None).check("role=primary").unwrap_err();
        assert_eq!(e, "expected stdout to contain \"replica\"; stdout ends with: role=primary");
        assert!(Expect::default().check("anything").is_ok());
    }

    #[test]
    fn the_seen_output_is_capped() {
        let long = "x".repeat(5000);
        let e = expect(Some("t"), None, None).check(&long).unwrap_err();
        assert!(e.len() < 400, "{}", e.len());
        assert!(e.contains("..."));
    }

    #[test]
    fn patterns_are_bounded() {
        assert!(compile("(").unwrap_err().starts_with("invalid regex: "));
        assert!(compile(&"a".repeat(MAX_PATTERN + 1)).unwrap_err().contains("limit"));
        assert!(compile("a{1000}{1000}").is_err());
        assert!(compile(r"^\d+$").is_ok());
        assert!(expect(None, None, Some("^t$")).check("t\n").is_ok(), "trailing newline trimmed");
        assert!(expect(None, None, Some("(?m)^b$")).check("a\nb\nc\n").is_ok());
    }
}

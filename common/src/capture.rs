//! Captured values: what a step reads from its own output for later steps.
//!
//! A plan step may declare `capture: { name: replicas, regex: 'replicas=(\d+)' }`
//! or `capture: { name: replicas, json: spec.replicas }`. When that step
//! succeeds, the engine reads the value from the outcome's `stdout_tail`
//! ([`extract`]) and keeps it in the rollout; later steps write
//! `{{captured.replicas}}` and the engine substitutes it when it builds the
//! dispatch ([`render_step`]), so replaying the stored events rebuilds the
//! same values and the same dispatches.
//!
//! Rules:
//! - A regex capture takes the first match: its first capture group, or the
//!   whole match when the pattern has no group (or the group did not take
//!   part in the match).
//! - A JSON capture parses the whole stdout tail as JSON (surrounding
//!   whitespace allowed) and follows a dot path: object keys, and array
//!   indices as numbers (`items.0.name`). A string value is taken as it is;
//!   numbers, booleans, `null`, arrays and objects as their JSON text.
//! - A capture that does not match (no match, invalid JSON, missing path)
//!   fails the step, with a message naming the capture and showing the end of
//!   the output. The agent keeps the last 4 KiB of stdout, so a capture reads
//!   at most that: print what you capture last, or print little.
//! - Scope: a value captured by a step of a normal group belongs to that
//!   host's entry (`{{captured.NAME}}` in that host's later steps and in its
//!   rollback); a value captured by a hook is visible to every group that
//!   runs after the hook in the DAG. The plan checks this when it is
//!   expanded (see [`crate::plan`]); the engine fails a step whose value is
//!   missing anyway, rather than send a half-rendered command.

use crate::model::{CaptureFrom, CaptureSpec, StepSpec};
use crate::step_strings::kind_strings_mut;

/// The prefix of a captured-value template variable.
pub const PREFIX: &str = "captured.";

/// How much of the output a failed capture shows.
const SHOWN: usize = 300;

/// Check a capture's regex (plan validation).
pub fn check_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| format!("invalid regex: {}", regex_error(&e)))
}

/// The regex crate's message on one line (it draws the pattern with a caret
/// over several lines; the last line says what is wrong).
pub(crate) fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// Check a JSON dot path (plan validation): non-empty segments.
pub fn check_json_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("invalid JSON path '{path}': expected e.g. spec.replicas or items.0.name"));
    }
    Ok(())
}

/// The value `capture` reads from `stdout`, or why it could not.
pub fn extract(capture: &CaptureSpec, stdout: &str) -> Result<String, String> {
    let name = &capture.name;
    match &capture.from {
        CaptureFrom::Regex(pattern) => {
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("capture '{name}': invalid regex: {}", regex_error(&e)))?;
            let caps = re.captures(stdout).ok_or_else(|| {
                format!("capture '{name}': regex '{pattern}' does not match the output{}", shown(stdout))
            })?;
            let m = caps.get(1).or_else(|| caps.get(0)).expect("group 0 is the whole match");
            Ok(m.as_str().to_string())
        }
        CaptureFrom::Json(path) => {
            let value: serde_json::Value = serde_json::from_str(stdout.trim())
                .map_err(|e| format!("capture '{name}': the output is not JSON ({e}){}", shown(stdout)))?;
            let at = json_lookup(&value, path).map_err(|e| format!("capture '{name}': {e}{}", shown(stdout)))?;
            Ok(match at {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }
    }
}

/// The value at a dot path (`spec.replicas`, `items.0.name`) in a JSON
/// document; shared by captures, HTTP JSON checks and metric checks.
pub fn json_lookup<'v>(value: &'v serde_json::Value, path: &str) -> Result<&'v serde_json::Value, String> {
    let mut at = value;
    for seg in path.split('.') {
        let next = match at {
            serde_json::Value::Object(m) => m.get(seg),
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        at = next.ok_or_else(|| format!("JSON path '{path}' not found at '{seg}'"))?;
    }
    Ok(at)
}

/// "; stdout ends with: ..." (the last few hundred characters), or "; stdout is empty".
pub(crate) fn shown(stdout: &str) -> String {
    let t = stdout.trim_end();
    if t.is_empty() {
        return "; stdout is empty".to_string();
    }
    let count = t.chars().count();
    let tail: String = t.chars().skip(count.saturating_sub(SHOWN)).collect();
    let dots = if count > SHOWN { "..." } else { "" };
    format!("; stdout ends with: {dots}{tail}")
}

/// Names referenced as `{{captured.NAME}}` in `template` (in order, with
/// repeats). Unterminated `{{` and other variables are ignored.
pub fn references(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let inside = &rest[start + 2..];
        let Some(end) = inside.find("}}") else { break };
        if let Some(name) = inside[..end].trim().strip_prefix(PREFIX) {
            out.push(name);
        }
        rest = &inside[end + 2..];
    }
    out
}

/// Substitute every `{{captured.NAME}}` of `template` with `lookup(NAME)`;
/// other text (including other `{{...}}`) is kept as it is. Errors name the
/// first value `lookup` does not have.
pub fn render<'v>(template: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> Result<String, String> {
    if !template.contains("{{") {
        return Ok(template.to_string());
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let inside = &rest[start + 2..];
        let Some(end) = inside.find("}}") else { break };
        out.push_str(&rest[..start]);
        match inside[..end].trim().strip_prefix(PREFIX) {
            Some(name) => {
                let value = lookup(name).ok_or_else(|| format!("captured value '{name}' is not available"))?;
                out.push_str(value);
            }
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &inside[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `step` with every `{{captured.NAME}}` substituted.
pub fn render_step<'v>(step: &StepSpec, lookup: impl Fn(&str) -> Option<&'v str>) -> Result<StepSpec, String> {
    let mut out = step.clone();
    // Every string but the name, which a captured value may not be in.
    for (_, s) in kind_strings_mut(&mut out.kind) {
        if s.contains("{{") {
            *s = render(s, &lookup)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(from: CaptureFrom) -> CaptureSpec {
        CaptureSpec { name: "x".into(), from }
    }

    #[test]
    fn regex_takes_the_first_group_or_the_whole_match() {
        let c = cap(CaptureFrom::Regex(r"replicas=(\d+)".into()));
        assert_eq!(extract(&c, "name=a\nreplicas=3\nreplicas=4\n"), Ok("3".into()));
        let c = cap(CaptureFrom::Regex(r"\d+\.\d+".into()));
        assert_eq!(extract(&c, "version 2.14 ok"), Ok("2.14".into()));
        let err = extract(&cap(CaptureFrom::Regex(r"replicas=(\d+)".into())), "nothing here").unwrap_err();
        assert!(err.contains("capture 'x'") && err.contains("does not match") && err.contains("nothing here"), "{err}");
        assert!(extract(&c, "").unwrap_err().contains("stdout is empty"));
    }

    #[test]
    fn json_paths() {
        let out = r#" {"spec": {"replicas": 3, "name": "api"}, "items": [{"name": "a"}, {"name": "b"}], "n": null} "#;
        let j = |p: &str| extract(&cap(CaptureFrom::Json(p.into())), out);
        assert_eq!(j("spec.replicas"), Ok("3".into()));
        assert_eq!(j("spec.name"), Ok("api".into()));
        assert_eq!(j("items.1.name"), Ok("b".into()));
        assert_eq!(j("n"), Ok("null".into()));
        assert!(j("items.2.name").unwrap_err().contains("not found at '2'"));
        assert!(j("spec.replicas.x").unwrap_err().contains("not found at 'x'"));
        let err = extract(&cap(CaptureFrom::Json("a".into())), "not json").unwrap_err();
        assert!(err.contains("not JSON") && err.contains("not json"), "{err}");
        assert!(check_json_path("a..b").is_err());
        assert!(check_json_path("items.0.name").is_ok());
    }

    #[test]
    fn long_output_is_shortened() {
        let out = format!("{}END", "y".repeat(1000));
        let err = extract(&cap(CaptureFrom::Regex("zzz".into())), &out).unwrap_err();
        assert!(err.ends_with("END") && err.contains("...") && err.len() < 400, "{err}");
    }

    #[test]
    fn rendering_keeps_other_text() {
        let lookup = |n: &str| (n == "r").then_some("3");
        assert_eq!(render("scale --replicas={{ captured.r }} {{x}}", lookup), Ok("scale --replicas=3 {{x}}".into()));
        assert_eq!(render("a{{captured.r}}b{{captured.r}}", lookup), Ok("a3b3".into()));
        assert_eq!(render("{{captured.q}}", lookup), Err("captured value 'q' is not available".into()));
        assert_eq!(render("tail {{", lookup), Ok("tail {{".into()));
        assert_eq!(references("{{captured.a}} {{host}} {{ captured.b }}"), vec!["a", "b"]);
    }
}

//! Durations as a plan writes them (`250ms`, `1h30m`, a bare number of
//! seconds): parsing, the shortest spelling, and the positive ones fields
//! require.

use std::time::Duration;

use crate::limits::MAX_DURATION;

use super::errors::{FieldPath, PlanError, Src};

/// Parse `250ms`, `2s`, `1m`, `1h`, `1h30m` (units may be combined, largest
/// first or not) or a bare integer meaning seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("invalid duration '{s}': expected e.g. 250ms, 2s, 1m, 1h30m or a number of seconds");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let d = text.parse::<u64>().map(Duration::from_secs).map_err(|_| bad())?;
        return at_most_max(s, d);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    at_most_max(s, total)
}

fn at_most_max(s: &str, d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("duration '{}' is longer than the maximum of {}", s.trim(), format_duration(MAX_DURATION)));
    }
    Ok(d)
}

/// The shortest spelling [`parse_duration`] reads back: `0s`, `250ms`, `1h30m`, `1s500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

pub(super) fn positive_duration(src: Src<'_>, s: &str, path: &FieldPath) -> Result<Duration, PlanError> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err(src.err(path, "must be greater than zero")),
        Ok(d) => Ok(d),
        Err(m) => Err(src.err(path, m)),
    }
}

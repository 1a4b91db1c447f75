//! UTC times as text for listings (`2026-11-28T09:15:02.120Z`) and
//! `--since` values (a duration back from now, or a UTC time).

use std::time::{SystemTime, UNIX_EPOCH};

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// `2026-11-28T09:15:02.120Z`; `-` for 0 (no time).
pub fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s % 3600 / 60, s % 60, ms % 1000)
}

/// `--since`: a duration back from `now_ms` or a UTC time
/// ([`convoy_common::audit::parse_since`], which the dashboard's `?since=` uses too).
pub fn since(text: &str, now_ms: u64) -> Result<u64, String> {
    convoy_common::audit::parse_since(text, convoy_common::model::UnixMillis(now_ms))
        .map(|t| t.0)
        .map_err(|m| format!("--since {m}"))
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_and_parse_in_utc() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_764_321_302_120), "2025-11-28T09:15:02.120Z");
        assert_eq!(since("2025-11-28T09:15:02Z", 0).unwrap(), 1_764_321_302_000);
        assert_eq!(since("1970-01-02", 0).unwrap(), 86_400_000);
        assert_eq!(since("2h", 10_000_000).unwrap(), 10_000_000 - 7_200_000);
        assert_eq!(since("1d", 100_000_000).unwrap(), 100_000_000 - 86_400_000);
        assert!(since("yesterday", 0).unwrap_err().contains("--since 'yesterday'"));
        assert!(since("2025-13-01", 0).is_err());
        assert!(since("4000d", 0).is_err());
    }
}

//! UTC times as text for listings (`2026-11-28T09:15:02.120Z`) and
//! `--since` values (a duration back from now, or a UTC time).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

/// `--since`: a duration back from `now_ms` (`2h`, `30m`, `7d`, `1h30m`),
/// or a UTC time (`2026-11-28`, `2026-11-28T09:15:00Z`). At most 10 years back.
pub fn since(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "--since {text}: expected a duration back from now (30m, 2h, 7d) or a UTC time (2026-11-28 or 2026-11-28T09:15:00Z)"
        )
    };
    if let Some(days) = t.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        if days > 3650 {
            return Err(format!("--since {text}: at most 3650 days"));
        }
        return Ok(now_ms.saturating_sub(days * 86_400_000));
    }
    if t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.contains('-') {
        let (date, time) = t.split_once('T').unwrap_or((t, "00:00:00Z"));
        let date: Vec<&str> = date.split('-').collect();
        let time = time.strip_suffix('Z').ok_or_else(bad)?;
        let time: Vec<&str> = time.split(':').collect();
        let [y, m, d] = date[..] else { return Err(bad()) };
        let [hh, mm, ss] = time[..] else { return Err(bad()) };
        let n = |s: &str, max: u32| s.parse::<u32>().ok().filter(|v| *v <= max).ok_or_else(bad);
        let (y, m, d) = (y.parse::<i64>().map_err(|_| bad())?, n(m, 12)?, n(d, 31)?);
        if !(1970..=9999).contains(&y) || m == 0 || d == 0 {
            return Err(bad());
        }
        let secs = days_from_civil(y, m, d) * 86_400 + i64::from(n(hh, 23)? * 3600 + n(mm, 59)? * 60 + n(ss, 60)?);
        return Ok(secs as u64 * 1000);
    }
    let d: Duration = convoy_common::plan::parse_duration(t).map_err(|_| bad())?;
    if d > Duration::from_secs(3650 * 86_400) {
        return Err(format!("--since {text}: at most 3650 days"));
    }
    Ok(now_ms.saturating_sub(d.as_millis() as u64))
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
        assert!(since("yesterday", 0).unwrap_err().contains("--since yesterday"));
        assert!(since("2025-13-01", 0).is_err());
        assert!(since("4000d", 0).is_err());
    }
}

//! Local wall-clock times to instants, by the daylight-saving rules of
//! [`crate::schedule`]: a time in the spring-forward gap moves to the first
//! valid instant after it, a time in the autumn fold takes its first
//! occurrence.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant local time `t` in `tz` stands for.
pub fn resolve(tz: Tz, t: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(x) => x.with_timezone(&Utc),
        // The earlier of the two is the first occurrence.
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first valid instant after it. Gaps are shorter
            // than a day; walk forward a minute at a time to the first valid
            // local minute, then take the gap's end exactly: the instant
            // just before that minute, in the offset in force before the gap,
            // plus the gap itself is the same instant as the gap's end.
            let mut probe = t;
            for _ in 0..(24 * 60) {
                probe += TimeDelta::minutes(1);
                if let Some(after) = tz.from_local_datetime(&probe).earliest() {
                    // `after` is valid; step back to the exact end of the gap.
                    let after = after.with_timezone(&Utc);
                    return gap_end(tz, after);
                }
            }
            // No zone has a day-long gap; keep the wall time read as UTC.
            Utc.from_utc_datetime(&t)
        }
    }
}

/// The first instant of the offset in force at `valid`, going back at most
/// a minute (a gap ends on a whole minute in every zone of the database).
fn gap_end(tz: Tz, valid: DateTime<Utc>) -> DateTime<Utc> {
    let offset_at = |t: DateTime<Utc>| t.with_timezone(&tz).offset().to_owned();
    let target = offset_at(valid);
    let mut t = valid;
    for _ in 0..60 {
        let earlier = t - TimeDelta::seconds(1);
        if offset_at(earlier) != target {
            return t;
        }
        t = earlier;
    }
    t
}

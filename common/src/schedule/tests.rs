//! Calendar tests: midnight and week crossings, DST in Europe/Paris and
//! America/New_York, blackouts, cron rules.

use super::*;
use chrono::TimeZone;

fn rule(days: &[Weekday], start: &str, hours: u64) -> WindowRule {
    WindowRule {
        recurrence: Recurrence::Weekly {
            days: days.to_vec(),
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
        },
        duration: Duration::from_secs(hours * 3600),
    }
}

fn cron(expr: &str, hours: u64) -> WindowRule {
    WindowRule {
        recurrence: Recurrence::Cron(CronExpr::parse(expr).unwrap()),
        duration: Duration::from_secs(hours * 3600),
    }
}

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

/// UTC instant written as `YYYY-MM-DD HH:MM`.
fn utc(s: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
}

fn paris() -> Tz {
    parse_tz("Europe/Paris").unwrap()
}

fn new_york() -> Tz {
    parse_tz("America/New_York").unwrap()
}

use Weekday::*;

#[test]
fn a_window_crossing_midnight_opens_and_closes_the_next_day() {
    let rules = [rule(&[Mon, Tue, Wed, Thu, Fri], "22:00", 6)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: Tz::UTC };
    // Wednesday 2026-01-07 23:30: opened Wednesday 22:00, closes Thursday 04:00.
    assert_eq!(cal.open_at(utc("2026-01-07 23:30")), Some(utc("2026-01-08 04:00")));
    // Thursday 03:59 still open (kured's windows across midnight never opened).
    assert_eq!(cal.open_at(utc("2026-01-08 03:59")), Some(utc("2026-01-08 04:00")));
    assert_eq!(cal.open_at(utc("2026-01-08 04:00")), None);
    assert_eq!(cal.next_opening(utc("2026-01-08 04:00")).unwrap().start, utc("2026-01-08 22:00"));
}

#[test]
fn a_window_crossing_the_week_boundary_opens_sunday_and_closes_monday() {
    let rules = [rule(&[Sun], "23:00", 4)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: Tz::UTC };
    // 2026-01-11 is a Sunday.
    assert_eq!(cal.open_at(utc("2026-01-12 02:00")), Some(utc("2026-01-12 03:00")));
    // From Monday noon the next opening is the following Sunday.
    let next = cal.next_opening(utc("2026-01-12 12:00")).unwrap();
    assert_eq!((next.start, next.end), (utc("2026-01-18 23:00"), utc("2026-01-19 03:00")));
}

#[test]
fn saturday_and_sunday_nights_merge_into_one_interval() {
    let rules = [rule(&[Sat, Sun], "20:00", 28)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: Tz::UTC };
    // Sat 2026-01-10 20:00 + 28h = Mon 00:00; Sun 20:00 + 28h = Tue 00:00: one interval.
    let i = cal.openings(utc("2026-01-10 21:00")).next().unwrap();
    assert_eq!((i.start, i.end), (utc("2026-01-10 20:00"), utc("2026-01-13 00:00")));
}

#[test]
fn paris_spring_forward_start_in_the_gap_moves_to_the_end_of_the_gap() {
    // 2026-03-29: Paris clocks go 02:00 -> 03:00 (01:00 UTC).
    let rules = [rule(&[Sun], "02:30", 2)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: paris() };
    let i = cal.next_opening(utc("2026-03-28 12:00")).unwrap();
    assert_eq!(i.start, utc("2026-03-29 01:00"), "opens at 03:00 local, the first valid instant");
    assert_eq!(i.end, utc("2026-03-29 03:00"), "and lasts its two real hours");
    assert_eq!(resolve(paris(), local("2026-03-29 02:00")), utc("2026-03-29 01:00"));
}

#[test]
fn paris_autumn_fold_start_takes_the_first_occurrence() {
    // 2026-10-25: Paris clocks go 03:00 -> 02:00 (01:00 UTC); 02:30 happens twice.
    let rules = [rule(&[Sun], "02:30", 1)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: paris() };
    let i = cal.next_opening(utc("2026-10-24 12:00")).unwrap();
    assert_eq!(i.start, utc("2026-10-25 00:30"), "the summer-time 02:30 (UTC+2)");
    assert_eq!(i.end, utc("2026-10-25 01:30"));
    // The second 02:30 (01:30 UTC) opens nothing more.
    assert_eq!(cal.open_at(utc("2026-10-25 01:45")), None);
    assert_eq!(cal.next_opening(utc("2026-10-25 01:00")).unwrap().start, utc("2026-11-01 01:30"));
}

#[test]
fn a_window_spanning_a_clock_change_lasts_its_elapsed_duration() {
    // Saturday 22:00 for 8h across the Paris spring-forward night: closes
    // Sunday 07:00 local (05:00 UTC), 8 real hours later.
    let rules = [rule(&[Sat], "22:00", 8)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: paris() };
    let i = cal.next_opening(utc("2026-03-28 12:00")).unwrap();
    assert_eq!((i.start, i.end), (utc("2026-03-28 21:00"), utc("2026-03-29 05:00")));
    assert_eq!(i.len(), Duration::from_secs(8 * 3600));
}

#[test]
fn new_york_spring_and_autumn() {
    // 2026-03-08: 02:00 -> 03:00 EST->EDT (07:00 UTC). 2026-11-01: 02:00 -> 01:00 EDT->EST (06:00 UTC).
    let rules = [rule(&[Sun], "02:15", 1)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: new_york() };
    assert_eq!(cal.next_opening(utc("2026-03-07 12:00")).unwrap().start, utc("2026-03-08 07:00"));
    let fold = [rule(&[Sun], "01:30", 1)];
    let cal = Calendar { rules: &fold, blackouts: &[], tz: new_york() };
    // First 01:30 is EDT (UTC-4): 05:30 UTC.
    assert_eq!(cal.next_opening(utc("2026-10-31 12:00")).unwrap().start, utc("2026-11-01 05:30"));
    // An ordinary winter Sunday: 01:30 EST = 06:30 UTC.
    assert_eq!(cal.next_opening(utc("2026-11-02 12:00")).unwrap().start, utc("2026-11-08 06:30"));
}

#[test]
fn each_time_zone_has_its_own_night() {
    let rules = [rule(&[Mon, Tue, Wed, Thu, Fri, Sat, Sun], "01:00", 3)];
    let at = utc("2026-06-10 12:00");
    let tokyo = Calendar { rules: &rules, blackouts: &[], tz: parse_tz("Asia/Tokyo").unwrap() };
    let ny = Calendar { rules: &rules, blackouts: &[], tz: new_york() };
    assert_eq!(tokyo.next_opening(at).unwrap().start, utc("2026-06-10 16:00"));
    assert_eq!(ny.next_opening(at).unwrap().start, utc("2026-06-11 05:00"));
}

#[test]
fn blackouts_cut_windows_and_a_freeze_pushes_the_next_opening_past_it() {
    let rules = [rule(&[Mon, Tue, Wed, Thu, Fri, Sat, Sun], "22:00", 6)];
    let freeze = [Blackout { from: local("2026-12-20 00:00"), to: local("2027-01-04 00:00") }];
    let cal = Calendar { rules: &rules, blackouts: &freeze, tz: Tz::UTC };
    // Dec 19 22:00 opens, cut at midnight by the freeze.
    let i = cal.next_opening(utc("2026-12-19 12:00")).unwrap();
    assert_eq!((i.start, i.end), (utc("2026-12-19 22:00"), utc("2026-12-20 00:00")));
    assert_eq!(cal.open_at(utc("2026-12-25 23:00")), None);
    // Jan 3 22:00's window is still open when the freeze ends: it opens then.
    let i = cal.next_opening(utc("2026-12-20 00:00")).unwrap();
    assert_eq!((i.start, i.end), (utc("2027-01-04 00:00"), utc("2027-01-04 04:00")));
}

#[test]
fn next_fit_skips_openings_too_short_and_the_rest_of_an_open_one() {
    let rules = [rule(&[Mon, Tue, Wed, Thu, Fri, Sat, Sun], "22:00", 2)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: Tz::UTC };
    let h = |n: u64| Duration::from_secs(n * 3600);
    assert_eq!(cal.next_fit(utc("2026-01-07 22:30"), h(1)), Some(utc("2026-01-07 22:30")));
    assert_eq!(cal.next_fit(utc("2026-01-07 23:30"), h(1)), Some(utc("2026-01-08 22:00")));
    assert_eq!(cal.next_fit(utc("2026-01-07 12:00"), h(3)), None, "no window is 3h long");
}

#[test]
fn cron_windows_match_local_wall_time() {
    // 02:00 on weekdays, 3h, Paris: in winter 01:00 UTC.
    let rules = [cron("0 2 * * 1-5", 3)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: paris() };
    let i = cal.next_opening(utc("2026-01-09 12:00")).unwrap(); // a Friday
    assert_eq!((i.start, i.end), (utc("2026-01-12 01:00"), utc("2026-01-12 04:00")));
    // On the spring-forward Monday? 2026-03-29 is a Sunday; a daily 02:30 cron that day moves to 03:00.
    let rules = [cron("30 2 * * *", 1)];
    let cal = Calendar { rules: &rules, blackouts: &[], tz: paris() };
    assert_eq!(cal.next_opening(utc("2026-03-28 12:00")).unwrap().start, utc("2026-03-29 01:00"));
}

#[test]
fn cron_expressions_must_have_five_fields() {
    assert!(CronExpr::parse("0 2 * * *").is_ok());
    assert!(CronExpr::parse("0 0 2 * * *").unwrap_err().contains("5 fields"));
    assert!(CronExpr::parse("61 2 * * *").is_err());
    let json = serde_json::to_string(&CronExpr::parse("0 2 * * 1-5").unwrap()).unwrap();
    assert_eq!(json, "\"0 2 * * 1-5\"");
    assert!(serde_json::from_str::<CronExpr>("\"nope\"").is_err());
}

#[test]
fn a_calendar_with_no_rules_never_opens() {
    let cal = Calendar { rules: &[], blackouts: &[], tz: Tz::UTC };
    assert_eq!(cal.next_opening(utc("2026-01-01 00:00")), None);
    assert_eq!(cal.open_at(utc("2026-01-01 00:00")), None);
}

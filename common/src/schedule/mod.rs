//! Maintenance windows: when a host may start its upgrade (pure calendar
//! logic, no clock).
//!
//! A [`Calendar`] is a host's view of its group's windows: the window rules
//! ([`WindowRule`]: weekdays and a local start time, or a 5-field cron
//! expression, each with a duration), the blackouts ([`Blackout`]) that
//! override them, and the host's IANA time zone. [`Calendar::openings`]
//! walks the open intervals in order; [`Calendar::open_at`],
//! [`Calendar::next_opening`] and [`Calendar::next_fit`] answer the
//! engine's questions. Instants are UTC; rules and blackouts are local
//! wall-clock times in the calendar's zone, so each host keeps its own night.
//!
//! Rules (see also `docs/windows.md`):
//! - **Occurrences.** A weekly rule opens on each listed weekday at its local
//!   `start`; a cron rule opens at every local minute its expression matches
//!   (the expression is matched against wall-clock time, five fields, no
//!   seconds or years). Each opening lasts the rule's duration, so a window
//!   may cross midnight and the end of the week (`sun 23:00` for 4h closes
//!   Monday 03:00).
//! - **Durations are elapsed time.** A 4h window that spans a change of
//!   clocks stays open 4 real hours (its local closing time moves by the
//!   shift).
//! - **A start time that does not exist** (inside the spring-forward gap,
//!   e.g. 02:30 in Europe/Paris on the last Sunday of March) opens at the
//!   first valid instant after the gap (03:00 local), and still lasts its
//!   whole duration from there.
//! - **A start time that happens twice** (inside the autumn fold, e.g. 02:30
//!   in Europe/Paris on the last Sunday of October) opens at its first
//!   occurrence (the summer-time one); the second one opens nothing more.
//! - **Overlapping or touching openings merge** into one interval (at most
//!   [`MERGE_CAP`] long: a calendar open for longer is split there, and the
//!   next interval opens at the same instant).
//! - **Blackouts** (local date-time ranges, start included, end excluded)
//!   are cut out of every interval: a window that starts in a blackout opens
//!   when the blackout ends, if it is still open then.
//! - The search looks at most [`HORIZON_DAYS`] days ahead: a calendar with
//!   no opening in that range (say, a blackout covering all of it) has none.

mod local;
mod spec;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

pub use local::resolve;
pub use spec::{GroupWindows, HostWindow, RolloutWindows};

/// The longest a single window may last.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest one merged interval gets before it is split (see the module docs).
pub const MERGE_CAP: Duration = Duration::from_secs(31 * 24 * 3600);

/// How many days ahead the search for an opening goes.
pub const HORIZON_DAYS: i64 = 800;

/// Most cron openings read in one local day (one a minute).
const CRON_PER_DAY: usize = 24 * 60;

/// A half-open interval of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    /// Its length.
    pub fn len(&self) -> Duration {
        (self.end - self.start).to_std().unwrap_or_default()
    }

    /// True when it lasts no time at all.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// When a window opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recurrence {
    /// On each of `days` at local time `start`.
    Weekly { days: Vec<Weekday>, start: NaiveTime },
    /// At every local minute a 5-field cron expression matches.
    Cron(CronExpr),
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week),
/// checked when made. Stored as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr(String);

impl CronExpr {
    /// Check `pattern`: exactly five fields that croner accepts.
    pub fn parse(pattern: &str) -> Result<CronExpr, String> {
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(format!("a cron expression has 5 fields (minute hour day month weekday), not {fields}"));
        }
        cron_parser().parse(pattern).map_err(|e| format!("invalid cron expression {pattern:?}: {e}"))?;
        Ok(CronExpr(pattern.to_string()))
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn cron(&self) -> Cron {
        cron_parser().parse(&self.0).expect("checked when made")
    }
}

impl TryFrom<String> for CronExpr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CronExpr::parse(&s)
    }
}

impl From<CronExpr> for String {
    fn from(c: CronExpr) -> String {
        c.0
    }
}

fn cron_parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build()
}

/// One window: when it opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRule {
    pub recurrence: Recurrence,
    /// Elapsed time it stays open (positive, at most [`MAX_WINDOW`]).
    pub duration: Duration,
}

impl WindowRule {
    /// How `convoy plan` shows it: `mon,tue 22:00 for 6h` or `cron "0 2 * * *" for 3h`.
    pub fn describe(&self) -> String {
        let d = crate::plan::format_duration(self.duration);
        match &self.recurrence {
            Recurrence::Weekly { days, start } => {
                let days: Vec<String> = days.iter().map(|d| d.to_string().to_lowercase()).collect();
                let at = if start.second() == 0 { start.format("%H:%M") } else { start.format("%H:%M:%S") };
                format!("{} {at} for {d}", days.join(","))
            }
            Recurrence::Cron(c) => format!("cron \"{}\" for {d}", c.as_str()),
        }
    }
}

/// A local date-time range during which no window opens (a freeze).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blackout {
    /// First local instant of the blackout.
    pub from: NaiveDateTime,
    /// First local instant after it.
    pub to: NaiveDateTime,
}

/// A host's windows: rules and blackouts read in its time zone.
#[derive(Debug, Clone, Copy)]
pub struct Calendar<'a> {
    pub rules: &'a [WindowRule],
    pub blackouts: &'a [Blackout],
    pub tz: Tz,
}

impl<'a> Calendar<'a> {
    /// The open intervals that end after `from`, in order (the first one
    /// may have started before `from`).
    pub fn openings(&self, from: DateTime<Utc>) -> Openings<'a> {
        let longest = self.rules.iter().map(|r| r.duration).max().unwrap_or_default();
        let back = TimeDelta::from_std(longest).unwrap_or(TimeDelta::zero()) + TimeDelta::days(1);
        let first = (from - back).with_timezone(&self.tz).date_naive();
        let mut blackouts: Vec<Interval> = self
            .blackouts
            .iter()
            .map(|b| Interval { start: resolve(self.tz, b.from), end: resolve(self.tz, b.to) })
            .filter(|b| !b.is_empty())
            .collect();
        blackouts.sort();
        Openings {
            cal: *self,
            from,
            day: first,
            last_day: first + TimeDelta::days(HORIZON_DAYS),
            crons: self
                .rules
                .iter()
                .map(|r| match &r.recurrence {
                    Recurrence::Cron(c) => Some(c.cron()),
                    Recurrence::Weekly { .. } => None,
                })
                .collect(),
            current: None,
            ready: std::collections::VecDeque::new(),
            blackouts,
            done: false,
        }
    }

    /// If a window is open at `now`: when it closes.
    pub fn open_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.openings(now).next().filter(|i| i.start <= now).map(|i| i.end)
    }

    /// The first interval that opens after `after` (strictly).
    pub fn next_opening(&self, after: DateTime<Utc>) -> Option<Interval> {
        self.openings(after).find(|i| i.start > after)
    }

    /// The first instant at or after `now` when something needing `need`
    /// can start and end before its window closes: `now` itself when it
    /// fits in the window open now.
    pub fn next_fit(&self, now: DateTime<Utc>, need: Duration) -> Option<DateTime<Utc>> {
        let need = TimeDelta::from_std(need).ok()?;
        self.openings(now).find_map(|i| {
            let start = i.start.max(now);
            (start + need <= i.end).then_some(start)
        })
    }
}

/// The iterator of [`Calendar::openings`].
#[derive(Debug)]
pub struct Openings<'a> {
    cal: Calendar<'a>,
    from: DateTime<Utc>,
    /// The next local day whose openings are read.
    day: NaiveDate,
    last_day: NaiveDate,
    /// The parsed cron of each rule that has one.
    crons: Vec<Option<Cron>>,
    /// The merged interval being grown.
    current: Option<Interval>,
    /// Intervals cut by blackouts, ready to hand out.
    ready: std::collections::VecDeque<Interval>,
    blackouts: Vec<Interval>,
    done: bool,
}

impl Openings<'_> {
    /// Every opening starting on local day `day`, in order.
    fn day_openings(&self, day: NaiveDate) -> Vec<Interval> {
        let mut out = Vec::new();
        for (rule, cron) in self.cal.rules.iter().zip(&self.crons) {
            let len = TimeDelta::from_std(rule.duration).unwrap_or(TimeDelta::zero());
            match (&rule.recurrence, cron) {
                (Recurrence::Weekly { days, start }, _) => {
                    if days.contains(&day.weekday()) {
                        let at = resolve(self.cal.tz, day.and_time(*start));
                        out.push(Interval { start: at, end: at + len });
                    }
                }
                (Recurrence::Cron(_), Some(cron)) => {
                    let midnight = day.and_time(NaiveTime::MIN);
                    for t in cron.iter_from(midnight, croner::Direction::Forward).take(CRON_PER_DAY) {
                        if t.date() != day {
                            break;
                        }
                        let at = resolve(self.cal.tz, t);
                        out.push(Interval { start: at, end: at + len });
                    }
                }
                (Recurrence::Cron(_), None) => {}
            }
        }
        out.sort();
        out
    }

    /// Cut the blackouts out of `merged` and queue what is left after `from`.
    fn emit(&mut self, merged: Interval) {
        let mut start = merged.start;
        for b in &self.blackouts {
            if b.end <= start || b.start >= merged.end {
                continue;
            }
            if b.start > start {
                self.ready.push_back(Interval { start, end: b.start });
            }
            start = start.max(b.end);
        }
        if start < merged.end {
            self.ready.push_back(Interval { start, end: merged.end });
        }
        let from = self.from;
        self.ready.retain(|i| i.end > from);
    }
}

impl Iterator for Openings<'_> {
    type Item = Interval;

    fn next(&mut self) -> Option<Interval> {
        let cap = TimeDelta::from_std(MERGE_CAP).expect("small");
        loop {
            if let Some(i) = self.ready.pop_front() {
                return Some(i);
            }
            if self.done {
                return None;
            }
            if self.day > self.last_day {
                self.done = true;
                if let Some(c) = self.current.take() {
                    self.emit(c);
                }
                continue;
            }
            let day = self.day;
            for o in self.day_openings(day) {
                self.current = match self.current {
                    Some(c) if o.start <= c.end && c.end - c.start < cap => {
                        Some(Interval { start: c.start, end: c.end.max(o.end).min(c.start + cap) })
                    }
                    Some(c) => {
                        self.emit(c);
                        Some(o)
                    }
                    None => Some(o),
                };
            }
            self.day = day.succ_opt().unwrap_or(self.last_day + TimeDelta::days(1));
            // Nothing starting on a later day can join an interval that
            // closes before that day begins.
            let next_day = resolve(self.cal.tz, self.day.and_time(NaiveTime::MIN));
            if let Some(c) = self.current.filter(|c| c.end < next_day) {
                self.current = None;
                self.emit(c);
            }
        }
    }
}

/// The UTC instant of `t` (whole milliseconds since the epoch; 0 before it).
pub fn to_utc(millis: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(millis).unwrap_or(i64::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Milliseconds since the epoch of `t` (0 before it).
pub fn to_millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// Parse an IANA time zone name (`Europe/Paris`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| format!("unknown time zone {name:?} (an IANA name such as Europe/Paris)"))
}

//! The calendar estimate `convoy plan` shows for a plan with maintenance
//! windows: from a start instant, when each batch of each windowed group is
//! expected to start (the window it lands in) and end, and the rollout's
//! end date.
//!
//! A simple forward simulation over the same host estimates as the plan's
//! duration estimate ([`crate::estimate::host_durations`]): groups start
//! once the groups they wait for end; a group without windows takes its
//! [`crate::estimate::group_estimate`]; a windowed group's hosts go in
//! batches of its `max_parallel` (one after the other), each host at the
//! first instant, at or after its batch may start, when its estimate plus
//! the cutoff fits in a window of its own zone (as the engine decides).
//! Canary soaks and approvals of windowed groups are not counted; a host
//! that fits no window leaves the end date unknown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{RolloutSpec, UnixMillis};
use crate::schedule::{self, to_millis, to_utc};

/// The calendar of a rollout started at `start_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSummary {
    pub start_ms: u64,
    /// `2026-01-07 21:00 UTC`.
    pub start: String,
    /// When the last group is expected to end; `None` when some host fits
    /// no window.
    pub end_ms: Option<u64>,
    pub end: Option<String>,
    /// The windowed groups.
    pub groups: Vec<CalendarGroup>,
}

/// One windowed group's batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarGroup {
    pub name: String,
    /// Its windows, described (`mon,tue 22:00 for 6h`).
    pub windows: Vec<String>,
    pub timezone: String,
    pub batches: Vec<CalendarBatch>,
}

/// One batch: the opening it lands in (its first host's start) and its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarBatch {
    pub hosts: Vec<String>,
    /// `None`: one of its hosts fits no window in the calendar's horizon.
    pub start_ms: Option<u64>,
    pub start: Option<String>,
    pub end_ms: Option<u64>,
    pub end: Option<String>,
}

/// How dates are shown.
pub fn show(ms: u64) -> String {
    to_utc(ms).format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The calendar of `spec` started at `start`, or `None` when it has no
/// windows. `host_durations` has one entry per [`RolloutSpec::hosts`].
pub fn calendar(spec: &RolloutSpec, host_durations: &[Duration], start: UnixMillis) -> Option<CalendarSummary> {
    let windows = spec.windows.as_ref()?;
    let n = spec.groups.len();
    let after: Vec<Vec<usize>> =
        spec.groups.iter().map(|g| g.after.iter().copied().filter(|&a| a < n).collect()).collect();
    let order = crate::dag::topo_order(&after).unwrap_or_else(|_| (0..n).collect());
    // Per group: when it ends (None: never, as far as the calendar knows).
    let mut ends: Vec<Option<Option<u64>>> = vec![None; n];
    let mut groups: Vec<(usize, CalendarGroup)> = Vec::new();
    let plus = |at: u64, d: Duration| at.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for g in order {
        let mut begin = Some(start.0);
        for &a in &after[g] {
            begin = match (begin, ends[a].flatten()) {
                (Some(b), Some(e)) => Some(b.max(e)),
                _ => None,
            };
        }
        let group = &spec.groups[g];
        let Some(w) = windows.group(g) else {
            let (d, _) = crate::estimate::group_estimate(spec, g, host_durations);
            ends[g] = Some(begin.map(|b| plus(b, d)));
            continue;
        };
        let mut batches = Vec::new();
        let mut at = begin;
        for chunk in group.hosts.chunks(group.steady_window().max(1)) {
            let mut first: Option<u64> = None;
            let mut end: Option<u64> = at;
            for &h in chunk {
                let d = host_durations.get(h).copied().unwrap_or_default();
                let fit = match (at, windows.calendar(g, h)) {
                    (Some(t), Some((cal, _))) => {
                        let need = if d.is_zero() { Duration::ZERO } else { d.saturating_add(w.cutoff) };
                        cal.next_fit(to_utc(t), need).map(to_millis)
                    }
                    (Some(t), None) => Some(t),
                    (None, _) => None,
                };
                first = match (first, fit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (None, f) | (f, None) => f,
                };
                end = match (end, fit) {
                    (Some(e), Some(f)) => Some(e.max(plus(f, d.saturating_add(group.soak)))),
                    _ => None,
                };
            }
            if end.is_none() {
                first = None;
            }
            batches.push(CalendarBatch {
                hosts: chunk.iter().map(|&h| spec.hosts[h].host.clone()).collect(),
                start_ms: first,
                start: first.map(show),
                end_ms: end,
                end: end.map(show),
            });
            at = end;
        }
        ends[g] = Some(at);
        groups.push((
            g,
            CalendarGroup {
                name: group.name.clone(),
                windows: w.open.iter().map(schedule::WindowRule::describe).collect(),
                timezone: w.timezone.clone(),
                batches,
            },
        ));
    }
    groups.sort_by_key(|(g, _)| *g);
    let mut end = Some(start.0);
    for e in ends.iter().map(|e| e.flatten()) {
        end = match (end, e) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    Some(CalendarSummary {
        start_ms: start.0,
        start: show(start.0),
        end_ms: end,
        end: end.map(show),
        groups: groups.into_iter().map(|(_, c)| c).collect(),
    })
}

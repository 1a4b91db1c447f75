//! Maintenance windows in the engine: which pending host may start now, and
//! a group waiting for its next opening ([`Timer::WindowOpens`]).
//!
//! Rules (the calendar itself is [`crate::schedule`]):
//! - A host of a group with windows starts only when its estimate plus the
//!   group's cutoff fits in the window open now, in its own time zone
//!   ([`crate::schedule::Calendar::next_fit`] at `now`). Hosts are taken in
//!   the group's order, except that a host whose window is closed does not
//!   hold up a later one whose window is open: the first pending host that
//!   fits starts (hosts in other zones keep their relative order).
//! - A started host always runs its steps to the end, window or not: a
//!   window closing only stops new starts.
//! - When no pending host (of the canaries, during the canary phase) may
//!   start now but one will, the group is *waiting for a window*
//!   ([`crate::view::GroupView::window`]), and the engine asks for a
//!   [`Timer::WindowOpens`] at the earliest instant one fits. The timer
//!   fires, the group is looked at again. A wait that changes asks for a
//!   new timer; older ones are ignored when they fire.
//! - A pending host whose estimate plus cutoff fits in no window within
//!   the calendar's horizon fails at once, without a step being sent, and
//!   counts against the budgets like any failure.
//! - An operator's [`crate::engine::OperatorCommand::IgnoreWindows`] (`convoy apply
//!   --ignore-windows`, `convoy override-windows`) lifts the windows for
//!   the rest of the rollout; who and when are in the event log.
//! - Everything is decided from the spec (windows, zones and estimates
//!   fixed at submit time) and `now`, so a replay waits exactly as the
//!   first run did, and [`Engine::resume_actions`] re-arms the wait's timer.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono_tz::Tz;

use crate::engine::Engine;
use crate::engine::events::{Action, Timer};
use crate::model::UnixMillis;
use crate::schedule::{self, HORIZON_DAYS};

/// What the windows say about a group's pending hosts.
pub(crate) enum Pick {
    /// The host at the group's `next` position may start (it was moved there).
    Start,
    /// None may start now; the first one may at this instant.
    WaitUntil(UnixMillis),
    /// The host at `next` (moved there) fits in no window.
    Never(String),
}

impl Engine {
    /// True when group `g`'s hosts wait for windows (it has some and they
    /// are not overridden).
    pub(crate) fn windowed(&self, g: usize) -> bool {
        self.windows_overridden.is_none() && self.spec.windows.as_ref().is_some_and(|w| w.group(g).is_some())
    }

    /// For a windowed group: the first of its pending hosts up to position
    /// `limit` that may start at `now`, moved to position `next`.
    pub(crate) fn window_pick(&mut self, g: usize, limit: usize, now: UnixMillis) -> Pick {
        let Some(windows) = self.spec.windows.as_ref() else { return Pick::Start };
        let t = schedule::to_utc(now.0);
        let next = self.groups[g].next;
        let mut earliest: Option<UnixMillis> = None;
        // Hosts sharing a zone and an estimate share an answer.
        let mut seen: HashMap<(Tz, Duration), Option<UnixMillis>> = HashMap::new();
        for k in next..limit {
            let i = self.groups[g].order[k];
            if self.spec.hosts[i].steps.is_empty() {
                self.groups[g].order[next..=k].rotate_right(1);
                return Pick::Start;
            }
            let Some((cal, need)) = windows.calendar(g, i) else { return Pick::Start };
            let fit = *seen
                .entry((cal.tz, need))
                .or_insert_with(|| cal.next_fit(t, need).map(|s| UnixMillis(schedule::to_millis(s))));
            match fit {
                Some(at) if at <= now => {
                    self.groups[g].order[next..=k].rotate_right(1);
                    return Pick::Start;
                }
                Some(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                None => {
                    self.groups[g].order[next..=k].rotate_right(1);
                    let zone = cal.tz.name();
                    return Pick::Never(format!(
                        "no maintenance window in the next {HORIZON_DAYS} days ({zone}) is long enough for its \
                         estimate plus the cutoff ({})",
                        crate::plan::format_duration(need)
                    ));
                }
            }
        }
        match earliest {
            Some(at) => Pick::WaitUntil(at),
            // Nothing pending up to `limit`.
            None => Pick::Start,
        }
    }

    /// Group `g` waits for a window until `at`: ask for a timer unless
    /// that wait is already armed.
    pub(crate) fn wait_window(&mut self, g: usize, at: UnixMillis, out: &mut Vec<Action>) {
        if self.groups[g].window_wait == Some(at) {
            return;
        }
        self.groups[g].window_wait = Some(at);
        let name = self.spec.groups[g].name.clone();
        out.push(Action::Schedule { at, timer: Timer::WindowOpens { group: name } });
    }

    /// [`Timer::WindowOpens`] for group `group` fired.
    pub(crate) fn on_window_opens(&mut self, now: UnixMillis, group: &str, out: &mut Vec<Action>) {
        let Some(&g) = self.group_by_name.get(group) else { return };
        match self.groups[g].window_wait {
            Some(at) if now >= at => {}
            Some(_) | None => return,
        }
        self.groups[g].window_wait = None;
        self.progress(now, VecDeque::from([g]), out);
    }

    /// [`crate::engine::OperatorCommand::IgnoreWindows`]: lift the windows for the rest of the rollout.
    pub(crate) fn ignore_windows(&mut self, now: UnixMillis, by: &str, out: &mut Vec<Action>) {
        if let Some(first) = &self.windows_overridden {
            self.message = format!("windows override by {by} ignored: {first} already lifted them");
            return;
        }
        self.windows_overridden = Some(by.to_string());
        self.message = format!("maintenance windows lifted by {by}");
        let waiting: VecDeque<usize> =
            (0..self.groups.len()).filter(|&g| self.groups[g].window_wait.is_some()).collect();
        for &g in &waiting {
            self.groups[g].window_wait = None;
        }
        self.progress(now, waiting, out);
    }

    /// Who lifted the windows ([`crate::engine::OperatorCommand::IgnoreWindows`]), if anyone did.
    pub fn windows_overridden_by(&self) -> Option<&str> {
        self.windows_overridden.as_deref()
    }

    /// When group `g` (waiting for a window) may start its next host.
    pub fn window_wait(&self, g: usize) -> Option<UnixMillis> {
        self.groups.get(g).and_then(|rt| rt.window_wait)
    }
}

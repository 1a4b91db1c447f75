//! The windows of an expanded rollout ([`RolloutWindows`]): what the engine
//! enforces, fixed when the rollout is submitted so that a replay of its
//! events decides exactly as the first run did.

use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{Blackout, Calendar, WindowRule};

/// Maintenance windows of a rollout ([`crate::model::RolloutSpec::windows`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutWindows {
    /// One per [`crate::model::RolloutSpec::groups`]: the group's windows,
    /// or `None` when it may start hosts at any time.
    pub groups: Vec<Option<GroupWindows>>,
    /// One per [`crate::model::RolloutSpec::hosts`] entry: its time zone and
    /// estimated duration (meaningful for entries of a windowed group).
    pub hosts: Vec<HostWindow>,
}

/// A group's windows (the plan's `windows:`, or the group's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupWindows {
    /// When hosts may start (at least one).
    pub open: Vec<WindowRule>,
    /// When they may not, whatever `open` says.
    pub blackouts: Vec<Blackout>,
    /// Margin kept before a window closes: a host starts only if its
    /// estimate plus this fits before the close.
    pub cutoff: Duration,
    /// The `timezone:` as written (`Europe/Paris`, `{{label.tz}}`), for display.
    pub timezone: String,
}

/// What the engine needs of one host entry to place it in its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostWindow {
    /// The zone its group's windows are read in.
    pub zone: Tz,
    /// Its estimated duration (its steps' estimates: declared, measured or
    /// default; see [`crate::estimate`]).
    pub estimate: Duration,
}

impl Default for HostWindow {
    fn default() -> Self {
        HostWindow { zone: Tz::UTC, estimate: Duration::ZERO }
    }
}

impl RolloutWindows {
    /// Group `g`'s windows, if it has any.
    pub fn group(&self, g: usize) -> Option<&GroupWindows> {
        self.groups.get(g).and_then(Option::as_ref)
    }

    /// Host entry `i`'s calendar under group `g`'s windows, and the time
    /// it needs in a window (its estimate plus the cutoff).
    pub fn calendar(&self, g: usize, i: usize) -> Option<(Calendar<'_>, Duration)> {
        let w = self.group(g)?;
        let h = self.hosts.get(i).copied().unwrap_or_default();
        Some((Calendar { rules: &w.open, blackouts: &w.blackouts, tz: h.zone }, h.estimate.saturating_add(w.cutoff)))
    }
}

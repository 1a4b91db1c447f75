//! The engine seen from outside: read-only summaries of a rollout for status displays.

use crate::engine::Engine;
use crate::engine::state::{GroupState, HostState, RolloutState};
use crate::model::{HostId, UnixMillis};
use crate::schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A read-only summary for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub state: RolloutState,
    pub message: String,
    pub groups: Vec<GroupView>,
    pub hosts: Vec<HostView>,
    /// Backups the rollout's `backup` steps took, in the order they succeeded.
    #[serde(default)]
    pub backups: Vec<BackupView>,
}

/// A backup a `backup` step took (from its [`StepOutcome::backup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    /// The agent that took it.
    pub host: HostId,
    /// The host entry's key ([`HostPlan::key`]).
    pub key: String,
    pub group: String,
    /// The step's name.
    pub step: String,
    /// Where the backup is on the host.
    pub location: String,
    pub size_bytes: u64,
    /// When its result was handled.
    pub at: UnixMillis,
}

/// Host counts of one group. Every host is counted exactly once:
/// `done + running + failed + rolled_back + pending == total`, with skipped
/// hosts counted in `pending` (they are the hosts that never ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub state: GroupState,
    /// Hosts that succeeded (and were not rolled back).
    pub done: usize,
    /// Hosts running a step, soaking or rolling back.
    pub running: usize,
    /// Hosts that failed (and were not rolled back).
    pub failed: usize,
    /// Hosts whose rollback ended, rolled back or failed.
    #[serde(default)]
    pub rolled_back: usize,
    /// Hosts not started yet, or skipped.
    pub pending: usize,
    pub total: usize,
    /// How many of the group's first hosts are canaries (0: no canary phase).
    #[serde(default)]
    pub canaries: usize,
    /// When a group in `CanarySoak` promotes itself.
    #[serde(default)]
    pub promote_at: Option<UnixMillis>,
    /// Its maintenance windows, if it has any.
    #[serde(default)]
    pub window: Option<WindowView>,
}

/// A group's maintenance windows as status shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    /// Each window, described (`mon,tue 22:00 for 6h`).
    pub windows: Vec<String>,
    /// The zone they are read in, as the plan wrote it.
    pub timezone: String,
    /// Waiting for a window: when the next host may start (the group
    /// shows as `waiting_window`).
    pub waiting_until: Option<UnixMillis>,
    /// When the window open for the group's next pending host closes (only
    /// in [`Engine::view_at`]; `None` when closed or nothing is pending).
    pub closes_at: Option<UnixMillis>,
    /// Who lifted the windows (`convoy override-windows`), if anyone did.
    pub overridden_by: Option<String>,
}

impl WindowView {
    /// The status as `convoy status` and the dashboard word it: who lifted
    /// the windows, the next opening of a group waiting for one, the time
    /// left in an open one, or `window closed`.
    pub fn status_text(&self, now: UnixMillis) -> String {
        let at = |t: UnixMillis| schedule::to_utc(t.0).format("%Y-%m-%d %H:%M UTC").to_string();
        let left = |ms: u64| crate::estimate::human_duration(std::time::Duration::from_millis(ms));
        if let Some(by) = &self.overridden_by {
            format!("lifted by {by}")
        } else if let Some(t) = self.waiting_until {
            format!("next window {} (in {})", at(t), left(t.0.saturating_sub(now.0)))
        } else if let Some(t) = self.closes_at.filter(|t| *t > now) {
            format!("window open, closes {} ({} left)", at(t), left(t.0 - now.0))
        } else {
            "window closed".to_string()
        }
    }
}

impl GroupView {
    /// Its state as status shows it: `waiting_window` while it waits for a
    /// window, else its [`GroupState`].
    pub fn state_str(&self) -> &'static str {
        match &self.window {
            Some(WindowView { waiting_until: Some(_), .. }) if self.state.is_open() => "waiting_window",
            Some(_) | None => self.state.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub host: HostId,
    pub group: String,
    pub state: HostState,
    /// Installed version of the rollout's component (last reported).
    pub version: Option<String>,
    /// Name of the step (or rollback step) running now, if any.
    pub current_step: Option<String>,
    /// Why the host failed or was rolled back, or the last step's message.
    pub message: String,
    /// The entry's key ([`HostPlan::key`]): the host id, or `host@group`
    /// for a host running a hook.
    #[serde(default)]
    pub key: String,
    /// Values this entry's steps captured, by name.
    #[serde(default)]
    pub captured: BTreeMap<String, String>,
}

mod change;
pub use change::{ChangeTracker, RolloutChange};

impl Engine {
    /// [`Engine::view`] with what depends on the time: when the window
    /// open for each group's next pending host closes.
    pub fn view_at(&self, now: UnixMillis) -> RolloutView {
        self.build_view(Some(now))
    }

    /// A summary for status displays. O(hosts): watchers follow
    /// [`RolloutChange`]s from a [`ChangeTracker`] instead of asking for
    /// this after every event.
    pub fn view(&self) -> RolloutView {
        self.build_view(None)
    }

    fn build_view(&self, now: Option<UnixMillis>) -> RolloutView {
        let counts = self.group_counts();
        RolloutView {
            state: self.state,
            message: self.message.clone(),
            groups: counts.iter().enumerate().map(|(g, c)| self.group_view(g, c, now)).collect(),
            hosts: (0..self.hosts.len()).map(|i| self.host_view(i)).collect(),
            backups: self.backup_views(0),
        }
    }

    /// Every group's host counts, walking every host once. O(hosts).
    fn group_counts(&self) -> Vec<HostCounts> {
        let mut counts = vec![HostCounts::default(); self.spec.groups.len()];
        for (gi, spec) in self.spec.groups.iter().enumerate() {
            for &i in &spec.hosts {
                counts[gi].add(&self.hosts[i].state);
            }
        }
        counts
    }

    /// Group `gi`'s view with `counts` as its host counts; `now` (when
    /// given) tells when its open window closes. O(its windows), not O(its hosts).
    fn group_view(&self, gi: usize, counts: &HostCounts, now: Option<UnixMillis>) -> GroupView {
        let (spec, g) = (&self.spec.groups[gi], &self.groups[gi]);
        let mut window = self.spec.windows.as_ref().and_then(|w| w.group(gi)).map(|w| WindowView {
            windows: w.open.iter().map(|r| r.describe()).collect(),
            timezone: w.timezone.clone(),
            waiting_until: g.window_wait,
            closes_at: None,
            overridden_by: self.windows_overridden.clone(),
        });
        if let (Some(now), Some(windows), Some(w)) = (now, self.spec.windows.as_ref(), window.as_mut())
            && let Some(&i) = g.order.get(g.next)
            && let Some((cal, _)) = windows.calendar(gi, i)
        {
            w.closes_at = cal.open_at(schedule::to_utc(now.0)).map(|t| UnixMillis(schedule::to_millis(t)));
        }
        GroupView {
            name: spec.name.clone(),
            state: g.state,
            done: counts.done,
            running: counts.running,
            failed: counts.failed,
            rolled_back: counts.rolled_back,
            pending: counts.pending,
            total: spec.hosts.len(),
            canaries: g.canaries,
            promote_at: match g.state {
                GroupState::CanarySoak => g.promote_at,
                GroupState::Waiting
                | GroupState::Canary
                | GroupState::AwaitingApproval
                | GroupState::Running
                | GroupState::Succeeded
                | GroupState::Failed
                | GroupState::Skipped
                | GroupState::RollingBack
                | GroupState::RolledBack
                | GroupState::RollbackFailed => None,
            },
            window,
        }
    }

    /// The view of host entry `i` (an index into [`RolloutSpec::hosts`]):
    /// what [`RolloutView::hosts`]`[i]` shows. It depends only on that
    /// entry's tracking state and the spec, so it costs O(1) in the fleet's
    /// size. Panics if `i` is out of range.
    ///
    /// [`RolloutSpec::hosts`]: crate::model::RolloutSpec::hosts
    pub fn host_view(&self, i: usize) -> HostView {
        let (spec, h) = (&self.spec.hosts[i], &self.hosts[i]);
        HostView {
            host: spec.host.clone(),
            group: self.spec.groups.get(h.group).map_or_else(String::new, |g| g.name.clone()),
            state: h.state.clone(),
            version: self.version_of(i).map(str::to_string),
            current_step: match &h.state {
                HostState::Running { step, .. } => Some(spec.steps[*step].name.clone()),
                HostState::RollingBack { step, .. } => Some(h.rollback[*step].name.clone()),
                // After its switchover the leader is asked once more,
                // to confirm it handed the leadership over.
                HostState::Probing { after_switchover: true, .. } => {
                    Some("switchover: confirming the leadership moved".to_string())
                }
                HostState::Probing { step, .. } | HostState::LeaderUnknown { step, .. } => {
                    Some(format!("leader check before {}", spec.steps[*step].name))
                }
                HostState::SwitchingOver { index, .. } => Some(format!("switchover: {}", spec.switchover[*index].name)),
                HostState::Held { step } | HostState::AtBarrier { step } => {
                    Some(format!("waiting before {}", spec.steps[*step].name))
                }
                HostState::Pending
                | HostState::Soaking { .. }
                | HostState::Succeeded
                | HostState::Failed { .. }
                | HostState::Skipped
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => None,
            },
            message: h.message.clone(),
            key: spec.key().to_string(),
            captured: h.captured.clone(),
        }
    }

    /// The views of the backups taken, from the `from`th on (backups are
    /// only ever appended).
    fn backup_views(&self, from: usize) -> Vec<BackupView> {
        self.backups
            .iter()
            .skip(from)
            .map(|(i, step, record, at)| BackupView {
                host: self.spec.hosts[*i].host.clone(),
                key: self.key(*i),
                group: self.spec.groups.get(self.hosts[*i].group).map_or_else(String::new, |g| g.name.clone()),
                step: self.spec.hosts[*i].steps[*step].name.clone(),
                location: record.location.clone(),
                size_bytes: record.size_bytes,
                at: *at,
            })
            .collect()
    }
}

/// A group's host counts, as [`GroupView`] shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HostCounts {
    done: usize,
    running: usize,
    failed: usize,
    rolled_back: usize,
    pending: usize,
}

/// Which of [`HostCounts`]' counters a host is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Pending,
    Running,
    Done,
    Failed,
    RolledBack,
}

impl Counted {
    fn of(state: &HostState) -> Counted {
        match state {
            HostState::Pending | HostState::Skipped => Counted::Pending,
            HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::RollingBack { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. } => Counted::Running,
            HostState::Succeeded => Counted::Done,
            HostState::Failed { .. } => Counted::Failed,
            HostState::RolledBack | HostState::RollbackFailed { .. } => Counted::RolledBack,
        }
    }
}

impl HostCounts {
    fn slot(&mut self, c: Counted) -> &mut usize {
        match c {
            Counted::Pending => &mut self.pending,
            Counted::Running => &mut self.running,
            Counted::Done => &mut self.done,
            Counted::Failed => &mut self.failed,
            Counted::RolledBack => &mut self.rolled_back,
        }
    }

    fn add(&mut self, state: &HostState) {
        *self.slot(Counted::of(state)) += 1;
    }
}

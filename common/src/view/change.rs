//! Changes to a rollout's view, so watchers need not rebuild it per batch.
//!
//! A full [`RolloutView`] lists every host: building one after every batch
//! of events costs O(hosts) per batch, which at 10,000 hosts and hundreds of
//! batches a second is most of a coordinator's work while anyone watches.
//! Instead the runtime keeps a [`ChangeTracker`] beside each engine and,
//! after each batch, asks it for a [`RolloutChange`]: the rollout's state
//! and message, the groups whose view changed and the host entries the
//! engine touched ([`Engine::take_changed_hosts`]), plus backups taken since.
//! That costs O(hosts touched + groups). A watcher starts from one full
//! view and [`RolloutChange::apply`]s each change in order.
//!
//! Group counts are kept by the tracker (one counter move per touched
//! host), not recounted by walking the hosts, so a change stays O(groups)
//! however large the groups are.

use serde::{Deserialize, Serialize};

use super::{BackupView, Counted, GroupView, HostCounts, HostView, RolloutView};
use crate::engine::Engine;
use crate::engine::state::RolloutState;
use crate::model::UnixMillis;

/// What changed in a rollout's view since the previous change (or since
/// the full view a [`ChangeTracker`] started from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutChange {
    /// The rollout's state now (always sent: it is one word).
    pub state: RolloutState,
    /// The rollout's status line now.
    pub message: String,
    /// When the last event of the change was handled (the time group
    /// windows' `closes_at` were evaluated at).
    pub updated: UnixMillis,
    /// Groups whose view changed, with their index in [`RolloutView::groups`].
    pub groups: Vec<(usize, GroupView)>,
    /// Host entries whose view may have changed, with their index in
    /// [`RolloutView::hosts`], ascending.
    pub hosts: Vec<(usize, HostView)>,
    /// The index in [`RolloutView::backups`] of `backups[0]`: backups are
    /// only appended, so this is how many the previous view had.
    pub backups_from: usize,
    /// Backups taken since the previous change.
    pub backups: Vec<BackupView>,
}

impl RolloutChange {
    /// Bring `view` (the view before this change) up to date. Applying a
    /// change twice gives the same view as applying it once. Indices out of
    /// `view`'s range (a view of another rollout) are ignored.
    pub fn apply(&self, view: &mut RolloutView) {
        view.state = self.state;
        view.message.clone_from(&self.message);
        for (i, g) in &self.groups {
            if let Some(slot) = view.groups.get_mut(*i) {
                slot.clone_from(g);
            }
        }
        for (i, h) in &self.hosts {
            if let Some(slot) = view.hosts.get_mut(*i) {
                slot.clone_from(h);
            }
        }
        view.backups.truncate(self.backups_from);
        view.backups.extend(self.backups.iter().cloned());
    }

    /// No group, host or backup changed (the header may still have).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.hosts.is_empty() && self.backups.is_empty()
    }
}

/// Turns an engine's touched hosts into [`RolloutChange`]s, keeping the
/// group counts and the last group views it reported.
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    /// The counter each host entry was last counted in.
    counted: Vec<Counted>,
    /// Each group's counts, as of the last change.
    counts: Vec<HostCounts>,
    /// Each group's view, as last reported.
    groups: Vec<GroupView>,
    /// Backups reported so far.
    backups: usize,
}

impl ChangeTracker {
    /// Start tracking `engine`: its full view at `now` (O(hosts), once)
    /// and a tracker whose first [`ChangeTracker::change`] is relative to
    /// that view. Drains the engine's touched hosts, which the view covers.
    pub fn start(engine: &mut Engine, now: UnixMillis) -> (ChangeTracker, RolloutView) {
        engine.take_changed_hosts();
        let view = engine.view_at(now);
        let counts = engine.group_counts();
        let counted = engine.hosts.iter().map(|h| Counted::of(&h.state)).collect();
        let tracker = ChangeTracker { counted, counts, groups: view.groups.clone(), backups: view.backups.len() };
        (tracker, view)
    }

    /// Nobody watches: drain `engine`'s touched hosts and keep the group
    /// counts, building no views. The next [`ChangeTracker::change`] is
    /// then relative to a full view taken after this call (a new watcher's);
    /// it may repeat backups such a view has, which [`RolloutChange::apply`]
    /// handles. O(hosts touched).
    pub fn absorb(&mut self, engine: &mut Engine) {
        for i in engine.take_changed_hosts() {
            self.recount(engine, i);
        }
    }

    /// Move host `i` to the counter its state now falls in.
    fn recount(&mut self, engine: &Engine, i: usize) {
        let (Some(old), Some(h)) = (self.counted.get_mut(i), engine.hosts.get(i)) else { return };
        let new = Counted::of(&h.state);
        if *old != new {
            if let Some(c) = self.counts.get_mut(h.group) {
                let from = c.slot(*old);
                *from = from.saturating_sub(1);
                *c.slot(new) += 1;
            }
            *old = new;
        }
    }

    /// What changed in `engine`'s view since the tracker last reported,
    /// with group windows evaluated at `now`. O(hosts touched + groups).
    pub fn change(&mut self, engine: &mut Engine, now: UnixMillis) -> RolloutChange {
        let touched = engine.take_changed_hosts();
        let mut hosts = Vec::with_capacity(touched.len());
        let hosts_known = self.counted.len();
        for i in touched.into_iter().filter(|&i| i < hosts_known) {
            self.recount(engine, i);
            hosts.push((i, engine.host_view(i)));
        }
        let mut groups = Vec::new();
        for (gi, last) in self.groups.iter_mut().enumerate() {
            let Some(counts) = self.counts.get(gi) else { continue };
            let view = engine.group_view(gi, counts, Some(now));
            if *last != view {
                last.clone_from(&view);
                groups.push((gi, view));
            }
        }
        let backups_from = self.backups;
        let backups = engine.backup_views(backups_from);
        self.backups += backups.len();
        RolloutChange {
            state: engine.state(),
            message: engine.message().to_string(),
            updated: now,
            groups,
            hosts,
            backups_from,
            backups,
        }
    }
}

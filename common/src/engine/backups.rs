//! Backups: recording the ones `backup` steps took, and the guard that keeps migrations behind one.

use crate::engine::Engine;
use crate::model::{BackupRecord, UnixMillis};

impl Engine {
    /// Keep what a successful `backup` step (step `step` of host entry `i`)
    /// reports; `Err` when it reports no backup, or an empty one. Other
    /// steps' reports are ignored.
    pub(crate) fn record_backup(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        reported: Option<&BackupRecord>,
    ) -> Result<(), String> {
        let spec = &self.spec.hosts[i].steps[step];
        if !spec.kind.reports_backup() {
            return Ok(());
        }
        match reported {
            Some(r) if r.size_bytes > 0 => {
                self.backups.push((i, step, r.clone(), now));
                Ok(())
            }
            Some(r) => Err(format!("backup step {}: the backup at {} is empty (0 bytes)", spec.name, r.location)),
            None => Err(format!("backup step {}: the agent reported no backup (where and how large)", spec.name)),
        }
    }

    /// `Err` (why) when step `step` of host entry `i` is a migration the
    /// rollout may not run yet: `require_backup` is set and no backup
    /// covering it succeeded — one taken earlier by the same entry, or by
    /// any host of a group the entry's group runs after (directly or not).
    pub(crate) fn backup_guard(&self, i: usize, step: usize) -> Result<(), String> {
        let plan = &self.spec.hosts[i];
        if !self.spec.require_backup || !plan.migrations.contains(&step) {
            return Ok(());
        }
        let g = self.hosts[i].group;
        let upstream = self.upstream_groups(g);
        let covered = self.backups.iter().any(|(b, b_step, _, _)| {
            (*b == i && *b_step < step) || upstream.get(self.hosts[*b].group).copied().unwrap_or(false)
        });
        if covered {
            return Ok(());
        }
        Err(format!(
            "step {} is a migration and the rollout requires a backup first, but no backup has succeeded before it on {} nor in a group that group {} runs after: the step was not run",
            plan.steps[step].name,
            plan.key(),
            self.spec.groups[g].name
        ))
    }

    /// The groups group `g` runs after, directly or not (by index).
    pub(crate) fn upstream_groups(&self, g: usize) -> Vec<bool> {
        let mut seen = vec![false; self.spec.groups.len()];
        let mut stack: Vec<usize> = self.spec.groups[g].after.clone();
        while let Some(d) = stack.pop() {
            if let Some(s) = seen.get_mut(d)
                && !*s
            {
                *s = true;
                stack.extend(self.spec.groups[d].after.iter().copied());
            }
        }
        seen
    }
}

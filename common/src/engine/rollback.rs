//! Rolling back in place: a host's undo list, group rollbacks in reverse order, rolling back everything.

use crate::engine::Engine;
use crate::engine::events::Action;
use crate::engine::state::{GroupState, HostState, RolloutState};
use crate::model::UnixMillis;
use std::collections::VecDeque;

impl Engine {
    /// Roll back every host the rollout started, in reverse DAG order.
    pub(crate) fn start_rollback_all(&mut self, reason: String, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting => {}
            RolloutState::RollingBack
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => return,
        }
        self.state = RolloutState::RollingBack;
        self.message = format!("rolling back: {reason}");
        self.rollback_reason = Some(reason);
        self.end_soaks(out);
        for g in 0..self.groups.len() {
            if self.groups[g].next > 0 {
                self.queue_group_rollback(g);
            }
        }
    }

    /// Put every host group `g` started in its rollback queue, last first.
    pub(crate) fn queue_group_rollback(&mut self, g: usize) {
        let rt = &mut self.groups[g];
        if matches!(rt.state, GroupState::RollingBack | GroupState::RolledBack | GroupState::RollbackFailed) {
            return;
        }
        if rt.state.is_open() {
            self.open_groups -= 1;
        }
        rt.state = GroupState::RollingBack;
        rt.rollback_queue = rt.order[..rt.next].iter().rev().copied().collect();
        self.rollback_queued += rt.rollback_queue.len();
        self.wake.push(g);
    }

    /// Start rolling back host `i` (which ended its upgrade), keeping or
    /// taking a slot. Returns false when there is nothing to roll back.
    pub(crate) fn begin_rollback(&mut self, i: usize, now: UnixMillis, why: String, out: &mut Vec<Action>) -> bool {
        let h = &mut self.hosts[i];
        if h.rollback_considered {
            return false;
        }
        h.rollback_considered = true;
        let plan = self.spec.hosts[i].rollback_plan(h.steps_ok);
        if plan.is_empty() {
            h.message = if h.message.is_empty() {
                "nothing to roll back".into()
            } else {
                format!("{}; nothing to roll back", h.message)
            };
            return false;
        }
        h.rollback_attempts = vec![0; plan.len()];
        h.rollback = plan;
        h.message = format!("rolling back: {why}");
        self.enter_flight(i);
        self.dispatch_rollback(i, 0, now, out);
        true
    }

    pub(crate) fn rollback_failed(&mut self, i: usize, step: Option<usize>, reason: String, out: &mut Vec<Action>) {
        self.leave_flight(i);
        let name = step.and_then(|s| self.hosts[i].rollback.get(s)).map_or("?", |s| s.name.as_str());
        self.hosts[i].message = format!("rollback failed at {name}: {reason}");
        let state = HostState::RollbackFailed { step, reason };
        self.hosts[i].state = state.clone();
        self.rollback_failed += 1;
        self.groups[self.hosts[i].group].rollback_failed += 1;
        out.push(Action::HostDone { host: self.key(i), state });
    }

    /// Roll back queued hosts of group `g` while its window has room, once
    /// every group depending on it has finished rolling back. When the
    /// group's rollback is over, the groups it depends on are looked at next.
    pub(crate) fn fill_rollback(
        &mut self,
        g: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
        queue: &mut VecDeque<usize>,
    ) {
        let blocked = self.groups[g].dependents.iter().any(|&d| self.groups[d].state == GroupState::RollingBack);
        if blocked {
            return;
        }
        let max_parallel = self.spec.groups[g].steady_window();
        let why = self.rollback_reason.clone().or_else(|| self.halt_reason.clone()).unwrap_or_default();
        while self.groups[g].in_flight < max_parallel {
            let Some(&i) = self.groups[g].rollback_queue.front() else { break };
            match self.hosts[i].state {
                // Still upgrading: its rollback waits for its steps to end.
                HostState::Running { .. }
                | HostState::Soaking { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. }
                | HostState::Held { .. }
                | HostState::LeaderUnknown { .. }
                | HostState::AtBarrier { .. } => break,
                HostState::Succeeded | HostState::Failed { .. } => {
                    self.begin_rollback(i, now, why.clone(), out);
                }
                HostState::Pending
                | HostState::Skipped
                | HostState::RollingBack { .. }
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => {}
            }
            self.groups[g].rollback_queue.pop_front();
            self.rollback_queued -= 1;
        }
        let rt = &self.groups[g];
        if rt.rollback_queue.is_empty() && rt.in_flight == 0 {
            self.groups[g].state =
                if rt.rollback_failed > 0 { GroupState::RollbackFailed } else { GroupState::RolledBack };
            queue.extend(self.spec.groups[g].after.iter().copied());
        }
    }

    /// ", N hosts rolled back, M rollbacks failed" when any rollback ended.
    pub(crate) fn rollback_summary(&self) -> String {
        match (self.rolled_back, self.rollback_failed) {
            (0, 0) => String::new(),
            (n, 0) => format!("; {n} hosts rolled back"),
            (n, f) => format!("; {n} hosts rolled back, {f} rollbacks failed"),
        }
    }
}

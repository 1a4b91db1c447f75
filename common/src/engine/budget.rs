//! Failure budgets: a failed host, its group's and the rollout's budgets, and what `on_failure` does.

use crate::engine::Engine;
use crate::engine::events::Action;
use crate::engine::state::{GroupState, HostState, RolloutState};
use crate::model::UnixMillis;

impl Engine {
    pub(crate) fn host_failed(
        &mut self,
        i: usize,
        now: UnixMillis,
        step: Option<usize>,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        self.leave_flight(i);
        if let HostState::Held { .. } = self.hosts[i].state {
            self.groups[self.hosts[i].group].held -= 1;
        }
        let state = HostState::Failed { step, reason: reason.clone() };
        self.hosts[i].state = state.clone();
        self.hosts[i].message = reason.clone();
        out.push(Action::HostDone { host: self.key(i), state });
        let g = self.hosts[i].group;
        self.groups[g].failed += 1;
        self.failed_total += 1;
        let mode = self.spec.groups[g].on_failure;
        if mode.rolls_back_hosts() {
            // The host takes back the slot it just gave up.
            self.begin_rollback(i, now, reason.clone(), out);
        }

        let name = &self.spec.groups[g].name;
        let budget = self.spec.groups[g].max_failures;
        let group_reason = match self.groups[g].state {
            GroupState::Canary => Some(format!("canary {} of group {name} failed: {reason}", self.spec.hosts[i].host)),
            GroupState::Running if self.groups[g].failed > budget => Some(format!(
                "group {name} has {} failed hosts, more than its budget of {budget}",
                self.groups[g].failed
            )),
            GroupState::Running
            | GroupState::Waiting
            | GroupState::AwaitingApproval
            | GroupState::CanarySoak
            | GroupState::Succeeded
            | GroupState::Failed
            | GroupState::Skipped
            | GroupState::RollingBack
            | GroupState::RolledBack
            | GroupState::RollbackFailed => None,
        };
        if let Some(group_reason) = group_reason {
            self.groups[g].state = GroupState::Failed;
            self.open_groups -= 1;
            self.escalate(g, mode, group_reason, out);
        }
        if let Some(budget) = self.spec.max_failures
            && self.failed_total > budget
            && !self.rollout_budget_exceeded
        {
            self.rollout_budget_exceeded = true;
            let reason =
                format!("the rollout has {} failed hosts, more than its budget of {budget}", self.failed_total);
            self.escalate(g, self.spec.on_failure, reason, out);
        }
        if self.same_version(i) {
            self.member_failed(i, now, out);
        }
    }

    /// A budget was exceeded (or a canary failed) in group `g`: act on `mode`.
    pub(crate) fn escalate(&mut self, g: usize, mode: crate::model::OnFailure, reason: String, out: &mut Vec<Action>) {
        use crate::model::OnFailure;
        match mode {
            OnFailure::Halt | OnFailure::RollbackHost => self.halt(reason, out),
            OnFailure::RollbackGroup => {
                self.halt(reason, out);
                if self.groups[g].next > 0 {
                    self.queue_group_rollback(g);
                }
            }
            OnFailure::RollbackAll => self.start_rollback_all(reason, out),
        }
    }

    pub(crate) fn halt(&mut self, reason: String, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Running | RolloutState::Paused => {
                self.state = RolloutState::Halting;
                self.message = format!("halting: {reason}");
                self.halt_reason = Some(reason);
                self.end_soaks(out);
            }
            RolloutState::Halting | RolloutState::Aborting | RolloutState::RollingBack => {
                self.halt_reason.get_or_insert(reason);
            }
            RolloutState::Pending
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => {}
        }
    }
}

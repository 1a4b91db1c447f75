//! The end of a rollout: when it is over, the hosts and groups it skips, the final message.

use crate::engine::Engine;
use crate::engine::events::Action;
use crate::engine::state::{GroupState, HostState, RolloutState};

impl Engine {
    pub(crate) fn maybe_finish(&mut self, out: &mut Vec<Action>) {
        if self.in_flight > 0 || self.rollback_queued > 0 {
            return;
        }
        match self.state {
            RolloutState::Halting => {
                let reason = self.halt_reason.clone().unwrap_or_default();
                let message = format!("failed: {reason}{}", self.rollback_summary());
                self.finish(RolloutState::Failed, message, out);
            }
            RolloutState::Aborting => {
                let by = self.aborted_by.clone().unwrap_or_default();
                let message = format!("aborted by {by}{}", self.rollback_summary());
                self.finish(RolloutState::Aborted, message, out);
            }
            RolloutState::RollingBack => {
                let reason = self.rollback_reason.clone().unwrap_or_default();
                if self.rollback_failed == 0 {
                    let message = format!("rolled back: {reason}{}", self.rollback_summary());
                    self.finish(RolloutState::RolledBack, message, out);
                } else {
                    let message = format!("failed: rollback did not complete ({reason}){}", self.rollback_summary());
                    self.finish(RolloutState::Failed, message, out);
                }
            }
            RolloutState::Running | RolloutState::Paused if self.open_groups == 0 => {
                let upgraded = self.spec.groups.iter().filter(|g| !g.hook).map(|g| g.hosts.len()).sum::<usize>();
                let message = format!("succeeded: {upgraded} hosts upgraded{}", self.rollback_summary());
                self.finish(RolloutState::Succeeded, message, out);
            }
            RolloutState::Running => {
                let promoting = self
                    .groups
                    .iter()
                    .any(|g| matches!(g.state, GroupState::AwaitingApproval | GroupState::CanarySoak));
                let waiting_window = self.groups.iter().any(|g| g.window_wait.is_some() && g.state.is_open());
                if promoting || waiting_window {
                    return;
                }
                // Everything startable has started and finished, yet groups
                // are open: their dependencies can never succeed.
                let stuck: Vec<&str> = (0..self.groups.len())
                    .filter(|&g| self.groups[g].state == GroupState::Waiting)
                    .map(|g| self.spec.groups[g].name.as_str())
                    .collect();
                let message = format!("failed: groups that can never start: {}", stuck.join(", "));
                self.finish(RolloutState::Failed, message, out);
            }
            RolloutState::Pending
            | RolloutState::Paused
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => {}
        }
    }

    /// Skip whatever never started and enter the terminal `state`.
    pub(crate) fn finish(&mut self, state: RolloutState, message: String, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            let order = self.groups[g].order.clone();
            for &i in &order[..self.groups[g].next] {
                // Only a rollout that ended while paused leaves a host held.
                if let HostState::Held { step } = self.hosts[i].state {
                    self.groups[g].held -= 1;
                    let reason = format!("held mid-upgrade when the rollout {}", skip_cause(state));
                    self.hosts[i].message = reason.clone();
                    let st = HostState::Failed { step: Some(step), reason };
                    self.hosts[i].state = st.clone();
                    self.groups[g].failed += 1;
                    out.push(Action::HostDone { host: self.key(i), state: st });
                }
            }
            for &i in &order[self.groups[g].next..] {
                self.hosts[i].state = HostState::Skipped;
                self.hosts[i].message = format!("skipped: the rollout {}", skip_cause(state));
                self.groups[g].skipped += 1;
                out.push(Action::HostDone { host: self.key(i), state: HostState::Skipped });
            }
            self.groups[g].next = order.len();
            if self.groups[g].state.is_open() {
                self.groups[g].state = GroupState::Skipped;
                self.open_groups -= 1;
            }
        }
        self.state = state;
        self.message = message;
        out.push(Action::Finished { state });
    }
}

pub(crate) fn skip_cause(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Failed => "failed",
        RolloutState::Aborted => "was aborted",
        RolloutState::RolledBack => "was rolled back",
        // Only reachable for hosts outside every group of a malformed spec.
        RolloutState::Succeeded => "ended",
        RolloutState::Pending
        | RolloutState::Running
        | RolloutState::Paused
        | RolloutState::Halting
        | RolloutState::Aborting
        | RolloutState::RollingBack => "stopped",
    }
}

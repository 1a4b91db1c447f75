//! Step results: what a finished execution does to its host (next step, failure, installed version).

use crate::capture;
use crate::engine::Engine;
use crate::engine::events::{Action, Timer};
use crate::engine::execution_id::ExecutionId;
use crate::engine::state::{Exec, HostState};
use crate::model::{StepOutcome, StepStatus, UnixMillis};
use std::collections::VecDeque;

impl Engine {
    pub(crate) fn on_step_finished(
        &mut self,
        now: UnixMillis,
        execution_id: &ExecutionId,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        // A duplicate or stale report (the host has moved on) changes nothing.
        let Some((i, exec, index)) = self.awaited(execution_id) else { return };
        match exec {
            Exec::Step => self.on_upgrade_step_finished(now, i, index, outcome, out),
            Exec::Rollback => self.on_rollback_step_finished(now, i, index, outcome, out),
            Exec::LeaderCheck { after_switchover } => {
                self.on_leader_check(now, i, index, after_switchover, outcome, out)
            }
            Exec::Switchover { before } => self.on_switchover_finished(now, i, before, index, outcome, out),
        }
        let g = self.hosts[i].group;
        self.progress(now, VecDeque::from([g]), out);
    }

    pub(crate) fn on_upgrade_step_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        if !outcome.status.is_success() {
            let reason = failure_reason(outcome);
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        out.push(Action::StepSucceeded {
            host: self.spec.hosts[i].host.clone(),
            group: self.spec.groups.get(self.hosts[i].group).map_or_else(String::new, |g| g.name.clone()),
            step: self.spec.hosts[i].steps[step].name.clone(),
            duration_ms: outcome.duration_ms,
        });
        if let Some(c) = self.spec.hosts[i].capture(step) {
            match capture::extract(c, &outcome.stdout_tail) {
                Ok(value) => {
                    if self.spec.groups.get(self.hosts[i].group).is_some_and(|g| g.hook) {
                        self.hook_captured.insert(c.name.clone(), value.clone());
                    }
                    self.hosts[i].captured.insert(c.name.clone(), value);
                }
                Err(reason) => {
                    self.host_failed(i, now, Some(step), reason, out);
                    return;
                }
            }
        }
        if let Err(reason) = self.record_backup(now, i, step, outcome.backup.as_ref()) {
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        let declared = self.spec.hosts[i].installs(step);
        self.record_installed(i, outcome.installed, declared);
        self.hosts[i].message = outcome.message;
        self.hosts[i].steps_ok = step + 1;
        if let Some(c) = self.cluster_rt(i) {
            c.deferrals = 0;
        }
        if step + 1 < self.spec.hosts[i].steps.len() {
            if self.same_version(i) {
                self.hosts[i].state = HostState::AtBarrier { step: step + 1 };
                self.at_barrier(i, now, out);
            } else {
                self.next_step(i, step + 1, now, out);
            }
            return;
        }
        let soak = self.spec.groups[self.hosts[i].group].soak;
        if soak.is_zero() || self.is_stopping() {
            self.host_succeeded(i, out);
        } else {
            let until = now.plus(soak);
            self.hosts[i].state = HostState::Soaking { until };
            out.push(Action::Schedule { at: until, timer: Timer::SoakOver { host: self.key(i) } });
        }
    }

    pub(crate) fn on_rollback_step_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        if !outcome.status.is_success() {
            let reason = failure_reason(outcome);
            self.rollback_failed(i, Some(step), reason, out);
            return;
        }
        // An archive rollback names the version it goes back to; the agent's
        // report, when it makes one, wins.
        let fallback = self.hosts[i].rollback[step].kind.restores();
        self.record_installed(i, outcome.installed, fallback);
        if step + 1 < self.hosts[i].rollback.len() {
            self.dispatch_rollback(i, step + 1, now, out);
            return;
        }
        self.leave_flight(i);
        self.hosts[i].state = HostState::RolledBack;
        self.hosts[i].message = match self.hosts[i].message.strip_prefix("rolling back: ") {
            Some(why) => format!("rolled back: {why}"),
            None => "rolled back".to_string(),
        };
        self.rolled_back += 1;
        out.push(Action::HostDone { host: self.key(i), state: HostState::RolledBack });
    }

    /// Keep the version a successful execution reports for the rollout's component.
    pub(crate) fn record_installed(
        &mut self,
        i: usize,
        reported: Option<(String, String)>,
        fallback: Option<(String, String)>,
    ) {
        if let Some((component, version)) = reported.or(fallback) {
            let wanted = self.spec.component.as_ref().is_none_or(|c| *c == component);
            if wanted {
                self.hosts[i].installed = Some(version);
            }
        }
    }

    /// Host `i`'s current execution (`exec`, `index`) failed for `reason`
    /// without a result: its upgrade (or its rollback) fails.
    pub(crate) fn execution_failed(
        &mut self,
        i: usize,
        now: UnixMillis,
        exec: Exec,
        index: usize,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        match exec {
            Exec::Step => self.host_failed(i, now, Some(index), reason, out),
            Exec::Rollback => self.rollback_failed(i, Some(index), reason, out),
            Exec::LeaderCheck { .. } => self.host_failed(i, now, Some(index), format!("leader check: {reason}"), out),
            Exec::Switchover { before } => {
                let name = self.spec.hosts[i].switchover[index].name.clone();
                self.host_failed(i, now, Some(before), format!("switchover step {name}: {reason}"), out)
            }
        }
    }
}

/// Why an execution failed: the agent's message, or a default for its status.
pub(crate) fn failure_reason(outcome: StepOutcome) -> String {
    if outcome.message.is_empty() { default_reason(outcome.status).to_string() } else { outcome.message }
}

pub(crate) fn default_reason(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "step succeeded",
        StepStatus::Failed => "step failed",
        StepStatus::Unsupported => "step kind not supported by the agent",
        StepStatus::TimedOut => "step timed out on the agent",
    }
}

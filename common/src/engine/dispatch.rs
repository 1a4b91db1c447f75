//! Sending executions to agents: ids, attempts, deadlines, captured values substituted, re-sends.

use crate::capture;
use crate::cluster_vars;
use crate::engine::Engine;
use crate::engine::events::{Action, ClusterPurpose, STEP_GRACE, Timer};
use crate::engine::execution_id::{ExecutionId, ExecutionPart};
use crate::engine::state::{Exec, HostState};
use crate::model::{HostPlan, StepSpec, UnixMillis};
use std::time::Duration;

impl Engine {
    /// The id of attempt `attempt` of `part` of host entry `i`.
    pub(crate) fn execution_id(&self, i: usize, part: ExecutionPart, attempt: u32) -> ExecutionId {
        ExecutionId::new(&self.rollout_id, self.spec.hosts[i].key(), part, attempt)
    }

    /// The value of `{{captured.NAME}}` for host entry `i`: its own capture,
    /// else a hook's.
    pub(crate) fn captured_value(&self, i: usize, name: &str) -> Option<&str> {
        self.hosts[i].captured.get(name).or_else(|| self.hook_captured.get(name)).map(String::as_str)
    }

    /// `step` as host entry `i` runs it: captured values and the cluster's
    /// run-time values (who is upgraded) substituted.
    pub(crate) fn rendered(&self, i: usize, step: &StepSpec) -> Result<StepSpec, String> {
        capture::render_step(step, |name| self.captured_value(i, name))
            .and_then(|step| {
                cluster_vars::render_step(&step, || {
                    cluster_vars::scope_of(&self.spec, i, |j| matches!(self.hosts[j].state, HostState::Succeeded))
                })
            })
            .map_err(|e| format!("step {}: {e}", step.name))
    }

    /// The dispatch action for host `i`'s current execution, if it has one.
    pub(crate) fn send_current(&self, i: usize, resend: bool) -> Option<Action> {
        let h = &self.hosts[i];
        let plan: &HostPlan = &self.spec.hosts[i];
        let (exec, index, execution_id, _) = h.state.current()?;
        let spec = match exec {
            Exec::Step => &plan.steps[index],
            Exec::Rollback => &h.rollback[index],
            Exec::LeaderCheck { .. } => plan.leader_check.as_ref()?,
            Exec::Switchover { .. } => &plan.switchover[index],
        };
        // Every dispatch path checked that it renders before issuing it.
        let step = self.rendered(i, spec).unwrap_or_else(|_| spec.clone());
        let (host, execution_id) = (plan.host.clone(), execution_id.clone());
        Some(match exec {
            Exec::Step => Action::Dispatch { host, execution_id, step_index: index, step, resend },
            Exec::Rollback => Action::DispatchRollback { host, execution_id, rollback_index: index, step, resend },
            Exec::LeaderCheck { after_switchover } => Action::DispatchCluster {
                host,
                execution_id,
                purpose: ClusterPurpose::LeaderCheck { before: index, after_switchover },
                step,
                resend,
            },
            Exec::Switchover { before } => Action::DispatchCluster {
                host,
                execution_id,
                purpose: ClusterPurpose::Switchover { before, index },
                step,
                resend,
            },
        })
    }

    /// Issue a new execution of `step` on host `i` and arm its deadline.
    pub(crate) fn dispatch(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.attempts[step] += 1;
        let attempt = h.attempts[step];
        let execution_id = self.execution_id(i, ExecutionPart::Step(step), attempt);
        let timeout = self.spec.hosts[i].steps[step].timeout;
        let ready = self.rendered(i, &self.spec.hosts[i].steps[step]).and_then(|_| self.backup_guard(i, step));
        if let Err(reason) = ready {
            // Only a spec the plan did not check gets here (a missing
            // captured value, a migration with no backup before it). The host
            // holds its slot; mark it running so failing it gives the slot back.
            self.hosts[i].state =
                HostState::Running { step, execution_id: execution_id.clone(), since: now, lost_since: None };
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        self.issue(i, Exec::Step, step, execution_id, timeout, now, out);
    }

    /// Issue a new execution of rollback step `step` on host `i`.
    pub(crate) fn dispatch_rollback(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.rollback_attempts[step] += 1;
        let attempt = h.rollback_attempts[step];
        let execution_id = self.execution_id(i, ExecutionPart::Rollback(step), attempt);
        let timeout = self.hosts[i].rollback[step].timeout;
        if let Err(reason) = self.rendered(i, &self.hosts[i].rollback[step]) {
            // A captured value its rollback needs was never captured (the
            // capturing step did not succeed).
            self.hosts[i].state =
                HostState::RollingBack { step, execution_id: execution_id.clone(), since: now, lost_since: None };
            self.rollback_failed(i, Some(step), reason, out);
            return;
        }
        self.issue(i, Exec::Rollback, step, execution_id, timeout, now, out);
    }

    /// Make `execution_id` host `i`'s current execution, send it, arm its deadlines.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn issue(
        &mut self,
        i: usize,
        exec: Exec,
        index: usize,
        execution_id: ExecutionId,
        timeout: Duration,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let previous = self.executions.insert(execution_id.clone(), i);
        debug_assert!(previous.is_none(), "execution id {execution_id} issued twice");
        let deadline = now.plus(timeout).plus(STEP_GRACE);
        let h = &mut self.hosts[i];
        h.step_deadline = deadline;
        // The outage, if any, carries over from the previous step; a host
        // starting (or starting its rollback) while its agent is gone gets its
        // deadline counted from now.
        let lost_since = match h.state.current() {
            Some((_, _, _, lost_since)) => lost_since,
            None => h.agent_lost_since.map(|_| now),
        };
        let id = execution_id.clone();
        h.state = match exec {
            Exec::Step => HostState::Running { step: index, execution_id: id, since: now, lost_since },
            Exec::Rollback => HostState::RollingBack { step: index, execution_id: id, since: now, lost_since },
            Exec::LeaderCheck { after_switchover } => {
                HostState::Probing { step: index, after_switchover, execution_id: id, since: now, lost_since }
            }
            Exec::Switchover { before } => {
                HostState::SwitchingOver { step: before, index, execution_id: id, since: now, lost_since }
            }
        };
        let needs_lost_deadline = lost_since.is_some() && h.lost_deadline.is_none();
        out.extend(self.send_current(i, false));
        out.push(Action::Schedule { at: deadline, timer: Timer::StepDeadline { execution_id } });
        if needs_lost_deadline {
            let at = now.plus(self.spec.host_lost_timeout);
            self.hosts[i].lost_deadline = Some(at);
            out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: self.key(i) } });
        }
    }

    /// Host `i`, which holds a slot, goes on to its step `step`: in a
    /// leader/follower cluster its leader check is asked first.
    pub(crate) fn next_step(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if self.hosts[i].cluster.is_some() && self.spec.hosts[i].leader_check.is_some() && !self.same_version(i) {
            self.hosts[i].asked_since = None;
            self.ask_leader(i, step, false, now, out);
        } else {
            self.dispatch(i, step, now, out);
        }
    }
}

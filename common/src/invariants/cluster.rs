//! The invariants' rules for `cluster` groups (see the parent module's
//! list): the per-cluster window of outstanding executions, steps only in
//! answer to a leader check, and cluster dispatches (leader checks and
//! switchover steps) that carry the spec's step.

use super::*;

impl<'a> Checker<'a> {
    /// The `cluster` rules for a new dispatch of step `step` to host `h`.
    pub(super) fn cluster_step_rules(&mut self, n: usize, h: usize, step: usize, execution_id: &ExecutionId) {
        let members = self.cluster_of[h].clone();
        if members.is_empty() {
            return;
        }
        let host = self.spec.hosts[h].host.clone();
        let g = self.group_of[h];
        let same_version = g.and_then(|g| self.spec.groups[g].cluster()).is_some_and(|c| c.same_version);
        self.outstanding(n, h, execution_id);
        if same_version {
            for &m in &members {
                let upgrading = self.hosts[m].done.is_none();
                if m != h && upgrading && self.hosts[m].steps_ok < step {
                    self.fail(format!(
                        "entry {n}: host {host} was dispatched step {step} of its same_version cluster before member {} finished step {}",
                        self.spec.hosts[m].host,
                        step.saturating_sub(1)
                    ));
                }
            }
            return;
        }
        if self.spec.hosts[h].leader_check.is_none() {
            return;
        }
        match self.hosts[h].leader_answer {
            Some((before, LeaderAnswer::Leader | LeaderAnswer::Follower))
                if before == step && self.hosts[h].leader_answer_entry == Some(n) => {}
            Some((before, LeaderAnswer::Unknown)) if before == step && self.hosts[h].leader_answer_entry == Some(n) => {
                self.fail(format!(
                    "entry {n}: host {host} was dispatched step {step} in answer to a leader check that could not tell"
                ));
                return;
            }
            Some(_) | None => {
                self.fail(format!(
                    "entry {n}: host {host} was dispatched step {step} not in answer to its leader check for that step"
                ));
                return;
            }
        }
        if self.hosts[h].leader_answer == Some((step, LeaderAnswer::Leader)) && !self.stopping_seen {
            let pending: Vec<&str> = members
                .iter()
                .filter(|&&m| m != h && self.hosts[m].done.is_none())
                .map(|&m| self.spec.hosts[m].host.as_str())
                .collect();
            if !pending.is_empty() {
                self.fail(format!(
                    "entry {n}: host {host}, its cluster's leader, was dispatched step {step} while members {} had not finished",
                    pending.join(", ")
                ));
            }
        }
    }

    /// Host `h` has a new execution outstanding: check its cluster's window.
    pub(super) fn outstanding(&mut self, n: usize, h: usize, execution_id: &ExecutionId) {
        self.hosts[h].outstanding = Some(execution_id.clone());
        let Some(g) = self.group_of[h] else { return };
        let Some(c) = self.spec.groups[g].cluster() else { return };
        let members = &self.cluster_of[h];
        let limit = if c.same_version { members.len() } else { self.spec.groups[g].steady_window() };
        let busy = members.iter().filter(|&&m| self.hosts[m].outstanding.is_some()).count();
        if busy > limit {
            self.fail(format!(
                "entry {n}: cluster of host {} had {busy} members with an execution outstanding, more than {limit}",
                self.spec.hosts[h].host
            ));
        }
    }

    /// A leader check or switchover step: the spec's step, to a cluster member.
    pub(super) fn dispatch_cluster(
        &mut self,
        n: usize,
        host: &str,
        execution_id: &ExecutionId,
        purpose: ClusterPurpose,
        step: &StepSpec,
        resend: bool,
    ) {
        let Some(h) = self.dispatch_target(n, "cluster execution", host, execution_id) else { return };
        let plan = &self.spec.hosts[h];
        let expected = match purpose {
            ClusterPurpose::LeaderCheck { .. } => plan.leader_check.as_ref(),
            ClusterPurpose::Switchover { index, .. } => plan.switchover.get(index),
        };
        if expected.and_then(|e| self.rendered(h, e)).as_ref() != Some(step) {
            self.fail(format!(
                "entry {n}: cluster execution {execution_id} for host {host} carries a step that is not the spec's ({purpose:?})"
            ));
        }
        if self.cluster_of[h].is_empty() {
            self.fail(format!(
                "entry {n}: cluster execution {execution_id} went to host {host}, which is in no cluster"
            ));
        }
        if resend {
            if self.cluster_execs.get(execution_id).map(|&(o, _)| o) != Some(h) {
                self.fail(format!(
                    "entry {n}: cluster execution {execution_id} was re-sent to host {host} but never dispatched to it"
                ));
            }
            return;
        }
        if self.cluster_execs.insert(execution_id.clone(), (h, purpose)).is_some() {
            self.fail(format!(
                "entry {n}: cluster execution {execution_id} was dispatched a second time without resend"
            ));
        }
        if let Some(state) = &self.hosts[h].done {
            self.fail(format!(
                "entry {n}: host {host} was dispatched cluster execution {execution_id} after it ended {}",
                state.as_str()
            ));
        }
        self.hosts[h].cluster_dispatched = true;
        self.outstanding(n, h, execution_id);
    }
}

//! The invariants' rules for rollbacks (see the parent module's list): a
//! host's rollback starts after its upgrade ended, in reverse DAG order,
//! with exactly the undo steps of what succeeded, each in answer to the
//! previous one.

use super::*;

impl<'a> Checker<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dispatch_rollback(
        &mut self,
        n: usize,
        event: &Event,
        host: &str,
        execution_id: &ExecutionId,
        index: usize,
        step: &StepSpec,
        resend: bool,
    ) {
        let Some(h) = self.dispatch_target(n, "rollback execution", host, execution_id) else { return };
        let group = self.group_name(h);
        if resend {
            let current = self.hosts[h].rollback.as_ref().filter(|r| r.in_flight).map(|r| r.last_execution.clone());
            match self.executions.get(execution_id) {
                Some(&(owner, Phase::Rollback, owner_index)) if owner == h && owner_index == index => {}
                Some(_) | None => self.fail(format!(
                    "entry {n}: rollback execution {execution_id} was re-sent to host {host} (group {group}) as rollback step {index}, but was not dispatched as that"
                )),
            }
            if current.as_ref() != Some(execution_id) {
                self.fail(format!(
                    "entry {n}: rollback execution {execution_id} was re-sent to host {host} (group {group}), which is not rolling back on it"
                ));
            }
            return;
        }
        if self.executions.insert(execution_id.clone(), (h, Phase::Rollback, index)).is_some() {
            self.fail(format!(
                "entry {n}: execution {execution_id} was dispatched to host {host} (group {group}) a second time without resend"
            ));
        }
        match self.hosts[h].rollback.clone() {
            None => {
                if self.hosts[h].last_step.is_none() {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) started a rollback but was never upgraded"
                    ));
                }
                match &self.hosts[h].done {
                    Some(HostState::Succeeded | HostState::Failed { .. }) => {}
                    other => self.fail(format!(
                        "entry {n}: host {host} (group {group}) started a rollback while its upgrade had not ended ({})",
                        other.as_ref().map_or("in progress", HostState::as_str)
                    )),
                }
                if index != 0 {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) started its rollback at step {index} instead of 0"
                    ));
                }
                let expected = self.spec.hosts[h].rollback_plan(self.hosts[h].steps_ok);
                self.hosts[h].rollback = Some(RollbackTrack {
                    expected,
                    last_index: index,
                    last_execution: execution_id.clone(),
                    in_flight: true,
                    ended: None,
                });
                self.enter_flight(n, h, "rollback");
                self.reverse_order(n, h);
            }
            Some(r) => {
                if let Some(ended) = &r.ended {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) was dispatched rollback execution {execution_id} after its rollback ended {}",
                        ended.as_str()
                    ));
                }
                if index != r.last_index + 1 || !answers(event, &r.last_execution) {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) was dispatched rollback step {index} without a successful result for {} (rollback step {})",
                        r.last_execution, r.last_index
                    ));
                }
                let track = self.hosts[h].rollback.as_mut().expect("checked above");
                track.last_index = index;
                track.last_execution = execution_id.clone();
            }
        }
        let expected = self.hosts[h].rollback.as_ref().and_then(|r| r.expected.get(index)).map(|e| self.rendered(h, e));
        match expected {
            Some(e) if e.as_ref() == Some(step) => {}
            Some(_) => self.fail(format!(
                "entry {n}: rollback execution {execution_id} for host {host} (group {group}) carries a step that differs from rollback step {index} of the host's plan"
            )),
            None => self.fail(format!(
                "entry {n}: rollback execution {execution_id} for host {host} (group {group}) names rollback step {index}, beyond the host's rollback plan"
            )),
        }
    }

    /// Host `h` starts rolling back: the groups depending on its group must
    /// be done rolling back.
    pub(super) fn reverse_order(&mut self, n: usize, h: usize) {
        let Some(g) = self.group_of[h] else { return };
        for &d in &self.dependents[g].clone() {
            let pending: Vec<&str> = self.spec.groups[d]
                .hosts
                .iter()
                .filter(|&&x| {
                    let t = &self.hosts[x];
                    let started = t.last_step.is_some();
                    let rolled = t.rollback.as_ref().is_some_and(|r| r.ended.is_some());
                    started && !rolled && !self.spec.hosts[x].rollback_plan(t.steps_ok).is_empty()
                })
                .map(|&x| self.spec.hosts[x].host.as_str())
                .collect();
            if !pending.is_empty() {
                self.fail(format!(
                    "entry {n}: host {} of group {} started rolling back before group {}, which depends on it, finished its rollback (not done: {})",
                    self.spec.hosts[h].host,
                    self.spec.groups[g].name,
                    self.spec.groups[d].name,
                    pending.join(", ")
                ));
            }
        }
    }

    pub(super) fn rollback_done(&mut self, n: usize, h: usize, state: &HostState) {
        let host = &self.spec.hosts[h].host;
        let group = self.group_name(h);
        let Some(r) = self.hosts[h].rollback.as_mut() else {
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was reported {} but never started a rollback",
                state.as_str()
            ));
            return;
        };
        if let Some(before) = &r.ended {
            let before = before.as_str();
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was reported {} after its rollback had already ended {before}",
                state.as_str()
            ));
            return;
        }
        let complete = r.last_index + 1 == r.expected.len();
        r.ended = Some(state.clone());
        let was_in_flight = std::mem::replace(&mut r.in_flight, false);
        if matches!(state, HostState::RolledBack) && !complete {
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was reported rolled back before its last rollback step ran"
            ));
        }
        if was_in_flight && let Some(g) = self.group_of[h] {
            self.group_in_flight[g] -= 1;
        }
    }
}

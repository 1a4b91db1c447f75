//! Invariants every test layer checks over a rollout's event log.
//!
//! The checks re-derive what happened from the engine's *actions* (and, for
//! step order, the events that caused them); they never look inside an
//! [`Engine`](crate::engine::Engine), so they hold the engine to account
//! rather than repeat its bookkeeping. [`check`] holds for any prefix of a
//! log, so it can run on a rollout still in progress; [`check_final`] adds
//! what must be true once the rollout is over.
//!
//! What is checked, each violation reported as a sentence naming the entry,
//! host and group:
//! - A group never has more hosts in flight than its `max_parallel`. A host is
//!   in flight from its first `Dispatch` until its `HostDone`, so a soak keeps
//!   the slot.
//! - No host is dispatched before every group its group depends on has all
//!   its hosts done, within that group's failure budget and with none skipped.
//! - An execution id is dispatched once; later dispatches of it carry
//!   `resend: true`, go to the same host and step, and come while the host is
//!   still in flight. A host's steps go in order, a later step only in answer
//!   to the previous execution's successful `StepFinished`, and each dispatch
//!   carries the step the spec holds.
//! - Nothing is dispatched after `Finished`, `Finished` comes once and only
//!   with no host in flight, and every `HostDone` is terminal, once per host,
//!   `Skipped` only for hosts never dispatched, `Succeeded` only after the
//!   last step. `Finished { Succeeded }` needs every host done (none skipped)
//!   and every group within its failure budget.
//! - Finally: `Finished` was emitted, every host has its `HostDone`, and a
//!   host that succeeded has a version recorded when the spec names a
//!   component (reported installed by one of its steps, or known before).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::engine::{Action, Event, HostState, RolloutState};
use crate::model::{RolloutSpec, StepSpec, UnixMillis};

/// One handled event and the actions the engine returned for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub now: UnixMillis,
    pub event: Event,
    pub actions: Vec<Action>,
}

/// Check the invariants that hold at every point of a rollout.
pub fn check(spec: &RolloutSpec, log: &[LogEntry]) -> Result<(), Vec<String>> {
    let checker = Checker::run(spec, log);
    if checker.violations.is_empty() { Ok(()) } else { Err(checker.violations) }
}

/// [`check`], plus what must hold once the rollout has finished.
pub fn check_final(spec: &RolloutSpec, log: &[LogEntry]) -> Result<(), Vec<String>> {
    let mut checker = Checker::run(spec, log);
    checker.final_checks();
    if checker.violations.is_empty() { Ok(()) } else { Err(checker.violations) }
}

#[derive(Default, Clone)]
struct HostTrack {
    /// Step index of the last new execution, if any was dispatched.
    last_step: Option<usize>,
    /// Id of the last new execution.
    last_execution: Option<String>,
    in_flight: bool,
    done: Option<HostState>,
    /// Last version of the spec's component reported by one of its executions.
    installed: Option<String>,
}

struct Checker<'a> {
    spec: &'a RolloutSpec,
    by_name: HashMap<&'a str, usize>,
    group_of: Vec<Option<usize>>,
    hosts: Vec<HostTrack>,
    group_in_flight: Vec<usize>,
    /// Execution id -> (host, step index).
    executions: HashMap<String, (usize, usize)>,
    finished: Option<RolloutState>,
    violations: Vec<String>,
}

impl<'a> Checker<'a> {
    fn run(spec: &'a RolloutSpec, log: &[LogEntry]) -> Checker<'a> {
        let mut group_of = vec![None; spec.hosts.len()];
        for (g, group) in spec.groups.iter().enumerate() {
            for &h in &group.hosts {
                if let Some(slot) = group_of.get_mut(h) {
                    *slot = Some(g);
                }
            }
        }
        let mut checker = Checker {
            spec,
            by_name: spec.hosts.iter().enumerate().map(|(i, h)| (h.host.as_str(), i)).collect(),
            group_of,
            hosts: vec![HostTrack::default(); spec.hosts.len()],
            group_in_flight: vec![0; spec.groups.len()],
            executions: HashMap::new(),
            finished: None,
            violations: Vec::new(),
        };
        for (n, entry) in log.iter().enumerate() {
            checker.entry(n, entry);
        }
        checker
    }

    fn fail(&mut self, message: String) {
        self.violations.push(message);
    }

    fn group_name(&self, h: usize) -> &'a str {
        self.group_of[h].map_or("<none>", |g| self.spec.groups[g].name.as_str())
    }

    fn entry(&mut self, n: usize, entry: &LogEntry) {
        if let Event::StepFinished { execution_id, outcome } = &entry.event {
            // Versions count only from executions this rollout issued.
            if let (Some(&(h, _)), Some((component, version))) = (self.executions.get(execution_id), &outcome.installed)
                && outcome.status.is_success()
                && self.spec.component.as_ref().is_none_or(|c| c == component)
            {
                self.hosts[h].installed = Some(version.clone());
            }
        }
        for action in &entry.actions {
            match action {
                Action::Dispatch { host, execution_id, step_index, step, resend } => {
                    self.dispatch(n, &entry.event, host, execution_id, *step_index, step, *resend)
                }
                Action::Schedule { .. } => {}
                Action::HostDone { host, state } => self.host_done(n, host, state),
                Action::Finished { state } => self.finished(n, *state),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        n: usize,
        event: &Event,
        host: &str,
        execution_id: &str,
        step_index: usize,
        step: &StepSpec,
        resend: bool,
    ) {
        if let Some(state) = self.finished {
            self.fail(format!(
                "entry {n}: execution {execution_id} was dispatched to host {host} after the rollout finished ({})",
                state.as_str()
            ));
        }
        let Some(&h) = self.by_name.get(host) else {
            self.fail(format!(
                "entry {n}: execution {execution_id} was dispatched to host {host}, which is not in the spec"
            ));
            return;
        };
        let group = self.group_name(h);
        match self.spec.hosts[h].steps.get(step_index) {
            Some(expected) if expected == step => {}
            Some(_) => self.fail(format!(
                "entry {n}: execution {execution_id} for host {host} (group {group}) carries a step that differs from step {step_index} of the spec"
            )),
            None => self.fail(format!(
                "entry {n}: execution {execution_id} for host {host} (group {group}) names step {step_index}, but the host has {} steps",
                self.spec.hosts[h].steps.len()
            )),
        }
        if resend {
            match self.executions.get(execution_id) {
                None => self.fail(format!(
                    "entry {n}: execution {execution_id} was re-sent to host {host} (group {group}) but never dispatched"
                )),
                Some(&(owner, owner_step)) => {
                    if owner != h || owner_step != step_index {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} step {step_index}, but was first dispatched to host {} step {owner_step}",
                            self.spec.hosts[owner].host
                        ));
                    }
                    if !self.hosts[h].in_flight {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} (group {group}), which is not in flight"
                        ));
                    } else if self.hosts[h].last_execution.as_deref() != Some(execution_id) {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} (group {group}), which has moved on to a later execution"
                        ));
                    }
                }
            }
            return;
        }
        if self.executions.insert(execution_id.to_string(), (h, step_index)).is_some() {
            self.fail(format!(
                "entry {n}: execution {execution_id} was dispatched to host {host} (group {group}) a second time without resend"
            ));
        }
        if let Some(state) = &self.hosts[h].done {
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was dispatched execution {execution_id} after it ended {}",
                state.as_str()
            ));
        }
        match self.hosts[h].last_step {
            None => {
                if step_index != 0 {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) started at step {step_index} instead of step 0"
                    ));
                }
                self.start(n, h);
            }
            Some(last) => {
                let previous = self.hosts[h].last_execution.clone().unwrap_or_default();
                if step_index == last + 1 {
                    let answered = match event {
                        Event::StepFinished { execution_id: finished, outcome } => {
                            *finished == previous && outcome.status.is_success()
                        }
                        Event::Started
                        | Event::AgentConnected { .. }
                        | Event::AgentLost { .. }
                        | Event::TimerFired { .. }
                        | Event::Operator { .. } => false,
                    };
                    if !answered {
                        self.fail(format!(
                            "entry {n}: host {host} (group {group}) was dispatched step {step_index} without a successful result for {previous}"
                        ));
                    }
                } else if step_index != last {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) jumped from step {last} to step {step_index}"
                    ));
                }
                if !self.hosts[h].in_flight {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) was dispatched step {step_index} while not in flight"
                    ));
                }
            }
        }
        self.hosts[h].last_step = Some(step_index);
        self.hosts[h].last_execution = Some(execution_id.to_string());
    }

    /// Host `h` enters flight: check its group's window and its dependencies.
    fn start(&mut self, n: usize, h: usize) {
        let host = &self.spec.hosts[h].host;
        let Some(g) = self.group_of[h] else {
            self.fail(format!("entry {n}: host {host} was dispatched but belongs to no group"));
            return;
        };
        let group = &self.spec.groups[g];
        self.hosts[h].in_flight = true;
        self.group_in_flight[g] += 1;
        if self.group_in_flight[g] > group.strategy.max_parallel.max(1) {
            self.fail(format!(
                "entry {n}: host {host} started while group {} had {} hosts in flight, more than max_parallel {}",
                group.name, self.group_in_flight[g], group.strategy.max_parallel
            ));
        }
        for &dep in &group.after {
            let Some(dep_group) = self.spec.groups.get(dep) else { continue };
            let mut not_done = Vec::new();
            let mut failed = 0;
            let mut skipped = 0;
            for &d in &dep_group.hosts {
                match &self.hosts[d].done {
                    None => not_done.push(self.spec.hosts[d].host.as_str()),
                    Some(HostState::Failed { .. }) => failed += 1,
                    Some(HostState::Skipped) => skipped += 1,
                    Some(
                        HostState::Succeeded
                        | HostState::Pending
                        | HostState::Running { .. }
                        | HostState::Soaking { .. },
                    ) => {}
                }
            }
            if !not_done.is_empty() {
                self.fail(format!(
                    "entry {n}: host {host} of group {} started before group {} was done (hosts not done: {})",
                    group.name,
                    dep_group.name,
                    not_done.join(", ")
                ));
            } else if failed > dep_group.strategy.max_failures || skipped > 0 {
                self.fail(format!(
                    "entry {n}: host {host} of group {} started although group {} did not succeed ({failed} failed, {skipped} skipped)",
                    group.name, dep_group.name
                ));
            }
        }
    }

    fn host_done(&mut self, n: usize, host: &str, state: &HostState) {
        let Some(&h) = self.by_name.get(host) else {
            self.fail(format!("entry {n}: host {host}, not in the spec, was reported done"));
            return;
        };
        let group = self.group_name(h);
        if let Some(rollout) = self.finished {
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was reported {} after the rollout finished ({})",
                state.as_str(),
                rollout.as_str()
            ));
        }
        if let Some(before) = &self.hosts[h].done {
            self.fail(format!(
                "entry {n}: host {host} (group {group}) was reported {} after it had already ended {}",
                state.as_str(),
                before.as_str()
            ));
            return;
        }
        let steps = self.spec.hosts[h].steps.len();
        let dispatched = self.hosts[h].last_step.is_some();
        match state {
            HostState::Pending | HostState::Running { .. } | HostState::Soaking { .. } => {
                self.fail(format!(
                    "entry {n}: host {host} (group {group}) was reported done in non-terminal state {}",
                    state.as_str()
                ));
            }
            HostState::Skipped => {
                if dispatched {
                    self.fail(format!("entry {n}: host {host} (group {group}) was skipped after it had started"));
                }
            }
            HostState::Succeeded => {
                if steps > 0 && self.hosts[h].last_step != Some(steps - 1) {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) succeeded without its last step (step {}) being dispatched",
                        steps - 1
                    ));
                }
            }
            HostState::Failed { .. } => {
                if !dispatched {
                    self.fail(format!("entry {n}: host {host} (group {group}) failed without ever being dispatched"));
                }
            }
        }
        if self.hosts[h].in_flight {
            self.hosts[h].in_flight = false;
            if let Some(g) = self.group_of[h] {
                self.group_in_flight[g] -= 1;
            }
        }
        self.hosts[h].done = Some(state.clone());
    }

    fn finished(&mut self, n: usize, state: RolloutState) {
        if let Some(before) = self.finished {
            self.fail(format!(
                "entry {n}: the rollout finished {} after it had already finished {}",
                state.as_str(),
                before.as_str()
            ));
            return;
        }
        self.finished = Some(state);
        if !state.is_terminal() {
            self.fail(format!("entry {n}: the rollout finished in non-terminal state {}", state.as_str()));
        }
        let in_flight: Vec<&str> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].in_flight)
            .map(|h| self.spec.hosts[h].host.as_str())
            .collect();
        if !in_flight.is_empty() {
            self.fail(format!(
                "entry {n}: the rollout finished {} with hosts still in flight: {}",
                state.as_str(),
                in_flight.join(", ")
            ));
        }
        if state == RolloutState::Succeeded {
            for h in 0..self.hosts.len() {
                match &self.hosts[h].done {
                    Some(HostState::Succeeded | HostState::Failed { .. }) => {}
                    Some(other) => self.fail(format!(
                        "entry {n}: the rollout succeeded but host {} (group {}) ended {}",
                        self.spec.hosts[h].host,
                        self.group_name(h),
                        other.as_str()
                    )),
                    None => self.fail(format!(
                        "entry {n}: the rollout succeeded but host {} (group {}) never finished",
                        self.spec.hosts[h].host,
                        self.group_name(h)
                    )),
                }
            }
            for group in &self.spec.groups {
                let failed = group
                    .hosts
                    .iter()
                    .filter(|&&h| {
                        matches!(self.hosts.get(h).and_then(|t| t.done.as_ref()), Some(HostState::Failed { .. }))
                    })
                    .count();
                if failed > group.strategy.max_failures {
                    self.fail(format!(
                        "entry {n}: the rollout succeeded but group {} had {failed} failed hosts, more than its budget of {}",
                        group.name, group.strategy.max_failures
                    ));
                }
            }
        }
    }

    fn final_checks(&mut self) {
        if self.finished.is_none() {
            self.fail("the rollout never finished".to_string());
        }
        for h in 0..self.hosts.len() {
            let host = &self.spec.hosts[h].host;
            let group = self.group_name(h);
            match &self.hosts[h].done {
                None => self.fail(format!("host {host} (group {group}) never reached a terminal state")),
                Some(HostState::Succeeded) => {
                    let version = self.hosts[h].installed.as_ref().or(self.spec.hosts[h].initial_version.as_ref());
                    if let (Some(component), None) = (&self.spec.component, version) {
                        self.fail(format!(
                            "host {host} (group {group}) succeeded with no version of {component} recorded"
                        ));
                    }
                }
                Some(
                    HostState::Failed { .. }
                    | HostState::Skipped
                    | HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Soaking { .. },
                ) => {}
            }
        }
    }
}

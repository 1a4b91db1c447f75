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
//! - A group never has more hosts in flight than its `max_parallel`, counting
//!   upgrades and rollbacks together. A host is in flight from its first
//!   `Dispatch` until its `HostDone`, so a soak keeps the slot, and again from
//!   its first `DispatchRollback` until the `HostDone` that ends its rollback.
//! - No host is dispatched before every group its group depends on has all
//!   its hosts done (rollbacks included), within that group's failure budget
//!   and with none skipped.
//! - Canaries: in a group with a canary phase, a host after the canaries
//!   starts only once every canary succeeded and then either an operator's
//!   `Approve` came, or (for `promote: { after }`) that much time passed.
//! - An execution id is dispatched once; later dispatches of it carry
//!   `resend: true`, go to the same host and step, and come while the host is
//!   still in flight on that execution. A host's steps go in order, a later
//!   step only in answer to the previous execution's successful
//!   `StepFinished`, and each dispatch carries the step the spec holds.
//! - Rollbacks: a host's rollback starts only after its upgrade ended
//!   (`Succeeded` or `Failed`), never for a host that never started, at most
//!   once, and may come after a halt (but not after `Finished`). Its steps
//!   are exactly [`HostPlan::rollback_plan`](crate::model::HostPlan::rollback_plan)
//!   of the steps that succeeded, in order, each in answer to the previous
//!   one's success. A host of group G starts rolling back only once every
//!   started host of the groups depending on G has finished its rollback
//!   (reverse DAG order). `RolledBack` comes only after the last rollback step.
//! - Nothing is dispatched after `Finished`, `Finished` comes once and only
//!   with no host in flight, and every upgrade's `HostDone` is terminal, once
//!   per host, `Skipped` only for hosts never dispatched, `Succeeded` only
//!   after the last step. `Finished { Succeeded }` needs every host done (none
//!   skipped), every group within its failure budget and the rollout within
//!   its own; `Finished { RolledBack }` needs every started host with
//!   something to undo rolled back.
//! - Host entries: dispatches name the agent; when an agent has several
//!   entries (a host running a hook), the execution id's key
//!   (`rollout/KEY/...`) tells which. `HostDone` names the entry's key. The
//!   step a dispatch carries must equal the spec's with `{{captured.NAME}}`
//!   substituted from the values the log's successful `StepFinished` events
//!   captured (a capture that does not match counts as a failed step).
//! - `cluster` groups: the window is per cluster: at most `max_parallel`
//!   members of a leader/follower cluster (every member of a `same_version`
//!   one) have an execution outstanding at once (dispatched, not answered).
//!   In a leader/follower cluster every step is dispatched in answer to the
//!   host's leader check for that step answering "leader" or "follower"
//!   (never "unknown"; answers read with the spec's `leader_answers`), and
//!   its earlier steps succeeded; a host failed after an unknown answer
//!   before step N was never dispatched step N; a cluster whose members all
//!   succeeded had one of them answer "leader" at some point (three-answer
//!   checks). When that check said "leader", every other member of the
//!   cluster has ended its upgrade, unless the rollout may be stopping (a
//!   host failed, or an operator paused, aborted or rolled back). In a
//!   `same_version` cluster, no member is dispatched step N+1 before every
//!   member still upgrading succeeded step N. Leader checks and switchover
//!   steps carry the spec's step.
//! - Maintenance windows: a host of a group with windows starts (its first
//!   dispatch) only inside a window of its calendar, with its estimate plus
//!   the cutoff fitting before that window closes — unless an operator's
//!   `IgnoreWindows` came in an earlier entry.
//! - Finally: `Finished` was emitted, every host has its `HostDone`, and a
//!   host that succeeded has a version recorded when the spec names a
//!   component (reported installed by one of its steps, or known before).
//!
//! The checker's state and the rules every group follows are here; the
//! rules of one concern each are beside it: `cluster` (cluster groups),
//! `rollback` (rollbacks) and `windows` (maintenance windows).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::capture;
use crate::cluster_vars;
use crate::engine::{Action, ClusterPurpose, Event, ExecutionId, HostState, OperatorCommand, RolloutState};
use crate::model::{LeaderAnswer, Promote, RolloutSpec, StepSpec, UnixMillis};
use crate::schedule;

mod cluster;
mod rollback;
mod windows;

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
    last_execution: Option<ExecutionId>,
    in_flight: bool,
    /// How the upgrade ended (`Succeeded`, `Failed` or `Skipped`).
    done: Option<HostState>,
    /// Steps whose current execution reported success.
    steps_ok: usize,
    /// Last version of the spec's component reported by one of its executions.
    installed: Option<String>,
    /// The rollback, once its first step was dispatched.
    rollback: Option<RollbackTrack>,
    /// Values its successful steps captured.
    captured: BTreeMap<String, String>,
    /// The execution dispatched last and not answered yet (steps and
    /// cluster steps).
    outstanding: Option<ExecutionId>,
    /// Its last answered leader check: (before step, what it said).
    leader_answer: Option<(usize, LeaderAnswer)>,
    /// One of its leader checks answered "leader".
    claimed_leader: bool,
    /// The event that answered it (its entry number).
    leader_answer_entry: Option<usize>,
    /// A leader check or switchover step was dispatched to it.
    cluster_dispatched: bool,
}

#[derive(Clone)]
struct RollbackTrack {
    /// What the rollback must run, from the steps that succeeded.
    expected: Vec<StepSpec>,
    last_index: usize,
    last_execution: ExecutionId,
    in_flight: bool,
    ended: Option<HostState>,
}

/// Whether an execution id belongs to an upgrade step or a rollback step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Upgrade,
    Rollback,
}

struct Checker<'a> {
    spec: &'a RolloutSpec,
    /// Host entries by key (what `HostDone` names).
    by_name: HashMap<&'a str, usize>,
    /// Host entries by agent (what dispatches name).
    by_agent: HashMap<&'a str, Vec<usize>>,
    /// Values captured by hook steps.
    hook_captured: BTreeMap<String, String>,
    group_of: Vec<Option<usize>>,
    /// Position of each host in its group's host list.
    position: Vec<usize>,
    /// Groups listing each group in their `after`.
    dependents: Vec<Vec<usize>>,
    hosts: Vec<HostTrack>,
    group_in_flight: Vec<usize>,
    /// Per group: (entry, now) when its last canary succeeded.
    canaries_passed: Vec<Option<(usize, UnixMillis)>>,
    canaries_succeeded: Vec<usize>,
    /// Entry of the last operator `Approve`.
    last_approve: Option<usize>,
    /// Execution id -> (host, phase, step or rollback index).
    executions: HashMap<ExecutionId, (usize, Phase, usize)>,
    finished: Option<RolloutState>,
    violations: Vec<String>,
    /// Leader checks and switchover steps: execution id -> (host, purpose).
    cluster_execs: HashMap<ExecutionId, (usize, ClusterPurpose)>,
    /// Per host: its cluster's members (empty outside `cluster` groups).
    cluster_of: Vec<Vec<usize>>,
    /// A host failed or an operator paused, aborted or rolled back: the
    /// leader rule no longer binds (held leaders may go on).
    stopping_seen: bool,
    /// Entry of the operator's `IgnoreWindows`, once it came.
    windows_lifted: Option<usize>,
}

impl<'a> Checker<'a> {
    fn run(spec: &'a RolloutSpec, log: &[LogEntry]) -> Checker<'a> {
        let mut group_of = vec![None; spec.hosts.len()];
        let mut position = vec![0; spec.hosts.len()];
        let mut dependents = vec![Vec::new(); spec.groups.len()];
        for (g, group) in spec.groups.iter().enumerate() {
            for (k, &h) in group.hosts.iter().enumerate() {
                if let Some(slot) = group_of.get_mut(h) {
                    *slot = Some(g);
                    position[h] = k;
                }
            }
            for &a in &group.after {
                if let Some(d) = dependents.get_mut(a) {
                    d.push(g);
                }
            }
        }
        let mut checker = Checker {
            spec,
            by_name: spec.hosts.iter().enumerate().map(|(i, h)| (h.key(), i)).collect(),
            by_agent: {
                let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
                for (i, h) in spec.hosts.iter().enumerate() {
                    m.entry(h.host.as_str()).or_default().push(i);
                }
                m
            },
            hook_captured: BTreeMap::new(),
            group_of,
            position,
            dependents,
            hosts: vec![HostTrack::default(); spec.hosts.len()],
            group_in_flight: vec![0; spec.groups.len()],
            canaries_passed: vec![None; spec.groups.len()],
            canaries_succeeded: vec![0; spec.groups.len()],
            last_approve: None,
            executions: HashMap::new(),
            finished: None,
            violations: Vec::new(),
            cluster_execs: HashMap::new(),
            cluster_of: {
                let mut of = vec![Vec::new(); spec.hosts.len()];
                for c in spec.groups.iter().filter_map(|g| g.cluster()).flat_map(|c| c.clusters.iter()) {
                    for &h in &c.hosts {
                        if let Some(slot) = of.get_mut(h) {
                            *slot = c.hosts.clone();
                        }
                    }
                }
                of
            },
            stopping_seen: false,
            windows_lifted: None,
        };
        for (n, entry) in log.iter().enumerate() {
            checker.entry(n, entry);
        }
        checker
    }

    fn fail(&mut self, message: String) {
        self.violations.push(message);
    }

    /// The host entry a dispatch to agent `host` is for: the agent's only
    /// entry, or the one whose key the execution id carries
    /// (`rollout/KEY/step/attempt`).
    fn entry_of(&self, host: &str, execution_id: &ExecutionId) -> Option<usize> {
        let entries = self.by_agent.get(host)?;
        match entries.as_slice() {
            [one] => Some(*one),
            many => many.iter().copied().find(|&i| execution_id.entry() == self.spec.hosts[i].key()),
        }
    }

    /// The host entry a new dispatch (`what`: "execution", "rollback
    /// execution", "cluster execution") goes to; a dispatch after `Finished`
    /// or to an unknown entry is a violation (`None` for the latter).
    fn dispatch_target(&mut self, n: usize, what: &str, host: &str, execution_id: &ExecutionId) -> Option<usize> {
        if let Some(state) = self.finished {
            self.fail(format!(
                "entry {n}: {what} {execution_id} was dispatched to host {host} after the rollout finished ({})",
                state.as_str()
            ));
        }
        let h = self.entry_of(host, execution_id);
        if h.is_none() {
            self.fail(format!(
                "entry {n}: {what} {execution_id} was dispatched to host {host}, which is not in the spec"
            ));
        }
        h
    }

    /// A step as entry `h` should receive it: captured values and the
    /// cluster's run-time values substituted (`None` if one is missing: the
    /// engine must not dispatch it then).
    fn rendered(&self, h: usize, step: &StepSpec) -> Option<StepSpec> {
        let own = &self.hosts[h].captured;
        let step = capture::render_step(step, |name| {
            own.get(name).or_else(|| self.hook_captured.get(name)).map(String::as_str)
        })
        .ok()?;
        cluster_vars::render_step(&step, || {
            cluster_vars::scope_of(self.spec, h, |j| self.hosts[j].done == Some(HostState::Succeeded))
        })
        .ok()
    }

    fn group_name(&self, h: usize) -> &'a str {
        self.group_of[h].map_or("<none>", |g| self.spec.groups[g].name.as_str())
    }

    fn entry(&mut self, n: usize, entry: &LogEntry) {
        match &entry.event {
            Event::StepFinished { execution_id, outcome } => {
                if let Some(&(h, purpose)) = self.cluster_execs.get(execution_id)
                    && self.hosts[h].outstanding.as_ref() == Some(execution_id)
                {
                    self.hosts[h].outstanding = None;
                    match purpose {
                        ClusterPurpose::LeaderCheck { before, .. } => {
                            let answer = LeaderAnswer::of(self.spec.hosts[h].leader_answers.as_ref(), outcome);
                            self.hosts[h].leader_answer = Some((before, answer));
                            self.hosts[h].leader_answer_entry = Some(n);
                            self.hosts[h].claimed_leader |= answer == LeaderAnswer::Leader;
                        }
                        // A switchover step's capture is for the next switchover steps.
                        ClusterPurpose::Switchover { index, .. } => {
                            if let Some(c) = self.spec.hosts[h].switchover_capture(index)
                                && outcome.status.is_success()
                                && let Ok(value) = capture::extract(c, &outcome.stdout_tail)
                            {
                                self.hosts[h].captured.insert(c.name.clone(), value);
                            }
                        }
                    }
                } else if let Some(&(h, _, _)) = self.executions.get(execution_id)
                    && self.hosts[h].outstanding.as_ref() == Some(execution_id)
                {
                    self.hosts[h].outstanding = None;
                }
            }
            Event::Operator {
                command: OperatorCommand::Pause | OperatorCommand::Abort | OperatorCommand::Rollback,
                ..
            } => {
                self.stopping_seen = true;
            }
            Event::Operator { command: OperatorCommand::IgnoreWindows, .. } => {
                self.windows_lifted.get_or_insert(n);
            }
            Event::Started
            | Event::AgentConnected { .. }
            | Event::AgentLost { .. }
            | Event::TimerFired { .. }
            | Event::Operator { .. } => {}
        }
        match &entry.event {
            Event::StepFinished { execution_id, outcome } if outcome.status.is_success() => {
                if let Some(&(h, phase, index)) = self.executions.get(execution_id) {
                    let track = &mut self.hosts[h];
                    // Only the host's current execution moves it on, as in the engine.
                    let current = match phase {
                        Phase::Upgrade => track.in_flight && track.last_execution.as_ref() == Some(execution_id),
                        Phase::Rollback => {
                            track.rollback.as_ref().is_some_and(|r| r.in_flight && r.last_execution == *execution_id)
                        }
                    };
                    if current {
                        if phase == Phase::Upgrade {
                            // A capture that does not match fails the step.
                            match self.spec.hosts[h]
                                .capture(index)
                                .map(|c| (c, capture::extract(c, &outcome.stdout_tail)))
                            {
                                None => track.steps_ok = index + 1,
                                Some((c, Ok(value))) => {
                                    track.steps_ok = index + 1;
                                    track.captured.insert(c.name.clone(), value.clone());
                                    let hook = self.group_of[h].is_some_and(|g| self.spec.groups[g].hook);
                                    if hook {
                                        self.hook_captured.insert(c.name.clone(), value);
                                    }
                                }
                                Some((_, Err(_))) => {}
                            }
                        }
                        let declared = match phase {
                            Phase::Upgrade => self.spec.hosts[h].installs(index),
                            Phase::Rollback => None,
                        };
                        let track = &mut self.hosts[h];
                        // Versions count only from executions this rollout
                        // issued, or what a step that succeeded declares.
                        if let Some((component, version)) = outcome.installed.as_ref().or(declared.as_ref())
                            && self.spec.component.as_ref().is_none_or(|c| c == component)
                        {
                            track.installed = Some(version.clone());
                        }
                    }
                }
            }
            Event::Operator { command: OperatorCommand::Approve, .. } => self.last_approve = Some(n),
            Event::StepFinished { .. }
            | Event::Started
            | Event::AgentConnected { .. }
            | Event::AgentLost { .. }
            | Event::TimerFired { .. }
            | Event::Operator { .. } => {}
        }
        for action in &entry.actions {
            match action {
                Action::Dispatch { host, execution_id, step_index, step, resend } => {
                    self.dispatch(n, entry, host, execution_id, *step_index, step, *resend)
                }
                Action::DispatchRollback { host, execution_id, rollback_index, step, resend } => {
                    self.dispatch_rollback(n, &entry.event, host, execution_id, *rollback_index, step, *resend)
                }
                Action::DispatchCluster { host, execution_id, purpose, step, resend } => {
                    self.dispatch_cluster(n, host, execution_id, *purpose, step, *resend)
                }
                Action::Schedule { .. } => {}
                Action::HostDone { host, state } => self.host_done(n, entry.now, host, state),
                Action::Finished { state } => self.finished(n, *state),
                Action::StepSucceeded { group, step, .. } => {
                    let answered = match &entry.event {
                        Event::StepFinished { outcome, .. } => outcome.status.is_success(),
                        Event::Started
                        | Event::AgentConnected { .. }
                        | Event::AgentLost { .. }
                        | Event::TimerFired { .. }
                        | Event::Operator { .. } => false,
                    };
                    if !answered {
                        self.fail(format!(
                            "entry {n}: step {step} of group {group} was reported succeeded without a successful result"
                        ));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        n: usize,
        entry: &LogEntry,
        host: &str,
        execution_id: &ExecutionId,
        step_index: usize,
        step: &StepSpec,
        resend: bool,
    ) {
        let Some(h) = self.dispatch_target(n, "execution", host, execution_id) else { return };
        let group = self.group_name(h);
        match self.spec.hosts[h].steps.get(step_index).map(|s| self.rendered(h, s)) {
            Some(expected) if expected.as_ref() == Some(step) => {}
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
                Some(&(owner, phase, owner_step)) => {
                    if owner != h || owner_step != step_index || phase != Phase::Upgrade {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} step {step_index}, but was first dispatched to host {} step {owner_step} ({phase:?})",
                            self.spec.hosts[owner].host
                        ));
                    }
                    if !self.hosts[h].in_flight {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} (group {group}), which is not in flight"
                        ));
                    } else if self.hosts[h].last_execution.as_ref() != Some(execution_id) {
                        self.fail(format!(
                            "entry {n}: execution {execution_id} was re-sent to host {host} (group {group}), which has moved on to a later execution"
                        ));
                    }
                }
            }
            return;
        }
        if self.executions.insert(execution_id.clone(), (h, Phase::Upgrade, step_index)).is_some() {
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
        self.cluster_step_rules(n, h, step_index, execution_id);
        match self.hosts[h].last_step {
            None => {
                if step_index != 0 {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) started at step {step_index} instead of step 0"
                    ));
                }
                self.start(n, entry.now, h);
            }
            Some(last) => {
                let previous = self.hosts[h].last_execution.clone();
                // A cluster member goes on in answer to its leader check, or
                // to the last member reaching the barrier (checked above),
                // once its previous step succeeded.
                let by_check = !self.cluster_of[h].is_empty() && self.hosts[h].steps_ok == step_index;
                if step_index == last + 1 {
                    if !by_check && !previous.as_ref().is_some_and(|p| answers(&entry.event, p)) {
                        self.fail(format!(
                            "entry {n}: host {host} (group {group}) was dispatched step {step_index} without a successful result for {}",
                            previous.as_ref().map(ToString::to_string).unwrap_or_default()
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
        self.hosts[h].last_execution = Some(execution_id.clone());
    }

    /// Host `h` takes a slot of its group's window.
    fn enter_flight(&mut self, n: usize, h: usize, what: &str) {
        let Some(g) = self.group_of[h] else { return };
        let group = &self.spec.groups[g];
        self.group_in_flight[g] += 1;
        // A cluster group's window is per cluster: see `cluster_step_rules`.
        if group.cluster().is_none() && self.group_in_flight[g] > group.widest_window() {
            self.fail(format!(
                "entry {n}: host {} started its {what} while group {} had {} hosts in flight, more than max_parallel {}",
                self.spec.hosts[h].host, group.name, self.group_in_flight[g], group.widest_window()
            ));
        }
        // A ramp: the host's own stage bounds it, and a stage starts only
        // once the stages before it are done (hosts start in group order).
        let position = group.hosts.iter().position(|&x| x == h);
        if let (Some(p), "upgrade", None) = (position, what, group.cluster()) {
            let w = group.window_at(p);
            let others = self.group_in_flight[g] - 1;
            if self.group_in_flight[g] > w.size || (w.first_of_stage && others > 0) {
                self.fail(format!(
                    "entry {n}: host {} (position {p} of group {}) started with {others} other hosts in flight, \
                     against its ramp stage (size {}, first of its stage: {})",
                    self.spec.hosts[h].host, group.name, w.size, w.first_of_stage
                ));
            }
        }
    }

    /// Host `h` enters flight: check its group's window, its dependencies
    /// and its group's canaries.
    fn start(&mut self, n: usize, now: UnixMillis, h: usize) {
        let host = &self.spec.hosts[h].host;
        let Some(g) = self.group_of[h] else {
            self.fail(format!("entry {n}: host {host} was dispatched but belongs to no group"));
            return;
        };
        let group = &self.spec.groups[g];
        self.hosts[h].in_flight = true;
        self.enter_flight(n, h, "upgrade");
        self.in_window(n, now, h, g);
        for &dep in &group.after {
            let Some(dep_group) = self.spec.groups.get(dep) else { continue };
            let mut not_done = Vec::new();
            let mut failed = 0;
            let mut skipped = 0;
            for &d in &dep_group.hosts {
                let rolling_back = self.hosts[d].rollback.as_ref().is_some_and(|r| r.in_flight);
                match &self.hosts[d].done {
                    None => not_done.push(self.spec.hosts[d].host.as_str()),
                    Some(_) if rolling_back => not_done.push(self.spec.hosts[d].host.as_str()),
                    Some(HostState::Failed { .. }) => failed += 1,
                    Some(HostState::Skipped) => skipped += 1,
                    Some(_) => {}
                }
            }
            if !not_done.is_empty() {
                self.fail(format!(
                    "entry {n}: host {host} of group {} started before group {} was done (hosts not done: {})",
                    group.name,
                    dep_group.name,
                    not_done.join(", ")
                ));
            } else if failed > dep_group.max_failures || skipped > 0 {
                self.fail(format!(
                    "entry {n}: host {host} of group {} started although group {} did not succeed ({failed} failed, {skipped} skipped)",
                    group.name, dep_group.name
                ));
            }
        }
        let Some(canary) = group.canary else { return };
        let canaries = canary.hosts.max(1).min(group.hosts.len());
        if self.position[h] < canaries {
            return;
        }
        let promoted = match (self.canaries_passed[g], canary.promote) {
            (None, _) => Err("before its canaries all succeeded".to_string()),
            (Some((at_entry, _)), _) if self.last_approve.is_some_and(|a| a > at_entry) => Ok(()),
            (Some(_), Promote::Manual) => Err("without an approval after its canaries passed".to_string()),
            (Some((_, at)), Promote::After(d)) if now >= at.plus(d) => Ok(()),
            (Some((_, at)), Promote::After(d)) => {
                Err(format!("{} ms after its canaries passed, before the {} ms soak", now.since(at), d.as_millis()))
            }
        };
        if let Err(why) = promoted {
            self.fail(format!("entry {n}: host {host} of group {} (not a canary) started {why}", group.name));
        }
    }

    fn host_done(&mut self, n: usize, now: UnixMillis, host: &str, state: &HostState) {
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
        match state {
            HostState::RolledBack | HostState::RollbackFailed { .. } => {
                self.rollback_done(n, h, state);
                return;
            }
            HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::Pending
            | HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::RollingBack { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. } => {}
        }
        if let HostState::Failed { .. } = state {
            self.stopping_seen = true;
        }
        self.hosts[h].outstanding = None;
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
            HostState::Pending
            | HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::RollingBack { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => {
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
                if let Some(g) = self.group_of[h] {
                    let canaries = self.spec.groups[g].canary.map_or(0, |c| c.hosts);
                    if self.position[h] < canaries {
                        self.canaries_succeeded[g] += 1;
                        if self.canaries_succeeded[g] >= canaries.min(self.spec.groups[g].hosts.len()) {
                            self.canaries_passed[g] = Some((n, now));
                        }
                    }
                }
            }
            HostState::Failed { .. } => {
                if !dispatched && !self.hosts[h].cluster_dispatched {
                    self.fail(format!("entry {n}: host {host} (group {group}) failed without ever being dispatched"));
                }
                // Failed by a leader check that could not tell: untouched from that step on.
                if let Some((before, LeaderAnswer::Unknown)) = self.hosts[h].leader_answer
                    && self.hosts[h].last_step.is_some_and(|last| last >= before)
                {
                    self.fail(format!(
                        "entry {n}: host {host} (group {group}) failed by an unknown leader check before step {before}, but step {before} was dispatched"
                    ));
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
            .filter(|&h| self.hosts[h].in_flight || self.hosts[h].rollback.as_ref().is_some_and(|r| r.in_flight))
            .map(|h| self.spec.hosts[h].host.as_str())
            .collect();
        if !in_flight.is_empty() {
            self.fail(format!(
                "entry {n}: the rollout finished {} with hosts still in flight: {}",
                state.as_str(),
                in_flight.join(", ")
            ));
        }
        match state {
            RolloutState::Succeeded => self.finished_succeeded(n),
            RolloutState::RolledBack => {
                for h in 0..self.hosts.len() {
                    let t = &self.hosts[h];
                    let owed = t.last_step.is_some() && !self.spec.hosts[h].rollback_plan(t.steps_ok).is_empty();
                    let rolled =
                        matches!(t.rollback.as_ref().and_then(|r| r.ended.as_ref()), Some(HostState::RolledBack));
                    if owed && !rolled {
                        self.fail(format!(
                            "entry {n}: the rollout ended rolled back but host {} (group {}) was not rolled back",
                            self.spec.hosts[h].host,
                            self.group_name(h)
                        ));
                    }
                }
            }
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::RollingBack
            | RolloutState::Failed
            | RolloutState::Aborted => {}
        }
    }

    fn finished_succeeded(&mut self, n: usize) {
        let mut failed_total = 0;
        for h in 0..self.hosts.len() {
            match &self.hosts[h].done {
                Some(HostState::Succeeded) => {}
                Some(HostState::Failed { .. }) => failed_total += 1,
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
                .filter(|&&h| matches!(self.hosts.get(h).and_then(|t| t.done.as_ref()), Some(HostState::Failed { .. })))
                .count();
            if failed > group.max_failures {
                self.fail(format!(
                    "entry {n}: the rollout succeeded but group {} had {failed} failed hosts, more than its budget of {}",
                    group.name, group.max_failures
                ));
            }
        }
        if let Some(budget) = self.spec.max_failures
            && failed_total > budget
        {
            self.fail(format!(
                "entry {n}: the rollout succeeded with {failed_total} failed hosts, more than its budget of {budget}"
            ));
        }
    }

    fn final_checks(&mut self) {
        if self.finished.is_none() {
            self.fail("the rollout never finished".to_string());
        }
        // A leader/follower cluster (three-answer leader check) whose members
        // all succeeded had a member claim the leadership.
        for c in self.spec.groups.iter().filter_map(|g| g.cluster()).flat_map(|c| c.clusters.iter()) {
            let three_answers = c.hosts.iter().all(|&h| self.spec.hosts[h].leader_answers.is_some());
            let all_ok = c.hosts.iter().all(|&h| self.hosts[h].done == Some(HostState::Succeeded));
            if three_answers && all_ok && !c.hosts.is_empty() && !c.hosts.iter().any(|&h| self.hosts[h].claimed_leader)
            {
                self.fail(format!("cluster {}: every member succeeded but none ever claimed the leadership", c.name));
            }
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
                Some(_) => {}
            }
            if let Some(r) = &self.hosts[h].rollback
                && r.ended.is_none()
            {
                self.fail(format!("host {host} (group {group}) started a rollback that never ended"));
            }
        }
    }
}

/// True when `event` is the successful result of `execution_id`.
fn answers(event: &Event, execution_id: &ExecutionId) -> bool {
    match event {
        Event::StepFinished { execution_id: finished, outcome } => {
            finished == execution_id && outcome.status.is_success()
        }
        Event::Started
        | Event::AgentConnected { .. }
        | Event::AgentLost { .. }
        | Event::TimerFired { .. }
        | Event::Operator { .. } => false,
    }
}

//! The rollout engine: a pure, deterministic state machine.
//!
//! `Engine::handle(now, event) -> Vec<Action>` is the only way state changes.
//! It reads no clock, does no I/O and spawns nothing: the coordinator's runtime
//! appends each event to its store, calls `handle`, and carries out the
//! actions (send a step to an agent, arm a timer, tell watchers). Replaying the
//! stored events into a fresh engine rebuilds exactly the same state, and
//! [`Engine::resume_actions`] then re-arms what was in flight.
//!
//! Decisions (see the README for the operator's view):
//! - A group starts when every group in its `after` list has finished without
//!   exceeding its failure budget. Independent groups run in parallel. A group
//!   whose dependencies finish while the rollout is paused is marked running
//!   but starts no host until the rollout resumes.
//! - Inside a group hosts move through a sliding window of
//!   `strategy.max_parallel`, in the group's host order; a host is *in flight*
//!   while it is running a step or soaking, so a finished host keeps its slot
//!   for `soak`. A host with no steps succeeds at once, without a soak.
//! - A host fails at its first failed step (checks retry on the agent), with
//!   the agent's message as its reason. A step with no result within its
//!   timeout plus [`STEP_GRACE`] fails the host with "no result within timeout".
//! - A host that has started runs all its steps even when the rollout is
//!   paused, halting or aborting: stopping between, say, "drain" and "undrain"
//!   would leave it worse off than either end. Pause, halt and abort only stop
//!   *new* hosts from starting.
//! - More than `max_failures` failed hosts in a group fails the group at once
//!   and halts the whole rollout: nothing new starts, in-flight steps finish,
//!   then the rollout is `Failed`. A failure while aborting keeps it aborting.
//! - When the rollout starts halting or aborting, hosts that are only soaking
//!   succeed at once: the soak guards the next host, and none will start.
//! - When nothing is in flight any more: halting ends `Failed`, aborting ends
//!   `Aborted`, and running (or paused) with every group finished ends
//!   `Succeeded`. Hosts that never started are then `Skipped` (each with its own
//!   [`Action::HostDone`]), and so is every group that did not finish. A paused
//!   rollout with work left stays paused. [`Action::Finished`] is emitted
//!   exactly once; after it every event is ignored.
//! - A host whose agent is lost stays in flight for `host_lost_timeout`; if the
//!   agent comes back its in-flight execution is sent again under the same id
//!   (the agent answers a known id from its store), otherwise the host fails
//!   with "agent lost". Connectivity is tracked for every host, so a host that
//!   starts while its agent is known to be gone gets the same deadline, counted
//!   from its start. Any reconnect of a running host re-sends its execution:
//!   the agent deduplicates by id, and a new session may have missed it.
//! - Timers are never cancelled. A timer that no longer matches the state is
//!   ignored: a soak for a host no longer soaking, a step deadline for an
//!   execution no longer current, a lost deadline for a host that reconnected
//!   or whose current outage started later. Runtimes fire a timer at or after
//!   its `at`; the lost deadline relies on that to tell outages apart.
//! - Operator commands that do not apply in the current state (pausing a
//!   paused rollout, resuming a running one, aborting one already aborting)
//!   change nothing but the view's message, which says why. Approve is
//!   recorded in the message; nothing waits for approval yet.
//! - Execution ids are `rollout/host/step/attempt` and never reused: attempts
//!   are counted per host and step, starting at 1.
//! - A spec whose dependencies can never be met (a cycle that validation
//!   missed) ends `Failed` rather than running forever.
//!
//! Cost: each event costs time in proportion to the work it triggers
//! (dispatches, groups started), not to the fleet's size; hosts and
//! executions are found through hash maps, and groups keep their own counters.
//! Only the transitions to halting/aborting and the final skip walk the hosts.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{HostId, RolloutSpec, StepOutcome, StepSpec, StepStatus, UnixMillis};

/// Time added to a step's own timeout before the engine gives up waiting for
/// its result: the agent kills the step at its timeout and still has to report.
pub const STEP_GRACE: Duration = Duration::from_secs(30);
/// Unique id of one execution of one step on one host.
pub type ExecutionId = String;

/// Something that happened, fed to [`Engine::handle`]. Every event is stored
/// before its actions are carried out, with the `now` it was handled at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The rollout was accepted and may begin; groups with no dependencies start.
    Started,
    /// A host's agent opened (or re-opened) its session.
    AgentConnected { host: HostId },
    /// A host's agent session ended or its heartbeats stopped.
    AgentLost { host: HostId },
    /// An agent reported the outcome of an execution.
    StepFinished { execution_id: ExecutionId, outcome: StepOutcome },
    /// A timer the engine asked for with [`Action::Schedule`] has expired.
    TimerFired { timer: Timer },
    /// An operator asked for something.
    Operator { command: OperatorCommand, by: String },
}

/// A command from an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Start nothing new; in-flight work finishes.
    Pause,
    /// Carry on from where the rollout was paused.
    Resume,
    /// Start nothing new; once in-flight work finishes the rollout is aborted.
    Abort,
    /// Let a rollout waiting for approval go on (canaries, later issues).
    Approve,
}

/// A timer the engine asked for. Timers are never cancelled: when one fires
/// and no longer matches the state, the engine ignores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    /// A host's soak time is over: it gives its slot back.
    SoakOver { host: HostId },
    /// An execution has had its timeout plus a grace period without a result.
    StepDeadline { execution_id: ExecutionId },
    /// A host's agent has been gone for `host_lost_timeout`.
    LostDeadline { host: HostId },
}

/// Something the runtime must do, returned by [`Engine::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send a step to a host's agent. `resend` is true when the same execution
    /// is sent again after a reconnect (the agent answers it from its store
    /// if it already ran it).
    Dispatch { host: HostId, execution_id: ExecutionId, step_index: usize, step: StepSpec, resend: bool },
    /// Feed `Event::TimerFired { timer }` back at `at`.
    Schedule { at: UnixMillis, timer: Timer },
    /// A host reached a terminal state.
    HostDone { host: HostId, state: HostState },
    /// The rollout reached a terminal state; nothing more will be dispatched.
    Finished { state: RolloutState },
}

/// Lifecycle of the whole rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Created, `Started` not yet handled.
    Pending,
    /// Hosts are being upgraded.
    Running,
    /// An operator paused it: in-flight work finishes, nothing new starts.
    Paused,
    /// A failure budget was exceeded: in-flight work finishes, then `Failed`.
    Halting,
    /// An operator aborted it: in-flight work finishes, then `Aborted`.
    Aborting,
    /// Every group finished within its failure budget.
    Succeeded,
    /// A failure budget was exceeded.
    Failed,
    /// An operator aborted it.
    Aborted,
}

impl RolloutState {
    /// True for states no event can leave.
    pub fn is_terminal(self) -> bool {
        match self {
            RolloutState::Succeeded | RolloutState::Failed | RolloutState::Aborted => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting => false,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Pending => "pending",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halting => "halting",
            RolloutState::Aborting => "aborting",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
            RolloutState::Aborted => "aborted",
        }
    }
}

/// Lifecycle of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Some group it depends on has not finished yet.
    Waiting,
    /// Its hosts are being upgraded.
    Running,
    /// Every host finished and failures stayed within budget.
    Succeeded,
    /// Its failure budget was exceeded.
    Failed,
    /// It did not run to its end: a dependency failed, or the rollout halted
    /// or was aborted before all its hosts started.
    Skipped,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Waiting => "waiting",
            GroupState::Running => "running",
            GroupState::Succeeded => "succeeded",
            GroupState::Failed => "failed",
            GroupState::Skipped => "skipped",
        }
    }
}

/// Lifecycle of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Not started yet.
    Pending,
    /// Step `step` is executing as `execution_id`. `lost_since` is set while
    /// the host's agent is disconnected.
    Running { step: usize, execution_id: ExecutionId, since: UnixMillis, lost_since: Option<UnixMillis> },
    /// All steps passed; the host keeps its slot until `until`.
    Soaking { until: UnixMillis },
    /// All steps passed and the soak is over.
    Succeeded,
    /// A step failed, timed out, or the agent was lost for too long.
    Failed { step: Option<usize>, reason: String },
    /// Never started because the rollout stopped first.
    Skipped,
}

impl HostState {
    /// True for states no event can leave.
    pub fn is_terminal(&self) -> bool {
        match self {
            HostState::Succeeded | HostState::Failed { .. } | HostState::Skipped => true,
            HostState::Pending | HostState::Running { .. } | HostState::Soaking { .. } => false,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Running { .. } => "running",
            HostState::Soaking { .. } => "soaking",
            HostState::Succeeded => "succeeded",
            HostState::Failed { .. } => "failed",
            HostState::Skipped => "skipped",
        }
    }
}

/// A read-only summary for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub state: RolloutState,
    pub message: String,
    pub groups: Vec<GroupView>,
    pub hosts: Vec<HostView>,
}

/// Host counts of one group. Every host is counted exactly once:
/// `done + running + failed + pending == total`, with skipped hosts counted in
/// `pending` (they are the hosts that never ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub state: GroupState,
    /// Hosts that succeeded.
    pub done: usize,
    /// Hosts running a step or soaking.
    pub running: usize,
    /// Hosts that failed.
    pub failed: usize,
    /// Hosts not started yet, or skipped.
    pub pending: usize,
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub host: HostId,
    pub group: String,
    pub state: HostState,
    /// Installed version of the rollout's component (last reported).
    pub version: Option<String>,
    /// Name of the step running now, if any.
    pub current_step: Option<String>,
    /// Why the host failed, or the last step's message.
    pub message: String,
}

/// The state machine of one rollout. See the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Engine {
    rollout_id: String,
    spec: RolloutSpec,
    state: RolloutState,
    message: String,
    /// Why the rollout halted, kept for the final message (a later ignored
    /// command may overwrite `message` meanwhile).
    halt_reason: Option<String>,
    /// Who aborted the rollout, for the same reason.
    aborted_by: Option<String>,
    hosts: Vec<HostRt>,
    groups: Vec<GroupRt>,
    by_name: HashMap<HostId, usize>,
    /// Every execution id this rollout issued, with its host.
    executions: HashMap<ExecutionId, usize>,
    /// Hosts running or soaking, over all groups.
    in_flight: usize,
    /// Groups not yet succeeded, failed or skipped.
    open_groups: usize,
}

/// What the engine keeps per host beyond its public [`HostState`].
#[derive(Debug, Clone)]
struct HostRt {
    state: HostState,
    group: usize,
    /// Last reported version of the rollout's component.
    installed: Option<String>,
    message: String,
    /// Executions issued so far, per step (the next attempt is this + 1).
    attempts: Vec<u32>,
    /// When the current execution's `StepDeadline` fires; meaningful while running.
    step_deadline: UnixMillis,
    /// When the current outage's `LostDeadline` fires; set while running and lost.
    lost_deadline: Option<UnixMillis>,
    /// Since when the host's agent is known to be gone, whatever the host's state.
    agent_lost_since: Option<UnixMillis>,
}

/// What the engine keeps per group.
#[derive(Debug, Clone)]
struct GroupRt {
    state: GroupState,
    /// Position in `GroupSpec::hosts` of the next host to start: hosts start
    /// in order, so everything from here on is still pending.
    next: usize,
    in_flight: usize,
    succeeded: usize,
    failed: usize,
    skipped: usize,
    /// Groups listing this one in their `after`.
    dependents: Vec<usize>,
}

impl Engine {
    /// A fresh engine in [`RolloutState::Pending`]. The spec is expected to be
    /// validated (see [`crate::plan`]): group and host indices in range, each
    /// host in exactly one group.
    pub fn new(rollout_id: impl Into<String>, spec: RolloutSpec) -> Engine {
        let mut hosts: Vec<HostRt> = spec
            .hosts
            .iter()
            .map(|h| HostRt {
                state: HostState::Pending,
                group: h.group,
                installed: None,
                message: String::new(),
                attempts: vec![0; h.steps.len()],
                step_deadline: UnixMillis(0),
                lost_deadline: None,
                agent_lost_since: None,
            })
            .collect();
        let mut groups: Vec<GroupRt> = spec
            .groups
            .iter()
            .map(|_| GroupRt {
                state: GroupState::Waiting,
                next: 0,
                in_flight: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
                dependents: Vec::new(),
            })
            .collect();
        for (gi, g) in spec.groups.iter().enumerate() {
            for &dep in &g.after {
                if let Some(d) = groups.get_mut(dep) {
                    d.dependents.push(gi);
                }
            }
            // The group's host list is what the window walks, so it decides
            // which counters a host moves.
            for &h in &g.hosts {
                if let Some(rt) = hosts.get_mut(h) {
                    rt.group = gi;
                }
            }
        }
        let by_name = spec.hosts.iter().enumerate().map(|(i, h)| (h.host.clone(), i)).collect();
        let open_groups = groups.len();
        Engine {
            rollout_id: rollout_id.into(),
            spec,
            state: RolloutState::Pending,
            message: "waiting to start".to_string(),
            halt_reason: None,
            aborted_by: None,
            hosts,
            groups,
            by_name,
            executions: HashMap::new(),
            in_flight: 0,
            open_groups,
        }
    }

    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    pub fn state(&self) -> RolloutState {
        self.state
    }

    /// True once the rollout reached a terminal state ([`Action::Finished`] was emitted).
    pub fn is_finished(&self) -> bool {
        self.state.is_terminal()
    }

    /// The rollout's status line, as shown in [`RolloutView::message`].
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Hosts of group `group` (an index into [`RolloutSpec::groups`]) running
    /// or soaking; 0 for an unknown group.
    pub fn in_flight(&self, group: usize) -> usize {
        self.groups.get(group).map_or(0, |g| g.in_flight)
    }

    /// Hosts running or soaking over the whole rollout.
    pub fn in_flight_total(&self) -> usize {
        self.in_flight
    }

    /// State of group `group` (an index into [`RolloutSpec::groups`]).
    pub fn group_state(&self, group: usize) -> Option<GroupState> {
        self.groups.get(group).map(|g| g.state)
    }

    /// The host's version of the rollout's component: the last one a step
    /// reported installing, else the one it had before the rollout.
    pub fn host_version(&self, host: &str) -> Option<&str> {
        let &i = self.by_name.get(host)?;
        self.version_of(i)
    }

    /// Apply one event at time `now` and return what the runtime must do.
    pub fn handle(&mut self, now: UnixMillis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            return out;
        }
        match event {
            Event::Started => self.on_started(now, &mut out),
            Event::AgentConnected { host } => self.on_connected(&host, &mut out),
            Event::AgentLost { host } => self.on_lost(now, &host, &mut out),
            Event::StepFinished { execution_id, outcome } => {
                self.on_step_finished(now, &execution_id, outcome, &mut out)
            }
            Event::TimerFired { timer } => self.on_timer(now, timer, &mut out),
            Event::Operator { command, by } => self.on_operator(now, command, &by, &mut out),
        }
        out
    }

    /// After a replay: dispatches (with `resend: true`) for every in-flight
    /// execution and schedules for every timer still pending, at the times
    /// first asked for (a runtime fires one already past at once). `now` is
    /// not needed for that; it is taken so callers need not special-case it.
    pub fn resume_actions(&self, _now: UnixMillis) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            return out;
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let host = &self.spec.hosts[i];
            match &h.state {
                HostState::Running { step, execution_id, .. } => {
                    out.push(Action::Dispatch {
                        host: host.host.clone(),
                        execution_id: execution_id.clone(),
                        step_index: *step,
                        step: host.steps[*step].clone(),
                        resend: true,
                    });
                    out.push(Action::Schedule {
                        at: h.step_deadline,
                        timer: Timer::StepDeadline { execution_id: execution_id.clone() },
                    });
                    if let Some(at) = h.lost_deadline {
                        out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: host.host.clone() } });
                    }
                }
                HostState::Soaking { until } => {
                    out.push(Action::Schedule { at: *until, timer: Timer::SoakOver { host: host.host.clone() } });
                }
                HostState::Pending | HostState::Succeeded | HostState::Failed { .. } | HostState::Skipped => {}
            }
        }
        out
    }

    /// The host an execution id belongs to, if this rollout issued it.
    pub fn execution_host(&self, execution_id: &str) -> Option<&HostId> {
        self.executions.get(execution_id).map(|&i| &self.spec.hosts[i].host)
    }

    pub fn host_state(&self, host: &str) -> Option<&HostState> {
        self.by_name.get(host).map(|&i| &self.hosts[i].state)
    }

    /// A summary for status displays.
    pub fn view(&self) -> RolloutView {
        let groups = self
            .spec
            .groups
            .iter()
            .zip(&self.groups)
            .map(|(spec, g)| {
                let total = spec.hosts.len();
                GroupView {
                    name: spec.name.clone(),
                    state: g.state,
                    done: g.succeeded,
                    running: g.in_flight,
                    failed: g.failed,
                    pending: total - g.succeeded - g.in_flight - g.failed,
                    total,
                }
            })
            .collect();
        let hosts = self
            .spec
            .hosts
            .iter()
            .zip(&self.hosts)
            .enumerate()
            .map(|(i, (spec, h))| HostView {
                host: spec.host.clone(),
                group: self.spec.groups.get(h.group).map_or_else(String::new, |g| g.name.clone()),
                state: h.state.clone(),
                version: self.version_of(i).map(str::to_string),
                current_step: match &h.state {
                    HostState::Running { step, .. } => Some(spec.steps[*step].name.clone()),
                    HostState::Pending
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped => None,
                },
                message: h.message.clone(),
            })
            .collect();
        RolloutView { state: self.state, message: self.message.clone(), groups, hosts }
    }

    fn version_of(&self, i: usize) -> Option<&str> {
        self.hosts[i].installed.as_deref().or(self.spec.hosts[i].initial_version.as_deref())
    }

    fn host_index(&self, host: &str) -> Option<usize> {
        self.by_name.get(host).copied()
    }

    // ---- event handlers -------------------------------------------------

    fn on_started(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Pending => {}
            RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted => return,
        }
        self.state = RolloutState::Running;
        self.message = "running".to_string();
        let mut queue = VecDeque::new();
        for g in 0..self.groups.len() {
            if self.spec.groups[g].after.is_empty() {
                self.groups[g].state = GroupState::Running;
                queue.push_back(g);
            }
        }
        self.progress(now, queue, out);
    }

    fn on_connected(&mut self, host: &str, out: &mut Vec<Action>) {
        let Some(i) = self.host_index(host) else { return };
        let h = &mut self.hosts[i];
        h.agent_lost_since = None;
        if let HostState::Running { step, execution_id, lost_since, .. } = &mut h.state {
            *lost_since = None;
            h.lost_deadline = None;
            out.push(Action::Dispatch {
                host: self.spec.hosts[i].host.clone(),
                execution_id: execution_id.clone(),
                step_index: *step,
                step: self.spec.hosts[i].steps[*step].clone(),
                resend: true,
            });
        }
    }

    fn on_lost(&mut self, now: UnixMillis, host: &str, out: &mut Vec<Action>) {
        let Some(i) = self.host_index(host) else { return };
        let timeout = self.spec.host_lost_timeout;
        let h = &mut self.hosts[i];
        if h.agent_lost_since.is_some() {
            // Already known gone: the outage, and its deadline, started earlier.
            return;
        }
        h.agent_lost_since = Some(now);
        if let HostState::Running { lost_since, .. } = &mut h.state {
            *lost_since = Some(now);
            let at = now.plus(timeout);
            h.lost_deadline = Some(at);
            out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: self.spec.hosts[i].host.clone() } });
        }
    }

    fn on_step_finished(&mut self, now: UnixMillis, execution_id: &str, outcome: StepOutcome, out: &mut Vec<Action>) {
        let Some(&i) = self.executions.get(execution_id) else { return };
        let step = match &self.hosts[i].state {
            HostState::Running { step, execution_id: current, .. } if current == execution_id => *step,
            // A duplicate or stale report: the host has moved on.
            HostState::Running { .. }
            | HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped => return,
        };
        if outcome.status.is_success() {
            if let Some((component, version)) = outcome.installed {
                let wanted = self.spec.component.as_ref().is_none_or(|c| *c == component);
                if wanted {
                    self.hosts[i].installed = Some(version);
                }
            }
            self.hosts[i].message = outcome.message;
            let steps = self.spec.hosts[i].steps.len();
            if step + 1 < steps {
                self.dispatch(i, step + 1, now, out);
                return;
            }
            let soak = self.spec.groups[self.hosts[i].group].strategy.soak;
            let stopping = self.is_stopping();
            if soak.is_zero() || stopping {
                self.host_succeeded(i, out);
            } else {
                let until = now.plus(soak);
                self.hosts[i].state = HostState::Soaking { until };
                out.push(Action::Schedule {
                    at: until,
                    timer: Timer::SoakOver { host: self.spec.hosts[i].host.clone() },
                });
                return;
            }
        } else {
            let reason =
                if outcome.message.is_empty() { default_reason(outcome.status).to_string() } else { outcome.message };
            self.host_failed(i, Some(step), reason, out);
        }
        let g = self.hosts[i].group;
        self.progress(now, VecDeque::from([g]), out);
    }

    fn on_timer(&mut self, now: UnixMillis, timer: Timer, out: &mut Vec<Action>) {
        let i = match &timer {
            Timer::SoakOver { host } => {
                let Some(i) = self.host_index(host) else { return };
                match self.hosts[i].state {
                    HostState::Soaking { .. } => {}
                    HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped => return,
                }
                self.host_succeeded(i, out);
                i
            }
            Timer::StepDeadline { execution_id } => {
                let Some(&i) = self.executions.get(execution_id) else { return };
                let step = match &self.hosts[i].state {
                    HostState::Running { step, execution_id: current, .. } if current == execution_id => *step,
                    HostState::Running { .. }
                    | HostState::Pending
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped => return,
                };
                self.host_failed(i, Some(step), "no result within timeout".to_string(), out);
                i
            }
            Timer::LostDeadline { host } => {
                let Some(i) = self.host_index(host) else { return };
                let h = &self.hosts[i];
                let step = match &h.state {
                    HostState::Running { step, lost_since: Some(_), .. } => *step,
                    HostState::Running { .. }
                    | HostState::Pending
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped => return,
                };
                // A timer from an earlier outage fires before the current one's.
                match h.lost_deadline {
                    Some(at) if now >= at => {}
                    Some(_) | None => return,
                }
                self.host_failed(i, Some(step), "agent lost".to_string(), out);
                i
            }
        };
        let g = self.hosts[i].group;
        self.progress(now, VecDeque::from([g]), out);
    }

    fn on_operator(&mut self, now: UnixMillis, command: OperatorCommand, by: &str, out: &mut Vec<Action>) {
        let state = self.state;
        match command {
            OperatorCommand::Pause => match state {
                RolloutState::Running => {
                    self.state = RolloutState::Paused;
                    self.message = format!("paused by {by}");
                }
                RolloutState::Pending
                | RolloutState::Paused
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted => {
                    self.message = format!("pause by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Resume => match state {
                RolloutState::Paused => {
                    self.state = RolloutState::Running;
                    self.message = format!("resumed by {by}");
                    let queue =
                        (0..self.groups.len()).filter(|&g| self.groups[g].state == GroupState::Running).collect();
                    self.progress(now, queue, out);
                }
                RolloutState::Pending
                | RolloutState::Running
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted => {
                    self.message = format!("resume by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Abort => match state {
                RolloutState::Pending | RolloutState::Running | RolloutState::Paused | RolloutState::Halting => {
                    self.state = RolloutState::Aborting;
                    self.message = format!("aborted by {by}");
                    self.aborted_by = Some(by.to_string());
                    self.end_soaks(out);
                    self.maybe_finish(out);
                }
                RolloutState::Aborting | RolloutState::Succeeded | RolloutState::Failed | RolloutState::Aborted => {
                    self.message = format!("abort by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Approve => {
                self.message = format!("approved by {by} (nothing was waiting for approval)");
            }
        }
    }

    // ---- transitions ----------------------------------------------------

    /// Halting or aborting: nothing new may start.
    fn is_stopping(&self) -> bool {
        match self.state {
            RolloutState::Halting | RolloutState::Aborting => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted => false,
        }
    }

    /// Issue a new execution of `step` on host `i` and arm its deadline.
    fn dispatch(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let plan = &self.spec.hosts[i];
        let h = &mut self.hosts[i];
        h.attempts[step] += 1;
        let execution_id = format!("{}/{}/{}/{}", self.rollout_id, plan.host, step, h.attempts[step]);
        let previous = self.executions.insert(execution_id.clone(), i);
        debug_assert!(previous.is_none(), "execution id {execution_id} issued twice");
        let deadline = now.plus(plan.steps[step].timeout).plus(STEP_GRACE);
        h.step_deadline = deadline;
        // The outage, if any, carries over from the previous step; a host
        // starting while its agent is gone gets its deadline counted from now.
        let lost_since = match &h.state {
            HostState::Running { lost_since, .. } => *lost_since,
            HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped => h.agent_lost_since.map(|_| now),
        };
        h.state = HostState::Running { step, execution_id: execution_id.clone(), since: now, lost_since };
        out.push(Action::Dispatch {
            host: plan.host.clone(),
            execution_id: execution_id.clone(),
            step_index: step,
            step: plan.steps[step].clone(),
            resend: false,
        });
        out.push(Action::Schedule { at: deadline, timer: Timer::StepDeadline { execution_id } });
        if lost_since.is_some() && h.lost_deadline.is_none() {
            let at = now.plus(self.spec.host_lost_timeout);
            h.lost_deadline = Some(at);
            out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: plan.host.clone() } });
        }
    }

    /// Take host `i` out of the in-flight counts if it was in flight.
    fn leave_flight(&mut self, i: usize) {
        let was_in_flight = match self.hosts[i].state {
            HostState::Running { .. } | HostState::Soaking { .. } => true,
            HostState::Pending | HostState::Succeeded | HostState::Failed { .. } | HostState::Skipped => false,
        };
        if was_in_flight {
            self.in_flight -= 1;
            self.groups[self.hosts[i].group].in_flight -= 1;
        }
        self.hosts[i].lost_deadline = None;
    }

    fn host_succeeded(&mut self, i: usize, out: &mut Vec<Action>) {
        self.leave_flight(i);
        self.hosts[i].state = HostState::Succeeded;
        self.groups[self.hosts[i].group].succeeded += 1;
        out.push(Action::HostDone { host: self.spec.hosts[i].host.clone(), state: HostState::Succeeded });
    }

    fn host_failed(&mut self, i: usize, step: Option<usize>, reason: String, out: &mut Vec<Action>) {
        self.leave_flight(i);
        let state = HostState::Failed { step, reason: reason.clone() };
        self.hosts[i].state = state.clone();
        self.hosts[i].message = reason;
        out.push(Action::HostDone { host: self.spec.hosts[i].host.clone(), state });
        let g = self.hosts[i].group;
        self.groups[g].failed += 1;
        let budget = self.spec.groups[g].strategy.max_failures;
        if self.groups[g].failed <= budget || self.groups[g].state != GroupState::Running {
            return;
        }
        self.groups[g].state = GroupState::Failed;
        self.open_groups -= 1;
        let reason = format!(
            "group {} has {} failed hosts, more than its budget of {}",
            self.spec.groups[g].name, self.groups[g].failed, budget
        );
        match self.state {
            RolloutState::Running | RolloutState::Paused => {
                self.state = RolloutState::Halting;
                self.message = format!("halting: {reason}");
                self.halt_reason = Some(reason);
                self.end_soaks(out);
            }
            RolloutState::Halting | RolloutState::Aborting => {
                self.halt_reason.get_or_insert(reason);
            }
            RolloutState::Pending | RolloutState::Succeeded | RolloutState::Failed | RolloutState::Aborted => {}
        }
    }

    /// Once nothing new will start, a soak guards nothing: its host succeeds.
    fn end_soaks(&mut self, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            if self.groups[g].in_flight == 0 {
                continue;
            }
            for k in 0..self.groups[g].next {
                let i = self.spec.groups[g].hosts[k];
                match self.hosts[i].state {
                    HostState::Soaking { .. } => self.host_succeeded(i, out),
                    HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped => {}
                }
            }
        }
    }

    /// Start hosts in the queued groups, close the groups that finished,
    /// start the groups they unblock, and finish the rollout if it is over.
    fn progress(&mut self, now: UnixMillis, mut queue: VecDeque<usize>, out: &mut Vec<Action>) {
        while let Some(g) = queue.pop_front() {
            if self.groups[g].state != GroupState::Running {
                continue;
            }
            self.fill(g, now, out);
            let rt = &self.groups[g];
            if rt.succeeded + rt.failed + rt.skipped < self.spec.groups[g].hosts.len() {
                continue;
            }
            self.groups[g].state = GroupState::Succeeded;
            self.open_groups -= 1;
            let can_start_groups = match self.state {
                RolloutState::Running | RolloutState::Paused => true,
                RolloutState::Pending
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted => false,
            };
            if !can_start_groups {
                continue;
            }
            for k in 0..self.groups[g].dependents.len() {
                let d = self.groups[g].dependents[k];
                let ready = self.groups[d].state == GroupState::Waiting
                    && self.spec.groups[d].after.iter().all(|&a| self.groups[a].state == GroupState::Succeeded);
                if ready {
                    self.groups[d].state = GroupState::Running;
                    queue.push_back(d);
                }
            }
        }
        self.maybe_finish(out);
    }

    /// Start pending hosts of group `g` while its window has room.
    fn fill(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if self.state != RolloutState::Running {
            return;
        }
        let max_parallel = self.spec.groups[g].strategy.max_parallel.max(1);
        while self.groups[g].state == GroupState::Running
            && self.groups[g].in_flight < max_parallel
            && self.groups[g].next < self.spec.groups[g].hosts.len()
        {
            let i = self.spec.groups[g].hosts[self.groups[g].next];
            self.groups[g].next += 1;
            if self.spec.hosts[i].steps.is_empty() {
                self.host_succeeded(i, out);
            } else {
                self.in_flight += 1;
                self.groups[g].in_flight += 1;
                self.dispatch(i, 0, now, out);
            }
        }
    }

    fn maybe_finish(&mut self, out: &mut Vec<Action>) {
        if self.in_flight > 0 {
            return;
        }
        match self.state {
            RolloutState::Halting => {
                let reason = self.halt_reason.clone().unwrap_or_default();
                self.finish(RolloutState::Failed, format!("failed: {reason}"), out);
            }
            RolloutState::Aborting => {
                let by = self.aborted_by.clone().unwrap_or_default();
                self.finish(RolloutState::Aborted, format!("aborted by {by}"), out);
            }
            RolloutState::Running | RolloutState::Paused if self.open_groups == 0 => {
                let message = format!("succeeded: {} hosts upgraded", self.spec.hosts.len());
                self.finish(RolloutState::Succeeded, message, out);
            }
            RolloutState::Running => {
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
            | RolloutState::Aborted => {}
        }
    }

    /// Skip whatever never started and enter the terminal `state`.
    fn finish(&mut self, state: RolloutState, message: String, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            let hosts = &self.spec.groups[g].hosts;
            for &i in &hosts[self.groups[g].next..] {
                self.hosts[i].state = HostState::Skipped;
                self.hosts[i].message = format!("skipped: the rollout {}", skip_cause(state));
                self.groups[g].skipped += 1;
                out.push(Action::HostDone { host: self.spec.hosts[i].host.clone(), state: HostState::Skipped });
            }
            self.groups[g].next = hosts.len();
            match self.groups[g].state {
                GroupState::Waiting | GroupState::Running => {
                    self.groups[g].state = GroupState::Skipped;
                    self.open_groups -= 1;
                }
                GroupState::Succeeded | GroupState::Failed | GroupState::Skipped => {}
            }
        }
        self.state = state;
        self.message = message;
        out.push(Action::Finished { state });
    }
}

fn skip_cause(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Failed => "failed",
        RolloutState::Aborted => "was aborted",
        // Only reachable for hosts outside every group of a malformed spec.
        RolloutState::Succeeded => "ended",
        RolloutState::Pending
        | RolloutState::Running
        | RolloutState::Paused
        | RolloutState::Halting
        | RolloutState::Aborting => "stopped",
    }
}

fn default_reason(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "step succeeded",
        StepStatus::Failed => "step failed",
        StepStatus::Unsupported => "step kind not supported by the agent",
        StepStatus::TimedOut => "step timed out on the agent",
    }
}

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
//!   exceeding its failure budget. Independent groups run in parallel.
//! - Inside a group hosts move through a sliding window of
//!   `strategy.max_parallel`; a finished host keeps its slot for `soak`.
//! - A host fails at its first failed step (checks retry on the agent).
//! - More than `max_failures` failed hosts in a group halts the whole rollout:
//!   nothing new starts, in-flight steps finish, then the rollout is `Failed`.
//! - A host whose agent is lost stays in flight for `host_lost_timeout`; if the
//!   agent comes back its in-flight execution is sent again under the same id
//!   (the agent answers a known id from its store), otherwise the host fails.
//! - Execution ids are `rollout/host/step/attempt` and never reused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{HostId, RolloutSpec, StepOutcome, StepSpec, UnixMillis};

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
    /// It never started (the rollout halted or was aborted first, or a
    /// dependency failed).
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub state: GroupState,
    pub done: usize,
    pub running: usize,
    pub failed: usize,
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
    hosts: Vec<HostState>,
    // Implementation detail; replaced by the real engine.
    _index: BTreeMap<HostId, usize>,
}

impl Engine {
    /// A fresh engine in [`RolloutState::Pending`].
    pub fn new(rollout_id: impl Into<String>, spec: RolloutSpec) -> Engine {
        let hosts = vec![HostState::Pending; spec.hosts.len()];
        let _index = spec.hosts.iter().enumerate().map(|(i, h)| (h.host.clone(), i)).collect();
        Engine { rollout_id: rollout_id.into(), spec, state: RolloutState::Pending, hosts, _index }
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
    /// Apply one event at time `now` and return what the runtime must do.
    pub fn handle(&mut self, _now: UnixMillis, _event: Event) -> Vec<Action> {
        Vec::new()
    }
    /// After a replay: dispatches (with `resend: true`) for every in-flight
    /// execution and schedules for every timer still pending.
    pub fn resume_actions(&self, _now: UnixMillis) -> Vec<Action> {
        Vec::new()
    }
    /// The host an execution id belongs to, if this rollout issued it.
    pub fn execution_host(&self, _execution_id: &str) -> Option<&HostId> {
        None
    }
    pub fn host_state(&self, host: &str) -> Option<&HostState> {
        self._index.get(host).map(|&i| &self.hosts[i])
    }
    /// A summary for status displays.
    pub fn view(&self) -> RolloutView {
        let _ = StepSpec::clone;
        RolloutView { state: self.state, message: String::new(), groups: Vec::new(), hosts: Vec::new() }
    }
}

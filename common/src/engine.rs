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
//!   while it is running a step, soaking or rolling back, so a finished host
//!   keeps its slot for `soak`. A host with no steps succeeds at once, without
//!   a soak.
//! - A host fails at its first failed step (checks retry on the agent), with
//!   the agent's message as its reason. A step with no result within its
//!   timeout plus [`STEP_GRACE`] fails the host with "no result within timeout".
//! - A host that has started runs all its steps even when the rollout is
//!   paused, halting, aborting or rolling back: stopping between, say, "drain"
//!   and "undrain" would leave it worse off than either end. Pause, halt,
//!   abort and rollback only stop *new* hosts from starting.
//! - **Budgets.** More than `max_failures` failed hosts in a group fails the
//!   group at once; more than the rollout's `max_failures` failed hosts over
//!   all groups (counted over the whole rollout, never per batch) does the
//!   same for the rollout. Either one then acts on `on_failure` (the group's
//!   for a group budget, the plan's for the rollout budget): `halt` and
//!   `rollback_host` halt the rollout — nothing new starts, in-flight steps
//!   finish, then the rollout is `Failed`; `rollback_group` halts and also
//!   rolls back every host the failed group started; `rollback_all` rolls
//!   back every host the rollout started (the rollout is `RollingBack`).
//!   A failure while aborting keeps it aborting unless it asks for
//!   `rollback_all`.
//! - **Canaries.** A group with a canary phase starts as `Canary`: only its
//!   first `canary.hosts` hosts (the plan puts the canaries first) move
//!   through the window. Any canary failure fails the group at once, whatever
//!   its budget, before any other host is touched, and `on_failure` applies.
//!   Once every canary succeeded (soak included), the group waits in
//!   `AwaitingApproval` for an operator's `Approve`, or in `CanarySoak` until
//!   its [`Timer::PromoteCanaries`] fires (`promote: { after }`; an `Approve`
//!   ends that wait early), then runs its other hosts as usual. `Approve`
//!   promotes every group waiting; it is recorded only in the message when
//!   nothing waits. A group whose canaries pass while the rollout is stopping
//!   is not promoted (it is skipped at the end).
//! - **Rollback.** A host's rollback runs the undos of the steps that
//!   succeeded (see [`HostPlan::rollback_plan`]), last first, then its group's
//!   rollback steps, through the same dispatch mechanism
//!   ([`Action::DispatchRollback`], execution ids `rollout/host/rbN/attempt`),
//!   with the same step deadline and lost-agent rules. It stops at the first
//!   failed rollback step: the host ends `RollbackFailed`, otherwise
//!   `RolledBack`. A host is rolled back at most once, only if it started
//!   (a host that never ran a step has nothing to undo), and not at all when
//!   its rollback list is empty (its state stays, its message says there was
//!   nothing to roll back).
//! - Under any `rollback_*` mode a host that fails is rolled back at once,
//!   keeping the slot it was using; its failure still counts in the budgets.
//! - A group rollback (`rollback_group`, or every started group under
//!   `rollback_all` or the operator's `Rollback`) walks the group's started
//!   hosts in reverse order through the same `max_parallel` window, waiting
//!   for hosts still running their steps to finish first; the group is then
//!   `RolledBack` (or `RollbackFailed` if any host's rollback failed). Under a
//!   whole-rollout rollback a group starts rolling back only once every group
//!   that depends on it has finished rolling back (reverse DAG order).
//! - The operator's `Rollback` rolls back everything started so far, as
//!   `rollback_all` does, from any state that is not terminal or already
//!   rolling back. The rollout ends `RolledBack` once every rollback is done,
//!   or `Failed` if one of them failed. A rollback cannot be paused or
//!   aborted: pause, resume and abort are ignored while rolling back. A
//!   finished rollout ignores every event, `Rollback` included.
//! - When the rollout starts halting, aborting or rolling back, hosts that are
//!   only soaking succeed at once: the soak guards the next host, and none
//!   will start.
//! - When nothing is in flight and no rollback is waiting any more: halting
//!   ends `Failed`, aborting ends `Aborted`, rolling back ends `RolledBack`
//!   (or `Failed`), and running (or paused) with every group finished ends
//!   `Succeeded` (a host rolled back within its budget does not prevent that).
//!   Hosts that never started are then `Skipped` (each with its own
//!   [`Action::HostDone`]), and so is every group that did not finish. A
//!   paused rollout with work left, or a group waiting to be promoted, keeps
//!   the rollout open. [`Action::Finished`] is emitted exactly once; after it
//!   every event is ignored.
//! - [`Action::HostDone`] is emitted when a host's upgrade ends (`Succeeded`,
//!   `Failed`, `Skipped`) and again when a rollback of it ends (`RolledBack`,
//!   `RollbackFailed`): a rollback is the only thing that reopens a host.
//! - A host whose agent is lost stays in flight for `host_lost_timeout`; if the
//!   agent comes back its in-flight execution is sent again under the same id
//!   (the agent answers a known id from its store), otherwise the host fails
//!   with "agent lost" (or its rollback fails). Connectivity is tracked for
//!   every host, so a host that starts while its agent is known to be gone
//!   gets the same deadline, counted from its start. Any reconnect of a
//!   running host re-sends its execution: the agent deduplicates by id, and a
//!   new session may have missed it.
//! - Timers are never cancelled. A timer that no longer matches the state is
//!   ignored: a soak for a host no longer soaking, a step deadline for an
//!   execution no longer current, a lost deadline for a host that reconnected
//!   or whose current outage started later, a promotion for a group no longer
//!   waiting. Runtimes fire a timer at or after its `at`; the lost deadline
//!   relies on that to tell outages apart.
//! - Operator commands that do not apply in the current state (pausing a
//!   paused rollout, resuming a running one, aborting one already aborting,
//!   approving when nothing waits) change nothing but the view's message,
//!   which says why.
//! - Execution ids are `rollout/host/step/attempt` (rollback steps:
//!   `rollout/host/rbN/attempt`) and never reused: attempts are counted per
//!   host and step, starting at 1.
//! - A spec whose dependencies can never be met (a cycle that validation
//!   missed) ends `Failed` rather than running forever.
//! - **Host entries.** A host is one entry of [`RolloutSpec::hosts`] per
//!   group it is in: a host that runs a hook (a `hook` group, see
//!   [`crate::plan`]) also has its normal group's entry. Entries are keyed by
//!   [`HostPlan::key`] (the host id, or `host@group` for a hook entry):
//!   execution ids (`rollout/KEY/step/attempt`), `SoakOver`/`LostDeadline`
//!   timers, [`Action::HostDone`], [`Engine::host_state`] and
//!   [`RolloutView`]'s `key` use it. Dispatches name the agent
//!   ([`HostPlan::host`]), and so does [`Engine::execution_host`];
//!   `AgentConnected`/`AgentLost` name the agent and apply to each of its
//!   entries. Entries of one agent are independent: each holds its own slot
//!   in its own group. The final "N hosts upgraded" does not count hook runs.
//! - **Captured values.** When a step that declares a capture
//!   ([`HostPlan::captures`]) succeeds, the value is read from the outcome's
//!   `stdout_tail` ([`capture::extract`]) and kept for that entry (and, for a
//!   hook group's entry, rollout-wide); a capture that does not match fails
//!   the host at that step, with the capture's message. Every dispatch (and
//!   re-send) of a step or rollback step carries the step with
//!   `{{captured.NAME}}` substituted: the entry's own value first, else a
//!   hook's. Values come only from stored `StepFinished` events, so a replay
//!   rebuilds them and re-sends identical steps. A step whose value is
//!   missing (a spec the plan did not check, or a rollback step needing a
//!   value whose step never succeeded) is not sent: the host fails (or its
//!   rollback fails) saying which value is missing. Values show in
//!   [`HostView::captured`].
//!
//! Cost: each event costs time in proportion to the work it triggers
//! (dispatches, groups started), not to the fleet's size; hosts and
//! executions are found through hash maps, and groups keep their own counters.
//! Only the transitions to halting/aborting/rolling back, the final skip and
//! [`Engine::view`] walk the hosts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capture;
use crate::model::{
    GroupSpec, HostId, HostPlan, OnFailure, Promote, RolloutSpec, StepKind, StepOutcome, StepSpec, StepStatus,
    UnixMillis,
};

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
    /// An agent reported the outcome of an execution (a step or a rollback step).
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
    /// Promote every group whose canaries passed and that waits for approval
    /// (or for its promotion timer).
    Approve,
    /// Start nothing new and roll back every host started so far, in reverse
    /// DAG order; the rollout then ends `RolledBack` (or `Failed`).
    Rollback,
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
    /// The soak after a group's canaries passed is over: the group goes on
    /// with its other hosts (`promote: { after }`).
    PromoteCanaries { group: String },
}

/// Something the runtime must do, returned by [`Engine::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send a step to a host's agent. `resend` is true when the same execution
    /// is sent again after a reconnect (the agent answers it from its store
    /// if it already ran it).
    Dispatch { host: HostId, execution_id: ExecutionId, step_index: usize, step: StepSpec, resend: bool },
    /// Send a rollback step to a host's agent: carried out exactly like
    /// [`Action::Dispatch`] (same message to the agent, same dedup by id, the
    /// result comes back as [`Event::StepFinished`]). `rollback_index` is the
    /// position in the host's rollback list, not a step index.
    DispatchRollback { host: HostId, execution_id: ExecutionId, rollback_index: usize, step: StepSpec, resend: bool },
    /// Feed `Event::TimerFired { timer }` back at `at`.
    Schedule { at: UnixMillis, timer: Timer },
    /// A host's upgrade, or later its rollback, ended in `state`.
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
    /// A failure budget was exceeded: in-flight work (and any group rollback)
    /// finishes, then `Failed`.
    Halting,
    /// An operator aborted it: in-flight work finishes, then `Aborted`.
    Aborting,
    /// Every host started so far is being rolled back (`rollback_all` or the
    /// operator's `Rollback`); nothing new starts.
    RollingBack,
    /// Every group finished within its failure budget.
    Succeeded,
    /// A failure budget was exceeded, or a rollback failed.
    Failed,
    /// An operator aborted it.
    Aborted,
    /// Every host it started was rolled back (or had nothing to undo).
    RolledBack,
}

impl RolloutState {
    /// True for states no event can leave.
    pub fn is_terminal(self) -> bool {
        match self {
            RolloutState::Succeeded | RolloutState::Failed | RolloutState::Aborted | RolloutState::RolledBack => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::RollingBack => false,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Pending => "pending",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halting => "halting",
            RolloutState::Aborting => "aborting",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
            RolloutState::Aborted => "aborted",
            RolloutState::RolledBack => "rolled_back",
        }
    }
}

/// Lifecycle of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Some group it depends on has not finished yet.
    Waiting,
    /// Only its canary hosts are being upgraded.
    Canary,
    /// Its canaries passed; it waits for an operator's `Approve`.
    AwaitingApproval,
    /// Its canaries passed; it goes on when its promotion timer fires.
    CanarySoak,
    /// Its hosts are being upgraded.
    Running,
    /// Every host finished and failures stayed within budget.
    Succeeded,
    /// Its failure budget was exceeded, or a canary failed.
    Failed,
    /// It did not run to its end: a dependency failed, or the rollout halted
    /// or was aborted before all its hosts started.
    Skipped,
    /// The hosts it started are being rolled back.
    RollingBack,
    /// Every host it started was rolled back (or had nothing to undo).
    RolledBack,
    /// Its rollback ended, and at least one host's rollback failed.
    RollbackFailed,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Waiting => "waiting",
            GroupState::Canary => "canary",
            GroupState::AwaitingApproval => "awaiting_approval",
            GroupState::CanarySoak => "canary_soak",
            GroupState::Running => "running",
            GroupState::Succeeded => "succeeded",
            GroupState::Failed => "failed",
            GroupState::Skipped => "skipped",
            GroupState::RollingBack => "rolling_back",
            GroupState::RolledBack => "rolled_back",
            GroupState::RollbackFailed => "rollback_failed",
        }
    }

    /// True while the group can still finish its upgrade (it counts as open).
    fn is_open(self) -> bool {
        match self {
            GroupState::Waiting
            | GroupState::Canary
            | GroupState::AwaitingApproval
            | GroupState::CanarySoak
            | GroupState::Running => true,
            GroupState::Succeeded
            | GroupState::Failed
            | GroupState::Skipped
            | GroupState::RollingBack
            | GroupState::RolledBack
            | GroupState::RollbackFailed => false,
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
    /// Rollback step `step` (an index into the host's rollback list) is
    /// executing as `execution_id`; `lost_since` as for `Running`.
    RollingBack { step: usize, execution_id: ExecutionId, since: UnixMillis, lost_since: Option<UnixMillis> },
    /// Every rollback step passed.
    RolledBack,
    /// Rollback step `step` failed, timed out, or the agent was lost.
    RollbackFailed { step: Option<usize>, reason: String },
}

impl HostState {
    /// True for states that end a host's upgrade. `Succeeded` and `Failed`
    /// are terminal too, although a rollback may later take such a host on to
    /// `RollingBack`; nothing else reopens a host.
    pub fn is_terminal(&self) -> bool {
        match self {
            HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => true,
            HostState::Pending
            | HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::RollingBack { .. } => false,
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
            HostState::RollingBack { .. } => "rolling_back",
            HostState::RolledBack => "rolled_back",
            HostState::RollbackFailed { .. } => "rollback_failed",
        }
    }

    /// True while the host holds a slot of its group's window.
    fn in_flight(&self) -> bool {
        match self {
            HostState::Running { .. } | HostState::Soaking { .. } | HostState::RollingBack { .. } => true,
            HostState::Pending
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => false,
        }
    }

    /// The execution in progress: (rollback?, index, id, lost_since).
    fn current(&self) -> Option<(bool, usize, &ExecutionId, Option<UnixMillis>)> {
        match self {
            HostState::Running { step, execution_id, lost_since, .. } => {
                Some((false, *step, execution_id, *lost_since))
            }
            HostState::RollingBack { step, execution_id, lost_since, .. } => {
                Some((true, *step, execution_id, *lost_since))
            }
            HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => None,
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
/// `done + running + failed + rolled_back + pending == total`, with skipped
/// hosts counted in `pending` (they are the hosts that never ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub state: GroupState,
    /// Hosts that succeeded (and were not rolled back).
    pub done: usize,
    /// Hosts running a step, soaking or rolling back.
    pub running: usize,
    /// Hosts that failed (and were not rolled back).
    pub failed: usize,
    /// Hosts whose rollback ended, rolled back or failed.
    #[serde(default)]
    pub rolled_back: usize,
    /// Hosts not started yet, or skipped.
    pub pending: usize,
    pub total: usize,
    /// How many of the group's first hosts are canaries (0: no canary phase).
    #[serde(default)]
    pub canaries: usize,
    /// When a group in `CanarySoak` promotes itself.
    #[serde(default)]
    pub promote_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub host: HostId,
    pub group: String,
    pub state: HostState,
    /// Installed version of the rollout's component (last reported).
    pub version: Option<String>,
    /// Name of the step (or rollback step) running now, if any.
    pub current_step: Option<String>,
    /// Why the host failed or was rolled back, or the last step's message.
    pub message: String,
    /// The entry's key ([`HostPlan::key`]): the host id, or `host@group`
    /// for a host running a hook.
    #[serde(default)]
    pub key: String,
    /// Values this entry's steps captured, by name.
    #[serde(default)]
    pub captured: BTreeMap<String, String>,
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
    /// Why the whole rollout is being rolled back.
    rollback_reason: Option<String>,
    hosts: Vec<HostRt>,
    groups: Vec<GroupRt>,
    /// Host entries by [`HostPlan::key`].
    by_name: HashMap<String, usize>,
    /// Host entries by agent ([`HostPlan::host`]): several when the host
    /// also runs a hook.
    by_agent: HashMap<HostId, Vec<usize>>,
    group_by_name: HashMap<String, usize>,
    /// Values captured by hook steps, visible to every host entry.
    hook_captured: BTreeMap<String, String>,
    /// Every execution id this rollout issued, with its host.
    executions: HashMap<ExecutionId, usize>,
    /// Hosts running, soaking or rolling back, over all groups.
    in_flight: usize,
    /// Groups not yet succeeded, failed, skipped or rolling back.
    open_groups: usize,
    /// Hosts whose upgrade failed, over all groups.
    failed_total: usize,
    /// The rollout-wide budget was exceeded (it acts once).
    rollout_budget_exceeded: bool,
    /// Hosts waiting in some group's rollback queue.
    rollback_queued: usize,
    /// Host rollbacks that ended, by outcome.
    rolled_back: usize,
    rollback_failed: usize,
    /// Groups to look at on the next [`Engine::progress`].
    wake: Vec<usize>,
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
    /// Steps that succeeded (steps run in order, so these are the first ones).
    steps_ok: usize,
    /// The rollback list, fixed when the rollback starts.
    rollback: Vec<StepSpec>,
    /// Executions issued so far, per rollback step.
    rollback_attempts: Vec<u32>,
    /// A rollback was started or found empty: a host is rolled back once.
    rollback_considered: bool,
    /// When the current execution's `StepDeadline` fires; meaningful while running.
    step_deadline: UnixMillis,
    /// When the current outage's `LostDeadline` fires; set while running and lost.
    lost_deadline: Option<UnixMillis>,
    /// Since when the host's agent is known to be gone, whatever the host's state.
    agent_lost_since: Option<UnixMillis>,
    /// Values its steps captured, by name.
    captured: BTreeMap<String, String>,
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
    /// Canary hosts (the first ones); 0 when the group has no canary phase.
    canaries: usize,
    /// When a group in `CanarySoak` is promoted.
    promote_at: Option<UnixMillis>,
    /// Hosts still to roll back, in order (front first).
    rollback_queue: VecDeque<usize>,
    /// Hosts of this group whose rollback failed.
    rollback_failed: usize,
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
                steps_ok: 0,
                rollback: Vec::new(),
                rollback_attempts: Vec::new(),
                rollback_considered: false,
                step_deadline: UnixMillis(0),
                lost_deadline: None,
                agent_lost_since: None,
                captured: BTreeMap::new(),
            })
            .collect();
        let mut groups: Vec<GroupRt> = spec
            .groups
            .iter()
            .map(|g| GroupRt {
                state: GroupState::Waiting,
                next: 0,
                in_flight: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
                canaries: g.canary.map_or(0, |c| c.hosts.max(1).min(g.hosts.len())),
                promote_at: None,
                rollback_queue: VecDeque::new(),
                rollback_failed: 0,
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
        let by_name = spec.hosts.iter().enumerate().map(|(i, h)| (h.key().to_string(), i)).collect();
        let mut by_agent: HashMap<HostId, Vec<usize>> = HashMap::new();
        for (i, h) in spec.hosts.iter().enumerate() {
            by_agent.entry(h.host.clone()).or_default().push(i);
        }
        let group_by_name = spec.groups.iter().enumerate().map(|(i, g)| (g.name.clone(), i)).collect();
        let open_groups = groups.len();
        Engine {
            rollout_id: rollout_id.into(),
            spec,
            state: RolloutState::Pending,
            message: "waiting to start".to_string(),
            halt_reason: None,
            aborted_by: None,
            rollback_reason: None,
            hosts,
            groups,
            by_name,
            by_agent,
            group_by_name,
            hook_captured: BTreeMap::new(),
            executions: HashMap::new(),
            in_flight: 0,
            open_groups,
            failed_total: 0,
            rollout_budget_exceeded: false,
            rollback_queued: 0,
            rolled_back: 0,
            rollback_failed: 0,
            wake: Vec::new(),
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

    /// Hosts of group `group` (an index into [`RolloutSpec::groups`]) running,
    /// soaking or rolling back; 0 for an unknown group.
    pub fn in_flight(&self, group: usize) -> usize {
        self.groups.get(group).map_or(0, |g| g.in_flight)
    }

    /// Hosts running, soaking or rolling back over the whole rollout.
    pub fn in_flight_total(&self) -> usize {
        self.in_flight
    }

    /// Hosts whose upgrade failed, over the whole rollout.
    pub fn failed_total(&self) -> usize {
        self.failed_total
    }

    /// State of group `group` (an index into [`RolloutSpec::groups`]).
    pub fn group_state(&self, group: usize) -> Option<GroupState> {
        self.groups.get(group).map(|g| g.state)
    }

    /// The host's version of the rollout's component: the last one a step
    /// reported installing, else the one it had before the rollout. `host` is
    /// an entry key ([`HostPlan::key`]), which for a normal group's host is
    /// its id.
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
                HostState::Running { .. } | HostState::RollingBack { .. } => {
                    out.push(self.send_current(i, true).expect("a running host has an execution"));
                    if let Some((_, _, execution_id, _)) = h.state.current() {
                        out.push(Action::Schedule {
                            at: h.step_deadline,
                            timer: Timer::StepDeadline { execution_id: execution_id.clone() },
                        });
                    }
                    if let Some(at) = h.lost_deadline {
                        out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: host.key().to_string() } });
                    }
                }
                HostState::Soaking { until } => {
                    out.push(Action::Schedule { at: *until, timer: Timer::SoakOver { host: host.key().to_string() } });
                }
                HostState::Pending
                | HostState::Succeeded
                | HostState::Failed { .. }
                | HostState::Skipped
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => {}
            }
        }
        for (g, rt) in self.groups.iter().enumerate() {
            if let (GroupState::CanarySoak, Some(at)) = (rt.state, rt.promote_at) {
                out.push(Action::Schedule {
                    at,
                    timer: Timer::PromoteCanaries { group: self.spec.groups[g].name.clone() },
                });
            }
        }
        out
    }

    /// The host (agent id) an execution id belongs to, if this rollout issued it.
    pub fn execution_host(&self, execution_id: &str) -> Option<&HostId> {
        self.executions.get(execution_id).map(|&i| &self.spec.hosts[i].host)
    }

    /// State of the host entry with key `host` ([`HostPlan::key`]).
    pub fn host_state(&self, host: &str) -> Option<&HostState> {
        self.by_name.get(host).map(|&i| &self.hosts[i].state)
    }

    /// A new rollout that undoes what this one upgraded, for `convoy rollback`
    /// on a rollout that has already ended (a running one rolls back in
    /// place). Every host entry that ran steps and was not rolled back gets
    /// its rollback plan — the undos of its succeeded steps, last first, then
    /// its group's rollback steps — with captured values filled in; groups go
    /// in reverse DAG order with their own windows and budgets, and halt on
    /// failure. Hook groups are not undone. `Err` names why there is nothing
    /// to do, or the host whose rollback needs a value never captured.
    pub fn undo_spec(&self) -> Result<RolloutSpec, String> {
        if !self.state.is_terminal() {
            return Err(format!("rollout {} is {}: it rolls back in place", self.rollout_id, self.state.as_str()));
        }
        let mut plans: Vec<Vec<HostPlan>> = vec![Vec::new(); self.spec.groups.len()];
        for (i, h) in self.hosts.iter().enumerate() {
            let plan = &self.spec.hosts[i];
            if self.spec.groups[h.group].hook || h.rollback_considered || h.steps_ok == 0 {
                continue;
            }
            let steps = plan
                .rollback_plan(h.steps_ok)
                .iter()
                .map(|st| self.rendered(i, st).map_err(|e| format!("host {}: {e}", plan.host)))
                .collect::<Result<Vec<_>, _>>()?;
            if steps.is_empty() {
                continue;
            }
            plans[h.group].push(HostPlan {
                host: plan.host.clone(),
                key: plan.key.clone(),
                group: h.group,
                initial_version: h.installed.clone().or_else(|| plan.initial_version.clone()),
                steps,
                undo: Vec::new(),
                rollback_steps: Vec::new(),
                captures: Vec::new(),
            });
        }
        // Groups with something to undo, newest first (reverse topological order).
        let kept: Vec<usize> = (0..self.spec.groups.len()).rev().filter(|&g| !plans[g].is_empty()).collect();
        if kept.is_empty() {
            return Err(format!("rollout {}: nothing was upgraded, nothing to roll back", self.rollout_id));
        }
        let new_index: BTreeMap<usize, usize> = kept.iter().enumerate().map(|(n, &g)| (g, n)).collect();
        let mut spec = RolloutSpec {
            plan_name: format!("rollback of {} ({})", self.rollout_id, self.spec.plan_name),
            target_version: "previous".to_string(),
            component: self.spec.component.clone(),
            groups: Vec::new(),
            hosts: Vec::new(),
            host_lost_timeout: self.spec.host_lost_timeout,
            max_failures: None,
            on_failure: OnFailure::Halt,
        };
        for &g in &kept {
            let old = &self.spec.groups[g];
            // Undo a group only after every group that depended on it is undone.
            let after =
                kept.iter().filter(|&&d| self.spec.groups[d].after.contains(&g)).map(|d| new_index[d]).collect();
            let n = new_index[&g];
            let mut hosts = Vec::new();
            for mut hp in std::mem::take(&mut plans[g]).into_iter().rev() {
                hp.group = n;
                hosts.push(spec.hosts.len());
                spec.hosts.push(hp);
            }
            spec.groups.push(GroupSpec {
                name: old.name.clone(),
                after,
                strategy: old.strategy,
                hosts,
                canary: None,
                on_failure: OnFailure::Halt,
                hook: false,
            });
        }
        Ok(spec)
    }

    /// A summary for status displays.
    pub fn view(&self) -> RolloutView {
        let mut groups: Vec<GroupView> = self
            .spec
            .groups
            .iter()
            .zip(&self.groups)
            .map(|(spec, g)| GroupView {
                name: spec.name.clone(),
                state: g.state,
                done: 0,
                running: 0,
                failed: 0,
                rolled_back: 0,
                pending: 0,
                total: spec.hosts.len(),
                canaries: g.canaries,
                promote_at: match g.state {
                    GroupState::CanarySoak => g.promote_at,
                    GroupState::Waiting
                    | GroupState::Canary
                    | GroupState::AwaitingApproval
                    | GroupState::Running
                    | GroupState::Succeeded
                    | GroupState::Failed
                    | GroupState::Skipped
                    | GroupState::RollingBack
                    | GroupState::RolledBack
                    | GroupState::RollbackFailed => None,
                },
            })
            .collect();
        for (gi, spec) in self.spec.groups.iter().enumerate() {
            for &i in &spec.hosts {
                let v = &mut groups[gi];
                match self.hosts[i].state {
                    HostState::Pending | HostState::Skipped => v.pending += 1,
                    HostState::Running { .. } | HostState::Soaking { .. } | HostState::RollingBack { .. } => {
                        v.running += 1
                    }
                    HostState::Succeeded => v.done += 1,
                    HostState::Failed { .. } => v.failed += 1,
                    HostState::RolledBack | HostState::RollbackFailed { .. } => v.rolled_back += 1,
                }
            }
        }
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
                    HostState::RollingBack { step, .. } => Some(h.rollback[*step].name.clone()),
                    HostState::Pending
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped
                    | HostState::RolledBack
                    | HostState::RollbackFailed { .. } => None,
                },
                message: h.message.clone(),
                key: spec.key().to_string(),
                captured: h.captured.clone(),
            })
            .collect();
        RolloutView { state: self.state, message: self.message.clone(), groups, hosts }
    }

    fn version_of(&self, i: usize) -> Option<&str> {
        self.hosts[i].installed.as_deref().or(self.spec.hosts[i].initial_version.as_deref())
    }

    fn host_index(&self, key: &str) -> Option<usize> {
        self.by_name.get(key).copied()
    }

    /// Host entry `i`'s key ([`HostPlan::key`]).
    fn key(&self, i: usize) -> String {
        self.spec.hosts[i].key().to_string()
    }

    /// The value of `{{captured.NAME}}` for host entry `i`: its own capture,
    /// else a hook's.
    fn captured_value(&self, i: usize, name: &str) -> Option<&str> {
        self.hosts[i].captured.get(name).or_else(|| self.hook_captured.get(name)).map(String::as_str)
    }

    /// `step` as host entry `i` runs it: captured values substituted.
    fn rendered(&self, i: usize, step: &StepSpec) -> Result<StepSpec, String> {
        capture::render_step(step, |name| self.captured_value(i, name)).map_err(|e| format!("step {}: {e}", step.name))
    }

    /// The dispatch action for host `i`'s current execution, if it has one.
    fn send_current(&self, i: usize, resend: bool) -> Option<Action> {
        let h = &self.hosts[i];
        let plan: &HostPlan = &self.spec.hosts[i];
        let (rollback, index, execution_id, _) = h.state.current()?;
        Some(if rollback {
            let step = &h.rollback[index];
            Action::DispatchRollback {
                host: plan.host.clone(),
                execution_id: execution_id.clone(),
                rollback_index: index,
                // `dispatch_rollback` checked that it renders.
                step: self.rendered(i, step).unwrap_or_else(|_| step.clone()),
                resend,
            }
        } else {
            let step = &plan.steps[index];
            Action::Dispatch {
                host: plan.host.clone(),
                execution_id: execution_id.clone(),
                step_index: index,
                // `dispatch` checked that it renders.
                step: self.rendered(i, step).unwrap_or_else(|_| step.clone()),
                resend,
            }
        })
    }

    // ---- event handlers -------------------------------------------------

    fn on_started(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Pending => {}
            RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::RollingBack
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => return,
        }
        self.state = RolloutState::Running;
        self.message = "running".to_string();
        let mut queue = VecDeque::new();
        for g in 0..self.groups.len() {
            if self.spec.groups[g].after.is_empty() {
                self.start_group(g);
                queue.push_back(g);
            }
        }
        self.progress(now, queue, out);
    }

    fn on_connected(&mut self, host: &str, out: &mut Vec<Action>) {
        for i in self.by_agent.get(host).cloned().unwrap_or_default() {
            self.entry_connected(i, out);
        }
    }

    fn entry_connected(&mut self, i: usize, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.agent_lost_since = None;
        match &mut h.state {
            HostState::Running { lost_since, .. } | HostState::RollingBack { lost_since, .. } => {
                *lost_since = None;
                h.lost_deadline = None;
            }
            HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => return,
        }
        out.extend(self.send_current(i, true));
    }

    fn on_lost(&mut self, now: UnixMillis, host: &str, out: &mut Vec<Action>) {
        for i in self.by_agent.get(host).cloned().unwrap_or_default() {
            self.entry_lost(now, i, out);
        }
    }

    fn entry_lost(&mut self, now: UnixMillis, i: usize, out: &mut Vec<Action>) {
        let timeout = self.spec.host_lost_timeout;
        let h = &mut self.hosts[i];
        if h.agent_lost_since.is_some() {
            // Already known gone: the outage, and its deadline, started earlier.
            return;
        }
        h.agent_lost_since = Some(now);
        match &mut h.state {
            HostState::Running { lost_since, .. } | HostState::RollingBack { lost_since, .. } => {
                *lost_since = Some(now);
                let at = now.plus(timeout);
                h.lost_deadline = Some(at);
                out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: self.key(i) } });
            }
            HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => {}
        }
    }

    fn on_step_finished(&mut self, now: UnixMillis, execution_id: &str, outcome: StepOutcome, out: &mut Vec<Action>) {
        let Some(&i) = self.executions.get(execution_id) else { return };
        let (rollback, step) = match self.hosts[i].state.current() {
            Some((rollback, step, current, _)) if current == execution_id => (rollback, step),
            // A duplicate or stale report: the host has moved on.
            Some(_) | None => return,
        };
        if rollback {
            self.on_rollback_step_finished(now, i, step, outcome, out);
        } else {
            self.on_upgrade_step_finished(now, i, step, outcome, out);
        }
        let g = self.hosts[i].group;
        self.progress(now, VecDeque::from([g]), out);
    }

    fn on_upgrade_step_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        if !outcome.status.is_success() {
            let reason =
                if outcome.message.is_empty() { default_reason(outcome.status).to_string() } else { outcome.message };
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
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
        self.record_installed(i, outcome.installed, None);
        self.hosts[i].message = outcome.message;
        self.hosts[i].steps_ok = step + 1;
        if step + 1 < self.spec.hosts[i].steps.len() {
            self.dispatch(i, step + 1, now, out);
            return;
        }
        let soak = self.spec.groups[self.hosts[i].group].strategy.soak;
        if soak.is_zero() || self.is_stopping() {
            self.host_succeeded(i, out);
        } else {
            let until = now.plus(soak);
            self.hosts[i].state = HostState::Soaking { until };
            out.push(Action::Schedule { at: until, timer: Timer::SoakOver { host: self.key(i) } });
        }
    }

    fn on_rollback_step_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        if !outcome.status.is_success() {
            let reason =
                if outcome.message.is_empty() { default_reason(outcome.status).to_string() } else { outcome.message };
            self.rollback_failed(i, Some(step), reason, out);
            return;
        }
        // An archive rollback names the version it goes back to; the agent's
        // report, when it makes one, wins.
        let fallback = match &self.hosts[i].rollback[step].kind {
            StepKind::ArchiveRollback(a) => a.to_version.clone().map(|v| (a.component.clone(), v)),
            StepKind::PkgRollback(p) => p.to_version.clone().map(|v| (p.package.clone(), v)),
            StepKind::Apt(_) | StepKind::Dpkg(_) | StepKind::Rpm(_) | StepKind::Service(_) => None,
            StepKind::Exec(_)
            | StepKind::Archive(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_) => None,
        };
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
    fn record_installed(&mut self, i: usize, reported: Option<(String, String)>, fallback: Option<(String, String)>) {
        if let Some((component, version)) = reported.or(fallback) {
            let wanted = self.spec.component.as_ref().is_none_or(|c| *c == component);
            if wanted {
                self.hosts[i].installed = Some(version);
            }
        }
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
                    | HostState::Skipped
                    | HostState::RollingBack { .. }
                    | HostState::RolledBack
                    | HostState::RollbackFailed { .. } => return,
                }
                self.host_succeeded(i, out);
                i
            }
            Timer::StepDeadline { execution_id } => {
                let Some(&i) = self.executions.get(execution_id) else { return };
                match self.hosts[i].state.current() {
                    Some((false, step, current, _)) if current == execution_id => {
                        self.host_failed(i, now, Some(step), "no result within timeout".to_string(), out)
                    }
                    Some((true, step, current, _)) if current == execution_id => {
                        self.rollback_failed(i, Some(step), "no result within timeout".to_string(), out)
                    }
                    Some(_) | None => return,
                }
                i
            }
            Timer::LostDeadline { host } => {
                let Some(i) = self.host_index(host) else { return };
                let h = &self.hosts[i];
                let (rollback, step) = match h.state.current() {
                    Some((rollback, step, _, Some(_))) => (rollback, step),
                    Some((_, _, _, None)) | None => return,
                };
                // A timer from an earlier outage fires before the current one's.
                match h.lost_deadline {
                    Some(at) if now >= at => {}
                    Some(_) | None => return,
                }
                if rollback {
                    self.rollback_failed(i, Some(step), "agent lost".to_string(), out);
                } else {
                    self.host_failed(i, now, Some(step), "agent lost".to_string(), out);
                }
                i
            }
            Timer::PromoteCanaries { group } => {
                let Some(&g) = self.group_by_name.get(group) else { return };
                let due = self.groups[g].promote_at.is_some_and(|at| now >= at);
                if self.groups[g].state != GroupState::CanarySoak || !due {
                    return;
                }
                self.groups[g].state = GroupState::Running;
                self.message = format!("group {group}: canaries passed their soak; promoted");
                self.progress(now, VecDeque::from([g]), out);
                return;
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
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("pause by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Resume => match state {
                RolloutState::Paused => {
                    self.state = RolloutState::Running;
                    self.message = format!("resumed by {by}");
                    let queue = (0..self.groups.len())
                        .filter(|&g| matches!(self.groups[g].state, GroupState::Running | GroupState::Canary))
                        .collect();
                    self.progress(now, queue, out);
                }
                RolloutState::Pending
                | RolloutState::Running
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("resume by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Abort => match state {
                RolloutState::Pending | RolloutState::Running | RolloutState::Paused | RolloutState::Halting => {
                    self.state = RolloutState::Aborting;
                    self.message = format!("aborted by {by}");
                    self.aborted_by = Some(by.to_string());
                    self.end_soaks(out);
                    self.progress(now, VecDeque::new(), out);
                }
                RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("abort by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Approve => match state {
                RolloutState::Running | RolloutState::Paused => {
                    let waiting: Vec<usize> = (0..self.groups.len())
                        .filter(|&g| {
                            matches!(self.groups[g].state, GroupState::AwaitingApproval | GroupState::CanarySoak)
                        })
                        .collect();
                    if waiting.is_empty() {
                        self.message = format!("approved by {by} (nothing was waiting for approval)");
                        return;
                    }
                    for &g in &waiting {
                        self.groups[g].state = GroupState::Running;
                    }
                    let names: Vec<&str> = waiting.iter().map(|&g| self.spec.groups[g].name.as_str()).collect();
                    self.message = format!("approved by {by}: promoted {}", names.join(", "));
                    self.progress(now, waiting.into(), out);
                }
                RolloutState::Pending
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("approve by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Rollback => match state {
                RolloutState::Pending
                | RolloutState::Running
                | RolloutState::Paused
                | RolloutState::Halting
                | RolloutState::Aborting => {
                    self.start_rollback_all(format!("rollback requested by {by}"), out);
                    self.progress(now, VecDeque::new(), out);
                }
                RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("rollback by {by} ignored: the rollout is {}", state.as_str());
                }
            },
        }
    }

    // ---- transitions ----------------------------------------------------

    /// Halting, aborting or rolling back: nothing new may start.
    fn is_stopping(&self) -> bool {
        match self.state {
            RolloutState::Halting | RolloutState::Aborting | RolloutState::RollingBack => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => false,
        }
    }

    /// A group whose dependencies are done starts: with its canaries, if any.
    fn start_group(&mut self, g: usize) {
        self.groups[g].state = if self.groups[g].canaries > 0 { GroupState::Canary } else { GroupState::Running };
    }

    /// Issue a new execution of `step` on host `i` and arm its deadline.
    fn dispatch(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.attempts[step] += 1;
        let execution_id = format!("{}/{}/{}/{}", self.rollout_id, self.spec.hosts[i].key(), step, h.attempts[step]);
        let timeout = self.spec.hosts[i].steps[step].timeout;
        if let Err(reason) = self.rendered(i, &self.spec.hosts[i].steps[step]) {
            // Only a spec the plan did not check gets here. The host holds
            // its slot; mark it running so failing it gives the slot back.
            self.hosts[i].state =
                HostState::Running { step, execution_id: String::new(), since: now, lost_since: None };
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        self.issue(i, false, step, execution_id, timeout, now, out);
    }

    /// Issue a new execution of rollback step `step` on host `i`.
    fn dispatch_rollback(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.rollback_attempts[step] += 1;
        let execution_id =
            format!("{}/{}/rb{}/{}", self.rollout_id, self.spec.hosts[i].key(), step, h.rollback_attempts[step]);
        let timeout = h.rollback[step].timeout;
        if let Err(reason) = self.rendered(i, &self.hosts[i].rollback[step]) {
            // A captured value its rollback needs was never captured (the
            // capturing step did not succeed).
            self.hosts[i].state =
                HostState::RollingBack { step, execution_id: String::new(), since: now, lost_since: None };
            self.rollback_failed(i, Some(step), reason, out);
            return;
        }
        self.issue(i, true, step, execution_id, timeout, now, out);
    }

    /// Make `execution_id` host `i`'s current execution, send it, arm its deadlines.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        i: usize,
        rollback: bool,
        step: usize,
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
        h.state = if rollback {
            HostState::RollingBack { step, execution_id: execution_id.clone(), since: now, lost_since }
        } else {
            HostState::Running { step, execution_id: execution_id.clone(), since: now, lost_since }
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

    /// Host `i` takes a slot of its group's window.
    fn enter_flight(&mut self, i: usize) {
        self.in_flight += 1;
        self.groups[self.hosts[i].group].in_flight += 1;
    }

    /// Take host `i` out of the in-flight counts if it was in flight.
    fn leave_flight(&mut self, i: usize) {
        if self.hosts[i].state.in_flight() {
            self.in_flight -= 1;
            self.groups[self.hosts[i].group].in_flight -= 1;
        }
        self.hosts[i].lost_deadline = None;
    }

    fn host_succeeded(&mut self, i: usize, out: &mut Vec<Action>) {
        self.leave_flight(i);
        self.hosts[i].state = HostState::Succeeded;
        self.groups[self.hosts[i].group].succeeded += 1;
        out.push(Action::HostDone { host: self.key(i), state: HostState::Succeeded });
    }

    fn host_failed(&mut self, i: usize, now: UnixMillis, step: Option<usize>, reason: String, out: &mut Vec<Action>) {
        self.leave_flight(i);
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
        let budget = self.spec.groups[g].strategy.max_failures;
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
    }

    /// A budget was exceeded (or a canary failed) in group `g`: act on `mode`.
    fn escalate(&mut self, g: usize, mode: crate::model::OnFailure, reason: String, out: &mut Vec<Action>) {
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

    fn halt(&mut self, reason: String, out: &mut Vec<Action>) {
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

    /// Roll back every host the rollout started, in reverse DAG order.
    fn start_rollback_all(&mut self, reason: String, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting => {}
            RolloutState::RollingBack
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => return,
        }
        self.state = RolloutState::RollingBack;
        self.message = format!("rolling back: {reason}");
        self.rollback_reason = Some(reason);
        self.end_soaks(out);
        for g in 0..self.groups.len() {
            if self.groups[g].next > 0 {
                self.queue_group_rollback(g);
            }
        }
    }

    /// Put every host group `g` started in its rollback queue, last first.
    fn queue_group_rollback(&mut self, g: usize) {
        let rt = &mut self.groups[g];
        if matches!(rt.state, GroupState::RollingBack | GroupState::RolledBack | GroupState::RollbackFailed) {
            return;
        }
        if rt.state.is_open() {
            self.open_groups -= 1;
        }
        rt.state = GroupState::RollingBack;
        rt.rollback_queue = self.spec.groups[g].hosts[..rt.next].iter().rev().copied().collect();
        self.rollback_queued += rt.rollback_queue.len();
        self.wake.push(g);
    }

    /// Start rolling back host `i` (which ended its upgrade), keeping or
    /// taking a slot. Returns false when there is nothing to roll back.
    fn begin_rollback(&mut self, i: usize, now: UnixMillis, why: String, out: &mut Vec<Action>) -> bool {
        let h = &mut self.hosts[i];
        if h.rollback_considered {
            return false;
        }
        h.rollback_considered = true;
        let plan = self.spec.hosts[i].rollback_plan(h.steps_ok);
        if plan.is_empty() {
            h.message = if h.message.is_empty() {
                "nothing to roll back".into()
            } else {
                format!("{}; nothing to roll back", h.message)
            };
            return false;
        }
        h.rollback_attempts = vec![0; plan.len()];
        h.rollback = plan;
        h.message = format!("rolling back: {why}");
        self.enter_flight(i);
        self.dispatch_rollback(i, 0, now, out);
        true
    }

    fn rollback_failed(&mut self, i: usize, step: Option<usize>, reason: String, out: &mut Vec<Action>) {
        self.leave_flight(i);
        let name = step.and_then(|s| self.hosts[i].rollback.get(s)).map_or("?", |s| s.name.as_str());
        self.hosts[i].message = format!("rollback failed at {name}: {reason}");
        let state = HostState::RollbackFailed { step, reason };
        self.hosts[i].state = state.clone();
        self.rollback_failed += 1;
        self.groups[self.hosts[i].group].rollback_failed += 1;
        out.push(Action::HostDone { host: self.key(i), state });
    }

    /// Once nothing new will start, a soak guards nothing: its host succeeds.
    fn end_soaks(&mut self, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            if self.groups[g].in_flight == 0 {
                continue;
            }
            for k in 0..self.groups[g].next {
                let i = self.spec.groups[g].hosts[k];
                if let HostState::Soaking { .. } = self.hosts[i].state {
                    self.host_succeeded(i, out);
                }
            }
        }
    }

    /// Start hosts in the queued groups (and the groups woken meanwhile),
    /// promote groups whose canaries passed, move group rollbacks on, close
    /// the groups that finished, start the groups they unblock, and finish
    /// the rollout if it is over.
    fn progress(&mut self, now: UnixMillis, mut queue: VecDeque<usize>, out: &mut Vec<Action>) {
        while let Some(g) = queue.pop_front().or_else(|| self.wake.pop()) {
            match self.groups[g].state {
                GroupState::RollingBack => {
                    self.fill_rollback(g, now, out, &mut queue);
                    continue;
                }
                GroupState::Canary | GroupState::Running => {}
                GroupState::Waiting
                | GroupState::AwaitingApproval
                | GroupState::CanarySoak
                | GroupState::Succeeded
                | GroupState::Failed
                | GroupState::Skipped
                | GroupState::RolledBack
                | GroupState::RollbackFailed => continue,
            }
            self.fill(g, now, out);
            if self.groups[g].state == GroupState::Canary {
                if self.canaries_passed(g, now, out) {
                    queue.push_back(g);
                }
                continue;
            }
            let rt = &self.groups[g];
            if rt.in_flight > 0 || rt.succeeded + rt.failed + rt.skipped < self.spec.groups[g].hosts.len() {
                continue;
            }
            self.groups[g].state = GroupState::Succeeded;
            self.open_groups -= 1;
            let can_start_groups = match self.state {
                RolloutState::Running | RolloutState::Paused => true,
                RolloutState::Pending
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => false,
            };
            if !can_start_groups {
                continue;
            }
            for k in 0..self.groups[g].dependents.len() {
                let d = self.groups[g].dependents[k];
                let ready = self.groups[d].state == GroupState::Waiting
                    && self.spec.groups[d].after.iter().all(|&a| self.groups[a].state == GroupState::Succeeded);
                if ready {
                    self.start_group(d);
                    queue.push_back(d);
                }
            }
        }
        self.maybe_finish(out);
    }

    /// If every canary of group `g` succeeded, move it on to waiting for its
    /// promotion. Returns true when it was promoted at once (zero soak).
    fn canaries_passed(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) -> bool {
        let rt = &self.groups[g];
        if rt.in_flight > 0 || rt.succeeded < rt.canaries || self.is_stopping() {
            return false;
        }
        let name = &self.spec.groups[g].name;
        let n = rt.canaries;
        match self.spec.groups[g].canary.map_or(Promote::Manual, |c| c.promote) {
            Promote::Manual => {
                self.groups[g].state = GroupState::AwaitingApproval;
                self.message = format!("group {name}: {n} canaries passed; waiting for approval");
                false
            }
            Promote::After(d) if d.is_zero() => {
                self.groups[g].state = GroupState::Running;
                true
            }
            Promote::After(d) => {
                let at = now.plus(d);
                self.message = format!("group {name}: {n} canaries passed; promoting at {}", at.0);
                out.push(Action::Schedule { at, timer: Timer::PromoteCanaries { group: name.clone() } });
                self.groups[g].state = GroupState::CanarySoak;
                self.groups[g].promote_at = Some(at);
                false
            }
        }
    }

    /// Start pending hosts of group `g` while its window has room (only its
    /// canaries while it is in its canary phase).
    fn fill(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if self.state != RolloutState::Running {
            return;
        }
        let max_parallel = self.spec.groups[g].strategy.max_parallel.max(1);
        loop {
            let rt = &self.groups[g];
            let limit = match rt.state {
                GroupState::Canary => rt.canaries,
                GroupState::Running => self.spec.groups[g].hosts.len(),
                GroupState::Waiting
                | GroupState::AwaitingApproval
                | GroupState::CanarySoak
                | GroupState::Succeeded
                | GroupState::Failed
                | GroupState::Skipped
                | GroupState::RollingBack
                | GroupState::RolledBack
                | GroupState::RollbackFailed => 0,
            };
            if rt.in_flight >= max_parallel || rt.next >= limit {
                return;
            }
            let i = self.spec.groups[g].hosts[rt.next];
            self.groups[g].next += 1;
            if self.spec.hosts[i].steps.is_empty() {
                self.host_succeeded(i, out);
            } else {
                self.enter_flight(i);
                self.dispatch(i, 0, now, out);
            }
        }
    }

    /// Roll back queued hosts of group `g` while its window has room, once
    /// every group depending on it has finished rolling back. When the
    /// group's rollback is over, the groups it depends on are looked at next.
    fn fill_rollback(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>, queue: &mut VecDeque<usize>) {
        let blocked = self.groups[g].dependents.iter().any(|&d| self.groups[d].state == GroupState::RollingBack);
        if blocked {
            return;
        }
        let max_parallel = self.spec.groups[g].strategy.max_parallel.max(1);
        let why = self.rollback_reason.clone().or_else(|| self.halt_reason.clone()).unwrap_or_default();
        while self.groups[g].in_flight < max_parallel {
            let Some(&i) = self.groups[g].rollback_queue.front() else { break };
            match self.hosts[i].state {
                // Still upgrading: its rollback waits for its steps to end.
                HostState::Running { .. } | HostState::Soaking { .. } => break,
                HostState::Succeeded | HostState::Failed { .. } => {
                    self.begin_rollback(i, now, why.clone(), out);
                }
                HostState::Pending
                | HostState::Skipped
                | HostState::RollingBack { .. }
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => {}
            }
            self.groups[g].rollback_queue.pop_front();
            self.rollback_queued -= 1;
        }
        let rt = &self.groups[g];
        if rt.rollback_queue.is_empty() && rt.in_flight == 0 {
            self.groups[g].state =
                if rt.rollback_failed > 0 { GroupState::RollbackFailed } else { GroupState::RolledBack };
            queue.extend(self.spec.groups[g].after.iter().copied());
        }
    }

    fn maybe_finish(&mut self, out: &mut Vec<Action>) {
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
                if promoting {
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

    /// ", N hosts rolled back, M rollbacks failed" when any rollback ended.
    fn rollback_summary(&self) -> String {
        match (self.rolled_back, self.rollback_failed) {
            (0, 0) => String::new(),
            (n, 0) => format!("; {n} hosts rolled back"),
            (n, f) => format!("; {n} hosts rolled back, {f} rollbacks failed"),
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
                out.push(Action::HostDone { host: self.key(i), state: HostState::Skipped });
            }
            self.groups[g].next = hosts.len();
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

fn skip_cause(state: RolloutState) -> &'static str {
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

fn default_reason(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "step succeeded",
        StepStatus::Failed => "step failed",
        StepStatus::Unsupported => "step kind not supported by the agent",
        StepStatus::TimedOut => "step timed out on the agent",
    }
}

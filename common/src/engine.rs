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
//! - **Backups.** A `backup` step that succeeds must report its backup
//!   ([`StepOutcome::backup`], never empty): the engine keeps it (entry,
//!   step, location, size, time), so a replay of the stored `StepFinished`
//!   events rebuilds the list, shown in [`RolloutView::backups`]. A
//!   successful backup step reporting none, or an empty one, fails the host.
//!   With [`RolloutSpec::require_backup`], a migration step
//!   ([`HostPlan::migrations`]) is dispatched only when a backup covering it
//!   has succeeded: an earlier one of the same entry, or any one taken in a
//!   group the entry's group runs after (directly or not). Otherwise the
//!   host fails at that step without it being sent, saying why; the plan
//!   refuses such rollouts already, so this guards specs built otherwise
//!   and backups that never happened.
//! - **Clusters** (a group with [`GroupSpec::cluster`]). The group's hosts
//!   are split into clusters that proceed in parallel, each with its own
//!   window of `strategy.max_parallel`. In a leader/follower cluster every
//!   step of a member is preceded by its leader check
//!   ([`Action::DispatchCluster`], ids `rollout/KEY/lcSTEP/attempt`),
//!   whose outcome reads as leader, follower or unknown
//!   ([`crate::model::LeaderAnswer::of`] with the host's
//!   [`HostPlan::leader_answers`]; a spec without them, stored before the
//!   three answers, reads success as leader and failure as follower). An
//!   unknown answer runs nothing: the host keeps its slot in
//!   [`HostState::LeaderUnknown`] and is asked again after the check's
//!   interval ([`Timer::LeaderRecheck`]) until its deadline, counted from
//!   the first ask, then fails at that step without it being sent (an
//!   unsupported check fails it at once). A follower runs the step, unless
//!   no member of its cluster ever answered "leader" and no other member
//!   can still answer (all ended or on their last step): then it fails
//!   untouched ("no member claims the leadership"). A switchover step's
//!   capture is kept like a step's, for the later switchover steps. A leader
//!   clears every other member's leader mark (a cluster has one leader) and,
//!   while any other member is pending or in flight and the rollout is not
//!   stopping, gives its slot back: to `Pending` (and out of the started
//!   hosts) before its first step, to [`HostState::Held`] after. Otherwise it
//!   runs its switchover steps once (ids `rollout/KEY/swN/attempt`), then its
//!   leader check again, which must now fail, and its step. A member is
//!   started in cluster order, the first one not marked leader; a member
//!   marked leader only when nothing else of its cluster is in flight. More
//!   than twice the cluster's size of leaders sent back with no step done in
//!   between fails the host (several members claim the leadership). A check
//!   answered while the rollout is paused sends a member that has not
//!   started back to `Pending` (it is asked again on resume). Once the
//!   rollout stops starting hosts, held hosts go on (a started host finishes
//!   its steps); a rollout that ends while paused fails them. In a
//!   `same_version` cluster every member starts at once and runs each step in
//!   lock-step: a member that finished step N waits in
//!   [`HostState::AtBarrier`] (keeping its slot) until every member still
//!   upgrading finished it; a member's failure fails the members at the
//!   barrier and those that reach it later.
//!
//! Cost: each event costs time in proportion to the work it triggers
//! (dispatches, groups started), not to the fleet's size (a cluster group
//! scans one cluster's members to pick the next one); hosts and
//! executions are found through hash maps, and groups keep their own counters.
//! Only the transitions to halting/aborting/rolling back, the final skip and
//! [`Engine::view`] walk the hosts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capture;
use crate::model::{
    BackupRecord, GroupSpec, HostId, HostPlan, LeaderAnswer, LeaderAnswers, OnFailure, Promote, RolloutSpec, StepKind,
    StepOutcome, StepSpec, StepStatus, UnixMillis,
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
    /// A cluster member in [`HostState::LeaderUnknown`] asks its leader
    /// check again.
    LeaderRecheck { host: HostId },
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
    /// Send a step of the `cluster` strategy to a host's agent (its leader
    /// check, or a switchover step), carried out exactly like
    /// [`Action::Dispatch`]; `purpose` says which.
    DispatchCluster { host: HostId, execution_id: ExecutionId, purpose: ClusterPurpose, step: StepSpec, resend: bool },
    /// Feed `Event::TimerFired { timer }` back at `at`.
    Schedule { at: UnixMillis, timer: Timer },
    /// A host's upgrade, or later its rollback, ended in `state`.
    HostDone { host: HostId, state: HostState },
    /// The rollout reached a terminal state; nothing more will be dispatched.
    Finished { state: RolloutState },
}

/// Why a [`Action::DispatchCluster`] is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterPurpose {
    /// The host's leader check, asked before its step `before` (it passes
    /// on the leader). `after_switchover`: asked to confirm that the host's
    /// switchover took the leadership away from it.
    LeaderCheck { before: usize, after_switchover: bool },
    /// Switchover step `index` (of [`HostPlan::switchover`]), run on the
    /// leader before its step `before`.
    Switchover { before: usize, index: usize },
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
    /// `cluster` strategy: the host's leader check is executing as
    /// `execution_id` before its step `step` (after its switchover when
    /// `after_switchover`); it holds its slot.
    Probing {
        step: usize,
        after_switchover: bool,
        execution_id: ExecutionId,
        since: UnixMillis,
        lost_since: Option<UnixMillis>,
    },
    /// `cluster` strategy: the host is its cluster's leader, nothing else is
    /// pending, and switchover step `index` is executing before its step `step`.
    SwitchingOver {
        step: usize,
        index: usize,
        execution_id: ExecutionId,
        since: UnixMillis,
        lost_since: Option<UnixMillis>,
    },
    /// `cluster` strategy: the host ran its first `step` steps, then its
    /// leader check said it had become the leader while other members were
    /// pending; it gave up its slot and goes on (leader check first) once
    /// they are done, or once the rollout stops starting hosts.
    Held { step: usize },
    /// `cluster` strategy: the host's leader check before its step `step`
    /// (after its switchover when `after_switchover`) could not tell its
    /// role. It keeps its slot, nothing runs on it, and the check is asked
    /// again at `retry_at` ([`Timer::LeaderRecheck`]); past the check's
    /// deadline the host fails instead.
    LeaderUnknown { step: usize, after_switchover: bool, retry_at: UnixMillis },
    /// `cluster` strategy with `same_version`: the host finished step
    /// `step - 1` and keeps its slot until every member of its cluster
    /// finished it too; then they all start step `step`.
    AtBarrier { step: usize },
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
            | HostState::RollingBack { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. } => false,
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
            HostState::Probing { .. } => "leader_check",
            HostState::SwitchingOver { .. } => "switching_over",
            HostState::Held { .. } => "held",
            HostState::LeaderUnknown { .. } => "leader_unknown",
            HostState::AtBarrier { .. } => "at_barrier",
        }
    }

    /// True while the host holds a slot of its group's window.
    fn in_flight(&self) -> bool {
        match self {
            HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::RollingBack { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. } => true,
            HostState::Held { .. }
            | HostState::Pending
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => false,
        }
    }

    /// The execution in progress: (what it is, index, id, lost_since); the
    /// index is the step's, the rollback step's or the switchover step's.
    fn current(&self) -> Option<(Exec, usize, &ExecutionId, Option<UnixMillis>)> {
        match self {
            HostState::Running { step, execution_id, lost_since, .. } => {
                Some((Exec::Step, *step, execution_id, *lost_since))
            }
            HostState::RollingBack { step, execution_id, lost_since, .. } => {
                Some((Exec::Rollback, *step, execution_id, *lost_since))
            }
            HostState::Probing { step, after_switchover, execution_id, lost_since, .. } => {
                Some((Exec::LeaderCheck { after_switchover: *after_switchover }, *step, execution_id, *lost_since))
            }
            HostState::SwitchingOver { step, index, execution_id, lost_since, .. } => {
                Some((Exec::Switchover { before: *step }, *index, execution_id, *lost_since))
            }
            HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => None,
        }
    }
}

/// What an execution in progress is (see [`HostState::current`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    /// An upgrade step.
    Step,
    /// A rollback step.
    Rollback,
    /// The leader check before the step the index names.
    LeaderCheck { after_switchover: bool },
    /// A switchover step before step `before`.
    Switchover { before: usize },
}

/// A host's role in its cluster, as its last leader check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not asked yet, or another member has since claimed the leadership.
    Unknown,
    Follower,
    Leader,
}

/// A read-only summary for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub state: RolloutState,
    pub message: String,
    pub groups: Vec<GroupView>,
    pub hosts: Vec<HostView>,
    /// Backups the rollout's `backup` steps took, in the order they succeeded.
    #[serde(default)]
    pub backups: Vec<BackupView>,
}

/// A backup a `backup` step took (from its [`StepOutcome::backup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    /// The agent that took it.
    pub host: HostId,
    /// The host entry's key ([`HostPlan::key`]).
    pub key: String,
    pub group: String,
    /// The step's name.
    pub step: String,
    /// Where the backup is on the host.
    pub location: String,
    pub size_bytes: u64,
    /// When its result was handled.
    pub at: UnixMillis,
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
    /// Backups taken, in order: (host entry, step index, what, when).
    backups: Vec<(usize, usize, BackupRecord, UnixMillis)>,
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
    /// `cluster` strategy: the index of its cluster in its group's
    /// [`crate::model::ClusterSpec::clusters`].
    cluster: Option<usize>,
    /// What its last leader check said.
    role: Role,
    /// Leader checks issued so far, per step they came before.
    check_attempts: Vec<u32>,
    /// Executions issued so far, per switchover step.
    switchover_attempts: Vec<u32>,
    /// Its switchover ran: it runs at most once.
    switched_over: bool,
    /// When the leader check now being asked was first asked (unknown
    /// answers are asked again until its deadline, counted from here), and
    /// how many answers were unknown since.
    asked_since: Option<(UnixMillis, u32)>,
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
    /// The group's hosts in the order they started, then the ones not
    /// started yet: `order[..next]` started. Plain groups start hosts in
    /// [`GroupSpec::hosts`] order; a `cluster` group picks them out of order.
    order: Vec<usize>,
    /// `cluster` strategy: per cluster of its spec.
    clusters: Vec<ClusterRt>,
    /// Hosts of this group in [`HostState::Held`].
    held: usize,
}

/// What the engine keeps per cluster of a `cluster` group.
#[derive(Debug, Clone, Default)]
struct ClusterRt {
    /// Members running, checking, switching over, soaking or at the barrier.
    in_flight: usize,
    /// Leaders sent back to wait since a member last finished a step: too
    /// many means the leadership keeps moving (or several members claim it).
    deferrals: usize,
    /// `same_version`: the first member that failed, and its reason.
    failed_member: Option<String>,
    /// Some member's leader check answered "leader" during this rollout.
    leader_claimed: bool,
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
                cluster: None,
                role: Role::Unknown,
                check_attempts: if h.leader_check.is_some() { vec![0; h.steps.len()] } else { Vec::new() },
                switchover_attempts: vec![0; h.switchover.len()],
                switched_over: false,
                asked_since: None,
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
                // A cluster group picks its own order: no canary phase.
                canaries: match (&g.cluster, g.canary) {
                    (None, Some(c)) => c.hosts.max(1).min(g.hosts.len()),
                    (Some(_), _) | (None, None) => 0,
                },
                promote_at: None,
                rollback_queue: VecDeque::new(),
                rollback_failed: 0,
                dependents: Vec::new(),
                order: g.hosts.clone(),
                clusters: g.cluster.as_ref().map_or_else(Vec::new, |c| vec![ClusterRt::default(); c.clusters.len()]),
                held: 0,
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
            for (ci, c) in g.cluster.iter().flat_map(|c| c.clusters.iter()).enumerate() {
                for &h in &c.hosts {
                    if let Some(rt) = hosts.get_mut(h) {
                        rt.cluster = Some(ci);
                    }
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
            backups: Vec::new(),
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
                HostState::Running { .. }
                | HostState::RollingBack { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. } => {
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
                HostState::LeaderUnknown { retry_at, .. } => {
                    out.push(Action::Schedule {
                        at: *retry_at,
                        timer: Timer::LeaderRecheck { host: host.key().to_string() },
                    });
                }
                HostState::Held { .. }
                | HostState::AtBarrier { .. }
                | HostState::Pending
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

    /// The execution ids this rollout issued to agent `host`, in id order.
    pub fn executions_of(&self, host: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .executions
            .iter()
            .filter(|(_, i)| self.spec.hosts[**i].host == host)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The plan of the host entry with key `host` ([`HostPlan::key`]).
    pub fn host_plan(&self, host: &str) -> Option<&HostPlan> {
        self.by_name.get(host).map(|&i| &self.spec.hosts[i])
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
                ..HostPlan::default()
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
            require_backup: false,
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
                cluster: None,
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
                    HostState::Running { .. }
                    | HostState::Soaking { .. }
                    | HostState::RollingBack { .. }
                    | HostState::Probing { .. }
                    | HostState::SwitchingOver { .. }
                    | HostState::Held { .. }
                    | HostState::LeaderUnknown { .. }
                    | HostState::AtBarrier { .. } => v.running += 1,
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
                    HostState::Probing { step, .. } | HostState::LeaderUnknown { step, .. } => {
                        Some(format!("leader check before {}", spec.steps[*step].name))
                    }
                    HostState::SwitchingOver { index, .. } => Some(spec.switchover[*index].name.clone()),
                    HostState::Held { step } | HostState::AtBarrier { step } => {
                        Some(format!("waiting before {}", spec.steps[*step].name))
                    }
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
        let backups = self
            .backups
            .iter()
            .map(|(i, step, record, at)| BackupView {
                host: self.spec.hosts[*i].host.clone(),
                key: self.key(*i),
                group: self.spec.groups.get(self.hosts[*i].group).map_or_else(String::new, |g| g.name.clone()),
                step: self.spec.hosts[*i].steps[*step].name.clone(),
                location: record.location.clone(),
                size_bytes: record.size_bytes,
                at: *at,
            })
            .collect();
        RolloutView { state: self.state, message: self.message.clone(), groups, hosts, backups }
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
            HostState::Running { lost_since, .. }
            | HostState::RollingBack { lost_since, .. }
            | HostState::Probing { lost_since, .. }
            | HostState::SwitchingOver { lost_since, .. } => {
                *lost_since = None;
                h.lost_deadline = None;
            }
            HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::Pending
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
            HostState::Running { lost_since, .. }
            | HostState::RollingBack { lost_since, .. }
            | HostState::Probing { lost_since, .. }
            | HostState::SwitchingOver { lost_since, .. } => {
                *lost_since = Some(now);
                let at = now.plus(timeout);
                h.lost_deadline = Some(at);
                out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: self.key(i) } });
            }
            HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::Pending
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
        let (exec, index) = match self.hosts[i].state.current() {
            Some((exec, index, current, _)) if current == execution_id => (exec, index),
            // A duplicate or stale report: the host has moved on.
            Some(_) | None => return,
        };
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

    fn on_upgrade_step_finished(
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
            let reason = failure_reason(outcome);
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
            | StepKind::MetricCheck(_)
            | StepKind::Backup(_) => None,
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

    /// Keep what a successful `backup` step (step `step` of host entry `i`)
    /// reports; `Err` when it reports no backup, or an empty one. Other
    /// steps' reports are ignored.
    fn record_backup(
        &mut self,
        now: UnixMillis,
        i: usize,
        step: usize,
        reported: Option<&BackupRecord>,
    ) -> Result<(), String> {
        let spec = &self.spec.hosts[i].steps[step];
        match &spec.kind {
            StepKind::Backup(_) => {}
            StepKind::Exec(_)
            | StepKind::Archive(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::ArchiveRollback(_)
            | StepKind::Apt(_)
            | StepKind::Dpkg(_)
            | StepKind::Rpm(_)
            | StepKind::Service(_)
            | StepKind::PkgRollback(_) => return Ok(()),
        }
        match reported {
            Some(r) if r.size_bytes > 0 => {
                self.backups.push((i, step, r.clone(), now));
                Ok(())
            }
            Some(r) => Err(format!("backup step {}: the backup at {} is empty (0 bytes)", spec.name, r.location)),
            None => Err(format!("backup step {}: the agent reported no backup (where and how large)", spec.name)),
        }
    }

    /// `Err` (why) when step `step` of host entry `i` is a migration the
    /// rollout may not run yet: `require_backup` is set and no backup
    /// covering it succeeded — one taken earlier by the same entry, or by
    /// any host of a group the entry's group runs after (directly or not).
    fn backup_guard(&self, i: usize, step: usize) -> Result<(), String> {
        let plan = &self.spec.hosts[i];
        if !self.spec.require_backup || !plan.migrations.contains(&step) {
            return Ok(());
        }
        let g = self.hosts[i].group;
        let upstream = self.upstream_groups(g);
        let covered = self.backups.iter().any(|(b, b_step, _, _)| {
            (*b == i && *b_step < step) || upstream.get(self.hosts[*b].group).copied().unwrap_or(false)
        });
        if covered {
            return Ok(());
        }
        Err(format!(
            "step {} is a migration and the rollout requires a backup first, but no backup has succeeded before it on {} nor in a group that group {} runs after: the step was not run",
            plan.steps[step].name,
            plan.key(),
            self.spec.groups[g].name
        ))
    }

    /// The groups group `g` runs after, directly or not (by index).
    fn upstream_groups(&self, g: usize) -> Vec<bool> {
        let mut seen = vec![false; self.spec.groups.len()];
        let mut stack: Vec<usize> = self.spec.groups[g].after.clone();
        while let Some(d) = stack.pop() {
            if let Some(s) = seen.get_mut(d)
                && !*s
            {
                *s = true;
                stack.extend(self.spec.groups[d].after.iter().copied());
            }
        }
        seen
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
                    HostState::Probing { .. }
                    | HostState::SwitchingOver { .. }
                    | HostState::Held { .. }
                    | HostState::LeaderUnknown { .. }
                    | HostState::AtBarrier { .. }
                    | HostState::Pending
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
                    Some((exec, index, current, _)) if current == execution_id => {
                        self.execution_failed(i, now, exec, index, "no result within timeout".to_string(), out)
                    }
                    Some(_) | None => return,
                }
                i
            }
            Timer::LostDeadline { host } => {
                let Some(i) = self.host_index(host) else { return };
                let h = &self.hosts[i];
                let (exec, index) = match h.state.current() {
                    Some((exec, index, _, Some(_))) => (exec, index),
                    Some((_, _, _, None)) | None => return,
                };
                // A timer from an earlier outage fires before the current one's.
                match h.lost_deadline {
                    Some(at) if now >= at => {}
                    Some(_) | None => return,
                }
                self.execution_failed(i, now, exec, index, "agent lost".to_string(), out);
                i
            }
            Timer::LeaderRecheck { host } => {
                let Some(i) = self.host_index(host) else { return };
                match self.hosts[i].state {
                    HostState::LeaderUnknown { step, after_switchover, retry_at } if now >= retry_at => {
                        self.ask_leader(i, step, after_switchover, now, out);
                    }
                    HostState::LeaderUnknown { .. }
                    | HostState::Probing { .. }
                    | HostState::SwitchingOver { .. }
                    | HostState::Held { .. }
                    | HostState::AtBarrier { .. }
                    | HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped
                    | HostState::RollingBack { .. }
                    | HostState::RolledBack
                    | HostState::RollbackFailed { .. } => return,
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

    /// Host `i`'s current execution (`exec`, `index`) failed for `reason`
    /// without a result: its upgrade (or its rollback) fails.
    fn execution_failed(
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
        let ready = self.rendered(i, &self.spec.hosts[i].steps[step]).and_then(|_| self.backup_guard(i, step));
        if let Err(reason) = ready {
            // Only a spec the plan did not check gets here (a missing
            // captured value, a migration with no backup before it). The host
            // holds its slot; mark it running so failing it gives the slot back.
            self.hosts[i].state =
                HostState::Running { step, execution_id: String::new(), since: now, lost_since: None };
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        self.issue(i, Exec::Step, step, execution_id, timeout, now, out);
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
        self.issue(i, Exec::Rollback, step, execution_id, timeout, now, out);
    }

    /// Make `execution_id` host `i`'s current execution, send it, arm its deadlines.
    #[allow(clippy::too_many_arguments)]
    fn issue(
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

    // ---- the cluster strategy --------------------------------------------

    /// The runtime of host `i`'s cluster, when its group uses the `cluster` strategy.
    fn cluster_rt(&mut self, i: usize) -> Option<&mut ClusterRt> {
        let c = self.hosts[i].cluster?;
        self.groups[self.hosts[i].group].clusters.get_mut(c)
    }

    /// The members of host `i`'s cluster (empty outside the `cluster` strategy).
    fn members(&self, i: usize) -> &[usize] {
        let spec = &self.spec.groups[self.hosts[i].group];
        match (spec.cluster.as_ref(), self.hosts[i].cluster) {
            (Some(cs), Some(c)) => &cs.clusters[c].hosts,
            (Some(_), None) | (None, _) => &[],
        }
    }

    fn cluster_name(&self, i: usize) -> &str {
        let spec = &self.spec.groups[self.hosts[i].group];
        match (spec.cluster.as_ref(), self.hosts[i].cluster) {
            (Some(cs), Some(c)) => &cs.clusters[c].name,
            (Some(_), None) | (None, _) => "",
        }
    }

    /// Host `i` is in a `same_version` cluster.
    fn same_version(&self, i: usize) -> bool {
        self.hosts[i].cluster.is_some()
            && self.spec.groups[self.hosts[i].group].cluster.as_ref().is_some_and(|c| c.same_version)
    }

    /// Host `i`, which holds a slot, goes on to its step `step`: in a
    /// leader/follower cluster its leader check is asked first.
    fn next_step(&mut self, i: usize, step: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if self.hosts[i].cluster.is_some() && self.spec.hosts[i].leader_check.is_some() && !self.same_version(i) {
            self.hosts[i].asked_since = None;
            self.ask_leader(i, step, false, now, out);
        } else {
            self.dispatch(i, step, now, out);
        }
    }

    /// Ask host `i`'s leader check before its step `before` (again, after
    /// an unknown answer, while `asked_since` is set).
    fn ask_leader(&mut self, i: usize, before: usize, after_switchover: bool, now: UnixMillis, out: &mut Vec<Action>) {
        let Some(check) = self.spec.hosts[i].leader_check.as_ref() else {
            self.dispatch(i, before, now, out);
            return;
        };
        let timeout = check.timeout;
        let h = &mut self.hosts[i];
        h.asked_since.get_or_insert((now, 0));
        h.check_attempts[before] += 1;
        let execution_id =
            format!("{}/{}/lc{}/{}", self.rollout_id, self.spec.hosts[i].key(), before, h.check_attempts[before]);
        if let Err(reason) = self.rendered(i, check) {
            // As in `dispatch`: mark it in flight so failing it gives the slot back.
            self.hosts[i].state = HostState::Probing {
                step: before,
                after_switchover,
                execution_id: String::new(),
                since: now,
                lost_since: None,
            };
            self.host_failed(i, now, Some(before), format!("leader check: {reason}"), out);
            return;
        }
        self.issue(i, Exec::LeaderCheck { after_switchover }, before, execution_id, timeout, now, out);
    }

    fn dispatch_switchover(&mut self, i: usize, before: usize, index: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let timeout = self.spec.hosts[i].switchover[index].timeout;
        let h = &mut self.hosts[i];
        h.switchover_attempts[index] += 1;
        let execution_id =
            format!("{}/{}/sw{}/{}", self.rollout_id, self.spec.hosts[i].key(), index, h.switchover_attempts[index]);
        if let Err(reason) = self.rendered(i, &self.spec.hosts[i].switchover[index]) {
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        self.issue(i, Exec::Switchover { before }, index, execution_id, timeout, now, out);
    }

    /// The leader check before step `before` answered: passing means host
    /// `i` leads its cluster. A follower goes on; a leader waits while any
    /// other member is pending or in flight (unless the rollout is
    /// stopping), else hands the leadership over (its switchover, once) or
    /// goes on.
    fn on_leader_check(
        &mut self,
        now: UnixMillis,
        i: usize,
        before: usize,
        after_switchover: bool,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        let answers = self.spec.hosts[i].leader_answers.clone();
        let leader = match LeaderAnswer::of(answers.as_ref(), &outcome) {
            LeaderAnswer::Leader => true,
            LeaderAnswer::Follower => false,
            LeaderAnswer::Unknown => {
                self.leader_unknown(i, before, after_switchover, answers.as_ref(), outcome, now, out);
                return;
            }
        };
        self.hosts[i].asked_since = None;
        let host = self.spec.hosts[i].host.clone();
        let cluster = self.cluster_name(i).to_string();
        if leader && let Some(c) = self.cluster_rt(i) {
            c.leader_claimed = true;
        }
        if before == 0 && self.state == RolloutState::Paused {
            // Asked before the pause: a host that has not started does not
            // start now. Its answer still counts for the next pick.
            self.hosts[i].role = if leader { Role::Leader } else { Role::Follower };
            self.defer(i, 0);
            self.hosts[i].message = "paused before its first step".to_string();
            return;
        }
        if !leader {
            self.hosts[i].role = Role::Follower;
            if answers.is_some() && !after_switchover && self.nobody_leads(i) {
                let reason = format!(
                    "cluster {cluster}: no member claims the leadership: every other member has ended or answered \
                     'follower' and {host} answers 'follower' too; it is not upgraded (a cluster has one leader: \
                     check the leader check's answers, and that the leader is in this group)"
                );
                self.host_failed(i, now, Some(before), reason, out);
                return;
            }
            self.dispatch(i, before, now, out);
            return;
        }
        if after_switchover {
            let reason = format!("switchover did not take effect: {host} still passes its leader check");
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        // A cluster has one leader: any other member's mark is stale now.
        self.hosts[i].role = Role::Leader;
        let members = self.members(i).to_vec();
        for &j in &members {
            if j != i && self.hosts[j].role == Role::Leader {
                self.hosts[j].role = Role::Unknown;
            }
        }
        // Pending, held or in flight: whatever has not ended.
        let waiting: Vec<&str> = members
            .iter()
            .filter(|&&j| j != i && !self.hosts[j].state.is_terminal())
            .map(|&j| self.spec.hosts[j].host.as_str())
            .collect();
        if !waiting.is_empty() && !self.is_stopping() {
            let waiting = waiting.join(", ");
            let limit = 2 * members.len();
            let deferrals = self.cluster_rt(i).map_or(0, |c| {
                c.deferrals += 1;
                c.deferrals
            });
            if deferrals > limit {
                let reason = format!(
                    "cluster {cluster}: the leadership keeps moving ({deferrals} leaders found with no step done \
                     in between); do several members claim it?"
                );
                self.host_failed(i, now, Some(before), reason, out);
                return;
            }
            self.defer(i, before);
            self.hosts[i].message = format!("leader of cluster {cluster}: waits for {waiting}");
            return;
        }
        if !self.spec.hosts[i].switchover.is_empty() && !self.hosts[i].switched_over {
            self.hosts[i].switched_over = true;
            self.hosts[i].message = format!("leader of cluster {cluster}: switching over");
            self.dispatch_switchover(i, before, 0, now, out);
            return;
        }
        self.hosts[i].message = format!("leader of cluster {cluster}: upgraded last");
        self.dispatch(i, before, now, out);
    }

    /// Host `i`'s leader check could not tell (unknown): asked again after
    /// the check's interval while its deadline allows, else the host fails
    /// without running its step. A legacy spec (no [`LeaderAnswers`]) or an
    /// agent that cannot run the check fails it at once.
    #[allow(clippy::too_many_arguments)]
    fn leader_unknown(
        &mut self,
        i: usize,
        before: usize,
        after_switchover: bool,
        answers: Option<&LeaderAnswers>,
        outcome: StepOutcome,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let unsupported = outcome.status == StepStatus::Unsupported;
        let reason = failure_reason(outcome);
        let (since, unknown) = self.hosts[i].asked_since.unwrap_or((now, 0));
        let unknown = unknown.saturating_add(1);
        let Some(a) = answers.filter(|_| !unsupported) else {
            self.host_failed(i, now, Some(before), format!("leader check: {reason}"), out);
            return;
        };
        let retry_at = now.plus(a.interval);
        if retry_at >= since.plus(a.deadline) {
            self.hosts[i].asked_since = None;
            let s = if unknown == 1 { "" } else { "s" };
            let reason = format!(
                "leader check: could not tell leader from follower within {:?} ({unknown} unknown answer{s}); \
                 not touched; last answer: {reason}",
                a.deadline
            );
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        self.hosts[i].asked_since = Some((since, unknown));
        self.hosts[i].state = HostState::LeaderUnknown { step: before, after_switchover, retry_at };
        self.hosts[i].message = format!("leader check could not tell ({reason}); asking again");
        out.push(Action::Schedule { at: retry_at, timer: Timer::LeaderRecheck { host: self.key(i) } });
    }

    /// No member of host `i`'s cluster has claimed the leadership, and none
    /// but `i` still can: every other member ended, or runs its last step.
    fn nobody_leads(&self, i: usize) -> bool {
        let claimed = self.hosts[i].cluster.and_then(|c| self.groups[self.hosts[i].group].clusters.get(c));
        if claimed.is_none_or(|c| c.leader_claimed) {
            return false;
        }
        self.members(i).iter().filter(|&&j| j != i).all(|&j| match self.hosts[j].state {
            HostState::Running { step, .. } => step + 1 >= self.spec.hosts[j].steps.len(),
            HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RollingBack { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. }
            | HostState::AtBarrier { .. } => true,
            HostState::Pending
            | HostState::Probing { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. } => false,
        })
    }

    /// Leader `i` gives up its slot until the other members are done: back
    /// to pending (out of the started hosts) when it ran no step yet, held
    /// otherwise.
    fn defer(&mut self, i: usize, before: usize) {
        self.leave_flight(i);
        let g = self.hosts[i].group;
        if before == 0 {
            self.hosts[i].state = HostState::Pending;
            let rt = &mut self.groups[g];
            if let Some(p) = rt.order[..rt.next].iter().position(|&h| h == i) {
                rt.next -= 1;
                let last = rt.next;
                // Keep the started hosts in the order they started.
                let host = rt.order.remove(p);
                rt.order.insert(last, host);
            }
        } else {
            self.hosts[i].state = HostState::Held { step: before };
            self.groups[g].held += 1;
        }
    }

    fn on_switchover_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        before: usize,
        index: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        let name = self.spec.hosts[i].switchover[index].name.clone();
        if !outcome.status.is_success() {
            let reason = failure_reason(outcome);
            self.host_failed(i, now, Some(before), format!("switchover step {name}: {reason}"), out);
            return;
        }
        // Its value is for the later switchover steps (the plan allows no other use).
        if let Some(c) = self.spec.hosts[i].switchover_capture(index) {
            match capture::extract(c, &outcome.stdout_tail) {
                Ok(value) => {
                    self.hosts[i].captured.insert(c.name.clone(), value);
                }
                Err(reason) => {
                    self.host_failed(i, now, Some(before), format!("switchover step {name}: {reason}"), out);
                    return;
                }
            }
        }
        if index + 1 < self.spec.hosts[i].switchover.len() {
            self.dispatch_switchover(i, before, index + 1, now, out);
        } else {
            self.hosts[i].asked_since = None;
            self.ask_leader(i, before, true, now, out);
        }
    }

    /// `same_version`: host `i` finished a step and waits at the barrier.
    /// When a member failed, it fails too; when every member is at the
    /// barrier, they all start the next step.
    fn at_barrier(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if let Some(failed) = self.cluster_rt(i).and_then(|c| c.failed_member.clone()) {
            let HostState::AtBarrier { step } = self.hosts[i].state else { return };
            let reason = format!("stopped with its cluster {}: {failed}", self.cluster_name(i));
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        let members = self.members(i).to_vec();
        let mut ready = Vec::new();
        for &j in &members {
            match self.hosts[j].state {
                HostState::AtBarrier { step } => ready.push((j, step)),
                // A member with nothing left to do does not hold the others.
                HostState::Succeeded | HostState::Soaking { .. } => {}
                HostState::Pending
                | HostState::Running { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. }
                | HostState::Held { .. }
                | HostState::LeaderUnknown { .. }
                | HostState::Failed { .. }
                | HostState::Skipped
                | HostState::RollingBack { .. }
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => return,
            }
        }
        for (j, step) in ready {
            self.dispatch(j, step, now, out);
        }
    }

    /// `same_version`: member `i` failed; the members at the barrier stop
    /// with it (the ones still running stop when they reach it).
    fn member_failed(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let host = self.spec.hosts[i].host.clone();
        let Some(c) = self.cluster_rt(i) else { return };
        if c.failed_member.is_some() {
            return;
        }
        c.failed_member = Some(format!("member {host} failed"));
        for j in self.members(i).to_vec() {
            if let HostState::AtBarrier { .. } = self.hosts[j].state {
                self.at_barrier(j, now, out);
            }
        }
    }

    /// Start what a `cluster` group can start: every member of a
    /// `same_version` cluster at once; in a leader/follower cluster, up to
    /// `max_parallel` members, the first not known to be the leader, the
    /// leader only when no other member is in flight.
    fn fill_cluster(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let Some(cs) = self.spec.groups[g].cluster.as_ref() else { return };
        let max_parallel = self.spec.groups[g].strategy.max_parallel.max(1);
        let same_version = cs.same_version;
        for c in 0..cs.clusters.len() {
            let members = self.spec.groups[g].cluster.as_ref().map_or_else(Vec::new, |cs| cs.clusters[c].hosts.clone());
            if same_version {
                if members.iter().all(|&j| self.hosts[j].state == HostState::Pending) {
                    for &j in &members {
                        self.start_member(j, now, out);
                    }
                }
                continue;
            }
            while self.groups[g].clusters[c].in_flight < max_parallel {
                let mut first = None;
                let mut follower = None;
                for &j in &members {
                    match self.hosts[j].state {
                        HostState::Pending | HostState::Held { .. } => {
                            first.get_or_insert(j);
                            if self.hosts[j].role != Role::Leader {
                                follower = Some(j);
                                break;
                            }
                        }
                        HostState::Running { .. }
                        | HostState::Soaking { .. }
                        | HostState::Probing { .. }
                        | HostState::LeaderUnknown { .. }
                        | HostState::SwitchingOver { .. }
                        | HostState::AtBarrier { .. }
                        | HostState::Succeeded
                        | HostState::Failed { .. }
                        | HostState::Skipped
                        | HostState::RollingBack { .. }
                        | HostState::RolledBack
                        | HostState::RollbackFailed { .. } => {}
                    }
                }
                let pick = match (follower, first) {
                    (Some(j), _) => j,
                    (None, Some(j)) if self.groups[g].clusters[c].in_flight == 0 => j,
                    (None, Some(_)) | (None, None) => break,
                };
                self.start_member(pick, now, out);
            }
        }
    }

    /// Start (or restart, when held) cluster member `i`.
    fn start_member(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let g = self.hosts[i].group;
        let step = match self.hosts[i].state {
            HostState::Held { step } => {
                self.groups[g].held -= 1;
                step
            }
            HostState::Pending => {
                let rt = &mut self.groups[g];
                if let Some(p) = rt.order[rt.next..].iter().position(|&h| h == i) {
                    let host = rt.order.remove(rt.next + p);
                    rt.order.insert(rt.next, host);
                    rt.next += 1;
                }
                0
            }
            HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::Probing { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::SwitchingOver { .. }
            | HostState::AtBarrier { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RollingBack { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => return,
        };
        self.enter_flight(i);
        if self.spec.hosts[i].steps.is_empty() {
            self.host_succeeded(i, out);
        } else {
            self.next_step(i, step, now, out);
        }
    }

    /// Once nothing new starts, held hosts of group `g` go on: a host that
    /// started finishes its steps.
    fn release_held(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let started: Vec<usize> = self.groups[g].order[..self.groups[g].next].to_vec();
        for i in started {
            if let HostState::Held { .. } = self.hosts[i].state {
                self.start_member(i, now, out);
            }
        }
    }

    /// Host `i` takes a slot of its group's window.
    fn enter_flight(&mut self, i: usize) {
        self.in_flight += 1;
        self.groups[self.hosts[i].group].in_flight += 1;
        if let Some(c) = self.cluster_rt(i) {
            c.in_flight += 1;
        }
    }

    /// Take host `i` out of the in-flight counts if it was in flight.
    fn leave_flight(&mut self, i: usize) {
        if self.hosts[i].state.in_flight() {
            self.in_flight -= 1;
            self.groups[self.hosts[i].group].in_flight -= 1;
            if let Some(c) = self.cluster_rt(i) {
                c.in_flight -= 1;
            }
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
        if let HostState::Held { .. } = self.hosts[i].state {
            self.groups[self.hosts[i].group].held -= 1;
        }
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
        if self.same_version(i) {
            self.member_failed(i, now, out);
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
        rt.rollback_queue = rt.order[..rt.next].iter().rev().copied().collect();
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
            if self.groups[g].held > 0 {
                // Held hosts go on now: see `progress`.
                self.wake.push(g);
            }
            if self.groups[g].in_flight == 0 {
                continue;
            }
            for k in 0..self.groups[g].next {
                let i = self.groups[g].order[k];
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
            if self.groups[g].held > 0 && self.is_stopping() {
                self.release_held(g, now, out);
            }
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
        if self.spec.groups[g].cluster.is_some() {
            if self.groups[g].state == GroupState::Running {
                self.fill_cluster(g, now, out);
            }
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
            let i = rt.order[rt.next];
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
                HostState::Running { .. }
                | HostState::Soaking { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. }
                | HostState::Held { .. }
                | HostState::LeaderUnknown { .. }
                | HostState::AtBarrier { .. } => break,
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

/// Why an execution failed: the agent's message, or a default for its status.
fn failure_reason(outcome: StepOutcome) -> String {
    if outcome.message.is_empty() { default_reason(outcome.status).to_string() } else { outcome.message }
}

fn default_reason(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "step succeeded",
        StepStatus::Failed => "step failed",
        StepStatus::Unsupported => "step kind not supported by the agent",
        StepStatus::TimedOut => "step timed out on the agent",
    }
}

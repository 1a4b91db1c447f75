//! The states a rollout, a group and a host go through, as the engine reports them.

use crate::engine::execution_id::ExecutionId;
use crate::model::UnixMillis;
use serde::{Deserialize, Serialize};

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
    pub(crate) fn is_open(self) -> bool {
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
    pub(crate) fn in_flight(&self) -> bool {
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
    pub(crate) fn current(&self) -> Option<(Exec, usize, &ExecutionId, Option<UnixMillis>)> {
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
pub(crate) enum Exec {
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
pub(crate) enum Role {
    /// Not asked yet, or another member has since claimed the leadership.
    Unknown,
    Follower,
    Leader,
}

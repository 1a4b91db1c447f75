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
    pub fn is_open(self) -> bool {
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
    /// Which state this is, without what it carries.
    pub fn phase(&self) -> HostPhase {
        match self {
            HostState::Pending => HostPhase::Pending,
            HostState::Running { .. } => HostPhase::Running,
            HostState::Soaking { .. } => HostPhase::Soaking,
            HostState::Succeeded => HostPhase::Succeeded,
            HostState::Failed { .. } => HostPhase::Failed,
            HostState::Skipped => HostPhase::Skipped,
            HostState::RollingBack { .. } => HostPhase::RollingBack,
            HostState::RolledBack => HostPhase::RolledBack,
            HostState::RollbackFailed { .. } => HostPhase::RollbackFailed,
            HostState::Probing { .. } => HostPhase::LeaderCheck,
            HostState::SwitchingOver { .. } => HostPhase::SwitchingOver,
            HostState::Held { .. } => HostPhase::Held,
            HostState::LeaderUnknown { .. } => HostPhase::LeaderUnknown,
            HostState::AtBarrier { .. } => HostPhase::AtBarrier,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.phase().as_str()
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

/// A [`HostState`] without what it carries: what a host's state is called
/// outside the engine (in a status answer, `convoy status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPhase {
    Pending,
    Running,
    Soaking,
    Succeeded,
    Failed,
    Skipped,
    RollingBack,
    RolledBack,
    RollbackFailed,
    /// [`HostState::Probing`].
    LeaderCheck,
    SwitchingOver,
    Held,
    LeaderUnknown,
    AtBarrier,
}

impl HostPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HostPhase::Pending => "pending",
            HostPhase::Running => "running",
            HostPhase::Soaking => "soaking",
            HostPhase::Succeeded => "succeeded",
            HostPhase::Failed => "failed",
            HostPhase::Skipped => "skipped",
            HostPhase::RollingBack => "rolling_back",
            HostPhase::RolledBack => "rolled_back",
            HostPhase::RollbackFailed => "rollback_failed",
            HostPhase::LeaderCheck => "leader_check",
            HostPhase::SwitchingOver => "switching_over",
            HostPhase::Held => "held",
            HostPhase::LeaderUnknown => "leader_unknown",
            HostPhase::AtBarrier => "at_barrier",
        }
    }
}

/// A state name that is none of the states of its kind (a status from a
/// newer coordinator, or not a status at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state '{name}'")]
pub struct UnknownState {
    /// `rollout`, `group` or `host`.
    pub kind: &'static str,
    pub name: String,
}

/// `Display` and `FromStr` by `as_str`, over every variant listed in `ALL`,
/// so a state's name is written in one place.
macro_rules! named_states {
    ($ty:ident, $kind:literal, [$($variant:ident),+ $(,)?]) => {
        impl $ty {
            /// Every state, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<$ty, UnknownState> {
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownState { kind: $kind, name: s.to_string() })
            }
        }
    };
}

named_states!(
    RolloutState,
    "rollout",
    [Pending, Running, Paused, Halting, Aborting, RollingBack, Succeeded, Failed, Aborted, RolledBack]
);
named_states!(
    GroupState,
    "group",
    [
        Waiting,
        Canary,
        AwaitingApproval,
        CanarySoak,
        Running,
        Succeeded,
        Failed,
        Skipped,
        RollingBack,
        RolledBack,
        RollbackFailed
    ]
);
named_states!(
    HostPhase,
    "host",
    [
        Pending,
        Running,
        Soaking,
        Succeeded,
        Failed,
        Skipped,
        RollingBack,
        RolledBack,
        RollbackFailed,
        LeaderCheck,
        SwitchingOver,
        Held,
        LeaderUnknown,
        AtBarrier
    ]
);

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Not asked yet, or another member has since claimed the leadership.
    Unknown,
    Follower,
    Leader,
}

#[cfg(test)]
mod tests {
    use super::*;

    // A new variant does not compile here until it is added to its `ALL`.
    fn listed_rollout(s: RolloutState) -> bool {
        match s {
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::RollingBack
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => RolloutState::ALL.contains(&s),
        }
    }

    fn listed_group(s: GroupState) -> bool {
        match s {
            GroupState::Waiting
            | GroupState::Canary
            | GroupState::AwaitingApproval
            | GroupState::CanarySoak
            | GroupState::Running
            | GroupState::Succeeded
            | GroupState::Failed
            | GroupState::Skipped
            | GroupState::RollingBack
            | GroupState::RolledBack
            | GroupState::RollbackFailed => GroupState::ALL.contains(&s),
        }
    }

    fn listed_host(s: HostPhase) -> bool {
        match s {
            HostPhase::Pending
            | HostPhase::Running
            | HostPhase::Soaking
            | HostPhase::Succeeded
            | HostPhase::Failed
            | HostPhase::Skipped
            | HostPhase::RollingBack
            | HostPhase::RolledBack
            | HostPhase::RollbackFailed
            | HostPhase::LeaderCheck
            | HostPhase::SwitchingOver
            | HostPhase::Held
            | HostPhase::LeaderUnknown
            | HostPhase::AtBarrier => HostPhase::ALL.contains(&s),
        }
    }

    /// Every state's name parses back to it, is its `Display` and its serde
    /// name, and no two states share a name.
    fn round_trips<T>(all: &[T], listed: fn(T) -> bool)
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr + Serialize,
        T::Err: std::fmt::Debug,
    {
        let mut names = std::collections::BTreeSet::new();
        for &s in all {
            assert!(listed(s), "{s:?}");
            let name = s.to_string();
            assert_eq!(name.parse::<T>().unwrap(), s, "{name}");
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(name.clone()), "{s:?}");
            assert!(names.insert(name), "{s:?}: a name used twice");
        }
    }

    #[test]
    fn every_state_round_trips_through_its_name() {
        round_trips(RolloutState::ALL, listed_rollout);
        round_trips(GroupState::ALL, listed_group);
        round_trips(HostPhase::ALL, listed_host);
        assert_eq!(RolloutState::ALL.len(), 10);
        assert_eq!(GroupState::ALL.len(), 11);
        assert_eq!(HostPhase::ALL.len(), 14);
    }

    #[test]
    fn an_unknown_name_says_which_kind_of_state() {
        let e = "finished".parse::<RolloutState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown rollout state 'finished'");
        assert_eq!("Succeeded".parse::<GroupState>().unwrap_err().kind, "group");
        assert_eq!("probing".parse::<HostPhase>().unwrap_err().to_string(), "unknown host state 'probing'");
        assert_eq!("".parse::<HostPhase>().unwrap_err().name, "");
    }

    #[test]
    fn a_host_state_is_named_by_its_phase() {
        let id: ExecutionId = "r/h/lc0/1".parse().unwrap();
        let probing = HostState::Probing {
            step: 0,
            after_switchover: false,
            execution_id: id,
            since: UnixMillis(0),
            lost_since: None,
        };
        assert_eq!(probing.as_str(), "leader_check");
        assert_eq!(probing.phase(), HostPhase::LeaderCheck);
        assert_eq!(HostState::Failed { step: None, reason: String::new() }.phase(), HostPhase::Failed);
    }
}

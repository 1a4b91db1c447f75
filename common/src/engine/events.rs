//! What goes into and out of the engine: events, operator commands, timers, actions and execution ids.

use crate::engine::execution_id::ExecutionId;
use crate::engine::state::{HostState, RolloutState};
use crate::model::{HostId, StepOutcome, StepSpec, UnixMillis};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Time added to a step's own timeout before the engine gives up waiting for
/// its result: the agent kills the step at its timeout and still has to report.
pub const STEP_GRACE: Duration = Duration::from_secs(30);

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
    /// Lift the maintenance windows for the rest of the rollout: hosts start
    /// whenever their strategy lets them (`convoy apply --ignore-windows`,
    /// `convoy override-windows`).
    IgnoreWindows,
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
    /// A group waiting for a maintenance window may start a host now (see
    /// [`crate::engine::calendar`]).
    WindowOpens { group: String },
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
    /// A forward step of group `group` (not a rollback, leader-check or
    /// switchover step) succeeded in `duration_ms` as the agent measured it.
    /// Emitted once per execution, as its result is accepted: a runtime may
    /// keep it for estimates (a replay recomputes it, so replayed actions
    /// must not be recorded again).
    StepSucceeded { host: HostId, group: String, step: String, duration_ms: u64 },
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

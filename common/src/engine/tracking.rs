//! What the engine keeps per host, group and cluster beyond their public states.
//!
//! Their serde form is part of [`super::snapshot::EngineSnapshot`]: a change
//! to a field here changes the snapshot's format (see that module).

use crate::engine::state::{GroupState, HostState, Role};
use crate::model::{StepSpec, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What the engine keeps per host beyond its public [`HostState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HostRt {
    pub(crate) state: HostState,
    pub(crate) group: usize,
    /// Last reported version of the rollout's component.
    pub(crate) installed: Option<String>,
    pub(crate) message: String,
    /// Executions issued so far, per step (the next attempt is this + 1).
    pub(crate) attempts: Vec<u32>,
    /// Steps that succeeded (steps run in order, so these are the first ones).
    pub(crate) steps_ok: usize,
    /// The rollback list, fixed when the rollback starts.
    pub(crate) rollback: Vec<StepSpec>,
    /// Executions issued so far, per rollback step.
    pub(crate) rollback_attempts: Vec<u32>,
    /// A rollback was started or found empty: a host is rolled back once.
    pub(crate) rollback_considered: bool,
    /// When the current execution's `StepDeadline` fires; meaningful while running.
    pub(crate) step_deadline: UnixMillis,
    /// When the current outage's `LostDeadline` fires; set while running and lost.
    pub(crate) lost_deadline: Option<UnixMillis>,
    /// Since when the host's agent is known to be gone, whatever the host's state.
    pub(crate) agent_lost_since: Option<UnixMillis>,
    /// Values its steps captured, by name.
    pub(crate) captured: BTreeMap<String, String>,
    /// `cluster` strategy: the index of its cluster in its group's
    /// [`crate::model::ClusterSpec::clusters`].
    pub(crate) cluster: Option<usize>,
    /// What its last leader check said.
    pub(crate) role: Role,
    /// Leader checks issued so far, per step they came before.
    pub(crate) check_attempts: Vec<u32>,
    /// Executions issued so far, per switchover step.
    pub(crate) switchover_attempts: Vec<u32>,
    /// Its switchover ran: it runs at most once.
    pub(crate) switched_over: bool,
    /// When the leader check now being asked was first asked (unknown
    /// answers are asked again until its deadline, counted from here), and
    /// how many answers were unknown since.
    pub(crate) asked_since: Option<(UnixMillis, u32)>,
}

/// What the engine keeps per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupRt {
    pub(crate) state: GroupState,
    /// Position in `GroupSpec::hosts` of the next host to start: hosts start
    /// in order, so everything from here on is still pending.
    pub(crate) next: usize,
    pub(crate) in_flight: usize,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
    pub(crate) skipped: usize,
    /// Canary hosts (the first ones); 0 when the group has no canary phase.
    pub(crate) canaries: usize,
    /// When a group in `CanarySoak` is promoted.
    pub(crate) promote_at: Option<UnixMillis>,
    /// Hosts still to roll back, in order (front first).
    pub(crate) rollback_queue: VecDeque<usize>,
    /// Hosts of this group whose rollback failed.
    pub(crate) rollback_failed: usize,
    /// Groups listing this one in their `after`.
    pub(crate) dependents: Vec<usize>,
    /// The group's hosts in the order they started, then the ones not
    /// started yet: `order[..next]` started. Plain groups start hosts in
    /// [`GroupSpec::hosts`] order; a `cluster` group picks them out of order.
    pub(crate) order: Vec<usize>,
    /// `cluster` strategy: per cluster of its spec.
    pub(crate) clusters: Vec<ClusterRt>,
    /// Hosts of this group in [`HostState::Held`].
    pub(crate) held: usize,
    /// Waiting for a maintenance window: when its next host may start (the
    /// [`crate::engine::Timer::WindowOpens`] asked for).
    pub(crate) window_wait: Option<UnixMillis>,
}

/// What the engine keeps per cluster of a `cluster` group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClusterRt {
    /// Members running, checking, switching over, soaking or at the barrier.
    pub(crate) in_flight: usize,
    /// Leaders sent back to wait since a member last finished a step: too
    /// many means the leadership keeps moving (or several members claim it).
    pub(crate) deferrals: usize,
    /// `same_version`: the first member that failed, and its reason.
    pub(crate) failed_member: Option<String>,
    /// Some member's leader check answered "leader" during this rollout.
    pub(crate) leader_claimed: bool,
}

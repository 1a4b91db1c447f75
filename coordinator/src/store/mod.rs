//! Durable state behind the [`Store`] trait: what the coordinator keeps and
//! the types it keeps it as.
//!
//! The default is [`SledStore`], embedded under the data directory (nothing to
//! install). What is stored: rollout records (the plan source and its
//! expansion), each rollout's event log (`now` + event, in order; actions are
//! not stored because replaying the events recomputes them), the agents ever
//! seen (inventory survives restarts), join tokens (by their sha256), each
//! host's enrolled certificate, and the recent durations
//! of every step that succeeded (per plan name, group and step name, the last
//! [`convoy_common::estimate::HISTORY`], for `convoy plan`'s estimates), the
//! hosts held out of rollouts (and, per rollout, those its plan skipped for
//! a hold), the audit trail of operator actions, and the latest snapshot of
//! each rollout's engine (see `docs/ha.md`, "Snapshots"). Writes are buffered
//! until [`Store::flush`]: the runtime appends a batch of events, flushes once
//! (group commit) and only then carries out their actions.
//!
//! The types here are what the coordinator works with; how they are written
//! is the store's format ([`format`]: its version and the one place older
//! versions are upgraded; [`records`]: the stored form of each of them).
//! What one release writes, the next one reads: a change to a stored shape
//! bumps [`format::FORMAT_VERSION`], adds its migration and keeps the
//! checked-in fixture store (`tests/fixtures/`) opening and resuming.

#[cfg(feature = "etcd")]
mod etcd_store;
pub mod format;
mod records;
mod sled_store;

use convoy_common::audit::AuditEntry;
use convoy_common::engine::{EngineSnapshot, Event};
use convoy_common::hold::Hold;
use convoy_common::model::{RolloutSpec, UnixMillis};

use crate::enrolment::{Enrolment, JoinTokenRecord};
use crate::error::CoordinatorError;

#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdIdentity, EtcdStore, EtcdTarget, EtcdTls, Fence};
pub use sled_store::{OPEN_WAIT, SledStore};

/// A rollout as created: enough to rebuild its engine from the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    pub id: String,
    pub file: String,
    pub plan_source: String,
    pub spec: RolloutSpec,
    pub created: UnixMillis,
    pub created_by: String,
}

/// One stored event and the time it was handled at.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub now: UnixMillis,
    pub event: Event,
}

/// An agent as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: String,
    pub version: String,
    pub protocol_version: u32,
    pub labels: std::collections::BTreeMap<String, String>,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub installed: std::collections::BTreeMap<String, String>,
    pub last_seen: UnixMillis,
    /// The facts the operator gave the agent (`--fact KEY=VALUE`).
    pub facts: std::collections::BTreeMap<String, String>,
    /// The agent's install root; empty from agents that predate it.
    pub install_root: String,
    /// The step kinds the agent said it runs (its Hello's capabilities);
    /// empty in records stored before they were kept, until it reconnects.
    pub capabilities: Vec<String>,
}

impl AgentRecord {
    /// The agent as the wire describes it (to list it for operators).
    pub fn intro(&self) -> convoy_wire::agent::AgentIntro {
        convoy_wire::agent::AgentIntro {
            id: self.id.clone(),
            version: self.version.clone(),
            protocol_version: self.protocol_version,
            labels: self.labels.clone(),
            facts: convoy_wire::agent::HostFacts {
                hostname: self.hostname.clone(),
                os: self.os.clone(),
                arch: self.arch.clone(),
                installed: self.installed.clone(),
                custom: self.facts.clone(),
                install_root: self.install_root.clone(),
            },
        }
    }

    /// The agent as the inventory plans expand against: its labels, installed
    /// versions and facts (its custom facts, plus `hostname`, `os` and `arch`
    /// when it reported them, which win over custom facts of the same name;
    /// and its install root as the fact [`convoy_common::plan::INSTALL_ROOT_FACT`]).
    pub fn inventory_host(&self) -> convoy_common::model::InventoryHost {
        let mut facts = self.facts.clone();
        for (k, v) in [
            ("hostname", &self.hostname),
            ("os", &self.os),
            ("arch", &self.arch),
            (convoy_common::plan::INSTALL_ROOT_FACT, &self.install_root),
        ] {
            if !v.is_empty() {
                facts.insert(k.to_string(), v.clone());
            }
        }
        convoy_common::model::InventoryHost {
            id: self.id.clone(),
            labels: self.labels.clone(),
            installed: self.installed.clone(),
            facts,
        }
    }
}

/// The recent durations of one step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTimes {
    pub group: String,
    pub step: String,
    /// Milliseconds, oldest first, at most [`convoy_common::estimate::HISTORY`].
    pub recent_ms: Vec<u64>,
}

impl StepTimes {
    /// `stored` (if any) with `duration_ms` added, keeping the last `keep`.
    pub(crate) fn with(stored: Option<StepTimes>, group: &str, step: &str, duration_ms: u64, keep: usize) -> StepTimes {
        let mut times = stored.unwrap_or_else(|| StepTimes {
            group: group.to_string(),
            step: step.to_string(),
            recent_ms: Vec::new(),
        });
        times.recent_ms.push(duration_ms);
        let excess = times.recent_ms.len().saturating_sub(keep.max(1));
        times.recent_ms.drain(..excess);
        times
    }
}

/// The recent durations of one step of a plan on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStepTimes {
    /// The agent that ran the step.
    pub host: String,
    pub times: StepTimes,
}

/// The coordinator's storage seam.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    fn put_rollout(&self, rollout: &RolloutRecord) -> Result<(), CoordinatorError>;
    fn rollouts(&self) -> Result<Vec<RolloutRecord>, CoordinatorError>;
    /// Append `events` to a rollout's log starting at sequence `first_seq`.
    fn append_events(&self, rollout_id: &str, first_seq: u64, events: &[StoredEvent]) -> Result<(), CoordinatorError>;
    fn events(&self, rollout_id: &str) -> Result<Vec<StoredEvent>, CoordinatorError>;
    fn put_agent(&self, agent: &AgentRecord) -> Result<(), CoordinatorError>;
    fn agents(&self) -> Result<Vec<AgentRecord>, CoordinatorError>;
    /// Store a join token under the sha256 of the token; `None` deletes it.
    fn put_join_token(&self, hash: &str, token: Option<&JoinTokenRecord>) -> Result<(), CoordinatorError>;
    /// The join token stored under `hash`, if any.
    fn join_token(&self, hash: &str) -> Result<Option<JoinTokenRecord>, CoordinatorError>;
    /// Store the enrolment of a host (replacing the previous one).
    fn put_enrolment(&self, enrolment: &Enrolment) -> Result<(), CoordinatorError>;
    fn enrolment(&self, host: &str) -> Result<Option<Enrolment>, CoordinatorError>;
    /// Add one duration of a step of plan `plan` that ran on `host`, to the
    /// step's history and to the host's history of that step, keeping the
    /// last `keep` of each.
    fn add_step_time(
        &self,
        plan: &str,
        host: &str,
        group: &str,
        step: &str,
        duration_ms: u64,
        keep: usize,
    ) -> Result<(), CoordinatorError>;
    /// The recent durations of every step of plan `plan` that has some.
    fn step_times(&self, plan: &str) -> Result<Vec<StepTimes>, CoordinatorError>;
    /// The recent durations of every step of plan `plan` on every host that ran it.
    fn host_step_times(&self, plan: &str) -> Result<Vec<HostStepTimes>, CoordinatorError>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), CoordinatorError>;

    // ------------------------------------------ holds and audit (issue 13)

    /// Hold a host out of rollouts (replacing its hold, if any); durable on return.
    fn put_hold(&self, hold: &Hold) -> Result<(), CoordinatorError>;
    /// Release a host's hold; the hold it had, if any. Durable on return.
    fn remove_hold(&self, host: &str) -> Result<Option<Hold>, CoordinatorError>;
    /// Every hold, by host id.
    fn holds(&self) -> Result<Vec<Hold>, CoordinatorError>;
    /// The hosts a rollout's plan selected that were held when it was planned.
    fn put_rollout_holds(&self, rollout_id: &str, held: &[Hold]) -> Result<(), CoordinatorError>;
    fn rollout_holds(&self, rollout_id: &str) -> Result<Vec<Hold>, CoordinatorError>;
    /// Up to `max` events of a rollout's log from sequence `from_seq`, with
    /// their sequence numbers.
    fn events_page(
        &self,
        rollout_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredEvent)>, CoordinatorError>;
    /// Append an entry to the audit trail; durable on return.
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), CoordinatorError>;
    /// The newest `limit` entries at or after `since`, oldest first.
    fn audit(&self, since: UnixMillis, limit: usize) -> Result<Vec<AuditEntry>, CoordinatorError>;
    /// Remove the audit entries recorded before `before` (the oldest
    /// first; an entry recorded out of clock order may stay until the ones
    /// before it go). Returns how many went, where the store can tell.
    fn prune_audit(&self, before: UnixMillis) -> Result<usize, CoordinatorError>;

    // ------------------------------------------ snapshots (issue 12)

    /// Store a snapshot of a rollout's engine, replacing the previous one
    /// (durable once flushed, like events). A snapshot the store cannot
    /// keep (too big for etcd) is an error and the previous one stays.
    fn put_snapshot(&self, rollout_id: &str, snapshot: &EngineSnapshot) -> Result<(), CoordinatorError>;
    /// The latest snapshot of a rollout's engine, if any; one of another
    /// engine snapshot format is an error (the caller replays the log).
    fn snapshot(&self, rollout_id: &str) -> Result<Option<EngineSnapshot>, CoordinatorError>;
    /// Delete a rollout's events before sequence `before_seq` (those a
    /// durable snapshot covers); the later ones keep their sequence numbers.
    fn compact_events(&self, rollout_id: &str, before_seq: u64) -> Result<(), CoordinatorError>;
    /// Every event of a rollout's log from sequence `from_seq`, with its
    /// sequence number, in order.
    fn events_from(&self, rollout_id: &str, from_seq: u64) -> Result<Vec<(u64, StoredEvent)>, CoordinatorError> {
        let mut out: Vec<(u64, StoredEvent)> = Vec::new();
        let mut from = from_seq;
        loop {
            let page = self.events_page(rollout_id, from, 1000)?;
            let Some((last, _)) = page.last() else { return Ok(out) };
            from = last + 1;
            out.extend(page);
        }
    }
}

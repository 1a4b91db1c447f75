//! The agent's local record of started and finished executions.
//!
//! Before a step is started, a "started" marker is written durably; after it
//! ends, its outcome. An execution with a marker and no outcome was
//! interrupted by an agent restart: it is never started again unless its
//! step is `rerun_safe` (see `crate::session`).
//!
//! Every step execution has a unique id. The agent records the outcome of an
//! execution here, durably, *before* it reports the result; a repeated id is
//! then answered from here instead of running the step again (the coordinator
//! re-sends a step whose result it never got, e.g. after a reconnect or its own
//! restart). This is what makes "no step execution runs twice" hold across
//! dropped streams and agent restarts.
//!
//! [`FileStore`] (`journal`) appends both kinds of record to one journal
//! file; records of agents before it, one file per record, are still read
//! (`legacy`). [`MemoryStore`] is for tests and simulations.

mod journal;
mod legacy;

use std::collections::HashMap;
use std::sync::Mutex;

use convoy_common::model::StepOutcome;

use crate::error::AgentError;

pub use journal::FileStore;

/// Where finished executions are recorded. Implementations must make `put`
/// durable before returning: the caller reports the result right after.
pub trait ExecutionStore: Send + Sync + 'static {
    /// The recorded outcome of `execution_id`, if it finished before.
    fn get(&self, execution_id: &str) -> Result<Option<StepOutcome>, AgentError>;
    /// Records the outcome of `execution_id` durably.
    fn put(&self, execution_id: &str, outcome: &StepOutcome) -> Result<(), AgentError>;
    /// Records, durably, that `execution_id` is about to start: from here on
    /// it is never started again unless its step says it is safe to.
    fn mark_started(&self, execution_id: &str) -> Result<(), AgentError>;
    /// Whether `execution_id` was started (by this agent or an earlier run of it).
    fn was_started(&self, execution_id: &str) -> Result<bool, AgentError>;
}

/// An in-memory store, for tests and embedders that need no durability.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, StepOutcome>>,
    started: Mutex<std::collections::HashSet<String>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl ExecutionStore for MemoryStore {
    fn get(&self, execution_id: &str) -> Result<Option<StepOutcome>, AgentError> {
        Ok(self.records.lock().unwrap_or_else(|p| p.into_inner()).get(execution_id).cloned())
    }
    fn put(&self, execution_id: &str, outcome: &StepOutcome) -> Result<(), AgentError> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).insert(execution_id.to_string(), outcome.clone());
        Ok(())
    }
    fn mark_started(&self, execution_id: &str) -> Result<(), AgentError> {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).insert(execution_id.to_string());
        Ok(())
    }
    fn was_started(&self, execution_id: &str) -> Result<bool, AgentError> {
        Ok(self.started.lock().unwrap_or_else(|p| p.into_inner()).contains(execution_id))
    }
}

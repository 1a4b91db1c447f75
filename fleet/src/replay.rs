//! A rollout's stored events, read from a stopped coordinator's data
//! directory and replayed through a fresh engine: the `(now, event, actions)`
//! log the invariant checker reads.

use std::path::Path;

use convoy_common::engine::Engine;
use convoy_common::invariants::LogEntry;
use convoy_common::model::RolloutSpec;
use convoy_coordinator::server::open_store;
use convoy_coordinator::store::Store;

use crate::FleetError;

/// Read a rollout's stored events and replay them into a fresh engine (the
/// store is single-process: stop the coordinator first).
pub fn event_log(data_dir: &Path, rollout: &str) -> Result<(RolloutSpec, Vec<LogEntry>), FleetError> {
    let store = open_store(data_dir)?;
    let record = store
        .rollouts()?
        .into_iter()
        .find(|r| r.id == rollout)
        .ok_or_else(|| FleetError::NotReady(format!("rollout {rollout} not stored in {}", data_dir.display())))?;
    let mut engine = Engine::new(rollout, record.spec.clone());
    let mut log = Vec::new();
    for e in store.events(rollout)? {
        let actions = engine.handle(e.now, e.event.clone());
        log.push(LogEntry { now: e.now, event: e.event, actions });
    }
    Ok((record.spec, log))
}

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
//! [`FileStore`] keeps one JSON file per execution under
//! `<state_dir>/executions/`, named by the hex sha256 of the id (ids are
//! coordinator-chosen strings: hashing keeps file names safe and bounded) and
//! holding the id itself so a record is self-describing. Records are written
//! with tmp + fsync + rename + directory fsync. They are never deleted by the
//! agent; they are small and an operator may prune old ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convoy_common::model::StepOutcome;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::AgentError;
use crate::fsutil;

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

/// On-disk shape of one record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    execution_id: String,
    recorded_unix_ms: u64,
    outcome: StepOutcome,
}

/// One JSON file per execution id under a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens (creating it if needed) the store in `dir`, usually
    /// [`crate::config::AgentConfig::executions_dir`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, AgentError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(AgentError::io(&dir))?;
        Ok(FileStore { dir })
    }

    /// The directory records live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file of `execution_id`.
    pub fn path_of(&self, execution_id: &str) -> PathBuf {
        let digest = Sha256::digest(execution_id.as_bytes());
        self.dir.join(format!("{}.json", hex::encode(digest)))
    }

    /// The "started" marker of `execution_id`.
    pub fn started_path_of(&self, execution_id: &str) -> PathBuf {
        self.path_of(execution_id).with_extension("started")
    }

    fn store_err(&self, path: &Path, execution_id: &str, message: impl ToString) -> AgentError {
        AgentError::Store {
            path: path.to_path_buf(),
            execution_id: execution_id.to_string(),
            message: message.to_string(),
        }
    }
}

impl ExecutionStore for FileStore {
    fn get(&self, execution_id: &str) -> Result<Option<StepOutcome>, AgentError> {
        let path = self.path_of(execution_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.store_err(&path, execution_id, e)),
        };
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| self.store_err(&path, execution_id, format!("corrupt record: {e}")))?;
        if record.execution_id != execution_id {
            // A sha256 collision is not a realistic event; a misplaced file is.
            return Err(self.store_err(
                &path,
                execution_id,
                format!("record belongs to execution {:?}", record.execution_id),
            ));
        }
        Ok(Some(record.outcome))
    }

    fn put(&self, execution_id: &str, outcome: &StepOutcome) -> Result<(), AgentError> {
        let path = self.path_of(execution_id);
        let recorded_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let record = Record { execution_id: execution_id.to_string(), recorded_unix_ms, outcome: outcome.clone() };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| self.store_err(&path, execution_id, e))?;
        fsutil::write_atomic(&path, &bytes, None).map_err(|e| self.store_err(&path, execution_id, e))
    }

    fn mark_started(&self, execution_id: &str) -> Result<(), AgentError> {
        let path = self.started_path_of(execution_id);
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let bytes = serde_json::to_vec(
            &serde_json::json!({ "execution_id": execution_id, "started_unix_ms": started_unix_ms }),
        )
        .map_err(|e| self.store_err(&path, execution_id, e))?;
        fsutil::write_atomic(&path, &bytes, None).map_err(|e| self.store_err(&path, execution_id, e))
    }

    fn was_started(&self, execution_id: &str) -> Result<bool, AgentError> {
        let path = self.started_path_of(execution_id);
        match std::fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.store_err(&path, execution_id, e)),
        }
    }
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

#[cfg(test)]
mod tests {
    use convoy_common::model::StepStatus;

    use super::*;

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut outcome = StepOutcome::failed("exit 3");
        outcome.exit_code = Some(3);
        outcome.stdout_tail = "out".into();
        outcome.installed = Some(("app".into(), "1.2.3".into()));
        {
            let store = FileStore::open(dir.path().join("executions")).unwrap();
            assert_eq!(store.get("ex/1").unwrap(), None);
            store.put("ex/1", &outcome).unwrap();
            store.put("ex-2", &StepOutcome::ok()).unwrap();
        }
        let store = FileStore::open(dir.path().join("executions")).unwrap();
        assert_eq!(store.get("ex/1").unwrap(), Some(outcome));
        assert_eq!(store.get("ex-2").unwrap().unwrap().status, StepStatus::Succeeded);
        assert_eq!(store.get("ex-3").unwrap(), None);
        // The file is named by the hash and records the id.
        let text = std::fs::read_to_string(store.path_of("ex/1")).unwrap();
        assert!(text.contains("\"ex/1\""));
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 2);
    }

    #[test]
    fn corrupt_record_is_an_error_naming_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        std::fs::write(store.path_of("x"), b"{not json").unwrap();
        let err = store.get("x").unwrap_err().to_string();
        assert!(err.contains("execution x") && err.contains("corrupt"), "{err}");
    }
}

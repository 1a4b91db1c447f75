//! Records written by agents before the journal: one file per record in the
//! executions directory, read and never written.
//!
//! An agent upgraded in the middle of a rollout must still answer a re-sent
//! execution from the record its previous version wrote, so these are looked
//! up whenever the journal does not know an id. Files are named by the hex
//! sha256 of the id (`<hash>.json` for an outcome, `<hash>.started` for the
//! marker) and an outcome file holds the id itself.

use std::path::{Path, PathBuf};

use convoy_common::model::StepOutcome;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::AgentError;

/// On-disk shape of one outcome file.
#[derive(Debug, Deserialize)]
struct Record {
    execution_id: String,
    outcome: StepOutcome,
}

/// The outcome file of `execution_id` in `dir`.
pub(super) fn outcome_path(dir: &Path, execution_id: &str) -> PathBuf {
    dir.join(format!("{}.json", hex::encode(Sha256::digest(execution_id.as_bytes()))))
}

/// The "started" marker of `execution_id` in `dir`.
pub(super) fn started_path(dir: &Path, execution_id: &str) -> PathBuf {
    outcome_path(dir, execution_id).with_extension("started")
}

fn store_err(path: &Path, execution_id: &str, message: impl ToString) -> AgentError {
    AgentError::Store { path: path.to_path_buf(), execution_id: execution_id.to_string(), message: message.to_string() }
}

/// The outcome an earlier agent recorded for `execution_id`, if any.
pub(super) fn outcome(dir: &Path, execution_id: &str) -> Result<Option<StepOutcome>, AgentError> {
    let path = outcome_path(dir, execution_id);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(store_err(&path, execution_id, e)),
    };
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|e| store_err(&path, execution_id, format!("corrupt record: {e}")))?;
    if record.execution_id != execution_id {
        // A sha256 collision is not a realistic event; a misplaced file is.
        return Err(store_err(&path, execution_id, format!("record belongs to execution {:?}", record.execution_id)));
    }
    Ok(Some(record.outcome))
}

/// Whether an earlier agent marked `execution_id` started.
pub(super) fn was_started(dir: &Path, execution_id: &str) -> Result<bool, AgentError> {
    let path = started_path(dir, execution_id);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(store_err(&path, execution_id, e)),
    }
}

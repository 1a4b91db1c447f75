//! The durable record of a self-upgrade in progress: `<state>/upgrade/intent.json`.
//!
//! Written (fsynced, atomically replaced) by the old agent before it touches
//! `current`, and read by the three processes that take part in the
//! hand-over: the watchdog, the new agent and, after a revert, the previous
//! build again. Its [`Phase`] is the only thing they tell each other:
//!
//! ```text
//! Pending --(new agent's hello acknowledged)--> Acked      (the step succeeded)
//! Pending --(watchdog: exit, hang, deadline)--> Reverted   (the step failed, evidence kept)
//! ```
//!
//! The step's outcome is stored in the execution store under the step's own
//! execution id *before* the phase leaves `Pending`, so whichever agent runs
//! afterwards reports it (as a replayed result) when the coordinator asks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::fsutil;

/// Format of the record; a newer one is refused, never guessed at.
pub const FORMAT: u32 = 1;

/// How one build of the agent is started again: the program and the
/// arguments before the agent's own flags (`convoy __agent` has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

/// Where a self-upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Switched (or about to switch); the new agent has not said hello yet.
    Pending,
    /// The new agent said hello with the new version and was welcomed.
    Acked,
    /// The watchdog (or the old agent, when the switch itself failed) put the
    /// previous build back.
    Reverted,
}

/// One self-upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub format: u32,
    /// The `agent_upgrade` step's execution id: its outcome is stored under it.
    pub execution_id: String,
    pub from_version: String,
    pub to_version: String,
    /// The previous build, started again on a revert.
    pub previous: Launch,
    /// The new build's executable (`<state>/versions/<to>/convoy-agent`).
    pub new_binary: PathBuf,
    /// The agent's own flags, given to whichever build runs.
    pub agent_args: Vec<String>,
    /// The process the hand-over happens in (the old agent, replaced in
    /// place by the new one).
    pub agent_pid: u32,
    /// What `current` pointed at before (`None`: no link yet).
    pub previous_current: Option<String>,
    pub started_unix_ms: u64,
    /// The new agent must be acknowledged by then.
    pub deadline_unix_ms: u64,
    pub phase: Phase,
    /// Why it was reverted (shown in the step's message and the BAD mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// When the phase left `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ms: Option<u64>,
}

/// `<state>/upgrade`.
pub fn dir(state: &Path) -> PathBuf {
    state.join("upgrade")
}

/// `<state>/upgrade/intent.json`.
pub fn path(state: &Path) -> PathBuf {
    dir(state).join("intent.json")
}

/// `<state>/upgrade/trial.log`: the new agent's progress lines while it is on trial.
pub fn trial_log(state: &Path) -> PathBuf {
    dir(state).join("trial.log")
}

/// `<state>/upgrade/watchdog.pid`: the watchdog's pid; after a revert
/// without a supervisor, the previous build's agent process (the watchdog
/// becomes it). Its own file: the intent is only written by whoever ends
/// the trial, so no two processes update it at once.
pub fn watchdog_pid_file(state: &Path) -> PathBuf {
    dir(state).join("watchdog.pid")
}

/// The recorded watchdog pid, if any.
pub fn watchdog_pid(state: &Path) -> Option<u32> {
    std::fs::read_to_string(watchdog_pid_file(state)).ok()?.trim().parse().ok()
}

/// Bytes an intent file may have (argument lists included).
const MAX_BYTES: u64 = 256 * 1024;

/// The recorded intent, if any.
pub fn read(state: &Path) -> Result<Option<Intent>, AgentError> {
    let p = path(state);
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io(&p)(e)),
    };
    if meta.len() > MAX_BYTES {
        return Err(bad(&p, format!("{} bytes, at most {MAX_BYTES}", meta.len())));
    }
    let text = std::fs::read_to_string(&p).map_err(AgentError::io(&p))?;
    let intent: Intent = serde_json::from_str(&text).map_err(|e| bad(&p, e.to_string()))?;
    if intent.format > FORMAT {
        return Err(bad(&p, format!("format {} is newer than this agent's {FORMAT}", intent.format)));
    }
    Ok(Some(intent))
}

/// Writes `intent` durably (replacing the previous record atomically).
pub fn write(state: &Path, intent: &Intent) -> Result<(), AgentError> {
    let p = path(state);
    let text = serde_json::to_vec_pretty(intent).map_err(|e| bad(&p, e.to_string()))?;
    fsutil::write_atomic(&p, &text, Some(0o600)).map_err(AgentError::io(&p))
}

/// Appends one line to the trial log (best effort: it is evidence, not state).
pub fn trial_note(state: &Path, line: &str) {
    use std::io::Write;
    let p = trial_log(state);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&p) {
        let _ = writeln!(f, "{} {line}", crate::selfupgrade::now_unix_ms());
    }
}

/// The last `n` lines of the trial log.
pub fn trial_tail(state: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(trial_log(state)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

fn bad(path: &Path, message: String) -> AgentError {
    AgentError::InvalidConfig { field: "upgrade intent", message: format!("{}: {message}", path.display()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_newer_formats() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut i = Intent {
            format: FORMAT,
            execution_id: "r1/web/h1/0/1".into(),
            from_version: "0.1.0".into(),
            to_version: "0.2.0".into(),
            previous: Launch { program: "/usr/bin/convoy".into(), prefix: vec!["__agent".into()] },
            new_binary: "/var/lib/convoy-agent/versions/0.2.0/convoy-agent".into(),
            agent_args: vec!["--host-id".into(), "h1".into()],
            agent_pid: 42,
            previous_current: None,
            started_unix_ms: 1,
            deadline_unix_ms: 30_001,
            phase: Phase::Pending,
            evidence: None,
            ended_unix_ms: None,
        };
        write(dir.path(), &i).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(i.clone()));
        i.format = FORMAT + 1;
        write(dir.path(), &i).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        std::fs::write(path(dir.path()), "{not json").unwrap();
        assert!(read(dir.path()).is_err());
    }
}

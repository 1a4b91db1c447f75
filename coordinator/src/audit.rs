//! The audit trail: every operator action, and every refused call, recorded
//! durably in the store with who (the operator token's name as
//! [`crate::operators`] authenticated it, never a name the client sends),
//! when, from which address, what it acted on and how it ended.
//!
//! One entry point: [`record`]. A handler that acts calls [`authorize`]
//! first (a refusal is recorded there) and [`record`] with the result once
//! it is known ([`outcome_of`]). Calls refused before they are read (no
//! valid token) are recorded by the interceptor as action `call`: what they
//! asked for is not known at that point. `convoy-coordinator token
//! create|revoke` edit the token file while the coordinator may hold the
//! store, so they append to `DATA_DIR/audit.pending.jsonl` ([`queue_local`])
//! and the coordinator moves those lines into the store when it starts and
//! whenever it reloads the token file ([`ingest_local`]).
//!
//! Entries are written and flushed one at a time, after the action (the
//! outcome is part of the entry). A failure to write one is logged at
//! error level and does not undo the action.
//!
//! Hook for other handlers (a window override, ...): take the [`Origin`]
//! before consuming the request, call [`authorize`] with the action, and
//! [`record`] the outcome.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use convoy_common::audit::{AuditAction, AuditEntry, AuditOutcome};
use convoy_common::model::UnixMillis;
use tonic::{Request, Status};

use crate::error::CoordinatorError;
use crate::operators::{Caller, Role, check_role, peer_label};
use crate::store::Store;

/// The longest detail an entry keeps, in characters.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// Who made a call and from where, taken from the request before it is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The authenticated caller, if the call had a valid token.
    pub caller: Option<Caller>,
    pub peer: String,
    peer_addr: Option<std::net::SocketAddr>,
}

impl Origin {
    /// The origin of a request the operator interceptor has seen.
    pub fn of<T>(req: &Request<T>) -> Origin {
        Origin {
            caller: req.extensions().get::<Caller>().cloned(),
            peer: peer_label(req.remote_addr()),
            peer_addr: req.remote_addr(),
        }
    }

    /// The origin of a call whose caller was authenticated apart.
    pub fn new(caller: Option<Caller>, peer: Option<std::net::SocketAddr>) -> Origin {
        Origin { caller, peer: peer_label(peer), peer_addr: peer }
    }

    /// A call refused before a caller was known.
    pub fn unauthenticated(peer: Option<std::net::SocketAddr>) -> Origin {
        Origin { caller: None, peer: peer_label(peer), peer_addr: peer }
    }
}

/// Record one entry. Never fails the caller: a store error is logged.
pub fn record(
    store: &dyn Store,
    now: UnixMillis,
    origin: &Origin,
    action: AuditAction,
    target: &str,
    outcome: AuditOutcome,
    detail: &str,
) {
    let entry = AuditEntry {
        at: now,
        who: origin.caller.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        role: origin.caller.as_ref().map(|c| c.role.to_string()).unwrap_or_default(),
        peer: origin.peer.clone(),
        action,
        target: target.chars().take(300).collect(),
        outcome,
        detail: detail.chars().take(MAX_DETAIL_CHARS).collect(),
    };
    if let Err(e) = store.append_audit(&entry) {
        tracing::error!(error = %e, action = action.as_str(), target, "cannot record an audit entry");
    }
}

/// The caller of an audited call if its role allows `needed`; a refusal is
/// recorded (and logged) with `action` and `target`.
pub fn authorize(
    store: &dyn Store,
    now: UnixMillis,
    origin: &Origin,
    needed: Role,
    what: &str,
    action: AuditAction,
    target: &str,
) -> Result<Caller, Status> {
    let checked = match &origin.caller {
        Some(c) => check_role(c.clone(), origin.peer_addr, needed, what),
        None => {
            Err(crate::grpc::to_status(CoordinatorError::Unauthenticated { message: "operator token missing".into() }))
        }
    };
    if let Err(status) = &checked {
        record(store, now, origin, action, target, AuditOutcome::Refused, status.message());
    }
    checked
}

/// How a call's result reads in the trail: refusals (unauthenticated,
/// forbidden) apart from failures.
pub fn outcome_of<T>(result: &Result<T, Status>) -> (AuditOutcome, String) {
    match result {
        Ok(_) => (AuditOutcome::Ok, String::new()),
        Err(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
            (AuditOutcome::Refused, s.message().to_string())
        }
        Err(s) => (AuditOutcome::Failed, s.message().to_string()),
    }
}

/// Where local commands queue their entries for the coordinator.
pub fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.pending.jsonl")
}

/// Queue an entry from a local command (`convoy-coordinator token ...`);
/// the coordinator stores it ([`ingest_local`]).
pub fn queue_local(data_dir: &Path, entry: &AuditEntry) -> Result<(), CoordinatorError> {
    let _lock = lock_tokens(data_dir)?;
    let path = pending_path(data_dir);
    let io = |source| CoordinatorError::Io { path: path.clone(), source };
    let line = serde_json::to_string(entry)
        .map_err(|e| CoordinatorError::Store { op: "encode audit entry", message: e.to_string() })?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    writeln!(f, "{line}").map_err(io)?;
    f.sync_all().map_err(io)
}

/// Move the queued local entries into the store (in order), then remove
/// the queue. Lines that do not parse are logged and dropped.
pub fn ingest_local(data_dir: &Path, store: &dyn Store) -> Result<usize, CoordinatorError> {
    let path = pending_path(data_dir);
    if !path.exists() {
        return Ok(0);
    }
    // The token commands append under this lock: no line is lost between
    // reading the queue and removing it.
    let _lock = lock_tokens(data_dir)?;
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(CoordinatorError::Io { path, source }),
    };
    let mut n = 0;
    // Bounded: a queue larger than this is read in the next round.
    for line in std::io::BufReader::new(f).lines().take(100_000) {
        let line = line.map_err(|source| CoordinatorError::Io { path: path.clone(), source })?;
        match serde_json::from_str::<AuditEntry>(&line) {
            Ok(e) => {
                store.append_audit(&e)?;
                n += 1;
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable queued audit entry dropped"),
        }
    }
    std::fs::remove_file(&path).map_err(|source| CoordinatorError::Io { path, source })?;
    Ok(n)
}

/// The token file's lock (held until the file handle drops).
fn lock_tokens(data_dir: &Path) -> Result<std::fs::File, CoordinatorError> {
    let lock_path = data_dir.join("operators.lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
    let lock = lock.map_err(|source| CoordinatorError::Io { path: lock_path.clone(), source })?;
    lock.lock().map_err(|source| CoordinatorError::Io { path: lock_path, source })?;
    Ok(lock)
}

/// Queue the entry of a local token command ([`queue_local`]) for its
/// result; a failure to queue is a warning (the command's own result stands).
pub fn queue_token_command<T>(
    data_dir: &Path,
    now: UnixMillis,
    action: AuditAction,
    name: &str,
    detail: &str,
    result: &Result<T, CoordinatorError>,
) {
    let (outcome, detail) = match result {
        Ok(_) => (AuditOutcome::Ok, detail.to_string()),
        Err(e) => (AuditOutcome::Failed, e.to_string()),
    };
    let entry = AuditEntry {
        at: now,
        who: local_user(),
        role: "local".into(),
        peer: "local (convoy-coordinator token)".into(),
        action,
        target: name.to_string(),
        outcome,
        detail,
    };
    if let Err(e) = queue_local(data_dir, &entry) {
        eprintln!("warning: the audit entry was not queued: {e}");
    }
}

/// The local user, for entries of local commands (their identity is access
/// to the data directory).
pub fn local_user() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "local".into())
}

/// Record how an audited call ended — `detail` when it succeeded, the
/// error's message when not — and hand its result on.
pub fn finish<T>(
    store: &dyn Store,
    now: UnixMillis,
    origin: &Origin,
    action: AuditAction,
    target: &str,
    detail: &str,
    result: Result<T, Status>,
) -> Result<T, Status> {
    let (outcome, why) = outcome_of(&result);
    let detail = if outcome == AuditOutcome::Ok { detail.to_string() } else { why };
    record(store, now, origin, action, target, outcome, &detail);
    result
}

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
//! Refusals are bounded per source address ([`RefusalBudget`]): a client
//! hammering the API with a bad token would otherwise grow the store
//! without bound. Past [`REFUSALS_PER_MINUTE`] from one address in a
//! minute, its refusals are counted, not written one by one; the count is
//! written as one entry when that address is next refused in a later
//! minute (and logged at warn when the suppression starts). Every refusal
//! is still counted in `convoy_requests_refused_total`.
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

/// Refused calls one source address may add to the trail per minute.
pub const REFUSALS_PER_MINUTE: u32 = 20;

/// Source addresses whose refusals are tracked at once; past it, the
/// minute's counts are forgotten (a flood from that many addresses is
/// bounded by the per-address budget of each).
const TRACKED_ADDRESSES: usize = 4096;

/// How many refusals each source address had in its current minute.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    by_address: std::collections::HashMap<Option<std::net::IpAddr>, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    minute: u64,
    count: u32,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalVerdict {
    /// Record it; first record that `suppressed` earlier refusals from the
    /// same address went unrecorded (0: none).
    Record { suppressed: u32 },
    /// Count it, do not record it; `first` on the first one so suppressed.
    Suppress { first: bool },
}

impl RefusalBudget {
    /// The verdict on a refusal from `ip` at `now`.
    pub fn admit(&mut self, ip: Option<std::net::IpAddr>, now: UnixMillis) -> RefusalVerdict {
        let minute = now.0 / 60_000;
        if self.by_address.len() >= TRACKED_ADDRESSES && !self.by_address.contains_key(&ip) {
            self.by_address.retain(|_, w| w.minute == minute);
            if self.by_address.len() >= TRACKED_ADDRESSES {
                self.by_address.clear();
            }
        }
        let w = self.by_address.entry(ip).or_insert(Window { minute, count: 0 });
        let mut suppressed = 0;
        if w.minute != minute {
            suppressed = w.count.saturating_sub(REFUSALS_PER_MINUTE);
            *w = Window { minute, count: 0 };
        }
        w.count = w.count.saturating_add(1);
        if w.count <= REFUSALS_PER_MINUTE {
            RefusalVerdict::Record { suppressed }
        } else {
            RefusalVerdict::Suppress { first: w.count == REFUSALS_PER_MINUTE + 1 }
        }
    }
}

/// The process's budget: refusals come through every service and both listeners.
static REFUSALS: std::sync::LazyLock<std::sync::Mutex<RefusalBudget>> = std::sync::LazyLock::new(Default::default);

/// Record one entry. Never fails the caller: a store error is logged.
/// A refusal past its address's budget is counted instead (module doc).
pub fn record(
    store: &dyn Store,
    now: UnixMillis,
    origin: &Origin,
    action: AuditAction,
    target: &str,
    outcome: AuditOutcome,
    detail: &str,
) {
    if outcome == AuditOutcome::Refused {
        let ip = origin.peer_addr.map(|a| a.ip());
        let verdict = REFUSALS.lock().unwrap_or_else(|p| p.into_inner()).admit(ip, now);
        match verdict {
            RefusalVerdict::Suppress { first } => {
                if first {
                    tracing::warn!(
                        peer = %origin.peer,
                        "more than {REFUSALS_PER_MINUTE} refused calls from this address this minute: \
                         the rest are counted, not recorded one by one"
                    );
                }
                return;
            }
            RefusalVerdict::Record { suppressed } if suppressed > 0 => {
                let summary = AuditEntry {
                    at: now,
                    who: String::new(),
                    role: String::new(),
                    peer: origin.peer.clone(),
                    action: AuditAction::Call,
                    target: String::new(),
                    outcome: AuditOutcome::Refused,
                    detail: format!(
                        "{suppressed} more refused calls from this address in an earlier minute, not recorded \
                         one by one (more than {REFUSALS_PER_MINUTE} a minute)"
                    ),
                };
                append(store, &summary);
            }
            RefusalVerdict::Record { .. } => {}
        }
    }
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
    append(store, &entry);
}

/// Writes `entry`; a store error is logged, never returned.
fn append(store: &dyn Store, entry: &AuditEntry) {
    if let Err(e) = store.append_audit(entry) {
        tracing::error!(error = %e, action = entry.action.as_str(), target = %entry.target, "cannot record an audit entry");
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

/// How often entries past the retention are looked for (and once at start).
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the entries recorded more than `retention` before `now`;
/// returns how many went (where the store can tell).
pub fn prune_once(
    store: &dyn Store,
    now: UnixMillis,
    retention: std::time::Duration,
) -> Result<usize, CoordinatorError> {
    let before = UnixMillis(now.0.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)));
    store.prune_audit(before)
}

/// Prunes the trail to `retention` at start and every [`PRUNE_EVERY`]
/// until `stop` (`serve --audit-retention-days`); off the runtime's
/// threads, as a prune writes and flushes.
pub fn spawn_pruner(
    store: std::sync::Arc<dyn Store>,
    retention: std::time::Duration,
    clock: crate::runtime::Clock,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {
                    let (store, now) = (store.clone(), clock.now());
                    match tokio::task::spawn_blocking(move || prune_once(store.as_ref(), now, retention)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(removed = n, retention_days = retention.as_secs() / 86_400, "audit entries past the retention removed"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "audit entries past the retention not removed"),
                        Err(e) => tracing::warn!(error = %e, "audit pruning stopped"),
                    }
                }
            }
        }
    })
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

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn ip(last: u8) -> Option<std::net::IpAddr> {
        Some(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn refusals_past_the_budget_are_counted_and_reported_in_the_next_minute() {
        let mut b = RefusalBudget::default();
        let t = UnixMillis(10 * 60_000);
        let verdicts: Vec<RefusalVerdict> = (0..100).map(|_| b.admit(ip(1), t)).collect();
        let recorded = verdicts.iter().filter(|v| matches!(v, RefusalVerdict::Record { .. })).count();
        assert_eq!(recorded, REFUSALS_PER_MINUTE as usize);
        assert_eq!(verdicts[REFUSALS_PER_MINUTE as usize], RefusalVerdict::Suppress { first: true });
        assert_eq!(verdicts[99], RefusalVerdict::Suppress { first: false });
        // Another address has its own budget.
        assert_eq!(b.admit(ip(2), t), RefusalVerdict::Record { suppressed: 0 });
        // The next minute: the 80 suppressed are reported once.
        let later = UnixMillis(t.0 + 60_000);
        assert_eq!(b.admit(ip(1), later), RefusalVerdict::Record { suppressed: 80 });
        assert_eq!(b.admit(ip(1), later), RefusalVerdict::Record { suppressed: 0 });
    }

    #[test]
    fn the_budget_tracks_a_bounded_number_of_addresses() {
        let mut b = RefusalBudget::default();
        let t = UnixMillis(60_000);
        for k in 0..(TRACKED_ADDRESSES as u32 * 3) {
            let a = Some(std::net::IpAddr::from(std::net::Ipv4Addr::from(k)));
            assert_eq!(b.admit(a, t), RefusalVerdict::Record { suppressed: 0 });
            assert!(b.by_address.len() <= TRACKED_ADDRESSES);
        }
    }

    #[test]
    fn a_flood_of_refusals_adds_a_bounded_number_of_entries_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let peer: std::net::SocketAddr = ([198, 51, 100, 7], 40000).into();
        let origin = Origin::unauthenticated(Some(peer));
        let t = UnixMillis(1_000 * 60_000);
        for _ in 0..500 {
            record(&store, t, &origin, AuditAction::Call, "", AuditOutcome::Refused, "bad token");
        }
        // Actions that went through are never limited.
        let ok = Origin::new(None, Some(peer));
        for _ in 0..30 {
            record(&store, t, &ok, AuditAction::Call, "", AuditOutcome::Ok, "");
        }
        let later = UnixMillis(t.0 + 60_000);
        record(&store, later, &origin, AuditAction::Call, "", AuditOutcome::Refused, "bad token");
        let entries = store.audit(UnixMillis(0), 10_000).unwrap();
        let refused: Vec<&AuditEntry> = entries.iter().filter(|e| e.outcome == AuditOutcome::Refused).collect();
        assert_eq!(refused.len(), REFUSALS_PER_MINUTE as usize + 2, "20, the summary, the next one");
        assert!(refused.iter().any(|e| e.detail.starts_with("480 more refused calls")), "{refused:?}");
        assert_eq!(entries.iter().filter(|e| e.outcome == AuditOutcome::Ok).count(), 30);
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    fn entry(at: u64, target: &str) -> AuditEntry {
        AuditEntry {
            at: UnixMillis(at),
            who: "admin".into(),
            role: "operator".into(),
            peer: "127.0.0.1".into(),
            action: AuditAction::Call,
            target: target.into(),
            outcome: AuditOutcome::Ok,
            detail: String::new(),
        }
    }

    #[test]
    fn pruning_removes_what_is_past_the_retention_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let day = 86_400_000;
        for (k, at) in [1, 2, 3, 10, 11].into_iter().enumerate() {
            store.append_audit(&entry(at * day, &format!("e{k}"))).unwrap();
        }
        let now = UnixMillis(12 * day);
        let removed = prune_once(&store, now, std::time::Duration::from_secs(5 * 86_400)).unwrap();
        assert_eq!(removed, 3);
        let left: Vec<String> = store.audit(UnixMillis(0), 100).unwrap().into_iter().map(|e| e.target).collect();
        assert_eq!(left, ["e3", "e4"]);
        assert_eq!(prune_once(&store, now, std::time::Duration::from_secs(5 * 86_400)).unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pruner_runs_at_start_and_every_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let start = UnixMillis(100 * 86_400_000);
        let clock = crate::runtime::Clock::starting_at(start);
        // Two days old at start; one that is a day old then, 25 hours at the second pass.
        store.append_audit(&entry(start.0 - 2 * 86_400_000, "old")).unwrap();
        store.append_audit(&entry(start.0 - 86_400_000 + 1, "younger")).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = spawn_pruner(store.clone(), std::time::Duration::from_secs(86_400), clock, stop.clone());
        let targets = |s: &std::sync::Arc<dyn Store>| -> Vec<String> {
            s.audit(UnixMillis(0), 10).unwrap().into_iter().map(|e| e.target).collect()
        };
        // Waiting on the prune's blocking thread without letting paused
        // time run ahead (it advances only when every task waits on a
        // timer): a real-time deadline, and yields between looks.
        async fn wait_for(what: &str, done: impl Fn() -> bool) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        }
        wait_for("pruned at start", || targets(&store) == ["younger"]).await;
        tokio::time::sleep(PRUNE_EVERY).await;
        wait_for("pruned an hour later", || targets(&store).is_empty()).await;
        stop.cancel();
        task.await.unwrap();
    }
}

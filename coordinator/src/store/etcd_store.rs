//! [`Store`] on etcd (cargo feature `etcd`): the same versioned records as
//! the sled store ([`super::records`]), each tree a key prefix under one
//! store prefix (default `/convoy`), so several coordinators share one store
//! and hand leadership to each other (docs/ha.md).
//!
//! | key                                        | value                |
//! |--------------------------------------------|----------------------|
//! | `P/meta/format_version`                    | u32 BE               |
//! | `P/rollouts/ID`                            | `RolloutV2`          |
//! | `P/events/ID \0 SEQ(u64 BE)`               | `EventV1`            |
//! | `P/agents/ID`, `P/join_tokens_v2/HASH`, `P/enrolments/HOST` | as sled |
//! | `P/step_times/PLAN \0 GROUP \0 STEP`       | `StepTimesV1`        |
//! | `P/host_step_times/PLAN \0 HOST \0 GROUP \0 STEP` | `HostStepTimesV1` (one transaction with the step's) |
//! | `P/holds/HOST`, `P/rollout_holds/ID`       | as sled              |
//! | `P/audit/AT(u64 BE) RANDOM(u64 BE)`        | as sled              |
//! | `P/snapshots/ID`                           | `SnapshotHeadV1` (seq, parts, bytes) |
//! | `P/snapshot_parts/ID \0 SEQ \0 PART(u32 BE)` | the snapshot's JSON, in parts of 512 KiB |
//! | `P/election/…`                             | the leader election ([`crate::ha`]) |
//!
//! **Fencing.** A store opened with a [`Fence`] (the leader key of the
//! election and its create revision) makes every write a transaction that
//! compares that key's create revision first. Once another coordinator has
//! been elected the key is gone (its lease expired) or is another key, the
//! compare fails and the write is [`CoordinatorError::Deposed`]; so is a
//! write that could not reach etcd, because a leader that cannot write
//! cannot know it still leads. The first such error also cancels
//! [`EtcdStore::lost`], which the HA wiring watches to stop the term.
//!
//! **Writes are not buffered**: each put is one fenced transaction at once
//! and [`Store::flush`] has nothing to do (etcd has made a transaction
//! durable on a quorum before it answers). A batch of events is one
//! transaction, split at [`MAX_TXN_OPS`] operations or [`MAX_TXN_BYTES`].
//!
//! **Sizes.** etcd refuses requests over 1.5 MiB; a single value over
//! [`MAX_VALUE_BYTES`] (a rollout whose plan source is huge) is refused with
//! a store error naming the key and its size, not chunked. Engine snapshots
//! are the exception: they are split into parts of 512 KiB under a head
//! written last (and older parts deleted with it, in one transaction), up to
//! [`MAX_SNAPSHOT_BYTES`]; a bigger one is refused by name, and the runtime
//! keeps the previous snapshot and the whole log.
//!
//! **Sync over async.** The [`Store`] trait is synchronous (the runtime's
//! group commit is); the etcd client is async. The store runs its client on
//! a small runtime of its own on a dedicated thread and waits for each call
//! with [`OP_TIMEOUT`], so it may be called from inside or outside tokio.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use tokio_util::sync::CancellationToken;

use super::records::{self, Stored};
use super::{AgentRecord, AuditEntry, Hold, HostStepTimes, RolloutRecord, StepTimes, Store, StoredEvent, format};
use crate::enrolment::{Enrolment, JoinTokenRecord};
use crate::error::CoordinatorError;
use convoy_common::engine::EngineSnapshot;
use convoy_common::model::UnixMillis;

/// The most operations in one transaction (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;
/// The most value bytes in one transaction (etcd takes 1.5 MiB requests).
pub const MAX_TXN_BYTES: usize = 1024 * 1024;
/// The largest single value written.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// How long one etcd call may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys read per range request.
const PAGE: i64 = 1000;
const META_VERSION: &str = "meta/format_version";
/// The largest engine snapshot written, over all its parts: a bigger one is
/// refused (the runtime warns, keeps the previous snapshot and the log).
pub const MAX_SNAPSHOT_BYTES: usize = 8 * 1024 * 1024;
/// One part of a snapshot (etcd values stay under its request limit).
const SNAPSHOT_PART_BYTES: usize = 512 * 1024;
/// Where a snapshot's parts are; its head is under [`records::SNAPSHOTS`].
const SNAPSHOT_PARTS: &str = "snapshot_parts";

/// The head of a stored snapshot: which parts make it up.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotHeadV1 {
    seq: u64,
    parts: u32,
    bytes: u64,
}

/// Where the store lives: `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`, and
/// how to reach it (plain or TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `HOST:PORT` of each etcd member.
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this (no trailing `/`).
    pub prefix: String,
    /// TLS to the members (`https://`), or plain `http://` if `None`.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA that signed the members' certificates and, for an
/// etcd run with `--client-cert-auth`, this coordinator's certificate and
/// key (PEM, read once at start).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub identity: Option<EtcdIdentity>,
}

/// A client certificate and its key (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for EtcdTls {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

impl EtcdTarget {
    /// Parse `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` (prefix default `/convoy`).
    pub fn parse(s: &str) -> Result<EtcdTarget, CoordinatorError> {
        let bad = |message: String| CoordinatorError::BadRequest { field: "--store".into(), message };
        let rest =
            s.strip_prefix("etcd://").ok_or_else(|| bad(format!("{s:?}: expected etcd://HOST:PORT[,…][/PREFIX]")))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, "/convoy".to_string()),
        };
        if prefix.len() < 2 || prefix.len() > 200 {
            return Err(bad(format!("{s:?}: the prefix must have 1 to 200 characters")));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(bad(format!("{s:?}: {h:?} is not HOST:PORT")));
            }
            endpoints.push(h.to_string());
        }
        if endpoints.len() > 16 {
            return Err(bad(format!("{s:?}: at most 16 etcd endpoints")));
        }
        Ok(EtcdTarget { endpoints, prefix, tls: None })
    }

    /// The same target over TLS.
    pub fn with_tls(self, tls: EtcdTls) -> EtcdTarget {
        EtcdTarget { tls: Some(tls), ..self }
    }

    /// The members' URLs: `https://` with TLS, `http://` without.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect()
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &[u8]) -> Vec<u8> {
        [self.prefix.as_bytes(), b"/", name].concat()
    }

    /// The election's name (its keys are under it).
    pub fn election_name(&self) -> Vec<u8> {
        self.key(b"election")
    }

    /// Where the leader announces its dashboard (`ha::dashboard`).
    pub fn dashboard_key(&self) -> Vec<u8> {
        self.key(b"leader-dashboard")
    }

    /// Connect a client (lazily: errors show on the first call).
    pub async fn client(&self) -> Result<Client, CoordinatorError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(id) = &tls.identity {
                config = config.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
            }
            options = options.with_tls(config);
        }
        Client::connect(self.urls(), Some(options)).await.map_err(|e| etcd_err("connect", e))
    }
}

impl std::fmt::Display for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)?;
        if self.tls.is_some() {
            write!(f, " (TLS)")?;
        }
        Ok(())
    }
}

/// The leader key a fenced store compares before every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

pub(crate) fn etcd_err(op: &'static str, e: etcd_client::Error) -> CoordinatorError {
    CoordinatorError::Store { op, message: format!("etcd: {e}") }
}

/// A small runtime on its own thread that runs the client's futures.
struct Bridge {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Bridge {
    fn start() -> Result<Bridge, CoordinatorError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CoordinatorError::Store { op: "start etcd runtime", message: e.to_string() })?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("etcd-store".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| CoordinatorError::Store { op: "start etcd runtime", message: e.to_string() })?;
        Ok(Bridge { handle, stop: Some(stop) })
    }

    /// Run `fut` on the bridge's runtime and wait for it, at most [`OP_TIMEOUT`].
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, CoordinatorError>> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let r = match tokio::time::timeout(OP_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => {
                    Err(CoordinatorError::Store { op, message: format!("etcd did not answer within {OP_TIMEOUT:?}") })
                }
            };
            let _ = tx.send(r);
        });
        rx.recv_timeout(OP_TIMEOUT + Duration::from_secs(1))
            .unwrap_or_else(|_| Err(CoordinatorError::Store { op, message: "etcd call abandoned".into() }))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// [`Store`] on etcd.
pub struct EtcdStore {
    bridge: Bridge,
    client: Client,
    target: EtcdTarget,
    fence: Option<Fence>,
    lost: CancellationToken,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("target", &self.target.to_string()).field("fence", &self.fence).finish()
    }
}

impl EtcdStore {
    /// Connect to `target`, check (or stamp) the format version and return
    /// the store; with `fence`, every write compares the leader key first.
    /// Blocking: call it outside the runtime task (e.g. `spawn_blocking`).
    pub fn open(target: &EtcdTarget, fence: Option<Fence>) -> Result<EtcdStore, CoordinatorError> {
        let bridge = Bridge::start()?;
        let t = target.clone();
        let client = bridge.run("connect", async move { t.client().await })?;
        let store = EtcdStore { bridge, client, target: target.clone(), fence, lost: CancellationToken::new() };
        store.check_format()?;
        Ok(store)
    }

    /// Cancelled by the first write refused for lost leadership.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn check_format(&self) -> Result<(), CoordinatorError> {
        let key = self.target.key(META_VERSION.as_bytes());
        let found = match self.get(&key, "read format version")? {
            Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(b) => u32::from_be_bytes(b),
                Err(_) => {
                    return Err(CoordinatorError::Store {
                        op: "read format version",
                        message: format!("not a format version: {v:?}"),
                    });
                }
            },
            None => {
                // A new store: stamp it (only if still unstamped).
                let mut client = self.client.clone();
                let k = key.clone();
                self.bridge.run("write format version", async move {
                    let txn = Txn::new()
                        .when([Compare::version(k.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(k, format::FORMAT_VERSION.to_be_bytes().to_vec(), None)]);
                    client.txn(txn).await.map_err(|e| etcd_err("write format version", e))?;
                    Ok(())
                })?;
                format::FORMAT_VERSION
            }
        };
        if found > format::FORMAT_VERSION {
            return Err(CoordinatorError::StoreTooNew {
                path: self.target.to_string().into(),
                found,
                known: format::FORMAT_VERSION,
            });
        }
        if found == 3 {
            // 3 -> 4 rewrites nothing (the snapshot keys are new): stamp 4,
            // only if the stamp is still 3.
            let mut client = self.client.clone();
            self.bridge.run("write format version", async move {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, 3u32.to_be_bytes().to_vec())])
                    .and_then([TxnOp::put(key, format::FORMAT_VERSION.to_be_bytes().to_vec(), None)]);
                client.txn(txn).await.map_err(|e| etcd_err("write format version", e))?;
                Ok(())
            })?;
            return Ok(());
        }
        if found < format::FORMAT_VERSION {
            // The etcd store began at format 2; older ones were only sled.
            return Err(CoordinatorError::Store {
                op: "read format version",
                message: format!("{}: format {found} was never written to etcd", self.target),
            });
        }
        Ok(())
    }

    fn tree_key(&self, tree: &str, key: &[u8]) -> Vec<u8> {
        self.target.key(&[tree.as_bytes(), b"/", key].concat())
    }

    fn get(&self, key: &[u8], op: &'static str) -> Result<Option<Vec<u8>>, CoordinatorError> {
        let mut client = self.client.clone();
        let key = key.to_vec();
        self.bridge.run(op, async move {
            let r = client.get(key, None).await.map_err(|e| etcd_err(op, e))?;
            Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Every value whose key starts with `prefix`, in key order (paged).
    fn scan(&self, prefix: Vec<u8>, op: &'static str) -> Result<Vec<Vec<u8>>, CoordinatorError> {
        let mut client = self.client.clone();
        self.bridge.run(op, async move {
            let end = prefix_end(&prefix);
            let mut from = prefix;
            let mut out = Vec::new();
            loop {
                let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                let r = client.get(from.clone(), Some(opts)).await.map_err(|e| etcd_err(op, e))?;
                for kv in r.kvs() {
                    out.push(kv.value().to_vec());
                }
                match (r.more(), r.kvs().last()) {
                    (true, Some(last)) => from = [last.key(), b"\0"].concat(),
                    _ => return Ok(out),
                }
            }
        })
    }

    fn scan_tree<T: Stored>(
        &self,
        tree: &str,
        owner: Option<&str>,
        op: &'static str,
    ) -> Result<Vec<T>, CoordinatorError> {
        let prefix = match owner {
            Some(o) => self.tree_key(tree, &records::owner_prefix(o)),
            None => self.tree_key(tree, b""),
        };
        self.scan(prefix, op)?.iter().map(|v| T::decode(v)).collect()
    }

    /// Write `ops` (puts and deletes), fenced, in as few transactions as the
    /// limits allow, in order.
    fn write(&self, op: &'static str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), CoordinatorError> {
        if self.lost.is_cancelled() {
            return Err(self.deposed("an earlier write was refused"));
        }
        for (k, v) in &ops {
            if let Some(v) = v
                && v.len() > MAX_VALUE_BYTES
            {
                return Err(CoordinatorError::Store {
                    op,
                    message: format!(
                        "{}: a value of {} bytes is over the etcd store's limit of {MAX_VALUE_BYTES} bytes",
                        String::from_utf8_lossy(k),
                        v.len()
                    ),
                });
            }
        }
        let mut batches: Vec<Vec<TxnOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for (k, v) in ops {
            let size = k.len() + v.as_ref().map_or(0, Vec::len);
            let last = batches.last_mut().expect("one batch");
            if !last.is_empty() && (last.len() >= MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches.last_mut().expect("one batch").push(match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            });
        }
        for ops in batches.into_iter().filter(|b| !b.is_empty()) {
            self.fenced_txn(op, ops)?;
        }
        Ok(())
    }

    /// Run `ops` as one transaction, fenced like every write.
    fn fenced_txn(&self, op: &'static str, ops: Vec<TxnOp>) -> Result<(), CoordinatorError> {
        if self.lost.is_cancelled() {
            return Err(self.deposed("an earlier write was refused"));
        }
        let mut client = self.client.clone();
        let fence = self.fence.clone();
        let r = self.bridge.run(op, async move {
            let mut txn = Txn::new();
            if let Some(f) = fence {
                txn = txn.when([Compare::create_revision(f.key, CompareOp::Equal, f.create_revision)]);
            }
            let r = client.txn(txn.and_then(ops)).await.map_err(|e| etcd_err(op, e))?;
            Ok(r.succeeded())
        });
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.deposed("the leader key is gone or belongs to another coordinator")),
            Err(e) if self.fence.is_some() => Err(self.deposed(&format!("{op} failed: {e}"))),
            Err(e) => Err(e),
        }
    }

    /// `P/snapshot_parts/ID \0 SEQ(u64 BE) \0 PART(u32 BE)`, or its prefix
    /// without `part`, or without `seq` either.
    fn part_key(&self, rollout_id: &str, seq: Option<u64>, part: Option<u32>) -> Vec<u8> {
        let mut k = records::owner_prefix(rollout_id);
        if let Some(seq) = seq {
            k.extend_from_slice(&seq.to_be_bytes());
            k.push(0);
            if let Some(part) = part {
                k.extend_from_slice(&part.to_be_bytes());
            }
        }
        self.tree_key(SNAPSHOT_PARTS, &k)
    }

    fn deposed(&self, why: &str) -> CoordinatorError {
        if !self.lost.is_cancelled() {
            tracing::error!(why, "a fenced write was refused: this coordinator is no longer the leader");
            self.lost.cancel();
        }
        CoordinatorError::Deposed { message: why.to_string() }
    }

    fn put_one(
        &self,
        op: &'static str,
        tree: &str,
        key: &[u8],
        value: Option<Vec<u8>>,
    ) -> Result<(), CoordinatorError> {
        self.write(op, vec![(self.tree_key(tree, key), value)])
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store for EtcdStore {
    fn put_rollout(&self, rollout: &RolloutRecord) -> Result<(), CoordinatorError> {
        self.put_one("put rollout", records::ROLLOUTS, rollout.id.as_bytes(), Some(rollout.encode()?))
    }

    fn rollouts(&self) -> Result<Vec<RolloutRecord>, CoordinatorError> {
        self.scan_tree(records::ROLLOUTS, None, "read rollouts")
    }

    fn append_events(&self, rollout_id: &str, first_seq: u64, events: &[StoredEvent]) -> Result<(), CoordinatorError> {
        let mut ops = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            ops.push((
                self.tree_key(records::EVENTS, &records::event_key(rollout_id, first_seq + i as u64)),
                Some(e.encode()?),
            ));
        }
        self.write("append events", ops)
    }

    fn events(&self, rollout_id: &str) -> Result<Vec<StoredEvent>, CoordinatorError> {
        self.scan_tree(records::EVENTS, Some(rollout_id), "read events")
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), CoordinatorError> {
        self.put_one("put agent", records::AGENTS, agent.id.as_bytes(), Some(agent.encode()?))
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordinatorError> {
        self.scan_tree(records::AGENTS, None, "read agents")
    }

    fn put_join_token(&self, hash: &str, token: Option<&JoinTokenRecord>) -> Result<(), CoordinatorError> {
        let value = token.map(Stored::encode).transpose()?;
        self.put_one("put join token", records::JOIN_TOKENS, hash.as_bytes(), value)
    }

    fn join_token(&self, hash: &str) -> Result<Option<JoinTokenRecord>, CoordinatorError> {
        let v = self.get(&self.tree_key(records::JOIN_TOKENS, hash.as_bytes()), "get join token")?;
        v.map(|v| JoinTokenRecord::decode(&v)).transpose()
    }

    fn put_enrolment(&self, enrolment: &Enrolment) -> Result<(), CoordinatorError> {
        self.put_one("put enrolment", records::ENROLMENTS, enrolment.host.as_bytes(), Some(enrolment.encode()?))
    }

    fn enrolment(&self, host: &str) -> Result<Option<Enrolment>, CoordinatorError> {
        let v = self.get(&self.tree_key(records::ENROLMENTS, host.as_bytes()), "get enrolment")?;
        v.map(|v| Enrolment::decode(&v)).transpose()
    }

    fn add_step_time(
        &self,
        plan: &str,
        host: &str,
        group: &str,
        step: &str,
        duration_ms: u64,
        keep: usize,
    ) -> Result<(), CoordinatorError> {
        let key = self.tree_key(records::STEP_TIMES, &records::step_time_key(plan, group, step));
        let stored = self.get(&key, "get step times")?.map(|v| StepTimes::decode(&v)).transpose()?;
        let times = StepTimes::with(stored, group, step, duration_ms, keep);
        let host_key = self.tree_key(records::HOST_STEP_TIMES, &records::host_step_time_key(plan, host, group, step));
        let stored = self.get(&host_key, "get host step times")?.map(|v| HostStepTimes::decode(&v)).transpose()?;
        let on_host = HostStepTimes {
            host: host.to_string(),
            times: StepTimes::with(stored.map(|h| h.times), group, step, duration_ms, keep),
        };
        self.write("put step times", vec![(key, Some(times.encode()?)), (host_key, Some(on_host.encode()?))])
    }

    fn step_times(&self, plan: &str) -> Result<Vec<StepTimes>, CoordinatorError> {
        self.scan_tree(records::STEP_TIMES, Some(plan), "read step times")
    }

    fn host_step_times(&self, plan: &str) -> Result<Vec<HostStepTimes>, CoordinatorError> {
        self.scan_tree(records::HOST_STEP_TIMES, Some(plan), "read host step times")
    }

    fn flush(&self) -> Result<(), CoordinatorError> {
        Ok(())
    }

    fn put_hold(&self, hold: &Hold) -> Result<(), CoordinatorError> {
        self.put_one("put hold", records::HOLDS, hold.host.as_bytes(), Some(hold.encode()?))
    }

    fn remove_hold(&self, host: &str) -> Result<Option<Hold>, CoordinatorError> {
        let key = self.tree_key(records::HOLDS, host.as_bytes());
        let old = self.get(&key, "get hold")?.map(|v| Hold::decode(&v)).transpose()?;
        self.write("remove hold", vec![(key, None)])?;
        Ok(old)
    }

    fn holds(&self) -> Result<Vec<Hold>, CoordinatorError> {
        self.scan_tree(records::HOLDS, None, "read holds")
    }

    fn put_rollout_holds(&self, rollout_id: &str, held: &[Hold]) -> Result<(), CoordinatorError> {
        let v = records::RolloutHolds(held.to_vec()).encode()?;
        self.put_one("put rollout holds", records::ROLLOUT_HOLDS, rollout_id.as_bytes(), Some(v))
    }

    fn rollout_holds(&self, rollout_id: &str) -> Result<Vec<Hold>, CoordinatorError> {
        let v = self.get(&self.tree_key(records::ROLLOUT_HOLDS, rollout_id.as_bytes()), "get rollout holds")?;
        Ok(v.map(|v| records::RolloutHolds::decode(&v)).transpose()?.map(|h| h.0).unwrap_or_default())
    }

    fn events_page(
        &self,
        rollout_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredEvent)>, CoordinatorError> {
        let owner = self.tree_key(records::EVENTS, &records::owner_prefix(rollout_id));
        let from = self.tree_key(records::EVENTS, &records::event_key(rollout_id, from_seq));
        let limit = i64::try_from(max.min(PAGE as usize)).unwrap_or(PAGE);
        let mut client = self.client.clone();
        let end = prefix_end(&owner);
        let kvs = self.bridge.run("read events", async move {
            let opts = GetOptions::new().with_range(end).with_limit(limit);
            let r = client.get(from, Some(opts)).await.map_err(|e| etcd_err("read events", e))?;
            Ok(r.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect::<Vec<_>>())
        })?;
        let mut out = Vec::with_capacity(kvs.len());
        for (k, v) in kvs {
            let Some(seq) = k.strip_prefix(owner.as_slice()).and_then(|s| <[u8; 8]>::try_from(s).ok()) else { break };
            out.push((u64::from_be_bytes(seq), StoredEvent::decode(&v)?));
        }
        Ok(out)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), CoordinatorError> {
        // Keyed by time, then a random tie-breaker: key order is the order
        // entries were recorded in, to the millisecond, on any coordinator.
        let key = [entry.at.0.to_be_bytes(), rand::random::<u64>().to_be_bytes()].concat();
        self.put_one("append audit", records::AUDIT, &key, Some(entry.encode()?))
    }

    fn audit(&self, since: UnixMillis, limit: usize) -> Result<Vec<AuditEntry>, CoordinatorError> {
        let from = self.tree_key(records::AUDIT, &since.0.to_be_bytes());
        let end = prefix_end(&self.tree_key(records::AUDIT, b""));
        let mut client = self.client.clone();
        let values = self.bridge.run("read audit", async move {
            // Newest first, so the limit keeps the most recent entries.
            let opts = GetOptions::new()
                .with_range(end)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Descend);
            let r = client.get(from, Some(opts)).await.map_err(|e| etcd_err("read audit", e))?;
            Ok(r.kvs().iter().map(|kv| kv.value().to_vec()).collect::<Vec<_>>())
        })?;
        let mut out = values.iter().map(|v| AuditEntry::decode(v)).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Parts first (each its own fenced transaction), then in one
    /// transaction the head naming them and the removal of every older
    /// snapshot's parts: a reader sees the old snapshot or the new one.
    fn put_snapshot(&self, rollout_id: &str, snapshot: &EngineSnapshot) -> Result<(), CoordinatorError> {
        let bytes = snapshot.to_json();
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(CoordinatorError::Store {
                op: "put snapshot",
                message: format!(
                    "rollout {rollout_id}: a snapshot of {} bytes is over the etcd store's limit of {MAX_SNAPSHOT_BYTES} bytes",
                    bytes.len()
                ),
            });
        }
        let chunks: Vec<&[u8]> = bytes.chunks(SNAPSHOT_PART_BYTES).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let key = self.part_key(rollout_id, Some(snapshot.seq), Some(i as u32));
            self.fenced_txn("put snapshot", vec![TxnOp::put(key, chunk.to_vec(), None)])?;
        }
        let head = SnapshotHeadV1 { seq: snapshot.seq, parts: chunks.len() as u32, bytes: bytes.len() as u64 };
        let head = serde_json::to_vec(&head)
            .map_err(|e| CoordinatorError::Store { op: "put snapshot", message: e.to_string() })?;
        let older = DeleteOptions::new().with_range(self.part_key(rollout_id, Some(snapshot.seq), None));
        self.fenced_txn(
            "put snapshot",
            vec![
                TxnOp::put(self.tree_key(records::SNAPSHOTS, rollout_id.as_bytes()), head, None),
                TxnOp::delete(self.part_key(rollout_id, None, None), Some(older)),
            ],
        )
    }

    fn snapshot(&self, rollout_id: &str) -> Result<Option<EngineSnapshot>, CoordinatorError> {
        let Some(head) = self.get(&self.tree_key(records::SNAPSHOTS, rollout_id.as_bytes()), "get snapshot")? else {
            return Ok(None);
        };
        let bad = |message: String| CoordinatorError::Store { op: "get snapshot", message };
        let head: SnapshotHeadV1 = serde_json::from_slice(&head).map_err(|e| bad(e.to_string()))?;
        // Parts past the head's count are leftovers of a write that never got
        // its head (a leader deposed mid-way): not part of this snapshot.
        let mut parts = self.scan(self.part_key(rollout_id, Some(head.seq), None), "get snapshot")?;
        let found = parts.len();
        parts.truncate(head.parts as usize);
        let bytes = parts.concat();
        if found < head.parts as usize || bytes.len() as u64 != head.bytes {
            return Err(bad(format!(
                "rollout {rollout_id}: snapshot at {} has {} parts of {} bytes, its head says {} of {}",
                head.seq,
                found,
                bytes.len(),
                head.parts,
                head.bytes
            )));
        }
        records::decode_snapshot(&bytes).map(Some)
    }

    /// Keys are the time first: one fenced range delete (the count is not
    /// asked for: 0).
    fn prune_audit(&self, before: UnixMillis) -> Result<usize, CoordinatorError> {
        let from = self.tree_key(records::AUDIT, b"");
        let to = self.tree_key(records::AUDIT, &before.0.to_be_bytes());
        self.fenced_txn("prune audit", vec![TxnOp::delete(from, Some(DeleteOptions::new().with_range(to)))])?;
        Ok(0)
    }

    fn compact_events(&self, rollout_id: &str, before_seq: u64) -> Result<(), CoordinatorError> {
        let from = self.tree_key(records::EVENTS, &records::event_key(rollout_id, 0));
        let to = self.tree_key(records::EVENTS, &records::event_key(rollout_id, before_seq));
        self.fenced_txn("compact events", vec![TxnOp::delete(from, Some(DeleteOptions::new().with_range(to)))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_endpoints_and_prefix_and_bad_ones_name_the_flag() {
        let t = EtcdTarget::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/prod/convoy/").unwrap();
        assert_eq!(t.endpoints, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(t.urls(), vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(t.prefix, "/prod/convoy");
        assert_eq!(t.to_string(), "etcd://10.0.0.1:2379,10.0.0.2:2379/prod/convoy");
        assert_eq!(t.key(b"rollouts/r1"), b"/prod/convoy/rollouts/r1".to_vec());
        let key = EtcdIdentity { cert_pem: "CERT".into(), key_pem: "SECRET KEY".into() };
        let t = t.with_tls(EtcdTls { ca_pem: "CA".into(), identity: Some(key) });
        assert_eq!(t.urls(), vec!["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert_eq!(t.to_string(), "etcd://10.0.0.1:2379,10.0.0.2:2379/prod/convoy (TLS)");
        assert!(!format!("{t:?}").contains("SECRET"), "a target's Debug shows no key");
        assert_eq!(EtcdTarget::parse("etcd://h:1").unwrap().prefix, "/convoy");
        for bad in ["http://h:1", "etcd://h", "etcd://h:0", "etcd://:1", "etcd://h:1,", "etcd://h:1/"] {
            let err = EtcdTarget::parse(bad).unwrap_err();
            assert!(err.to_string().contains("--store"), "{bad}: {err}");
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}

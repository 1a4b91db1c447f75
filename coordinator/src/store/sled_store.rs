//! [`Store`] on an embedded sled database: the trees of [`super::records`],
//! opened after [`super::format`] has checked (and upgraded) the format.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use convoy_common::audit::AuditEntry;
use convoy_common::engine::EngineSnapshot;
use convoy_common::hold::Hold;
use convoy_common::model::UnixMillis;

use super::records::{self, Stored};
use super::{AgentRecord, HostStepTimes, RolloutRecord, StepTimes, Store, StoredEvent, format};
use crate::enrolment::{Enrolment, JoinTokenRecord};
use crate::error::CoordinatorError;

/// [`Store`] on an embedded sled database.
pub struct SledStore {
    db: sled::Db,
    found_format: u32,
    rollouts: sled::Tree,
    events: sled::Tree,
    agents: sled::Tree,
    tokens: sled::Tree,
    enrolments: sled::Tree,
    step_times: sled::Tree,
    host_step_times: sled::Tree,
    holds: sled::Tree,
    rollout_holds: sled::Tree,
    audit: sled::Tree,
    snapshots: sled::Tree,
    /// Set after every write, cleared by the flush that makes it durable: a
    /// flush with nothing written since the last one touches no disk (the
    /// runtime commits after every batch, heartbeats included).
    written: AtomicBool,
    /// Serialises flushes, so a caller whose write another caller's flush
    /// picked up returns only once that flush is done.
    flushing: Mutex<()>,
    /// Flushes that went to disk.
    disk_flushes: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// Every value of `tree` whose key starts with `owner` and a 0 byte, in key order.
fn scan_owner<T: Stored>(tree: &sled::Tree, owner: &str, read: &'static str) -> Result<Vec<T>, CoordinatorError> {
    decode_all(tree.scan_prefix(records::owner_prefix(owner)), read)
}

/// Every value of a sled iteration, decoded, in key order.
fn decode_all<T: Stored>(entries: sled::Iter, read: &'static str) -> Result<Vec<T>, CoordinatorError> {
    let mut out = Vec::new();
    for kv in entries {
        let (_, v) = kv.map_err(serr(read))?;
        out.push(T::decode(&v)?);
    }
    Ok(out)
}

fn serr(op: &'static str) -> impl FnOnce(sled::Error) -> CoordinatorError {
    move |e| CoordinatorError::Store { op, message: e.to_string() }
}

impl SledStore {
    /// Open (or create) the store in `dir`. Only one process may hold it.
    ///
    /// sled releases its file lock when the last of its threads lets go of
    /// the database, which happens some time after the handle is dropped: a
    /// store reopened in the same process (a coordinator restarted in a test,
    /// `init` right after a coordinator stopped) waits up to `wait` for the
    /// lock instead of failing on a race. Another process holding it past
    /// `wait` is [`CoordinatorError::InUse`]. A store of a newer format than
    /// this build's is [`CoordinatorError::StoreTooNew`]; an older one is
    /// upgraded ([`format`]).
    pub fn open_waiting(dir: &Path, wait: Duration) -> Result<SledStore, CoordinatorError> {
        let deadline = Instant::now() + wait;
        let db = loop {
            match sled::Config::new().path(dir).cache_capacity(64 * 1024 * 1024).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if Instant::now() >= deadline {
                        return Err(CoordinatorError::InUse { path: dir.to_path_buf() });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(CoordinatorError::Store { op: "open", message: format!("{}: {e}", dir.display()) });
                }
            }
        };
        let found_format = format::open(&db, dir)?;
        Ok(SledStore {
            rollouts: db.open_tree(records::ROLLOUTS).map_err(serr("open rollouts"))?,
            events: db.open_tree(records::EVENTS).map_err(serr("open events"))?,
            agents: db.open_tree(records::AGENTS).map_err(serr("open agents"))?,
            tokens: db.open_tree(records::JOIN_TOKENS).map_err(serr("open tokens"))?,
            enrolments: db.open_tree(records::ENROLMENTS).map_err(serr("open enrolments"))?,
            step_times: db.open_tree(records::STEP_TIMES).map_err(serr("open step times"))?,
            host_step_times: db.open_tree(records::HOST_STEP_TIMES).map_err(serr("open host step times"))?,
            holds: db.open_tree(records::HOLDS).map_err(serr("open holds"))?,
            rollout_holds: db.open_tree(records::ROLLOUT_HOLDS).map_err(serr("open rollout holds"))?,
            audit: db.open_tree(records::AUDIT).map_err(serr("open audit"))?,
            snapshots: db.open_tree(records::SNAPSHOTS).map_err(serr("open snapshots"))?,
            found_format,
            db,
            // Whatever opening wrote is flushed by the first flush.
            written: AtomicBool::new(true),
            flushing: Mutex::new(()),
            disk_flushes: AtomicU64::new(0),
        })
    }

    /// Flushes that went to disk since the store was opened.
    pub fn disk_flushes(&self) -> u64 {
        self.disk_flushes.load(Ordering::SeqCst)
    }

    /// Call after every write (after: a write not yet marked when a flush
    /// clears the mark is flushed by the next one).
    fn mark_written(&self) {
        self.written.store(true, Ordering::SeqCst);
    }

    /// The format the store was in when opened (it is in
    /// [`format::FORMAT_VERSION`] now).
    pub fn found_format(&self) -> u32 {
        self.found_format
    }

    /// [`Self::open_waiting`] with [`OPEN_WAIT`].
    pub fn open(dir: &Path) -> Result<SledStore, CoordinatorError> {
        Self::open_waiting(dir, OPEN_WAIT)
    }
}

/// How long [`SledStore::open`] waits for a lock held by a handle that is
/// being released.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);

impl Store for SledStore {
    fn put_rollout(&self, rollout: &RolloutRecord) -> Result<(), CoordinatorError> {
        self.rollouts.insert(rollout.id.as_bytes(), rollout.encode()?).map_err(serr("put rollout"))?;
        self.mark_written();
        Ok(())
    }

    fn rollouts(&self) -> Result<Vec<RolloutRecord>, CoordinatorError> {
        decode_all(self.rollouts.iter(), "read rollouts")
    }

    fn append_events(&self, rollout_id: &str, first_seq: u64, events: &[StoredEvent]) -> Result<(), CoordinatorError> {
        let mut batch = sled::Batch::default();
        for (i, e) in events.iter().enumerate() {
            batch.insert(records::event_key(rollout_id, first_seq + i as u64), e.encode()?);
        }
        self.events.apply_batch(batch).map_err(serr("append events"))?;
        self.mark_written();
        Ok(())
    }

    fn events(&self, rollout_id: &str) -> Result<Vec<StoredEvent>, CoordinatorError> {
        scan_owner(&self.events, rollout_id, "read events")
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), CoordinatorError> {
        self.agents.insert(agent.id.as_bytes(), agent.encode()?).map_err(serr("put agent"))?;
        self.mark_written();
        Ok(())
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordinatorError> {
        decode_all(self.agents.iter(), "read agents")
    }

    fn put_join_token(&self, hash: &str, token: Option<&JoinTokenRecord>) -> Result<(), CoordinatorError> {
        match token {
            Some(t) => {
                self.tokens.insert(hash.as_bytes(), t.encode()?).map_err(serr("put join token"))?;
            }
            None => {
                self.tokens.remove(hash.as_bytes()).map_err(serr("delete join token"))?;
            }
        }
        self.mark_written();
        Ok(())
    }

    fn join_token(&self, hash: &str) -> Result<Option<JoinTokenRecord>, CoordinatorError> {
        let v = self.tokens.get(hash.as_bytes()).map_err(serr("get join token"))?;
        v.map(|v| JoinTokenRecord::decode(&v)).transpose()
    }

    fn put_enrolment(&self, enrolment: &Enrolment) -> Result<(), CoordinatorError> {
        self.enrolments.insert(enrolment.host.as_bytes(), enrolment.encode()?).map_err(serr("put enrolment"))?;
        self.mark_written();
        Ok(())
    }

    fn enrolment(&self, host: &str) -> Result<Option<Enrolment>, CoordinatorError> {
        let v = self.enrolments.get(host.as_bytes()).map_err(serr("get enrolment"))?;
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
        let key = records::step_time_key(plan, group, step);
        let stored = self.step_times.get(&key).map_err(serr("get step times"))?;
        let stored = stored.map(|v| StepTimes::decode(&v)).transpose()?;
        let times = StepTimes::with(stored, group, step, duration_ms, keep);
        self.step_times.insert(key, times.encode()?).map_err(serr("put step times"))?;
        let key = records::host_step_time_key(plan, host, group, step);
        let stored = self.host_step_times.get(&key).map_err(serr("get host step times"))?;
        let stored = stored.map(|v| HostStepTimes::decode(&v)).transpose()?.map(|h| h.times);
        let times =
            HostStepTimes { host: host.to_string(), times: StepTimes::with(stored, group, step, duration_ms, keep) };
        self.host_step_times.insert(key, times.encode()?).map_err(serr("put host step times"))?;
        self.mark_written();
        Ok(())
    }

    fn step_times(&self, plan: &str) -> Result<Vec<StepTimes>, CoordinatorError> {
        scan_owner(&self.step_times, plan, "read step times")
    }

    fn host_step_times(&self, plan: &str) -> Result<Vec<HostStepTimes>, CoordinatorError> {
        scan_owner(&self.host_step_times, plan, "read host step times")
    }

    /// Makes every write so far durable; nothing written since the last
    /// flush means nothing to do.
    fn flush(&self) -> Result<(), CoordinatorError> {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.written.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if let Err(e) = self.db.flush() {
            self.mark_written();
            return Err(serr("flush")(e));
        }
        self.disk_flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    // ------------------------------------------ holds and audit (issue 13)

    fn put_hold(&self, hold: &Hold) -> Result<(), CoordinatorError> {
        self.holds.insert(hold.host.as_bytes(), hold.encode()?).map_err(serr("put hold"))?;
        self.mark_written();
        self.holds.flush().map_err(serr("flush holds"))?;
        Ok(())
    }

    fn remove_hold(&self, host: &str) -> Result<Option<Hold>, CoordinatorError> {
        let old = self.holds.remove(host.as_bytes()).map_err(serr("remove hold"))?;
        self.mark_written();
        self.holds.flush().map_err(serr("flush holds"))?;
        old.map(|v| Hold::decode(&v)).transpose()
    }

    fn holds(&self) -> Result<Vec<Hold>, CoordinatorError> {
        decode_all(self.holds.iter(), "read holds")
    }

    fn put_rollout_holds(&self, rollout_id: &str, held: &[Hold]) -> Result<(), CoordinatorError> {
        let v = records::RolloutHolds(held.to_vec()).encode()?;
        self.rollout_holds.insert(rollout_id.as_bytes(), v).map_err(serr("put rollout holds"))?;
        self.mark_written();
        Ok(())
    }

    fn rollout_holds(&self, rollout_id: &str) -> Result<Vec<Hold>, CoordinatorError> {
        let v = self.rollout_holds.get(rollout_id.as_bytes()).map_err(serr("get rollout holds"))?;
        Ok(v.map(|v| records::RolloutHolds::decode(&v)).transpose()?.map(|h| h.0).unwrap_or_default())
    }

    fn events_page(
        &self,
        rollout_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredEvent)>, CoordinatorError> {
        let prefix = records::owner_prefix(rollout_id);
        let mut out = Vec::new();
        for kv in self.events.range(records::event_key(rollout_id, from_seq)..) {
            let (k, v) = kv.map_err(serr("read events"))?;
            let Some(seq) = k.strip_prefix(prefix.as_slice()).and_then(|s| <[u8; 8]>::try_from(s).ok()) else { break };
            if out.len() >= max {
                break;
            }
            out.push((u64::from_be_bytes(seq), StoredEvent::decode(&v)?));
        }
        Ok(out)
    }

    fn put_snapshot(&self, rollout_id: &str, snapshot: &EngineSnapshot) -> Result<(), CoordinatorError> {
        self.snapshots.insert(rollout_id.as_bytes(), snapshot.to_json()).map_err(serr("put snapshot"))?;
        self.mark_written();
        Ok(())
    }

    fn snapshot(&self, rollout_id: &str) -> Result<Option<EngineSnapshot>, CoordinatorError> {
        let v = self.snapshots.get(rollout_id.as_bytes()).map_err(serr("get snapshot"))?;
        v.map(|v| records::decode_snapshot(&v)).transpose()
    }

    fn compact_events(&self, rollout_id: &str, before_seq: u64) -> Result<(), CoordinatorError> {
        let mut batch = sled::Batch::default();
        let range = records::event_key(rollout_id, 0)..records::event_key(rollout_id, before_seq);
        for kv in self.events.range(range) {
            let (k, _) = kv.map_err(serr("compact events"))?;
            batch.remove(k);
        }
        self.events.apply_batch(batch).map_err(serr("compact events"))?;
        self.mark_written();
        Ok(())
    }

    fn events_from(&self, rollout_id: &str, from_seq: u64) -> Result<Vec<(u64, StoredEvent)>, CoordinatorError> {
        self.events_page(rollout_id, from_seq, usize::MAX)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), CoordinatorError> {
        // sled's generated ids only grow, across restarts too: key order is
        // the order entries were recorded in.
        let seq = self.db.generate_id().map_err(serr("audit sequence"))?;
        self.audit.insert(seq.to_be_bytes(), entry.encode()?).map_err(serr("append audit"))?;
        self.mark_written();
        self.audit.flush().map_err(serr("flush audit"))?;
        Ok(())
    }

    fn audit(&self, since: UnixMillis, limit: usize) -> Result<Vec<AuditEntry>, CoordinatorError> {
        // Newest first until `limit` or an entry older than `since`.
        let mut out = Vec::new();
        for kv in self.audit.iter().rev() {
            let (_, v) = kv.map_err(serr("read audit"))?;
            let e = AuditEntry::decode(&v)?;
            if e.at < since || out.len() >= limit {
                break;
            }
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    fn prune_audit(&self, before: UnixMillis) -> Result<usize, CoordinatorError> {
        // Oldest first, up to the first entry not older than `before`.
        let mut old = Vec::new();
        for kv in self.audit.iter() {
            let (k, v) = kv.map_err(serr("read audit"))?;
            if AuditEntry::decode(&v)?.at >= before {
                break;
            }
            old.push(k);
        }
        let mut batch = sled::Batch::default();
        for k in &old {
            batch.remove(k.clone());
        }
        self.audit.apply_batch(batch).map_err(serr("prune audit"))?;
        self.mark_written();
        self.audit.flush().map_err(serr("flush audit"))?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::engine::{Event, OperatorCommand};
    use convoy_common::model::UnixMillis;

    /// The runtime commits (flushes) after every batch, heartbeats included:
    /// a flush with nothing written must not go to disk, and one after a
    /// write must (and the write survives a reopen).
    #[test]
    fn a_flush_with_nothing_written_touches_no_disk() {
        let dir = tempfile::tempdir().unwrap();
        let token = JoinTokenRecord { expires: UnixMillis(9), uses_left: 1, hosts: None, created_by: "t".into() };
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.flush().unwrap();
            assert_eq!(s.disk_flushes(), 1, "what opening wrote is flushed");
            for _ in 0..100 {
                s.flush().unwrap();
            }
            assert_eq!(s.disk_flushes(), 1, "nothing written: no disk flush");
            s.put_join_token("abc", Some(&token)).unwrap();
            s.flush().unwrap();
            s.flush().unwrap();
            assert_eq!(s.disk_flushes(), 2, "one write: one disk flush");
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.join_token("abc").unwrap(), Some(token));
    }

    #[test]
    fn events_come_back_in_order_per_rollout_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let token = JoinTokenRecord { expires: UnixMillis(99), uses_left: 2, hosts: None, created_by: "t".into() };
        {
            let s = SledStore::open(dir.path()).unwrap();
            let evs: Vec<StoredEvent> =
                (0..300).map(|i| StoredEvent { now: UnixMillis(i), event: Event::Started }).collect();
            s.append_events("r-a", 0, &evs[..200]).unwrap();
            s.append_events("r-a", 200, &evs[200..]).unwrap();
            // A rollout whose id is a prefix of another must not see its events.
            s.append_events(
                "r-ab",
                0,
                &[StoredEvent {
                    now: UnixMillis(7),
                    event: Event::Operator { command: OperatorCommand::Pause, by: "x".into() },
                }],
            )
            .unwrap();
            s.put_join_token("tok", Some(&token)).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let got = s.events("r-a").unwrap();
        assert_eq!(got.len(), 300);
        assert!(got.windows(2).all(|w| w[0].now < w[1].now), "events out of order");
        assert_eq!(s.events("r-ab").unwrap().len(), 1);
        assert_eq!(s.join_token("tok").unwrap(), Some(token));
        assert_eq!(s.join_token("nope").unwrap(), None);
    }

    /// The raw database in `dir`, once a store just dropped has let go of it.
    fn raw_db(dir: &Path) -> sled::Db {
        let deadline = Instant::now() + OPEN_WAIT;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return db,
                Err(e) if Instant::now() < deadline => {
                    assert!(e.to_string().contains("could not acquire lock"), "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_with_its_path_and_one_without_a_stamp_is_format_1() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As a build from before format versions left it: data, no stamp.
            let db = raw_db(dir.path());
            db.open_tree(records::STEP_TIMES)
                .unwrap()
                .insert(records::step_time_key("p", "g", "s"), &br#"{"group":"g","step":"s","recent_ms":[4]}"#[..])
                .unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.found_format(), 1);
        assert_eq!(s.step_times("p").unwrap()[0].recent_ms, vec![4]);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.found_format(), format::FORMAT_VERSION, "stamped on the first open");
        drop(s);
        {
            let db = raw_db(dir.path());
            let newer = (format::FORMAT_VERSION + 1).to_be_bytes();
            db.open_tree("meta").unwrap().insert(b"format_version", &newer[..]).unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CoordinatorError::StoreTooNew { .. }), "{text}");
        assert!(
            text.starts_with(&dir.path().display().to_string()) && text.contains("upgrade the coordinator"),
            "{text}"
        );
    }

    #[test]
    fn a_store_held_elsewhere_is_in_use_and_a_released_one_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open_waiting(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, CoordinatorError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(held);
        // Reopened at once after the drop: waits for sled to let go instead
        // of failing on the race.
        for _ in 0..20 {
            let s = SledStore::open(dir.path()).unwrap();
            drop(s);
        }
    }

    #[test]
    fn step_times_keep_the_last_ones_per_plan_group_and_step_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for ms in 1..=25 {
                let host = if ms % 2 == 0 { "db-1" } else { "db-2" };
                s.add_step_time("upgrade", host, "db", "install", ms, 20).unwrap();
            }
            s.add_step_time("upgrade", "api-1", "api", "install", 7, 20).unwrap();
            // A plan whose name extends another's must not mix with it.
            s.add_step_time("upgrade-2", "db-1", "db", "install", 99, 20).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let mut got = s.step_times("upgrade").unwrap();
        got.sort_by(|a, b| a.group.cmp(&b.group));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], StepTimes { group: "api".into(), step: "install".into(), recent_ms: vec![7] });
        assert_eq!(got[1].group, "db");
        assert_eq!(got[1].recent_ms, (6..=25).collect::<Vec<u64>>(), "the 20 most recent, oldest first");
        assert_eq!(s.step_times("upgrade-2").unwrap()[0].recent_ms, vec![99]);
        assert!(s.step_times("nothing").unwrap().is_empty());
        // Each host keeps its own history of each step.
        let on_hosts = s.host_step_times("upgrade").unwrap();
        let of = |host: &str| on_hosts.iter().find(|h| h.host == host).map(|h| h.times.recent_ms.clone());
        assert_eq!(on_hosts.len(), 3, "{on_hosts:?}");
        assert_eq!(of("db-1"), Some((2..=24).step_by(2).collect::<Vec<u64>>()));
        assert_eq!(of("db-2"), Some((1..=25).step_by(2).collect::<Vec<u64>>()));
        assert_eq!(of("api-1"), Some(vec![7]));
        assert_eq!(s.host_step_times("upgrade-2").unwrap().len(), 1);
    }
}

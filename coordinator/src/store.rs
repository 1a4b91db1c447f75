//! Durable state behind the [`Store`] trait.
//!
//! The default is [`SledStore`], embedded under the data directory (nothing to
//! install). What is stored: rollout records (the plan source and its
//! expansion), each rollout's event log (`now` + event, in order; actions are
//! not stored because replaying the events recomputes them), the agents ever
//! seen (inventory survives restarts), join tokens (by their sha256), each
//! host's enrolled certificate, and the recent durations
//! of every step that succeeded (per plan name, group and step name, the last
//! [`convoy_common::estimate::HISTORY`], for `convoy plan`'s estimates). Writes are buffered
//! until [`Store::flush`]: the runtime appends a batch of events, flushes once
//! (group commit) and only then carries out their actions.

use std::path::Path;
use std::time::{Duration, Instant};

use convoy_common::engine::Event;
use convoy_common::model::{RolloutSpec, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::enrolment::{Enrolment, JoinTokenRecord};
use crate::error::CoordinatorError;

/// A rollout as created: enough to rebuild its engine from the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: String,
    pub file: String,
    pub plan_source: String,
    pub spec: RolloutSpec,
    pub created: UnixMillis,
    pub created_by: String,
}

/// One stored event and the time it was handled at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub now: UnixMillis,
    pub event: Event,
}

/// An agent as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub facts: std::collections::BTreeMap<String, String>,
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
            },
        }
    }

    /// The agent as the inventory plans expand against: its labels, installed
    /// versions and facts (its custom facts, plus `hostname`, `os` and `arch`
    /// when it reported them, which win over custom facts of the same name).
    pub fn inventory_host(&self) -> convoy_common::model::InventoryHost {
        let mut facts = self.facts.clone();
        for (k, v) in [("hostname", &self.hostname), ("os", &self.os), ("arch", &self.arch)] {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTimes {
    pub group: String,
    pub step: String,
    /// Milliseconds, oldest first, at most [`convoy_common::estimate::HISTORY`].
    pub recent_ms: Vec<u64>,
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
    /// Add one duration of a step of plan `plan`, keeping the last `keep`.
    fn add_step_time(
        &self,
        plan: &str,
        group: &str,
        step: &str,
        duration_ms: u64,
        keep: usize,
    ) -> Result<(), CoordinatorError>;
    /// The recent durations of every step of plan `plan` that has some.
    fn step_times(&self, plan: &str) -> Result<Vec<StepTimes>, CoordinatorError>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), CoordinatorError>;
}

/// [`Store`] on an embedded sled database.
pub struct SledStore {
    db: sled::Db,
    rollouts: sled::Tree,
    events: sled::Tree,
    agents: sled::Tree,
    tokens: sled::Tree,
    enrolments: sled::Tree,
    step_times: sled::Tree,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// Every JSON value of `tree` whose key starts with `owner` and a 0 byte
/// (keys are `owner \0 rest`), in key order.
fn scan_json<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    owner: &str,
    read: &'static str,
    decode: &'static str,
) -> Result<Vec<T>, CoordinatorError> {
    let mut prefix = owner.as_bytes().to_vec();
    prefix.push(0);
    decode_all(tree.scan_prefix(prefix), read, decode)
}

/// Every value of a sled iteration, decoded from JSON, in key order.
fn decode_all<T: serde::de::DeserializeOwned>(
    entries: sled::Iter,
    read: &'static str,
    decode: &'static str,
) -> Result<Vec<T>, CoordinatorError> {
    let mut out = Vec::new();
    for kv in entries {
        let (_, v) = kv.map_err(serr(read))?;
        out.push(serde_json::from_slice(&v).map_err(jerr(decode))?);
    }
    Ok(out)
}

fn serr(op: &'static str) -> impl FnOnce(sled::Error) -> CoordinatorError {
    move |e| CoordinatorError::Store { op, message: e.to_string() }
}

fn jerr(op: &'static str) -> impl FnOnce(serde_json::Error) -> CoordinatorError {
    move |e| CoordinatorError::Store { op, message: e.to_string() }
}

/// `plan \0 group \0 step`: a plan's steps are one prefix scan.
fn step_time_key(plan: &str, group: &str, step: &str) -> Vec<u8> {
    [plan.as_bytes(), b"\0", group.as_bytes(), b"\0", step.as_bytes()].concat()
}

fn event_key(rollout_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(rollout_id.len() + 9);
    k.extend_from_slice(rollout_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl SledStore {
    /// Open (or create) the store in `dir`. Only one process may hold it.
    ///
    /// sled releases its file lock when the last of its threads lets go of
    /// the database, which happens some time after the handle is dropped: a
    /// store reopened in the same process (a coordinator restarted in a test,
    /// `init` right after a coordinator stopped) waits up to `wait` for the
    /// lock instead of failing on a race. Another process holding it past
    /// `wait` is [`CoordinatorError::InUse`].
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
        Ok(SledStore {
            rollouts: db.open_tree("rollouts").map_err(serr("open rollouts"))?,
            events: db.open_tree("events").map_err(serr("open events"))?,
            agents: db.open_tree("agents").map_err(serr("open agents"))?,
            // Tokens before scoped join tokens were stored in the clear in
            // `join_tokens`; they are not read any more (create new ones).
            tokens: db.open_tree("join_tokens_v2").map_err(serr("open tokens"))?,
            enrolments: db.open_tree("enrolments").map_err(serr("open enrolments"))?,
            step_times: db.open_tree("step_times").map_err(serr("open step times"))?,
            db,
        })
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
        let v = serde_json::to_vec(rollout).map_err(jerr("encode rollout"))?;
        self.rollouts.insert(rollout.id.as_bytes(), v).map_err(serr("put rollout"))?;
        Ok(())
    }

    fn rollouts(&self) -> Result<Vec<RolloutRecord>, CoordinatorError> {
        decode_all(self.rollouts.iter(), "read rollouts", "decode rollout")
    }

    fn append_events(&self, rollout_id: &str, first_seq: u64, events: &[StoredEvent]) -> Result<(), CoordinatorError> {
        let mut batch = sled::Batch::default();
        for (i, e) in events.iter().enumerate() {
            let v = serde_json::to_vec(e).map_err(jerr("encode event"))?;
            batch.insert(event_key(rollout_id, first_seq + i as u64), v);
        }
        self.events.apply_batch(batch).map_err(serr("append events"))
    }

    fn events(&self, rollout_id: &str) -> Result<Vec<StoredEvent>, CoordinatorError> {
        scan_json(&self.events, rollout_id, "read events", "decode event")
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), CoordinatorError> {
        let v = serde_json::to_vec(agent).map_err(jerr("encode agent"))?;
        self.agents.insert(agent.id.as_bytes(), v).map_err(serr("put agent"))?;
        Ok(())
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordinatorError> {
        decode_all(self.agents.iter(), "read agents", "decode agent")
    }

    fn put_join_token(&self, hash: &str, token: Option<&JoinTokenRecord>) -> Result<(), CoordinatorError> {
        match token {
            Some(t) => {
                let v = serde_json::to_vec(t).map_err(jerr("encode join token"))?;
                self.tokens.insert(hash.as_bytes(), v).map_err(serr("put join token"))?;
            }
            None => {
                self.tokens.remove(hash.as_bytes()).map_err(serr("delete join token"))?;
            }
        }
        Ok(())
    }

    fn join_token(&self, hash: &str) -> Result<Option<JoinTokenRecord>, CoordinatorError> {
        let v = self.tokens.get(hash.as_bytes()).map_err(serr("get join token"))?;
        v.map(|v| serde_json::from_slice(&v).map_err(jerr("decode join token"))).transpose()
    }

    fn put_enrolment(&self, enrolment: &Enrolment) -> Result<(), CoordinatorError> {
        let v = serde_json::to_vec(enrolment).map_err(jerr("encode enrolment"))?;
        self.enrolments.insert(enrolment.host.as_bytes(), v).map_err(serr("put enrolment"))?;
        Ok(())
    }

    fn enrolment(&self, host: &str) -> Result<Option<Enrolment>, CoordinatorError> {
        let v = self.enrolments.get(host.as_bytes()).map_err(serr("get enrolment"))?;
        v.map(|v| serde_json::from_slice(&v).map_err(jerr("decode enrolment"))).transpose()
    }

    fn add_step_time(
        &self,
        plan: &str,
        group: &str,
        step: &str,
        duration_ms: u64,
        keep: usize,
    ) -> Result<(), CoordinatorError> {
        let key = step_time_key(plan, group, step);
        let mut times = match self.step_times.get(&key).map_err(serr("get step times"))? {
            Some(v) => serde_json::from_slice(&v).map_err(jerr("decode step times"))?,
            None => StepTimes { group: group.to_string(), step: step.to_string(), recent_ms: Vec::new() },
        };
        times.recent_ms.push(duration_ms);
        let excess = times.recent_ms.len().saturating_sub(keep.max(1));
        times.recent_ms.drain(..excess);
        let v = serde_json::to_vec(&times).map_err(jerr("encode step times"))?;
        self.step_times.insert(key, v).map_err(serr("put step times"))?;
        Ok(())
    }

    fn step_times(&self, plan: &str) -> Result<Vec<StepTimes>, CoordinatorError> {
        scan_json(&self.step_times, plan, "read step times", "decode step times")
    }

    fn flush(&self) -> Result<(), CoordinatorError> {
        self.db.flush().map_err(serr("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::engine::OperatorCommand;

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
                s.add_step_time("upgrade", "db", "install", ms, 20).unwrap();
            }
            s.add_step_time("upgrade", "api", "install", 7, 20).unwrap();
            // A plan whose name extends another's must not mix with it.
            s.add_step_time("upgrade-2", "db", "install", 99, 20).unwrap();
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
    }
}

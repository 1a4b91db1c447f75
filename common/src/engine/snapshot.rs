//! Snapshots of an engine's state, so that a runtime rebuilds a rollout from
//! a snapshot plus the events after it instead of replaying its whole log.
//!
//! An [`EngineSnapshot`] is everything [`Engine::handle`] changes (the
//! rollout's, groups' and hosts' states and counters, the execution ids
//! issued, captured values, backups), taken after the first `seq` events of
//! the log, with the time of the last of them (`at`). It does not hold the
//! spec: the runtime keeps that in the rollout's record, and
//! [`Engine::restore`] takes it back with the snapshot; the indexes the engine
//! derives from the spec (hosts by key and agent, groups by name) are rebuilt
//! by [`Engine::new`], as on a replay.
//!
//! **Equivalence.** `Engine::restore(id, spec, engine_after_k.snapshot(k, at))`
//! fed events `k..` returns the same actions and ends in the same state as
//! `Engine::new(id, spec)` fed every event: the snapshot is the engine's
//! state, nothing recomputed (`common/tests/engine_random.rs` checks this at
//! every point of hundreds of random logs).
//!
//! **Format.** A snapshot is JSON, stamped with [`SNAPSHOT_FORMAT`]. Its
//! state is the serde form of the engine's private bookkeeping
//! ([`super::tracking`]) and of the public types it holds, so a change to
//! any of them changes the format: bump [`SNAPSHOT_FORMAT`] (the unit test
//! `the_snapshot_format_is_pinned` fails until the pinned text is updated,
//! as a reminder). A snapshot of another format is refused
//! ([`SnapshotError::Format`]) rather than misread: the runtime then
//! replays the rollout's log from the start, which it keeps by default (see
//! docs/ha.md for the option that compacts it).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::engine::execution_id::{ExecutionId, ExecutionPart};
use crate::engine::state::RolloutState;
use crate::engine::tracking::{GroupRt, HostRt};
use crate::model::{BackupRecord, RolloutSpec, UnixMillis};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// An engine's state after the first `seq` events of its rollout's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// [`SNAPSHOT_FORMAT`] of the build that took it.
    pub format: u32,
    /// Events covered: the log's events `0..seq`; the tail starts at `seq`.
    pub seq: u64,
    /// The time of the last event covered (the rollout's `updated`).
    pub at: UnixMillis,
    pub state: EngineState,
}

/// What [`Engine::handle`] changes, in its serde form (opaque outside the
/// engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    rollout_id: String,
    state: RolloutState,
    message: String,
    halt_reason: Option<String>,
    aborted_by: Option<String>,
    rollback_reason: Option<String>,
    hosts: Vec<HostRt>,
    groups: Vec<GroupRt>,
    hook_captured: BTreeMap<String, String>,
    /// The execution ids issued are those the hosts' attempt counters name
    /// (attempts `1..=n` of each step, rollback step, leader check and
    /// switchover step; see [`for_each_counted`]) but these, whose
    /// attempt was counted and never sent (a step that could not be
    /// rendered fails its host unsent), in id order…
    executions_not_issued: Vec<ExecutionId>,
    /// …and with these, issued and not named by a counter (none: kept so
    /// that a snapshot stays exact whatever the engine does).
    executions_extra: Vec<(ExecutionId, usize)>,
    in_flight: usize,
    open_groups: usize,
    failed_total: usize,
    rollout_budget_exceeded: bool,
    rollback_queued: usize,
    rolled_back: usize,
    rollback_failed: usize,
    wake: Vec<usize>,
    backups: Vec<(usize, usize, BackupRecord, UnixMillis)>,
    windows_overridden: Option<String>,
}

impl EngineState {
    /// The rollout state it holds.
    pub fn rollout_state(&self) -> RolloutState {
        self.state
    }
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("engine snapshot format {found} is not this build's ({known})")]
    Format { found: u32, known: u32 },
    #[error("not an engine snapshot: {0}")]
    Decode(String),
    #[error("the snapshot does not fit rollout {rollout}'s spec: {why}")]
    Mismatch { rollout: String, why: String },
}

impl EngineSnapshot {
    /// The snapshot as stored (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an engine snapshot always serialises")
    }

    /// Read a stored snapshot; one of another format is [`SnapshotError::Format`].
    pub fn from_json(bytes: &[u8]) -> Result<EngineSnapshot, SnapshotError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if head.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: head.format, known: SNAPSHOT_FORMAT });
        }
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))
    }
}

impl Engine {
    /// A snapshot of the engine after the first `seq` events of its log, the
    /// last of them handled at `at`.
    pub fn snapshot(&self, seq: u64, at: UnixMillis) -> EngineSnapshot {
        // Ids the counters name that were never issued (rare)…
        let mut executions_not_issued = Vec::new();
        for_each_counted(&self.rollout_id, &self.spec, &self.hosts, |id, _| {
            if !self.executions.contains_key(&id) {
                executions_not_issued.push(id);
            }
        });
        executions_not_issued.sort();
        // …and ids issued that the counters do not name (none expected).
        let mut executions_extra: Vec<(ExecutionId, usize)> = self
            .executions
            .iter()
            .filter(|(id, i)| !counted(&self.spec, &self.hosts, &self.rollout_id, id, **i))
            .map(|(id, &i)| (id.clone(), i))
            .collect();
        executions_extra.sort();
        EngineSnapshot {
            format: SNAPSHOT_FORMAT,
            seq,
            at,
            state: EngineState {
                rollout_id: self.rollout_id.clone(),
                state: self.state,
                message: self.message.clone(),
                halt_reason: self.halt_reason.clone(),
                aborted_by: self.aborted_by.clone(),
                rollback_reason: self.rollback_reason.clone(),
                hosts: self.hosts.rows().to_vec(),
                groups: self.groups.clone(),
                hook_captured: self.hook_captured.clone(),
                executions_not_issued,
                executions_extra,
                in_flight: self.in_flight,
                open_groups: self.open_groups,
                failed_total: self.failed_total,
                rollout_budget_exceeded: self.rollout_budget_exceeded,
                rollback_queued: self.rollback_queued,
                rolled_back: self.rolled_back,
                rollback_failed: self.rollback_failed,
                wake: self.wake.clone(),
                backups: self.backups.clone(),
                windows_overridden: self.windows_overridden.clone(),
            },
        }
    }

    /// The engine of rollout `rollout_id` (of `spec`, as created) in the
    /// state `snapshot` holds; feed it the log's events from
    /// `snapshot.seq` on. The snapshot must be of this build's format, of
    /// this rollout, and fit the spec's hosts, groups and steps.
    pub fn restore(
        rollout_id: impl Into<String>,
        spec: RolloutSpec,
        snapshot: EngineSnapshot,
    ) -> Result<Engine, SnapshotError> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: snapshot.format, known: SNAPSHOT_FORMAT });
        }
        let mut engine = Engine::new(rollout_id, spec);
        let s = snapshot.state;
        let mismatch = |why: String| SnapshotError::Mismatch { rollout: engine.rollout_id.clone(), why };
        if s.rollout_id != engine.rollout_id {
            return Err(mismatch(format!("it was taken of rollout {}", s.rollout_id)));
        }
        fits(&engine, &s).map_err(mismatch)?;
        engine.state = s.state;
        engine.message = s.message;
        engine.halt_reason = s.halt_reason;
        engine.aborted_by = s.aborted_by;
        engine.rollback_reason = s.rollback_reason;
        engine.hosts = crate::engine::host_table::HostTable::new(s.hosts);
        engine.groups = s.groups;
        engine.hook_captured = s.hook_captured;
        let mut executions = HashMap::new();
        for_each_counted(&engine.rollout_id, &engine.spec, &engine.hosts, |id, i| {
            executions.insert(id, i);
        });
        for id in &s.executions_not_issued {
            executions.remove(id);
        }
        executions.extend(s.executions_extra);
        engine.executions = executions;
        engine.in_flight = s.in_flight;
        engine.open_groups = s.open_groups;
        engine.failed_total = s.failed_total;
        engine.rollout_budget_exceeded = s.rollout_budget_exceeded;
        engine.rollback_queued = s.rollback_queued;
        engine.rolled_back = s.rolled_back;
        engine.rollback_failed = s.rollback_failed;
        engine.wake = s.wake;
        engine.backups = s.backups;
        engine.windows_overridden = s.windows_overridden;
        Ok(engine)
    }
}

/// Call `f` with every execution id the hosts' attempt counters name, and
/// its host entry: every attempt counted of every step, rollback step,
/// leader check and switchover step (ids are `rollout/KEY/PART/attempt`,
/// attempts from 1).
fn for_each_counted(rollout_id: &str, spec: &RolloutSpec, hosts: &[HostRt], mut f: impl FnMut(ExecutionId, usize)) {
    for (i, h) in hosts.iter().enumerate() {
        let key = spec.hosts[i].key();
        for (part, counts) in counters(h) {
            for (index, &n) in counts.iter().enumerate() {
                for attempt in 1..=n {
                    f(ExecutionId::new(rollout_id, key, part(index), attempt), i);
                }
            }
        }
    }
}

/// An execution id's part, made from its index, and the counter of its attempts per index.
type Counter<'a> = (fn(usize) -> ExecutionPart, &'a Vec<u32>);

/// A host's attempt counters, by the part of an execution id they count.
fn counters(h: &HostRt) -> [Counter<'_>; 4] {
    [
        (ExecutionPart::Step, &h.attempts),
        (ExecutionPart::Rollback, &h.rollback_attempts),
        (ExecutionPart::LeaderCheck, &h.check_attempts),
        (ExecutionPart::Switchover, &h.switchover_attempts),
    ]
}

/// Whether `id`, issued to host entry `i`, is one the counters name.
fn counted(spec: &RolloutSpec, hosts: &[HostRt], rollout_id: &str, id: &ExecutionId, i: usize) -> bool {
    let (Some(h), Some(plan)) = (hosts.get(i), spec.hosts.get(i)) else { return false };
    let (index, counts) = match id.part() {
        ExecutionPart::Step(n) => (n, &h.attempts),
        ExecutionPart::Rollback(n) => (n, &h.rollback_attempts),
        ExecutionPart::LeaderCheck(n) => (n, &h.check_attempts),
        ExecutionPart::Switchover(n) => (n, &h.switchover_attempts),
    };
    id.rollout() == rollout_id
        && id.entry() == plan.key()
        && id.attempt() >= 1
        && counts.get(index).is_some_and(|&n| id.attempt() <= n)
}

/// Whether a snapshot's state has the shape of `fresh`'s spec: the same
/// hosts, groups, steps and clusters, and indices in range, so that no
/// lookup of the restored engine can go out of bounds.
fn fits(fresh: &Engine, s: &EngineState) -> Result<(), String> {
    let (hosts, groups) = (fresh.hosts.len(), fresh.groups.len());
    if s.hosts.len() != hosts || s.groups.len() != groups {
        return Err(format!(
            "{} hosts and {} groups, the spec has {hosts} and {groups}",
            s.hosts.len(),
            s.groups.len()
        ));
    }
    for (i, (got, new)) in s.hosts.iter().zip(fresh.hosts.iter()).enumerate() {
        let same = got.group == new.group
            && got.cluster == new.cluster
            && got.attempts.len() == new.attempts.len()
            && got.check_attempts.len() == new.check_attempts.len()
            && got.switchover_attempts.len() == new.switchover_attempts.len()
            && got.rollback_attempts.len() == got.rollback.len()
            && got.steps_ok <= new.attempts.len();
        if !same {
            return Err(format!("host entry {i} has another shape"));
        }
    }
    for (i, (got, new)) in s.groups.iter().zip(&fresh.groups).enumerate() {
        let mut order = got.order.clone();
        order.sort_unstable();
        let mut expected = new.order.clone();
        expected.sort_unstable();
        let same = order == expected
            && got.next <= got.order.len()
            && got.clusters.len() == new.clusters.len()
            && got.dependents == new.dependents
            && got.rollback_queue.iter().all(|&h| h < hosts);
        if !same {
            return Err(format!("group {i} has another shape"));
        }
    }
    let in_range = s.executions_extra.iter().all(|(_, h)| *h < hosts)
        && s.wake.iter().all(|&g| g < groups)
        && s.backups.iter().all(|(h, step, _, _)| *h < hosts && *step < fresh.hosts[*h].attempts.len());
    if !in_range {
        return Err("an index out of range".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Event;
    use crate::model::{ExecSpec, StepKind, StepSpec};
    use std::time::Duration;

    fn spec() -> RolloutSpec {
        let step = StepSpec {
            name: "upgrade".into(),
            timeout: Duration::from_secs(60),
            kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            rerun_safe: false,
        };
        RolloutSpec::one_group(["w1", "w2"].map(String::from), vec![step], 1)
    }

    fn started() -> Engine {
        let mut e = Engine::new("r1", spec());
        e.handle(UnixMillis(5), Event::Started);
        e
    }

    /// The stored form of a small engine, pinned: a change to the engine's
    /// state (its tracking structs or the public types they hold) changes
    /// this text. Bump [`SNAPSHOT_FORMAT`] and update the text together.
    #[test]
    fn the_snapshot_format_is_pinned() {
        let json = String::from_utf8(started().snapshot(1, UnixMillis(5)).to_json()).unwrap();
        let pinned = r#"{"format":1,"seq":1,"at":5,"state":{"rollout_id":"r1","state":"running","message":"running","halt_reason":null,"aborted_by":null,"rollback_reason":null,"hosts":[{"state":{"running":{"step":0,"execution_id":"r1/w1/0/1","since":5,"lost_since":null}},"group":0,"installed":null,"message":"","attempts":[1],"steps_ok":0,"rollback":[],"rollback_attempts":[],"rollback_considered":false,"step_deadline":90005,"lost_deadline":null,"agent_lost_since":null,"captured":{},"cluster":null,"role":"unknown","check_attempts":[],"switchover_attempts":[],"switched_over":false,"asked_since":null},{"state":"pending","group":0,"installed":null,"message":"","attempts":[0],"steps_ok":0,"rollback":[],"rollback_attempts":[],"rollback_considered":false,"step_deadline":0,"lost_deadline":null,"agent_lost_since":null,"captured":{},"cluster":null,"role":"unknown","check_attempts":[],"switchover_attempts":[],"switched_over":false,"asked_since":null}],"groups":[{"state":"running","next":1,"in_flight":1,"succeeded":0,"failed":0,"skipped":0,"canaries":0,"promote_at":null,"rollback_queue":[],"rollback_failed":0,"dependents":[],"order":[0,1],"clusters":[],"held":0,"window_wait":null}],"hook_captured":{},"executions_not_issued":[],"executions_extra":[],"in_flight":1,"open_groups":1,"failed_total":0,"rollout_budget_exceeded":false,"rollback_queued":0,"rolled_back":0,"rollback_failed":0,"wake":[],"backups":[],"windows_overridden":null}}"#;
        assert_eq!(json, pinned, "the snapshot's stored form changed: bump SNAPSHOT_FORMAT and update this text");
    }

    #[test]
    fn a_snapshot_round_trips_and_restores_the_same_engine() {
        let engine = started();
        let snap = EngineSnapshot::from_json(&engine.snapshot(1, UnixMillis(5)).to_json()).unwrap();
        let restored = Engine::restore("r1", spec(), snap.clone()).unwrap();
        assert_eq!(restored.snapshot(1, UnixMillis(5)), snap);
        assert_eq!(restored.view(), engine.view());
        assert_eq!(restored.resume_actions(UnixMillis(6)), engine.resume_actions(UnixMillis(6)));
    }

    /// A step that cannot be rendered (a captured value that is missing)
    /// counts an attempt but is never sent: its id is kept out of the
    /// restored engine's executions, as it was out of the original's.
    #[test]
    fn an_attempt_counted_but_never_sent_is_not_restored_as_issued() {
        let mut spec = spec();
        if let StepKind::Exec(e) = &mut spec.hosts[0].steps[0].kind {
            e.command = "echo {{captured.token}}".into();
        }
        let mut engine = Engine::new("r1", spec.clone());
        engine.handle(UnixMillis(5), Event::Started);
        assert!(engine.executions_of("w1").is_empty(), "w1 failed unsent");
        let snap = engine.snapshot(1, UnixMillis(5));
        assert_eq!(snap.state.executions_not_issued, vec!["r1/w1/0/1".parse::<ExecutionId>().unwrap()]);
        assert!(snap.state.executions_extra.is_empty());
        let restored = Engine::restore("r1", spec, snap.clone()).unwrap();
        assert_eq!(restored.executions, engine.executions);
        assert_eq!(restored.snapshot(1, UnixMillis(5)), snap);
    }

    #[test]
    fn another_format_another_rollout_or_another_spec_is_refused() {
        let snap = started().snapshot(1, UnixMillis(5));
        let mut json: serde_json::Value = serde_json::from_slice(&snap.to_json()).unwrap();
        json["format"] = 2.into();
        let err = EngineSnapshot::from_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert_eq!(err, SnapshotError::Format { found: 2, known: SNAPSHOT_FORMAT });
        assert!(matches!(EngineSnapshot::from_json(b"{}"), Err(SnapshotError::Decode(_))));
        let err = Engine::restore("r2", spec(), snap.clone()).unwrap_err();
        assert!(err.to_string().contains("taken of rollout r1"), "{err}");
        let mut smaller = spec();
        smaller.hosts.pop();
        smaller.groups[0].hosts.pop();
        let err = Engine::restore("r1", smaller, snap).unwrap_err();
        assert!(matches!(err, SnapshotError::Mismatch { .. }), "{err}");
    }
}

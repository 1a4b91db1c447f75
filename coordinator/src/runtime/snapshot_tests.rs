//! Recovery from snapshots: a rollout rebuilt from its snapshot and the
//! tail of its log is the rollout rebuilt from its whole log; the runtime
//! takes snapshots as logs grow and compacts only when asked.

use std::time::Duration;

use convoy_common::engine::EngineSnapshot;
use convoy_common::model::{ExecSpec, RolloutSpec, StepKind};

use super::*;
use crate::store::SledStore;

fn spec(hosts: usize) -> RolloutSpec {
    let step = StepSpec {
        name: "upgrade".into(),
        timeout: Duration::from_secs(600),
        kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
        rerun_safe: false,
    };
    let mut spec = RolloutSpec::one_group((0..hosts).map(|h| format!("w{h}")), vec![step; 5], 4);
    spec.groups[0].max_failures = 100;
    spec.host_lost_timeout = Duration::from_secs(3600);
    spec
}

/// A rollout `id` of `hosts` hosts, stored with a log of `events` events
/// (every dispatched step answered, one in nine failing, agents lost and
/// back now and then); returns its record and the log.
pub(super) fn stored_rollout(
    store: &dyn Store,
    id: &str,
    hosts: usize,
    events: usize,
) -> (RolloutRecord, Vec<StoredEvent>) {
    let record = RolloutRecord {
        id: id.into(),
        file: "p.yaml".into(),
        plan_source: String::new(),
        spec: spec(hosts),
        created: UnixMillis(1_000),
        created_by: "op".into(),
    };
    store.put_rollout(&record).unwrap();
    let mut engine = Engine::new(id, record.spec.clone());
    let mut log: Vec<StoredEvent> = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    let mut now = 1_000;
    let mut event = Event::Started;
    loop {
        for a in engine.handle(UnixMillis(now), event.clone()) {
            if let Action::Dispatch { execution_id, .. } = a {
                queue.push_back(execution_id);
            }
        }
        log.push(StoredEvent { now: UnixMillis(now), event });
        let n = log.len();
        if n >= events {
            break;
        }
        now += 7;
        event = if n.is_multiple_of(13) {
            Event::AgentLost { host: format!("w{}", n % hosts) }
        } else if n % 13 == 1 {
            Event::AgentConnected { host: format!("w{}", (n - 1) % hosts) }
        } else if let Some(id) = queue.pop_front() {
            let outcome = if n.is_multiple_of(9) { StepOutcome::failed("exit 1") } else { StepOutcome::ok() };
            Event::StepFinished { execution_id: id, outcome }
        } else {
            Event::Operator { command: OperatorCommand::Pause, by: "op".into() }
        };
    }
    store.append_events(id, 0, &log).unwrap();
    store.flush().unwrap();
    (record, log)
}

fn replayed(record: &RolloutRecord, log: &[StoredEvent]) -> EngineSnapshot {
    let mut engine = Engine::new(record.id.clone(), record.spec.clone());
    for e in log {
        engine.handle(e.now, e.event.clone());
    }
    engine.snapshot(log.len() as u64, log.last().map_or(record.created, |e| e.now))
}

fn actor(store: Arc<dyn Store>, snapshot_every: u64, compact_events: bool) -> Actor {
    let config = RuntimeConfig { snapshot_every, compact_events, ..Default::default() };
    Actor::new(store, config, Clock::starting_at(UnixMillis(10_000_000)), Arc::default())
}

fn rebuilt(a: &Actor, record: &RolloutRecord) -> Result<(EngineSnapshot, u64), CoordinatorError> {
    let r = a.rebuild(record)?;
    Ok((r.engine.snapshot(r.next_seq, r.updated), r.snapshot_seq))
}

#[test]
fn snapshot_plus_tail_rebuilds_what_the_whole_log_does_even_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (record, log) = stored_rollout(store.as_ref(), "r1", 40, 90);
    let expected = replayed(&record, &log);
    assert!(!expected.state.rollout_state().is_terminal(), "left mid-way");
    let a = actor(store.clone(), 0, false);
    assert_eq!(rebuilt(&a, &record).unwrap(), (expected.clone(), 0), "no snapshot: the whole log");

    // A snapshot of another format is not used: the whole log is.
    let mut other = replayed(&record, &log[..30]);
    other.format = 99;
    store.put_snapshot("r1", &other).unwrap();
    assert_eq!(rebuilt(&a, &record).unwrap(), (expected.clone(), 0));

    // A snapshot after 50 events, and the 40 after it.
    store.put_snapshot("r1", &replayed(&record, &log[..50])).unwrap();
    assert_eq!(rebuilt(&a, &record).unwrap(), (expected.clone(), 50));
    // The events it covers deleted: the same, from the tail alone.
    store.compact_events("r1", 50).unwrap();
    assert_eq!(store.events_from("r1", 0).unwrap().first().map(|(s, _)| *s), Some(50));
    assert_eq!(rebuilt(&a, &record).unwrap(), (expected.clone(), 50));

    // Compacted below a snapshot that cannot be used: refused, not misread.
    store.put_snapshot("r1", &other).unwrap();
    let err = rebuilt(&a, &record).unwrap_err().to_string();
    assert!(err.contains("compacted below event 50"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_runtime_snapshots_every_n_events_and_at_the_end_and_compacts_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(SledStore::open(dir.path()).unwrap());
    let store: Arc<dyn Store> = sled.clone();
    let (record, log) = stored_rollout(store.as_ref(), "r1", 40, 90);
    // A finished rollout: snapshotted once, at its end.
    let (done_record, done_log) = stored_rollout(store.as_ref(), "r0", 1, 8);
    let done = replayed(&done_record, &done_log);
    assert!(done.state.rollout_state().is_terminal(), "{:?}", done.state.rollout_state());

    // Recovery appends one `AgentLost` per host (40): past 10 since the
    // last snapshot (none), so the first commit takes one. The log is kept.
    let mut a = actor(store.clone(), 10, false);
    a.recover().unwrap();
    let next_seq = a.rollouts["r1"].next_seq;
    assert_eq!(next_seq, 90 + 40);
    let snap = store.snapshot("r1").unwrap().expect("a snapshot");
    assert_eq!(snap.seq, next_seq);
    assert_eq!(snap, a.rollouts["r1"].engine.snapshot(next_seq, a.rollouts["r1"].updated));
    assert_eq!(store.events_from("r1", 0).unwrap().len() as u64, next_seq, "kept whole");
    assert_eq!(store.snapshot("r0").unwrap().map(|s| s.seq), Some(8));
    let full = store.events_from("r1", 0).unwrap();
    let reference = replayed(&record, &full.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    assert_eq!(snap.state, reference.state);
    drop(a);

    // With compaction: the next recovery's snapshot covers everything so far,
    // and the events it covers are deleted.
    let mut b = actor(store.clone(), 10, true);
    b.recover().unwrap();
    let seq = b.rollouts["r1"].next_seq;
    assert_eq!(seq, next_seq + 40);
    assert_eq!(store.snapshot("r1").unwrap().map(|s| s.seq), Some(seq));
    assert!(store.events_from("r1", 0).unwrap().is_empty(), "every event is covered");
    let view = b.rollouts["r1"].engine.view();
    drop(b);

    // A coordinator that takes no snapshots still restores from the stored one.
    let c = actor(store.clone(), 0, false);
    let (got, from) = rebuilt(&c, &record).unwrap();
    assert_eq!(from, seq);
    let restored = Engine::restore("r1", record.spec.clone(), got).unwrap();
    assert_eq!(restored.view(), view);
    assert!(log.len() < seq as usize);
    assert!(sled.disk_flushes() > 0);

    // A snapshot costs in proportion to the rollout: one of 40 hosts waits
    // 40 events between snapshots, not `--snapshot-every 10`.
    let mut d = actor(store.clone(), 10, false);
    d.recover().unwrap();
    let at = store.snapshot("r1").unwrap().unwrap().seq;
    assert_eq!(at, d.rollouts["r1"].next_seq, "40 AgentLost events: due");
    let reconnect = |d: &mut Actor, hosts: std::ops::Range<usize>| {
        for h in hosts {
            d.event("r1", Event::AgentConnected { host: format!("w{h}") });
        }
        d.commit();
    };
    reconnect(&mut d, 0..25);
    assert_eq!(store.snapshot("r1").unwrap().unwrap().seq, at, "25 events: not yet");
    reconnect(&mut d, 25..40);
    assert_eq!(store.snapshot("r1").unwrap().unwrap().seq, at + 40, "40 events: due");
}

/// Agents re-send their recent results on every reconnect: after a restart
/// that is one per agent, nearly all recorded before. Such results are not
/// logged — a finished rollout's log stays closed, so it is not snapshotted
/// again on every batch — and only the result a host waits for is.
#[tokio::test(start_paused = true)]
async fn results_already_recorded_or_for_a_finished_rollout_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (_, log) = stored_rollout(store.as_ref(), "r1", 40, 90);
    let (_, done_log) = stored_rollout(store.as_ref(), "r0", 1, 8);
    let mut a = actor(store.clone(), 10, false);
    a.recover().unwrap();
    let seq = |a: &Actor, id: &str| a.rollouts[id].next_seq;
    let (r0, r1) = (seq(&a, "r0"), seq(&a, "r1"));
    let r0_snapshot = store.snapshot("r0").unwrap().map(|s| s.seq);
    assert_eq!(r0_snapshot, Some(r0), "the finished rollout's snapshot covers its log");

    // Every result both logs hold, re-sent by its host.
    let recorded = log.iter().chain(&done_log).filter_map(|e| match &e.event {
        Event::StepFinished { execution_id, outcome } => Some((execution_id.clone(), outcome.clone())),
        _ => None,
    });
    let mut resent = 0;
    for (id, outcome) in recorded {
        let rollout = a.rollouts[id.rollout()].engine.execution_host(&id).cloned().unwrap();
        a.result(&rollout, id, outcome);
        resent += 1;
    }
    a.commit();
    assert!(resent > 40, "{resent} results re-sent");
    assert_eq!((seq(&a, "r0"), seq(&a, "r1")), (r0, r1), "none logged");
    assert_eq!(store.snapshot("r0").unwrap().map(|s| s.seq), r0_snapshot, "no new snapshot of the finished rollout");

    // The result a host waits for is logged, once.
    let engine = &a.rollouts["r1"].engine;
    let (host, id) = (0..40)
        .map(|h| format!("w{h}"))
        .find_map(|h| engine.executions_of(&h).into_iter().find(|id| engine.awaiting(id).is_some()).map(|id| (h, id)))
        .expect("a host waits for a result");
    a.result(&host, id.clone(), StepOutcome::ok());
    a.result(&host, id, StepOutcome::ok());
    a.commit();
    assert_eq!(seq(&a, "r1"), r1 + 1);
}

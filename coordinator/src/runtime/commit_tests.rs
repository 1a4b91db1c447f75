//! Group commit: events that come faster than flushes share them, and a
//! quiet runtime flushes at once. The actor's own loop, on paused time.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::snapshot_tests::stored_rollout;
use super::*;
use crate::store::SledStore;

/// Yields until `done` holds; a real-time deadline, so paused time is
/// never moved by the waiting itself.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// `AgentConnected` events durable in r1's log from `seq` on.
fn connected_since(store: &dyn Store, seq: u64) -> usize {
    let log = store.events_from("r1", seq).unwrap();
    log.iter().filter(|(_, e)| matches!(e.event, Event::AgentConnected { .. })).count()
}

fn connect(tx: &mpsc::UnboundedSender<Command>, host: &str, session: u64) -> mpsc::UnboundedReceiver<ToAgent> {
    let (to_agent, stream) = mpsc::unbounded_channel();
    let (reply, _answer) = oneshot::channel();
    let hello = AgentHello { id: host.to_string(), ..Default::default() };
    let pulse = Pulse::new(UnixMillis(0));
    tx.send(Command::Connect { hello, session, tx: to_agent, pulse, reply }).expect("the actor runs");
    stream
}

/// An actor with `window`, recovered over a stored 40-host rollout "r1"
/// and running its loop: the data directory, the store, r1's log length
/// after recovery, the actor's queue, its shutdown and its task.
struct Running {
    _dir: tempfile::TempDir,
    sled: Arc<SledStore>,
    store: Arc<dyn Store>,
    base: u64,
    tx: mpsc::UnboundedSender<Command>,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

fn running(window: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(SledStore::open(dir.path()).unwrap());
    let store: Arc<dyn Store> = sled.clone();
    stored_rollout(store.as_ref(), "r1", 40, 90);
    let config = RuntimeConfig { commit_window: window, snapshot_every: 0, ..Default::default() };
    let mut a = Actor::new(store.clone(), config, Clock::starting_at(UnixMillis(10_000_000)), Arc::default());
    a.recover().unwrap();
    let base = store.events_from("r1", 0).unwrap().len() as u64;
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(a.run(rx, shutdown.clone()));
    Running { _dir: dir, sled, store, base, tx, shutdown, run }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn events_faster_than_the_window_share_flushes_and_a_quiet_one_is_flushed_at_once() {
    let window = Duration::from_millis(5);
    let r = running(window);
    let (sled, store, base, tx) = (&r.sled, &r.store, r.base, &r.tx);
    let connected = |store: &Arc<dyn Store>| connected_since(store.as_ref(), base);
    let mut streams = Vec::new();

    // Quiet: one agent connects long after anything else; its event is
    // durable without the clock moving at all. (The recovered steps'
    // deadlines have passed: they fire first, then a quiet spell.)
    tokio::time::advance(Duration::from_secs(1)).await;
    until("the deadlines", || store.events_from("r1", base).unwrap().len() >= 4).await;
    tokio::time::advance(window * 2).await;
    let before = sled.disk_flushes();
    streams.push(connect(tx, "w0", 1));
    until("the lone event", || connected(store) == 1).await;
    assert!(sled.disk_flushes() > before);

    // A storm: 20 agents, one every millisecond, each an `AgentConnected`.
    // One flush each without the window; with it, about one per window.
    let before = sled.disk_flushes();
    for h in 1..=20 {
        streams.push(connect(tx, &format!("w{h}"), 1 + h));
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    tokio::time::advance(window * 2).await;
    until("the storm's events", || connected(store) == 21).await;
    let flushes = sled.disk_flushes() - before;
    assert!((2..=6).contains(&flushes), "{flushes} flushes for 20 events over 20 ms with a 5 ms window");

    r.stop().await;
    drop(streams);
}

/// `commit_window: 0` is the old behaviour: every batch flushed at once.
#[tokio::test(start_paused = true)]
async fn a_zero_window_flushes_every_batch() {
    let r = running(Duration::ZERO);
    let before = r.sled.disk_flushes();
    let mut streams = Vec::new();
    for h in 0..10 {
        streams.push(connect(&r.tx, &format!("w{h}"), 1 + h));
        until("the event", || connected_since(r.store.as_ref(), r.base) == h as usize + 1).await;
    }
    // At least one per event (agent records are written too).
    assert!(r.sled.disk_flushes() - before >= 10);
    r.stop().await;
}

/// A rollout frees its hosts at the event that finishes it, not when that
/// event's batch is committed: what comes later in the batch (the group
/// commit makes batches longer) sees it finished.
#[tokio::test(start_paused = true)]
async fn a_rollout_frees_its_hosts_at_its_last_event_not_at_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let clock = Clock::starting_at(UnixMillis(10_000_000));
    let mut a = Actor::new(store.clone(), RuntimeConfig::default(), clock, Arc::default());
    let (to_agent, mut stream) = mpsc::unbounded_channel();
    let (reply, _answer) = oneshot::channel();
    let hello = AgentHello { id: "w0".into(), ..Default::default() };
    a.command(Command::Connect { hello, session: 1, tx: to_agent, pulse: Pulse::new(clock.now()), reply });
    let step = StepSpec {
        name: "upgrade".into(),
        timeout: Duration::from_secs(600),
        kind: convoy_common::model::StepKind::Exec(convoy_common::model::ExecSpec {
            command: "true".into(),
            ..Default::default()
        }),
        rerun_safe: false,
    };
    let spec = convoy_common::model::RolloutSpec::one_group(["w0".to_string()], vec![step], 1);
    let id = a.create(spec.clone(), "p.yaml", "", "op").unwrap();
    a.commit();
    let Ok(ToAgent::RunStep { execution_id, .. }) = stream.try_recv() else { panic!("dispatched") };

    // One batch: the result that finishes the rollout, the agent lost,
    // and a new plan for the same host.
    a.result("w0", execution_id, StepOutcome::ok());
    a.lose("w0");
    let next = a.create(spec, "p.yaml", "", "op");
    assert!(next.is_ok(), "the host is free once its rollout finished: {next:?}");
    a.commit();
    let log = store.events_from(&id, 0).unwrap();
    let last = log.last().map(|(_, e)| &e.event);
    assert!(matches!(last, Some(Event::StepFinished { .. })), "nothing logged after the end: {log:?}");
}

//! Liveness under a backlog, and sessions that replace stale ones: the actor
//! driven directly, on paused tokio time.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::*;

fn actor(dir: &std::path::Path) -> Actor {
    let store = Arc::new(crate::store::SledStore::open(dir).unwrap());
    let config = RuntimeConfig {
        heartbeat_interval: Duration::from_secs(2),
        agent_timeout: Duration::from_secs(6),
        ..Default::default()
    };
    Actor::new(store, config, Clock::starting_at(UnixMillis(1_000_000)), Arc::default())
}

/// Connects `host` as `session`; returns the answer and the agent's stream.
fn connect(
    a: &mut Actor,
    host: &str,
    session: u64,
) -> (Result<Duration, CoordinatorError>, mpsc::UnboundedReceiver<ToAgent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (reply, mut answer) = oneshot::channel();
    let hello = AgentHello { id: host.to_string(), ..Default::default() };
    let pulse = Pulse::new(a.clock.now());
    a.command(Command::Connect { hello, session, tx, pulse, reply });
    (answer.try_recv().expect("answered at once"), rx)
}

fn session_of(a: &Actor, host: &str) -> Option<u64> {
    a.agents.get(host).and_then(|c| c.session.as_ref()).map(|(s, _)| *s)
}

/// Heartbeats are stamped by the session's task: while the runtime is busy
/// and handles nothing, they still count, from when they arrived.
#[tokio::test(start_paused = true)]
async fn heartbeats_count_while_the_runtime_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = actor(dir.path());
    let (ok, _stream) = connect(&mut a, "web-1", 1);
    ok.unwrap();
    let (_tx, mut rx) = mpsc::unbounded_channel();
    // One heartbeat every 2 s arrives (stamped by the gRPC task) while the
    // runtime is busy with something else and runs no command.
    let pulse = a.agents["web-1"].pulse.clone();
    let mut last = UnixMillis(0);
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(2)).await;
        last = a.clock.now();
        pulse.beat(last);
    }
    // A stamp cannot move back (a late task's older time).
    pulse.beat(UnixMillis(last.0 - 1_000));
    // 10 s after connecting (> the 6 s timeout), the liveness tick.
    tokio::time::advance(Duration::from_millis(500)).await;
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-1"), Some(1), "the agent heartbeated all along");
    assert_eq!(a.agents["web-1"].last_seen(), last, "stamped when it arrived");
    // An agent that really went quiet is still lost.
    tokio::time::advance(Duration::from_secs(7)).await;
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-1"), None);
}

/// A second session from the (authenticated) host replaces one that has
/// gone quiet, and is refused while the first one is working.
#[tokio::test(start_paused = true)]
async fn a_new_session_replaces_a_stale_one_but_not_a_working_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = actor(dir.path());
    let (ok, _first) = connect(&mut a, "web-1", 1);
    ok.unwrap();
    // Working: a heartbeat a moment ago.
    tokio::time::advance(Duration::from_millis(1_500)).await;
    let now = a.clock.now();
    a.agents["web-1"].pulse.beat(now);
    let (refused, _) = connect(&mut a, "web-1", 2);
    assert!(refused.unwrap_err().to_string().contains("already live"));
    assert_eq!(session_of(&a, "web-1"), Some(1));
    // Still within two intervals of that heartbeat: still refused.
    tokio::time::advance(Duration::from_millis(2_500)).await;
    let (refused, _) = connect(&mut a, "web-1", 2);
    assert!(refused.is_err());
    // Quiet for more than two heartbeat intervals (the agent lost that
    // session and reconnects before the coordinator noticed): replaced.
    tokio::time::advance(Duration::from_millis(2_000)).await;
    let (ok, _third) = connect(&mut a, "web-1", 3);
    ok.unwrap();
    assert_eq!(session_of(&a, "web-1"), Some(3));
    // The old session's late disconnect does not end the new one.
    a.command(Command::Disconnect { host: "web-1".into(), session: 1 });
    assert_eq!(session_of(&a, "web-1"), Some(3));
}

/// A large fleet is told to beat less often (the fleet as a whole sends at
/// most `max_heartbeats_per_s`), and its agents are lost after a timeout
/// scaled the same way.
#[tokio::test(start_paused = true)]
async fn heartbeats_spread_out_as_the_fleet_grows_and_timeouts_follow() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = actor(dir.path());
    a.config.max_heartbeats_per_s = 10;
    let mut streams = Vec::new();
    let mut intervals = Vec::new();
    for i in 0..40u64 {
        let (ok, rx) = connect(&mut a, &format!("web-{i}"), i + 1);
        intervals.push(ok.unwrap());
        streams.push(rx);
    }
    // 20 agents at 10 beats/s: the base 2 s; the 40th: 4 s.
    assert_eq!(intervals[0], Duration::from_secs(2));
    assert_eq!(intervals[19], Duration::from_secs(2));
    assert_eq!(intervals[39], Duration::from_secs(4));
    assert!(intervals.windows(2).all(|w| w[0] <= w[1]));
    // The fleet grew by half past 2 s worth (28 agents): those still at the
    // base interval were told 2.8 s, once, and are held to it.
    let paces = |rx: &mut mpsc::UnboundedReceiver<ToAgent>| {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| match m {
                ToAgent::Pace { heartbeat } => heartbeat,
                ToAgent::RunStep { execution_id, .. } => panic!("no step was planned, got {execution_id}"),
            })
            .collect::<Vec<_>>()
    };
    let told: Vec<Vec<Duration>> = streams.iter_mut().map(paces).collect();
    assert_eq!(told[0], [Duration::from_millis(2800)]);
    assert_eq!(told[19], [Duration::from_millis(2800)]);
    assert!(told[28..].iter().all(Vec::is_empty), "{told:?}");
    assert_eq!(a.agents["web-0"].heartbeat, Duration::from_millis(2800));
    // Without pacing the fleet beat at 10 x ln(2) + 10 = 16.9/s; now within
    // 1.5 x the budget of 10/s, however it grows.
    let rate: f64 = a.agents.values().map(|c| 1.0 / c.heartbeat.as_secs_f64()).sum();
    assert!(rate <= 15.0, "{rate} beats/s");
    // web-0 is lost after 6 s x 2.8/2 = 8.4 s of silence; the 40th after 12 s.
    let (_, mut rx) = mpsc::unbounded_channel();
    tokio::time::advance(Duration::from_secs(8)).await;
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-0"), Some(1), "paced to 2.8 s: 8.4 s allowed");
    tokio::time::advance(Duration::from_secs(1)).await;
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-0"), None);
    assert_eq!(session_of(&a, "web-39"), Some(40), "its timeout is 12 s");
    tokio::time::advance(Duration::from_secs(4)).await;
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-39"), None);
    assert_eq!(a.connected, 0, "every session lost");
    // Bounded: never more than a minute.
    a.config.max_heartbeats_per_s = 10;
    for i in 0..1000u64 {
        let _ = connect(&mut a, &format!("big-{i}"), 1000 + i);
    }
    assert!(a.agents.values().all(|c| c.heartbeat <= MAX_HEARTBEAT_INTERVAL));
}

/// After a restart the whole fleet reconnects with records the store
/// already holds: those are not written again (on etcd each would be a
/// write through consensus) until their stored `last_seen` is an hour old;
/// a record that changed is written at once.
#[tokio::test(start_paused = true)]
async fn an_unchanged_agent_record_is_not_rewritten_on_every_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = actor(dir.path());
    let stored = |a: &Actor| a.store.agents().unwrap().into_iter().find(|r| r.id == "web-1").unwrap();
    let start = a.clock.now();
    connect(&mut a, "web-1", 1).0.unwrap();
    assert_eq!(stored(&a).last_seen, start);
    let (_tx, mut rx) = mpsc::unbounded_channel();
    let reconnect = |a: &mut Actor, session: u64, labels: &[(&str, &str)]| {
        a.lose("web-1");
        let (tx, _rx) = mpsc::unbounded_channel();
        let (reply, mut answer) = oneshot::channel();
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let hello = AgentHello { id: "web-1".into(), labels, ..Default::default() };
        a.command(Command::Connect { hello, session, tx, pulse: Pulse::new(a.clock.now()), reply });
        answer.try_recv().expect("answered at once").unwrap();
    };
    tokio::time::advance(Duration::from_secs(600)).await;
    reconnect(&mut a, 2, &[]);
    assert_eq!(stored(&a).last_seen, start, "nothing new: not written");
    assert_eq!(a.agents["web-1"].last_seen(), a.clock.now(), "the live value is current");
    tokio::time::advance(Duration::from_secs(60)).await;
    reconnect(&mut a, 3, &[("tier", "web")]);
    let changed = stored(&a);
    assert_eq!((changed.last_seen, changed.labels["tier"].as_str()), (a.clock.now(), "web"), "a change is written");
    tokio::time::advance(Duration::from_secs(3_599)).await;
    reconnect(&mut a, 4, &[("tier", "web")]);
    assert_eq!(stored(&a).last_seen, changed.last_seen);
    tokio::time::advance(Duration::from_secs(2)).await;
    reconnect(&mut a, 5, &[("tier", "web")]);
    assert_eq!(stored(&a).last_seen, a.clock.now(), "refreshed once an hour old");
    // A write that failed (the store was down) is made at the next
    // connection, even though nothing changed since.
    tokio::time::advance(Duration::from_secs(10)).await;
    a.agents.get_mut("web-1").unwrap().stored = false;
    reconnect(&mut a, 6, &[("tier", "web")]);
    assert_eq!(stored(&a).last_seen, a.clock.now(), "written again after a failed write");
    assert!(a.agents["web-1"].stored);
    a.on_liveness_tick(&mut rx);
    assert_eq!(session_of(&a, "web-1"), Some(6));
}

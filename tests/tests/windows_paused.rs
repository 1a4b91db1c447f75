//! Maintenance windows in process, on paused tokio time: the coordinator's
//! runtime (its store, timers and clock, no network) holds a window-gated
//! rollout in `waiting_window`, sends nothing, and starts the hosts by
//! itself when its timer says the window opened — an hour of waiting in
//! no real time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use convoy_common::engine::RolloutState;
use convoy_common::model::{StepOutcome, UnixMillis};
use convoy_coordinator::artifacts::ArtifactStore;
use convoy_coordinator::runtime::{self, Clock, RuntimeConfig, ToAgent};
use convoy_coordinator::store::SledStore;
use tokio_util::sync::CancellationToken;

/// 2026-01-07 21:00:00 UTC.
const NINE_PM: u64 = 1_767_819_600_000;
const HOUR: u64 = 3_600_000;

const PLAN: &str = r#"name: nightly
version: "2.0"
windows:
  timezone: UTC
  cutoff: 5m
  open:
    - start: "22:00"
      duration: 1h
groups:
  - name: web
    select: { role: web }
    strategy: { type: rolling, max_parallel: 1 }
    steps:
      - name: upgrade
        exec: { command: upgrade }
        estimate: 10m
"#;

use convoy_tests::runtime_hello as hello;

#[tokio::test(start_paused = true)]
async fn a_window_gated_rollout_waits_then_runs_when_the_window_opens() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let artifacts = Arc::new(ArtifactStore::open(dir.path()).unwrap());
    let clock = Clock::starting_at(UnixMillis(NINE_PM));
    let (rt, join) = runtime::spawn(store, artifacts, RuntimeConfig::default(), clock, shutdown.clone()).unwrap();
    let mut agents = Vec::new();
    for id in ["web-1", "web-2"] {
        let agent = rt.connect(hello(id)).await.unwrap();
        let (session, rx) = (agent.id, agent.to_agent);
        // The agent's heartbeats, on the same paused clock: the hour of
        // waiting does not make it a lost agent.
        let (beats, stop) = (agent.beats, shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RuntimeConfig::default().heartbeat_interval);
            while !stop.is_cancelled() {
                beats.beat();
                tick.tick().await;
            }
        });
        agents.push((id, session, rx));
    }
    let created = rt.submit("nightly.yaml", PLAN, BTreeMap::new(), false, "test").await.unwrap();

    // 21:00: the group waits for 22:00 and nothing is sent.
    let s = rt.get(Some(created.rollout_id.clone())).await.unwrap();
    let web = &s.view.groups[0];
    assert_eq!(web.state_str(), "waiting_window", "{web:?}");
    assert_eq!(web.window.as_ref().unwrap().waiting_until, Some(UnixMillis(NINE_PM + HOUR)));
    for (_, _, rx) in &mut agents {
        assert!(rx.try_recv().is_err(), "a step was sent outside the window");
    }

    // Time runs (paused, so auto-advanced to the next timer): the first
    // step comes when the window opens, not before; one host at a time.
    for (id, session, rx) in &mut agents {
        let msg = tokio::time::timeout(Duration::from_secs(2 * 3600), rx.recv())
            .await
            .expect("a step before the window closed")
            .expect("session open");
        let now = clock.now().0;
        assert!((NINE_PM + HOUR..NINE_PM + 2 * HOUR).contains(&now), "{id} started at {now}, not in 22:00-23:00");
        let ToAgent::RunStep { execution_id, step } = msg else { panic!("a step, not {msg:?}") };
        assert_eq!(step.name, "upgrade");
        let during = rt.get(Some(created.rollout_id.clone())).await.unwrap();
        assert_eq!(during.view.groups[0].state_str(), "running");
        rt.step_result(id, *session, execution_id, StepOutcome { duration_ms: 1000, ..StepOutcome::ok() }).unwrap();
    }

    // The rollout ends (a watch, with a deadline, rather than a sleep).
    let mut watch = rt.watch(Some(created.rollout_id.clone())).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let state = match watch.next().await.expect("runtime alive") {
                convoy_coordinator::runtime::Watched::Full(s) => s.view.state,
                convoy_coordinator::runtime::Watched::Change(c) => c.state,
            };
            if state.is_terminal() {
                return state;
            }
        }
    })
    .await
    .expect("the rollout ended");
    assert_eq!(ended, RolloutState::Succeeded);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}

//! Watching a rollout: the runtime publishes each batch's changes, not a
//! full view. A `changes_only` WatchRollout stream merged by the client ends
//! exactly where GetRollout says the rollout is; an old-style stream still
//! gets a full status per message; and a watcher that falls behind the
//! runtime's bounded channel starts again from a full snapshot instead of
//! missing a change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use convoy_common::model::{StepOutcome, UnixMillis};
use convoy_coordinator::artifacts::ArtifactStore;
use convoy_coordinator::runtime::{self, Clock, RolloutSnapshot, RuntimeConfig, ToAgent, Watched};
use convoy_coordinator::store::SledStore;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

/// One group, its first host a canary waiting for an operator: the
/// watchers subscribe while nothing can move, so they see every change.
const PLAN: &str = r#"
name: watched
version: "2.0.0"
component: svc
groups:
  - name: web
    select: { role: web }
    strategy: { max_parallel: 3, max_failures: 0 }
    canary: { count: 1 }
    steps:
      - name: drain
        exec: { command: "true" }
      - name: install
        exec: { command: "true" }
"#;

/// Opens a watch stream and waits for its first message (the stream is
/// then subscribed); the rest is read to the end in a task.
async fn watch(
    op: &convoy_fleet::operator::Operator,
    id: &str,
    changes_only: bool,
) -> tokio::task::JoinHandle<Vec<pb::RolloutStatus>> {
    let req = pb::GetRolloutRequest { rollout_id: id.to_string(), changes_only };
    let mut stream = op.clone().watch_rollout(req).await.expect("watch").into_inner();
    let first = stream.message().await.expect("stream").expect("a first status");
    tokio::spawn(async move {
        let mut all = vec![first];
        while let Some(s) = stream.message().await.expect("stream") {
            all.push(s);
        }
        all
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changes_only_watch_rebuilds_get_rollout_and_an_old_watch_gets_full_statuses() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for i in 0..16 {
        c.add_fake_agent(&format!("web-{i:02}"), &[("role", "web")], Duration::from_millis(2))?;
    }
    c.wait_agents(16, Duration::from_secs(30)).await?;
    let id = c.submit(PLAN).await?;
    let op = c.operator().await?;
    // The canary is done and the group waits for approval.
    let waiting = tokio::time::timeout(
        Duration::from_secs(30),
        read_all_until(&op, &id, |s| s.groups.iter().any(|g| g.state == "awaiting_approval")),
    )
    .await?
    .expect("the group waits for approval");
    assert_eq!(waiting.hosts.len(), 16);

    let new = watch(&op, &id, true).await;
    let old = watch(&op, &id, false).await;
    let req =
        pb::ControlRequest { rollout_id: id.clone(), action: pb::ControlAction::Approve as i32, reason: String::new() };
    op.clone().control(req).await?;
    let (new, old) = (new.await?, old.await?);
    let final_status = op
        .clone()
        .get_rollout(pb::GetRolloutRequest { rollout_id: id.clone(), ..Default::default() })
        .await?
        .into_inner();
    assert_eq!(final_status.state, "succeeded", "{final_status:?}");

    // Old style: every message a full status, the last one GetRollout's.
    assert!(old.len() >= 2, "{} messages", old.len());
    for s in &old {
        assert!(!s.changes_only && s.group_indices.is_empty() && s.host_indices.is_empty());
        assert_eq!(s.hosts.len(), 16, "an old client gets every host each time");
    }
    assert_eq!(old.last(), Some(&final_status));

    // Changes only: a full first message, then changes; merged, GetRollout's.
    assert!(!new[0].changes_only && new[0].hosts.len() == 16, "the first message is full");
    assert!(new[1..].iter().all(|s| s.changes_only), "then changes");
    assert!(new[1..].iter().any(|s| s.hosts.len() < 16), "changes carry only the hosts that moved");
    let mut held = new[0].clone();
    for s in &new[1..] {
        convoy_wire::status::merge_status(&mut held, s.clone());
    }
    assert_eq!(held, final_status);
    c.shutdown().await;
    Ok(())
}

/// A watch stream's statuses merged until `until` holds or the stream ends
/// (the rollout finished): `Some` of the status when it held.
async fn read_all_until(
    op: &convoy_fleet::operator::Operator,
    id: &str,
    until: impl Fn(&pb::RolloutStatus) -> bool,
) -> Option<pb::RolloutStatus> {
    let req = pb::GetRolloutRequest { rollout_id: id.to_string(), changes_only: true };
    let mut stream = op.clone().watch_rollout(req).await.ok()?.into_inner();
    let mut held: Option<pb::RolloutStatus> = None;
    while let Some(s) = stream.message().await.ok()? {
        let h = match held.take() {
            Some(mut h) => {
                convoy_wire::status::merge_status(&mut h, s);
                h
            }
            None => s,
        };
        if until(&h) {
            return Some(h);
        }
        held = Some(h);
    }
    None
}

use convoy_tests::runtime_hello as hello;

const SERIAL_PLAN: &str = r#"name: serial
version: "2.0"
groups:
  - name: web
    select: { role: web }
    strategy: { type: rolling, max_parallel: 1 }
    steps:
      - name: upgrade
        exec: { command: upgrade }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_resyncs_from_a_full_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let artifacts = Arc::new(ArtifactStore::open(dir.path()).unwrap());
    // Room for two changes: the watcher below is sure to fall behind.
    let config = RuntimeConfig { watch_capacity: 2, ..RuntimeConfig::default() };
    let clock = Clock::starting_at(UnixMillis(1_767_819_600_000));
    let (rt, join) = runtime::spawn(store, artifacts, config, clock, shutdown.clone()).unwrap();
    let mut agents = Vec::new();
    for i in 0..12 {
        let id = format!("web-{i:02}");
        let agent = rt.connect(hello(&id)).await.unwrap();
        agents.push((id, agent.id, agent.to_agent));
    }
    let created = rt.submit("serial.yaml", SERIAL_PLAN, BTreeMap::new(), false, "test").await.unwrap();
    let id = created.rollout_id.clone();
    let mut lagging = rt.watch(Some(id.clone())).await.unwrap();
    let mut keeping_up = rt.watch(Some(id.clone())).await.unwrap();
    let mut kept: Option<RolloutSnapshot> = None;

    // One host at a time: each one's step answered in turn; the keeping-up
    // watcher reads every change as it comes, the lagging one nothing.
    for (host, session, rx) in &mut agents {
        let Some(ToAgent::RunStep { execution_id, .. }) =
            tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a step")
        else {
            panic!("{host}: session ended")
        };
        rt.step_result(host, *session, execution_id, StepOutcome::ok()).unwrap();
        while let Some(c) = keeping_up.try_change() {
            kept.as_mut().expect("a full snapshot first").apply(&c);
        }
        if kept.is_none() {
            match keeping_up.next().await.expect("runtime alive") {
                Watched::Full(s) => kept = Some((*s).clone()),
                Watched::Change(_) => panic!("a change before the full snapshot"),
            }
        }
    }
    // The keeping-up watcher follows to the end...
    while !kept.as_ref().unwrap().view.state.is_terminal() {
        match keeping_up.next().await.expect("runtime alive") {
            Watched::Full(s) => kept = Some((*s).clone()),
            Watched::Change(c) => kept.as_mut().unwrap().apply(&c),
        }
    }
    let got = rt.get(Some(id.clone())).await.unwrap();
    let kept = kept.unwrap();
    assert_eq!((&kept.view, kept.updated), (&got.view, got.updated), "changes applied in order rebuild the view");
    assert_eq!(keeping_up.resyncs(), 0);

    // ...and the lagging one, far behind, gets its first snapshot, then
    // (its changes overwritten) a fresh full one: the final state.
    let mut fulls = 0;
    let mut last: Option<RolloutSnapshot> = None;
    while !last.as_ref().is_some_and(|s| s.view.state.is_terminal()) {
        match lagging.next().await.expect("runtime alive") {
            Watched::Full(s) => {
                fulls += 1;
                last = Some((*s).clone());
            }
            Watched::Change(c) => last.as_mut().expect("a full snapshot first").apply(&c),
        }
    }
    assert_eq!(fulls, 2, "the first snapshot, then one resync");
    assert_eq!(lagging.resyncs(), 1);
    assert_eq!(last.unwrap().view, got.view);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
}

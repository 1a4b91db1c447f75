//! Snapshots end to end, in process (sled store): a coordinator with
//! `--snapshot-every 10 --compact-events` runs a rollout, restarts mid-way
//! and at the end from snapshots of a compacted log, and refuses to hand
//! the compacted log out for `convoy verify` from its start. docs/ha.md,
//! "Snapshots and log compaction".

use std::time::Duration;

use convoy_coordinator::runtime::RuntimeConfig;
use convoy_coordinator::store::Store;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;

const PLAN: &str = r#"
name: snap
version: "2.0.0"
groups:
  - name: all
    select: { role: app }
    strategy: { max_parallel: 2, max_failures: 0 }
    steps:
      - name: one
        exec: { command: "true" }
      - name: two
        exec: { command: "true" }
      - name: three
        exec: { command: "true" }
"#;

const HOSTS: [&str; 6] = ["h1", "h2", "h3", "h4", "h5", "h6"];
const WAIT: Duration = Duration::from_secs(60);

fn runtime() -> RuntimeConfig {
    RuntimeConfig { snapshot_every: 10, compact_events: true, ..fast_runtime() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_rollout_resumes_from_its_snapshot_and_is_not_handed_out_for_verify() -> anyhow::Result<()> {
    let mut c = Cluster::start(runtime()).await?;
    for h in HOSTS {
        // Slow enough that the coordinator stops mid-way.
        c.add_fake_agent(h, &[("role", "app")], Duration::from_millis(150))?;
    }
    c.wait_agents(HOSTS.len(), WAIT).await?;
    let id = c.submit(PLAN).await?;
    let op = c.operator().await?;
    convoy_fleet::operator::wait_rollout(&op, &id, WAIT, "some hosts done", |s| {
        s.hosts.iter().filter(|h| h.state == "succeeded").count() >= 4
    })
    .await?;

    // Stopped mid-way (agents too): a snapshot covers the log, whose
    // covered events are gone.
    c.stop_coordinator().await?;
    for h in HOSTS {
        c.kill_agent(h).await;
    }
    {
        let store = convoy_coordinator::server::open_store(&c.data_dir)?;
        let snap = store.snapshot(&id)?.expect("a snapshot");
        assert!(snap.seq >= 10, "{}", snap.seq);
        let tail = store.events_from(&id, 0)?;
        assert!(tail.first().is_none_or(|(s, _)| *s == snap.seq), "compacted up to the snapshot");
        assert!(!snap.state.rollout_state().is_terminal());
    }

    // Resumed from the snapshot and its tail (agents back with their state):
    // the rollout finishes, each step of each host under one execution id
    // (in-flight ones re-sent under the same id, nothing re-issued).
    c.start_coordinator(runtime()).await?;
    for h in HOSTS {
        c.add_fake_agent(h, &[("role", "app")], Duration::ZERO)?;
    }
    let status = c.wait_finished(&id, WAIT).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    let runs = c.runs.lock().unwrap().clone();
    for h in HOSTS {
        let ids: std::collections::BTreeSet<&str> =
            runs.iter().filter(|r| r.host == h).map(|r| r.execution_id.as_str()).collect();
        assert_eq!(ids.len(), 3, "{h}: {runs:?}");
    }

    // Its log from the start is refused, saying why.
    let mut ops = c.ops().await?;
    let err = ops
        .rollout_log(pb::RolloutLogRequest { rollout_id: id.clone(), from_seq: 0, max_events: 0 })
        .await
        .expect_err("a compacted log is not handed out from its start");
    assert!(err.message().contains("compacted below event"), "{err:?}");

    // Restarted once more: the finished rollout loads from its final snapshot.
    c.stop_coordinator().await?;
    {
        let store = convoy_coordinator::server::open_store(&c.data_dir)?;
        let snap = store.snapshot(&id)?.expect("a snapshot");
        assert!(snap.state.rollout_state().is_terminal());
        assert!(store.events_from(&id, 0)?.is_empty(), "every event is covered");
    }
    c.start_coordinator(runtime()).await?;
    let op = c.operator().await?;
    let got = op
        .clone()
        .get_rollout(pb::GetRolloutRequest { rollout_id: id.clone(), ..Default::default() })
        .await?
        .into_inner();
    assert_eq!(got.state, "succeeded");
    assert!(got.hosts.iter().all(|h| h.state == "succeeded"), "{got:?}");
    c.shutdown().await;
    Ok(())
}

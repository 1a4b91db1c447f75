//! Stored data written by an earlier build opens and resumes: what one
//! release writes, the next one reads (see `coordinator/src/store/format.rs`).
//!
//! `tests/fixtures/store-v1.tar.gz` is a whole cluster directory written by
//! the first build with store format 1: the coordinator's data directory
//! (CA, server certificate, operator token, the sled store) and each fake
//! agent's state (its enrolled certificate). Its rollout was stopped mid-way:
//! three hosts one at a time, `host-1` done, `host-2` dispatched and still
//! running when the coordinator stopped, `host-3` pending. The test resumes
//! it with the current build; it must keep passing with every later build,
//! and each new format adds its own fixture (and a line below) beside the
//! old ones, never in place of them.
//!
//! The fixture's keys and certificates are a throwaway test CA's (valid until
//! 2044, as every CA `init` makes). Besides the format of the records, the
//! test catches a change of sled's own files (a sled upgrade), of the data
//! directory's layout, and of how the engine replays a stored log.
//!
//! `store-v4.tar.gz` (engine snapshots) also holds its rollout's snapshot.
//!
//! Writing a fixture (only when the store format changes):
//! `cargo test -p convoy-tests --test store_fixture -- --ignored write_fixture`
//! writes `tests/fixtures/store-vN.tar.gz` for the current format N.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use convoy_common::engine::{Engine, Event};
use convoy_common::invariants;
use convoy_common::model::UnixMillis;
use convoy_coordinator::store::format::FORMAT_VERSION;
use convoy_coordinator::store::{SledStore, Store};
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::wait::wait_until;
use convoy_proto::v1 as pb;

const HOSTS: [&str; 3] = ["host-1", "host-2", "host-3"];

const PLAN: &str = r#"
name: fixture
version: "2.0.0"
groups:
  - name: all
    select: { role: app }
    strategy: { max_parallel: 1, max_failures: 0 }
    steps:
      - name: apply
        exec: { command: "true" }
        timeout: 10m
"#;

fn fixture(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(format!("store-v{format}.tar.gz"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_store_resumes_its_rollout_with_this_build() -> anyhow::Result<()> {
    resume(1).await
}

/// Format 2: groups' strategies as an enum (ramped windows, pre-checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_store_resumes_its_rollout_with_this_build() -> anyhow::Result<()> {
    resume(2).await
}

/// Format 3: specs carry maintenance windows (`windows`, null when none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_store_resumes_its_rollout_with_this_build() -> anyhow::Result<()> {
    resume(3).await
}

/// Format 4: engine snapshots (the fixture's rollout has one, taken every
/// 2 events, so its resume starts from a snapshot of engine snapshot format 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_4_store_resumes_its_rollout_with_this_build() -> anyhow::Result<()> {
    resume(4).await
}

/// Unpack the fixture of `format`, resume its rollout and check that it
/// finishes with each host's step run exactly once, counting the runs
/// before the fixture was written.
async fn resume(format: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = fixture(format);
    let gz = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
    tar::Archive::new(flate2::read::GzDecoder::new(gz)).unpack(dir.path())?;

    // The store opens, as the format it was written in, with what it held.
    let (rollout, stopped_at, in_flight) = {
        let store = SledStore::open(&dir.path().join("coordinator").join("db"))?;
        assert_eq!(store.found_format(), format);
        let rollouts = store.rollouts()?;
        assert_eq!(rollouts.len(), 1, "{rollouts:?}");
        let id = rollouts[0].id.clone();
        let events = store.events(&id)?;
        let last = events.last().map(|e| e.now).context("no events")?;
        if format >= 4 {
            let snap = store.snapshot(&id)?.context("the format-4 fixture has a snapshot")?;
            assert!(snap.seq > 0 && snap.seq <= events.len() as u64, "{}", snap.seq);
        }
        // Replayed by this build's engine, the log is where it was stopped.
        let mut engine = Engine::new(id.clone(), rollouts[0].spec.clone());
        for e in events {
            engine.handle(e.now, e.event);
        }
        let state = |h: &str| engine.host_state(h).map(|s| s.as_str());
        assert_eq!(HOSTS.map(state), [Some("succeeded"), Some("running"), Some("pending")]);
        let in_flight = engine.executions_of("host-2");
        assert_eq!(in_flight.len(), 1, "{in_flight:?}");
        let mut agents: Vec<String> = store.agents()?.into_iter().map(|a| a.id).collect();
        agents.sort();
        assert_eq!(agents, HOSTS);
        for h in HOSTS {
            assert!(store.enrolment(h)?.is_some_and(|e| e.revoked.is_none()), "{h} is enrolled");
        }
        (id, last, in_flight[0].clone())
    };

    // The coordinator comes back a second after it stopped (the rollout's
    // deadlines are as they were), and the agents with their certificates.
    let mut c = Cluster::resume(dir, fast_runtime(), UnixMillis(stopped_at.0 + 1000)).await?;
    for h in HOSTS {
        c.add_fake_agent(h, &[("role", "app")], Duration::ZERO)?;
    }
    let status = c.wait_finished(&rollout, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    for h in &status.hosts {
        assert_eq!(h.state, "succeeded", "{h:?}");
    }

    // host-1 finished before: not run again. host-2's execution is the one
    // sent before the stop, sent again under the same id.
    let runs = c.runs.lock().unwrap().clone();
    let hosts: Vec<&str> = runs.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["host-2", "host-3"], "{runs:?}");
    assert_eq!(runs[0].execution_id, in_flight.to_string(), "{runs:?}");

    // Over the whole stored log, each host's step finished once.
    let (spec, log) = c.event_log(&rollout).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    let mut finished: Vec<&str> = log
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepFinished { execution_id, .. } => Some(execution_id.entry()),
            _ => None,
        })
        .collect();
    finished.sort();
    assert_eq!(finished, HOSTS);
    c.shutdown().await;
    Ok(())
}

/// Writes the fixture of the current format (see the module doc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures/store-vN.tar.gz; run by hand when the store format changes"]
async fn write_fixture() -> anyhow::Result<()> {
    // Snapshots every 2 events, so that the fixture holds one (format 4 on).
    let runtime = convoy_coordinator::runtime::RuntimeConfig { snapshot_every: 2, ..fast_runtime() };
    let mut c = Cluster::start(runtime).await?;
    c.add_fake_agent("host-1", &[("role", "app")], Duration::ZERO)?;
    // Still running when the coordinator stops.
    c.add_fake_agent("host-2", &[("role", "app")], Duration::from_secs(3600))?;
    c.add_fake_agent("host-3", &[("role", "app")], Duration::ZERO)?;
    c.wait_agents(3, Duration::from_secs(30)).await?;
    let id = c.submit(PLAN).await?;
    let op = c.operator().await?;
    wait_until(Duration::from_secs(30), "host-1 done and host-2 running", || {
        let mut op = op.clone();
        let id = id.clone();
        async move {
            let s =
                op.get_rollout(pb::GetRolloutRequest { rollout_id: id, ..Default::default() }).await.ok()?.into_inner();
            let state = |h: &str| s.hosts.iter().find(|x| x.host_id == h).map(|x| x.state.clone()).unwrap_or_default();
            (state("host-1") == "succeeded" && state("host-2") == "running" && state("host-3") == "pending")
                .then_some(())
        }
    })
    .await?;
    c.stop_coordinator().await?;
    for h in HOSTS {
        c.kill_agent(h).await;
    }

    // Held (once the stopped coordinator has let go of it) while it is
    // packed, so that nothing writes to it meanwhile.
    let store = SledStore::open(&convoy_coordinator::server::store_dir(&c.data_dir))?;
    assert_eq!(store.rollouts()?.len(), 1);
    store.flush()?;
    let out = fixture(FORMAT_VERSION);
    std::fs::create_dir_all(out.parent().context("fixture path")?)?;
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&out)?, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("coordinator", &c.data_dir)?;
    tar.append_dir_all("agents", c.dir.path().join("agents"))?;
    tar.into_inner()?.finish()?;
    drop(store);
    let size = std::fs::metadata(&out)?.len();
    assert!(size < 200_000, "{} is {size} bytes; keep fixtures small", out.display());
    println!("wrote {} ({size} bytes), rollout {id}", out.display());
    c.shutdown().await;
    Ok(())
}

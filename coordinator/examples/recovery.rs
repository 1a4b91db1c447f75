//! Restart time of a coordinator whose store holds one unfinished rollout
//! with a long event log, with and without an engine snapshot.
//!
//! `bench/recovery.sh [EVENTS]` (default 100000) runs it in release. It
//! writes a sled store with one rollout (5,000 hosts of 20 steps, 50 at a
//! time) and EVENTS events (results, agents lost and back), then times,
//! `--runs` times each on a fresh copy of that store, what a restart does:
//! open the store and spawn the runtime (which rebuilds the rollout, marks
//! its agents lost and commits that), until the runtime answers. Variants:
//! - `full`: no snapshot, the whole log replayed (the only way before
//!   snapshots; also what `--snapshot-every 0` does);
//! - `snapshot`: a snapshot covering all but the last `--tail` events
//!   (default 500: half of the default `--snapshot-every 1000`, the mean tail).
//!
//! The last line reads
//! `recovery events=… hosts=… full_ms=… snapshot_ms=… speedup=… snapshot_bytes=… snapshot_take_ms=… tail=…`
//! (medians; `snapshot_take_ms` is one snapshot taken, stored and flushed,
//! the pause the runtime takes every `--snapshot-every` events).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_common::engine::{Action, Engine, Event};
use convoy_common::model::{
    ExecSpec, GroupSpec, HostPlan, OnFailure, RolloutSpec, StepKind, StepOutcome, StepSpec, Strategy, UnixMillis,
};
use convoy_coordinator::artifacts::ArtifactStore;
use convoy_coordinator::runtime::{Clock, RuntimeConfig, spawn};
use convoy_coordinator::store::{RolloutRecord, SledStore, Store, StoredEvent};
use tokio_util::sync::CancellationToken;

const HOSTS: usize = 5_000;
const STEPS: usize = 20;

fn spec() -> RolloutSpec {
    let steps = (0..STEPS)
        .map(|s| StepSpec {
            name: format!("step-{s}"),
            timeout: Duration::from_secs(600),
            kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            rerun_safe: false,
        })
        .collect::<Vec<_>>();
    RolloutSpec {
        plan_name: "bench".into(),
        target_version: "2".into(),
        component: Some("app".into()),
        groups: vec![GroupSpec {
            name: "all".into(),
            after: Vec::new(),
            strategy: Strategy::rolling(50),
            max_failures: HOSTS,
            soak: Duration::ZERO,
            hosts: (0..HOSTS).collect(),
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        }],
        hosts: (0..HOSTS)
            .map(|h| HostPlan { host: format!("host-{h:05}"), group: 0, steps: steps.clone(), ..HostPlan::default() })
            .collect(),
        host_lost_timeout: Duration::from_secs(24 * 3600),
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: None,
        windows: None,
    }
}

/// Write the store: the rollout, `events` events, and (when `tail` is some)
/// a snapshot covering all but the last `tail`. Returns the snapshot's size
/// and how long taking and storing it took (ms).
fn write_store(dir: &Path, events: usize, tail: Option<usize>) -> anyhow::Result<(usize, f64)> {
    let store = SledStore::open(dir)?;
    let spec = spec();
    let record = RolloutRecord {
        id: "r-bench".into(),
        file: "bench.yaml".into(),
        plan_source: String::new(),
        spec: spec.clone(),
        created: UnixMillis(1_000),
        created_by: "bench".into(),
    };
    store.put_rollout(&record)?;
    let mut engine = Engine::new("r-bench", spec);
    let mut queue = std::collections::VecDeque::new();
    let mut batch = Vec::new();
    let mut snapshot_bytes = 0;
    let mut take_ms = 0.0;
    let mut event = Event::Started;
    let mut now = 1_000;
    for n in 0..events {
        for a in engine.handle(UnixMillis(now), event.clone()) {
            if let Action::Dispatch { execution_id, .. } = a {
                queue.push_back(execution_id);
            }
        }
        batch.push(StoredEvent { now: UnixMillis(now), event });
        if batch.len() == 1000 || n + 1 == events {
            store.append_events("r-bench", (n + 1 - batch.len()) as u64, &batch)?;
            batch.clear();
        }
        if tail.is_some_and(|t| n + 1 + t == events) {
            // What the runtime does when one is due: take it, store it, flush.
            store.flush()?;
            let t = Instant::now();
            let snap = engine.snapshot(n as u64 + 1, UnixMillis(now));
            store.put_snapshot("r-bench", &snap)?;
            store.flush()?;
            take_ms = t.elapsed().as_secs_f64() * 1000.0;
            snapshot_bytes = snap.to_json().len();
        }
        now += 10;
        event = match n % 500 {
            0 => Event::AgentLost { host: format!("host-{:05}", n % HOSTS) },
            1 => Event::AgentConnected { host: format!("host-{:05}", (n - 1) % HOSTS) },
            _ => match queue.pop_front() {
                Some(execution_id) => Event::StepFinished { execution_id, outcome: StepOutcome::ok() },
                None => anyhow::bail!("the rollout ran out of work after {n} events; ask for fewer"),
            },
        };
    }
    anyhow::ensure!(!engine.is_finished(), "the rollout finished; ask for fewer events");
    store.flush()?;
    Ok((snapshot_bytes, take_ms))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One restart on a fresh copy of `master`: milliseconds until the runtime answers.
async fn restart(master: &Path, work: &Path, clock: Clock) -> anyhow::Result<f64> {
    let db = work.join("db");
    let _ = std::fs::remove_dir_all(&db);
    copy_dir(master, &db)?;
    let artifacts = Arc::new(ArtifactStore::open(work)?);
    // No snapshot is taken during the measured restart (both variants alike).
    let config = RuntimeConfig { snapshot_every: 0, ..RuntimeConfig::default() };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let store = Arc::new(SledStore::open(&db)?);
    let (handle, join) = spawn(store, artifacts, config, clock, shutdown.clone())?;
    let got = handle.get(Some("r-bench".into())).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        !got.view.state.is_terminal(),
        "the rollout should be unfinished: {} ({})",
        got.view.state,
        got.view.message
    );
    shutdown.cancel();
    join.await?;
    drop(handle);
    Ok(ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut events = 100_000;
    let mut runs = 5;
    let mut tail = 500;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<usize>().ok()).ok_or_else(|| anyhow::anyhow!("{a} N"));
        match a.as_str() {
            "--events" => events = value()?,
            "--runs" => runs = value()?.max(1),
            "--tail" => tail = value()?,
            other => anyhow::bail!("unknown argument {other} (--events N, --runs N, --tail N)"),
        }
    }
    anyhow::ensure!(tail < events, "--tail must be below --events");
    let dir = tempfile::tempdir()?;
    let (full_db, snap_db) = (dir.path().join("full"), dir.path().join("snap"));
    let t = Instant::now();
    write_store(&full_db, events, None)?;
    let (snapshot_bytes, take_ms) = write_store(&snap_db, events, Some(tail))?;
    eprintln!("stores written in {:.1}s", t.elapsed().as_secs_f64());
    let (mut full, mut snap) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // The coordinator comes back a second after the last event (its
        // clock runs from there), so no deadline has passed meanwhile.
        let clock = || Clock::starting_at(UnixMillis(1_000 + 10 * events as u64 + 1_000));
        full.push(restart(&full_db, &dir.path().join("run"), clock()).await?);
        snap.push(restart(&snap_db, &dir.path().join("run"), clock()).await?);
        eprintln!("run {i}: full {:.1} ms, snapshot {:.1} ms", full[i], snap[i]);
    }
    let (f, s) = (median(full), median(snap));
    println!(
        "recovery events={events} hosts={HOSTS} full_ms={f:.1} snapshot_ms={s:.1} speedup={:.1} snapshot_bytes={snapshot_bytes} snapshot_take_ms={take_ms:.1} tail={tail}",
        f / s
    );
    Ok(())
}

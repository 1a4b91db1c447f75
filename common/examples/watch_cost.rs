//! What a watcher costs the coordinator per batch: the pure engine with
//! 10,000 hosts (4 groups of 2,500, a window of 250 hosts each, 3 steps),
//! driven in batches of step results the way the runtime commits them. For
//! every batch it times the engine's work, then what publishing to a
//! watcher costs: before, a full [`Engine::view_at`] (every host); now, a
//! [`ChangeTracker::change`] (the hosts touched, and the groups).
//!
//! ```sh
//! cargo run --release -p convoy-common --example watch_cost -- --hosts 10000 --batch 64
//! ```
//!
//! Prints medians and the ratio; timings are this machine's, not asserted
//! anywhere.

use std::time::{Duration, Instant};

use convoy_common::engine::{Action, Engine, Event, ExecutionId};
use convoy_common::model::{
    ExecSpec, GroupSpec, HostPlan, OnFailure, RolloutSpec, StepKind, StepOutcome, StepSpec, Strategy, UnixMillis,
};
use convoy_common::view::ChangeTracker;

fn spec(hosts: usize, groups: usize, window: usize, steps: usize) -> RolloutSpec {
    let step = |s: usize| StepSpec {
        name: format!("step{s}"),
        timeout: Duration::from_secs(600),
        kind: StepKind::Exec(ExecSpec { command: "true".to_string(), ..ExecSpec::default() }),
        rerun_safe: false,
    };
    let per = hosts.div_ceil(groups);
    let host_plans: Vec<HostPlan> = (0..hosts)
        .map(|i| HostPlan {
            host: format!("h{i:05}"),
            group: i / per,
            initial_version: Some("1.0".to_string()),
            steps: (0..steps).map(step).collect(),
            undo: vec![None; steps],
            ..HostPlan::default()
        })
        .collect();
    let group_specs = (0..groups)
        .map(|g| GroupSpec {
            name: format!("g{g}"),
            after: Vec::new(),
            strategy: Strategy::rolling(window),
            max_failures: 0,
            soak: Duration::ZERO,
            hosts: (g * per..((g + 1) * per).min(hosts)).collect(),
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        })
        .collect();
    RolloutSpec {
        plan_name: "watch-cost".to_string(),
        target_version: "2.0".to_string(),
        component: Some("app".to_string()),
        groups: group_specs,
        hosts: host_plans,
        host_lost_timeout: Duration::from_secs(120),
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: None,
        windows: None,
    }
}

fn dispatched(actions: &[Action], out: &mut Vec<ExecutionId>) {
    for a in actions {
        match a {
            Action::Dispatch { execution_id, .. }
            | Action::DispatchRollback { execution_id, .. }
            | Action::DispatchCluster { execution_id, .. } => out.push(execution_id.clone()),
            Action::Schedule { .. }
            | Action::StepSucceeded { .. }
            | Action::HostDone { .. }
            | Action::Finished { .. } => {}
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn number(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Drives one rollout to its end in batches of `batch` results; `full`
/// builds a full view per batch (before), else a change (now). Returns the
/// per-batch engine and publish times, and the hosts per change.
fn drive(hosts: usize, batch: usize, full: bool) -> (Vec<Duration>, Vec<Duration>, usize) {
    let mut engine = Engine::new("r1", spec(hosts, 4, 250, 3));
    let mut now = UnixMillis(1_000_000);
    let (mut tracker, _) = ChangeTracker::start(&mut engine, now);
    let mut pending = Vec::new();
    dispatched(&engine.handle(now, Event::Started), &mut pending);
    let (mut engine_t, mut publish_t, mut touched) = (Vec::new(), Vec::new(), 0);
    while !engine.is_finished() && !pending.is_empty() {
        now = UnixMillis(now.0 + 5);
        let take: Vec<ExecutionId> = pending.drain(..batch.min(pending.len())).collect();
        let started = Instant::now();
        for execution_id in take {
            let outcome = StepOutcome { installed: Some(("app".into(), "2.0".into())), ..StepOutcome::ok() };
            let actions = engine.handle(now, Event::StepFinished { execution_id, outcome });
            dispatched(&actions, &mut pending);
        }
        engine_t.push(started.elapsed());
        let started = Instant::now();
        if full {
            // Before: the whole view, every batch (and the touched set
            // drained so it stays bounded, as the runtime does).
            std::hint::black_box(engine.view_at(now));
            engine.take_changed_hosts();
        } else {
            let change = tracker.change(&mut engine, now);
            touched += change.hosts.len();
            std::hint::black_box(change);
        }
        publish_t.push(started.elapsed());
    }
    assert!(engine.is_finished(), "the rollout ended");
    (engine_t, publish_t, touched)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hosts = number(&args, "--hosts", 10_000).clamp(4, 1_000_000);
    let batch = number(&args, "--batch", 64).clamp(1, 100_000);
    let (mut e_full, mut p_full, _) = drive(hosts, batch, true);
    let (mut e_change, mut p_change, touched) = drive(hosts, batch, false);
    let batches = p_change.len();
    let (pf, pc) = (median(&mut p_full), median(&mut p_change));
    let (ef, ec) = (median(&mut e_full), median(&mut e_change));
    let total = |v: &[Duration]| v.iter().sum::<Duration>();
    println!("hosts={hosts} batch={batch} batches={batches} hosts_per_change={:.1}", touched as f64 / batches as f64);
    println!("engine per batch: median {ef:?} (full run) / {ec:?} (changes run)");
    println!(
        "publish per batch: full view_at median {pf:?}, change median {pc:?}, ratio {:.0}x",
        pf.as_secs_f64() / pc.as_secs_f64().max(1e-9)
    );
    println!(
        "publish share of engine+publish: full {:.0}%, change {:.0}%",
        100.0 * total(&p_full).as_secs_f64() / (total(&p_full) + total(&e_full)).as_secs_f64(),
        100.0 * total(&p_change).as_secs_f64() / (total(&p_change) + total(&e_change)).as_secs_f64()
    );
}

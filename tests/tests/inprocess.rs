//! A coordinator and 20 agents in one process, over real gRPC with mTLS on
//! 127.0.0.1 ephemeral ports, with fake drivers. Checks the DESIGN.md
//! invariants on the stored event log.

use std::time::Duration;

use convoy_common::engine::{Action, Event};
use convoy_common::invariants;
use convoy_fleet::inprocess::{Cluster, fast_runtime};

const DAG_PLAN: &str = r#"
name: three-groups
version: "2.0.0"
component: svc
groups:
  - name: base
    select: { tier: base }
    strategy: { max_parallel: 2, max_failures: 0 }
    steps:
      - name: drain
        exec: { command: "true" }
      - name: install
        archive: { component: svc, version: "{{version}}", source: /x/svc.tar.gz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
  - name: left
    select: { tier: left }
    after: [base]
    strategy: { max_parallel: "25%", max_failures: 0 }
    steps:
      - name: install
        archive: { component: svc, version: "{{version}}", source: /x/svc.tar.gz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
  - name: right
    select: { tier: right }
    after: [base]
    strategy: { max_parallel: 3, max_failures: 1 }
    steps:
      - name: install
        archive: { component: svc, version: "{{version}}", source: /x/svc.tar.gz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

async fn fleet() -> anyhow::Result<Cluster> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for i in 0..4 {
        c.add_fake_agent(&format!("base-{i}"), &[("tier", "base")], Duration::from_millis(5))?;
    }
    for i in 0..8 {
        c.add_fake_agent(&format!("left-{i}"), &[("tier", "left")], Duration::from_millis(5))?;
        c.add_fake_agent(&format!("right-{i}"), &[("tier", "right")], Duration::from_millis(5))?;
    }
    c.wait_agents(20, Duration::from_secs(30)).await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_run_a_dag_with_a_parallel_branch() -> anyhow::Result<()> {
    let mut c = fleet().await?;
    let id = c.submit(DAG_PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    assert_eq!(status.hosts.len(), 20);
    for h in &status.hosts {
        assert_eq!(h.state, "succeeded", "{h:?}");
        assert_eq!(h.version, "2.0.0", "host {} ends on the target version", h.host_id);
    }

    // Every host ran each of its steps exactly once.
    let runs = c.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 4 * 2 + 16, "{runs:?}");
    let mut ids: Vec<_> = runs.iter().map(|r| r.execution_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), runs.len(), "an execution ran twice");

    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;

    // The two branches really overlapped: a right host was dispatched while a
    // left host was in flight.
    let mut left_in_flight = 0i32;
    let mut overlapped = false;
    for e in &log {
        for a in &e.actions {
            match a {
                Action::Dispatch { host, step_index: 0, resend: false, .. } if host.starts_with("left") => {
                    left_in_flight += 1
                }
                Action::HostDone { host, .. } if host.starts_with("left") => left_in_flight -= 1,
                Action::Dispatch { host, resend: false, .. } if host.starts_with("right") && left_in_flight > 0 => {
                    overlapped = true
                }
                _ => {}
            }
        }
    }
    assert!(overlapped, "independent branches should run in parallel");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_budget_halt_and_nothing_new_starts() -> anyhow::Result<()> {
    let mut c = fleet().await?;
    // right tolerates 1 failure; 3 of its hosts fail.
    for h in ["right-0", "right-1", "right-2"] {
        c.fail_hosts.lock().unwrap().insert(h.to_string());
    }
    let id = c.submit(DAG_PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    let right = status.groups.iter().find(|g| g.name == "right").unwrap();
    assert_eq!(right.state, "failed");
    assert!(status.hosts.iter().any(|h| h.state == "skipped"), "some hosts never started: {status:?}");

    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    // Find the event after which the budget was exceeded (the second failed
    // right host); no new host may start after it.
    let mut failed_right = 0;
    let mut halted_at = None;
    for (i, e) in log.iter().enumerate() {
        for a in &e.actions {
            if let Action::HostDone { host, state } = a
                && host.starts_with("right")
                && state.as_str() == "failed"
            {
                failed_right += 1;
                if failed_right == 2 && halted_at.is_none() {
                    halted_at = Some(i);
                }
            }
        }
    }
    let halted_at = halted_at.expect("budget exceeded");
    for e in &log[halted_at + 1..] {
        for a in &e.actions {
            if let Action::Dispatch { host, step_index: 0, resend: false, .. } = a {
                panic!("host {host} started after the rollout halted (event {:?})", e.event);
            }
        }
    }
    assert!(
        matches!(log.last().map(|e| &e.event), Some(Event::StepFinished { .. } | Event::TimerFired { .. })),
        "{:?}",
        log.iter().rev().take(8).map(|e| (e.now, &e.event)).collect::<Vec<_>>()
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_fails_its_host_after_the_lost_timeout_and_the_budget_decides() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("slow-1", &[("tier", "slow")], Duration::from_secs(30))?;
    c.add_fake_agent("slow-2", &[("tier", "slow")], Duration::from_millis(5))?;
    c.wait_agents(2, Duration::from_secs(30)).await?;
    let plan = r#"
name: lost
version: "2"
host_lost_timeout: 1s
groups:
  - name: slow
    select: { tier: slow }
    strategy: { max_parallel: 1, max_failures: 0 }
    steps:
      - name: work
        exec: { command: "true" }
"#;
    let id = c.submit(plan).await?;
    // slow-1 is working on its 30s step; take its agent away.
    convoy_fleet::wait::wait_until(Duration::from_secs(10), "slow-1 to start", || {
        let started = c.runs.lock().unwrap().iter().any(|r| r.host == "slow-1");
        std::future::ready(started.then_some(()))
    })
    .await?;
    c.kill_agent("slow-1").await;
    let status = c.wait_finished(&id, Duration::from_secs(30)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    let h1 = status.hosts.iter().find(|h| h.host_id == "slow-1").unwrap();
    assert_eq!(h1.state, "failed");
    assert!(h1.message.contains("lost"), "{h1:?}");
    let h2 = status.hosts.iter().find(|h| h.host_id == "slow-2").unwrap();
    assert_eq!(h2.state, "skipped", "the budget of 0 halts before slow-2 starts");
    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    assert!(log.iter().any(|e| matches!(&e.event, Event::AgentLost { host } if host == "slow-1")));
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rollout_is_rolled_back_by_a_new_rollout_in_reverse_dag_order() -> anyhow::Result<()> {
    use convoy_proto::v1 as pb;
    let mut c = fleet().await?;
    let id = c.submit(DAG_PLAN).await?;
    assert_eq!(c.wait_finished(&id, Duration::from_secs(60)).await?.state, "succeeded");
    let before = c.runs.lock().unwrap().len();

    let mut op = c.operator().await?;
    let r = op
        .control(pb::ControlRequest {
            rollout_id: id.clone(),
            action: pb::ControlAction::Rollback as i32,
            reason: String::new(),
        })
        .await?
        .into_inner();
    assert_ne!(r.rollout_id, id, "a new rollout undoes the finished one");
    let undo = c.wait_finished(&r.rollout_id, Duration::from_secs(60)).await?;
    assert_eq!(undo.state, "succeeded", "{undo:?}");
    for h in &undo.hosts {
        assert_eq!(h.version, "1.0.0", "host {} is back on its version from before", h.host_id);
    }

    // Each host ran exactly one undo (its archive step's), base hosts last.
    let runs: Vec<_> = c.runs.lock().unwrap()[before..].to_vec();
    assert_eq!(runs.len(), 20, "{runs:?}");
    assert!(runs.iter().all(|r| r.step.starts_with("rollback")), "{runs:?}");
    let first_base = runs.iter().position(|r| r.host.starts_with("base")).unwrap();
    assert!(
        runs[first_base..].iter().all(|r| r.host.starts_with("base")),
        "base is undone after its dependants: {runs:?}"
    );

    // Twice is refused.
    let again = op
        .control(pb::ControlRequest {
            rollout_id: id.clone(),
            action: pb::ControlAction::Rollback as i32,
            reason: String::new(),
        })
        .await
        .expect_err("already rolled back");
    assert!(again.message().contains("already rolled back"), "{again:?}");

    let undo_id = r.rollout_id.clone();
    let (spec, log) = c.event_log(&undo_id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    c.shutdown().await;
    Ok(())
}

const GATED_PLAN: &str = r#"
name: gated
version: "2.0.0"
groups:
  - name: web
    select: { tier: web }
    strategy: { max_parallel: [1, 2], max_failures: 1 }
    pre_checks:
      - name: in-sync
        exec: { command: "true" }
    steps:
      - name: install
        exec: { command: "true" }
      - name: restart
        exec: { command: "true" }
"#;

/// Ramped batches and pre-checks through the coordinator and real agent
/// sessions: one host first, then two at a time; a host whose pre-check
/// fails runs nothing else and uses the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramped_group_gates_each_host_on_its_pre_checks() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for i in 0..5 {
        c.add_fake_agent(&format!("web-{i}"), &[("tier", "web")], Duration::from_millis(5))?;
    }
    c.fail_hosts.lock().unwrap().insert("web-2".to_string());
    c.wait_agents(5, Duration::from_secs(30)).await?;
    let id = c.submit(GATED_PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "one failure is within the budget: {status:?}");

    let runs = c.runs.lock().unwrap().clone();
    let steps_of = |host: &str| runs.iter().filter(|r| r.host == host).map(|r| r.step.clone()).collect::<Vec<_>>();
    assert_eq!(steps_of("web-2"), ["in-sync"], "a host failing its pre-check is not touched");
    for h in ["web-0", "web-1", "web-3", "web-4"] {
        assert_eq!(steps_of(h), ["in-sync", "install", "restart"], "{h}");
    }

    // The ramp: web-1 (second stage) starts only once web-0 is done, and
    // never more than two hosts are in flight.
    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    let first = |pred: &dyn Fn(&Action) -> bool| log.iter().position(|e| e.actions.iter().any(pred));
    let web0_done = first(&|a| matches!(a, Action::HostDone { host, .. } if host == "web-0")).expect("web-0 ends");
    let web1_starts =
        first(&|a| matches!(a, Action::Dispatch { host, step_index: 0, .. } if host == "web-1")).expect("web-1 starts");
    assert!(web1_starts >= web0_done, "the second stage started before the first was done");
    let mut in_flight = 0i32;
    for e in &log {
        for a in &e.actions {
            match a {
                Action::Dispatch { step_index: 0, resend: false, .. } => in_flight += 1,
                Action::HostDone { .. } => in_flight -= 1,
                _ => {}
            }
            assert!(in_flight <= 2, "more than two hosts in flight");
        }
    }
    Ok(())
}

//! The coordinator's side of `convoy plan`: agents' facts reach the
//! inventory plans expand against (`{{fact.NAME}}`, catalog `when: { facts }`),
//! the durations of succeeded steps are recorded per plan, group and step
//! and per host,
//! and a dry-run submission's summary carries the paths and the estimates
//! built from them, across a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use convoy_common::model::{StepKind, StepOutcome};
use convoy_coordinator::artifacts::ArtifactStore;
use convoy_coordinator::runtime::{self, AgentHello, Clock, RuntimeConfig, RuntimeHandle, ToAgent};
use convoy_coordinator::store::{SledStore, Store};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

const CATALOG: &str = r#"product: app
component: app
releases:
  - version: "1.0"
  - version: "2.0"
    steps:
      upgrade:
        - name: install-pro
          when: { facts: { edition: pro } }
          exec: { command: install, args: [pro, "{{version}}"] }
        - name: install-community
          when: { facts: { edition: community } }
          exec: { command: install, args: [community, "{{version}}"] }
"#;

const PLAN: &str = r#"name: facts-and-times
version: "2.0"
groups:
  - name: app
    select: { role: app }
    release: { catalog: app }
    steps:
      - name: report
        exec: { command: echo, args: ["{{fact.edition}} on {{fact.os}} ({{fact.arch}})"] }
"#;

fn hello(id: &str, edition: &str) -> AgentHello {
    AgentHello {
        id: id.into(),
        version: "test".into(),
        protocol_version: convoy_proto::PROTOCOL_VERSION,
        labels: [("role".to_string(), "app".to_string())].into(),
        hostname: id.into(),
        os: "Rocky Linux 8".into(),
        arch: "x86_64".into(),
        installed: [("app".to_string(), "1.0".to_string())].into(),
        facts: [("edition".to_string(), edition.to_string())].into(),
        ..Default::default()
    }
}

fn start(
    store: Arc<SledStore>,
    data_dir: &Path,
    shutdown: &CancellationToken,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let artifacts = Arc::new(ArtifactStore::open(data_dir).expect("artifact store opens"));
    runtime::spawn(store, artifacts, RuntimeConfig::default(), Clock::system(), shutdown.clone())
        .expect("runtime starts")
}

async fn dry_run(rt: &RuntimeHandle) -> serde_json::Value {
    let catalogs = BTreeMap::from([("app".to_string(), CATALOG.to_string())]);
    rt.submit("plan.yaml", PLAN, catalogs, true, "test").await.unwrap_or_else(|e| panic!("{e}")).summary
}

/// Answer every step sent to `host` with success after `ms` milliseconds
/// (as reported), until `n` steps were answered; returns their exec args.
async fn answer(
    rt: &RuntimeHandle,
    host: &str,
    session: u64,
    rx: &mut UnboundedReceiver<ToAgent>,
    n: usize,
    ms: u64,
) -> Vec<(String, Vec<String>)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("a step within 10s")
            .expect("session open");
        let ToAgent::RunStep { execution_id, step, .. } = msg else { panic!("a step, not {msg:?}") };
        let args = match &step.kind {
            StepKind::Exec(e) => e.args.clone(),
            _ => Vec::new(),
        };
        seen.push((step.name.clone(), args));
        rt.step_result(host, session, execution_id, StepOutcome { duration_ms: ms, ..StepOutcome::ok() }).unwrap();
    }
    seen
}

#[tokio::test]
async fn facts_reach_plans_and_step_times_reach_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let (rt, join) = start(store.clone(), dir.path(), &shutdown);
    let a1 = rt.connect(hello("a-1", "pro")).await.unwrap();
    let a2 = rt.connect(hello("a-2", "community")).await.unwrap();
    let (s1, mut rx1, s2, mut rx2) = (a1.id, a1.to_agent, a2.id, a2.to_agent);

    // The dry run picks each host's steps by its facts; nothing measured yet.
    let s = dry_run(&rt).await;
    let group = &s["groups"][0];
    assert_eq!(group["host_steps"]["a-1"], serde_json::json!(["2.0/install-pro", "report"]));
    assert_eq!(group["host_steps"]["a-2"], serde_json::json!(["2.0/install-community", "report"]));
    assert_eq!(group["paths"].as_array().map(Vec::len), Some(2), "two different step lists");
    assert_eq!(group["paths"][0]["hops"][0]["steps"][0]["source"], "default");
    assert_eq!(s["estimate"]["steps"]["measured"], 0);

    // A real rollout: the templates are filled from the reported facts.
    let created = rt.submit("plan.yaml", PLAN, BTreeMap::from([("app".into(), CATALOG.into())]), false, "t").await;
    created.unwrap_or_else(|e| panic!("{e}"));
    let a1 = answer(&rt, "a-1", s1, &mut rx1, 2, 3000).await;
    let a2 = answer(&rt, "a-2", s2, &mut rx2, 2, 5000).await;
    assert_eq!(a1[0], ("2.0/install-pro".to_string(), vec!["pro".to_string(), "2.0".to_string()]));
    assert_eq!(a1[1].1, ["pro on Rocky Linux 8 (x86_64)"]);
    assert_eq!(a2[1].1, ["community on Rocky Linux 8 (x86_64)"]);

    // Once the rollout is over, its step times are the plan's estimates.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let s = loop {
        let s = dry_run(&rt).await;
        // Both hosts' "report" results recorded (each result is made
        // durable on its own schedule: the commit window may part them).
        let runs = &s["groups"][0]["paths"][0]["steps"][0]["runs"];
        if (s["estimate"]["steps"]["measured"] == 3 && runs == 2) || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let report = |p: usize| s["groups"][0]["paths"][p]["steps"][0].clone();
    assert_eq!(report(0)["source"], "measured", "{s:#}");
    assert_eq!(report(0)["runs"], 2);
    assert_eq!(report(0)["estimate_ms"], 4000, "the median of 3s and 5s");
    assert_eq!(s["groups"][0]["paths"][0]["hops"][0]["steps"][0]["estimate_ms"], 3000);
    assert_eq!(s["estimate"]["steps"]["measured"], 3);

    // After a restart (no agent has said hello again) both are still there:
    // a new runtime over the same store.
    shutdown.cancel();
    join.await.unwrap();
    drop((rx1, rx2));
    check_after_restart(store, dir.path()).await;
}

async fn check_after_restart(store: Arc<SledStore>, data_dir: &Path) {
    // Each host's own history of each step, for `order: balanced`.
    let on_hosts = store.host_step_times("facts-and-times").unwrap();
    let report_on = |host: &str| {
        on_hosts.iter().find(|t| t.host == host && t.times.step == "report").map(|t| t.times.recent_ms.clone())
    };
    assert_eq!(report_on("a-1"), Some(vec![3000]), "{on_hosts:?}");
    assert_eq!(report_on("a-2"), Some(vec![5000]), "{on_hosts:?}");
    assert_eq!(on_hosts.len(), 4, "two steps on each of two hosts: {on_hosts:?}");
    let agents = store.agents().unwrap();
    let a1 = agents.iter().find(|a| a.id == "a-1").expect("a-1 stored");
    assert_eq!(a1.facts.get("edition").map(String::as_str), Some("pro"));
    let inv = a1.inventory_host();
    assert_eq!(inv.facts.get("os").map(String::as_str), Some("Rocky Linux 8"));
    assert_eq!(inv.facts.get("arch").map(String::as_str), Some("x86_64"));
    assert_eq!(inv.facts.get("edition").map(String::as_str), Some("pro"));
    let shutdown = CancellationToken::new();
    let (rt, _join) = start(store, data_dir, &shutdown);
    let s = dry_run(&rt).await;
    assert_eq!(s["groups"][0]["host_steps"]["a-1"], serde_json::json!(["2.0/install-pro", "report"]));
    assert_eq!(s["estimate"]["steps"]["measured"], 3);
    shutdown.cancel();
}

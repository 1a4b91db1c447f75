//! Hooks and captured values end to end, in process (coordinator and fake
//! agents over real gRPC): the Exastro procedure — record the replica count,
//! scale to 0, upgrade, restore the recorded count — with the record and
//! restore running as plan hooks on a host that is also upgraded in its own
//! group, and a per-host capture inside a group. The captured values show in
//! the status and survive a coordinator restart.

use std::time::Duration;

use convoy_common::invariants;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;

const PLAN: &str = r#"
name: exastro-upgrade
version: "2.1.0"
hooks:
  before:
    on: { select: { role: kube } }
    steps:
      - name: record-replicas
        exec: { command: echo, args: ["deployment/ita-api", "replicas=3"] }
        capture: { name: replicas, regex: 'replicas=(\d+)' }
      - name: scale-down
        exec: { command: kubectl, args: [scale, deployment/ita-api, "--replicas=0"] }
  after:
    on: { select: { role: kube } }
    steps:
      - name: restore-replicas
        exec: { command: kubectl, args: [scale, deployment/ita-api, "--replicas={{captured.replicas}}"] }
groups:
  - name: ita
    select: { role: ita }
    strategy: { max_parallel: 2 }
    steps:
      - name: read-pods
        exec: { command: echo, args: ['{"pods": [{"name": "{{host}}-pod"}]}'] }
        capture: { name: pod, json: pods.0.name }
      - name: upgrade
        exec: { command: helm, args: [upgrade, "{{captured.pod}}", "--replicas-before={{captured.replicas}}"] }
  - name: kube
    select: { role: kube }
    after: [ita]
    steps:
      - name: upgrade-node
        exec: { command: "true" }
"#;

fn host<'a>(s: &'a pb::RolloutStatus, id: &str, group: &str) -> &'a pb::HostStatus {
    s.hosts.iter().find(|h| h.host_id == id && h.group == group).unwrap_or_else(|| panic!("no {id} in {group}: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_scale_down_upgrade_and_restore_the_recorded_count() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("kube-1", &[("role", "kube")], Duration::from_millis(5))?;
    c.add_fake_agent("ita-1", &[("role", "ita")], Duration::from_millis(5))?;
    c.add_fake_agent("ita-2", &[("role", "ita")], Duration::from_millis(5))?;
    c.wait_agents(3, Duration::from_secs(30)).await?;

    let id = c.submit(PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    assert_eq!(status.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["before", "ita", "kube", "after"]);

    // The restore step received the recorded count; every step ran once, in order.
    let runs = c.runs.lock().unwrap().clone();
    let order: Vec<(&str, &str)> = runs.iter().map(|r| (r.host.as_str(), r.step.as_str())).collect();
    let at = |host: &str, step: &str| order.iter().position(|&x| x == (host, step)).expect("ran");
    assert_eq!(runs.len(), 2 + 2 * 2 + 1 + 1, "{order:?}");
    let restore = &runs[at("kube-1", "restore-replicas")];
    assert_eq!(restore.args, ["scale", "deployment/ita-api", "--replicas=3"]);
    assert!(at("kube-1", "scale-down") < at("ita-1", "read-pods"));
    assert!(at("ita-2", "upgrade") < at("kube-1", "upgrade-node"));
    assert!(at("kube-1", "upgrade-node") < at("kube-1", "restore-replicas"));
    // Per-host captures stay with their host; hook captures reach every group.
    for ita in ["ita-1", "ita-2"] {
        let upgrade = &runs[at(ita, "upgrade")];
        assert_eq!(upgrade.args, ["upgrade", &format!("{ita}-pod"), "--replicas-before=3"]);
    }

    // Status: the hook's host appears in its hook groups and its own group.
    let before = host(&status, "kube-1", "before");
    assert_eq!(before.captured.get("replicas").map(String::as_str), Some("3"));
    assert_eq!(host(&status, "kube-1", "kube").state, "succeeded");
    assert!(host(&status, "kube-1", "kube").captured.is_empty());
    assert_eq!(host(&status, "ita-2", "ita").captured.get("pod").map(String::as_str), Some("ita-2-pod"));

    // The values come from the stored events: a restarted coordinator has them.
    c.stop_coordinator().await?;
    c.start_coordinator(fast_runtime()).await?;
    let mut op = c.operator().await?;
    let again =
        op.get_rollout(pb::GetRolloutRequest { rollout_id: id.clone(), ..Default::default() }).await?.into_inner();
    assert_eq!(again.state, "succeeded");
    assert_eq!(host(&again, "kube-1", "before").captured, before.captured);
    assert_eq!(host(&again, "ita-1", "ita").captured.get("pod").map(String::as_str), Some("ita-1-pod"));

    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_that_does_not_match_halts_before_any_upgrade() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("kube-1", &[("role", "kube")], Duration::from_millis(5))?;
    c.add_fake_agent("ita-1", &[("role", "ita")], Duration::from_millis(5))?;
    c.add_fake_agent("ita-2", &[("role", "ita")], Duration::from_millis(5))?;
    c.wait_agents(3, Duration::from_secs(30)).await?;

    let id = c.submit(&PLAN.replace("replicas=3", "no such deployment")).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    let before = host(&status, "kube-1", "before");
    assert_eq!(before.state, "failed");
    assert!(
        before.message.contains("capture 'replicas'") && before.message.contains("no such deployment"),
        "{before:?}"
    );
    let runs = c.runs.lock().unwrap().clone();
    assert_eq!(runs.iter().map(|r| r.step.as_str()).collect::<Vec<_>>(), ["record-replicas"], "nothing else ran");
    c.shutdown().await;
    Ok(())
}

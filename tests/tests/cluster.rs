//! The `cluster` strategy end to end, in process (coordinator and agents
//! over real gRPC with mTLS): two clusters of three upgrade in parallel,
//! followers first and the leader last. The agents' driver plays the
//! clustered product: `is-leader HOST` passes on the current leader,
//! `switchover HOST` hands the leadership to an upgraded member, and in the
//! second cluster a failover elects a not-yet-upgraded member mid-way.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_agent::driver::Driver;
use convoy_common::invariants;
use convoy_common::model::{StepKind, StepOutcome, StepSpec};
use convoy_fleet::inprocess::{Cluster, fast_runtime};

const PLAN: &str = r#"
name: mediation-controllers
version: "5.2.0"
groups:
  - name: controllers
    select: { role: mc }
    strategy:
      type: cluster
      by: cluster
      max_parallel: 1
      leader:
        exec: { command: is-leader, args: ["{{host}}"] }
        follower_when: { exit_code: 1 }
        interval: 100ms
        deadline: 2s
      switchover:
        - name: hand-over
          exec: { command: switchover, args: ["{{host}}"] }
    steps:
      - name: stop
        exec: { command: stop, args: ["{{host}}"] }
      - name: upgrade
        exec: { command: upgrade, args: ["{{host}}", "{{version}}"] }
      - name: start
        exec: { command: start, args: ["{{host}}"] }
"#;

/// The clustered product as the agents see it.
#[derive(Default)]
struct Product {
    /// Leader by cluster.
    leaders: BTreeMap<String, String>,
    /// Cluster by host.
    cluster_of: BTreeMap<String, String>,
    upgraded: Vec<String>,
    /// Every command run, in order: (host, command).
    log: Vec<(String, String)>,
    /// The arguments of every command run, in the order of `log`.
    args: Vec<Vec<String>>,
    /// When this host is upgraded, the leadership of its cluster moves to that one.
    failover_after: BTreeMap<String, String>,
    /// Hosts whose product does not answer: their leader check exits 2.
    unreachable: Vec<String>,
}

struct ProductDriver {
    host: String,
    product: Arc<Mutex<Product>>,
}

impl Driver for ProductDriver {
    fn run<'a>(
        &'a self,
        _execution_id: &'a str,
        step: &'a StepSpec,
    ) -> Pin<Box<dyn std::future::Future<Output = StepOutcome> + Send + 'a>> {
        Box::pin(async move {
            let (command, args) = match &step.kind {
                StepKind::Exec(e) => (e.command.clone(), e.args.clone()),
                StepKind::ExecCheck(c) => (c.exec.command.clone(), c.exec.args.clone()),
                other => return StepOutcome::failed(format!("unexpected step kind {}", other.kind_name())),
            };
            // Each command takes a little while, so that clusters overlap.
            tokio::time::sleep(Duration::from_millis(15)).await;
            let mut p = self.product.lock().unwrap();
            p.log.push((self.host.clone(), command.clone()));
            p.args.push(args.clone());
            let cluster = p.cluster_of[&self.host].clone();
            match command.as_str() {
                "is-leader" if p.unreachable.contains(&self.host) => {
                    StepOutcome { exit_code: Some(2), ..StepOutcome::failed("exit 2: connection refused") }
                }
                "is-leader" if p.leaders[&cluster] == self.host => StepOutcome::ok(),
                "is-leader" => StepOutcome { exit_code: Some(1), ..StepOutcome::failed("exit 1: not the leader") },
                // `switchover TARGET`: hand over to a named member.
                "switchover" if args.len() == 2 => {
                    if !p.upgraded.contains(&args[0]) || p.cluster_of.get(&args[0]) != Some(&cluster) {
                        return StepOutcome::failed(format!("{} is not an upgraded member of {cluster}", args[0]));
                    }
                    p.leaders.insert(cluster, args[0].clone());
                    StepOutcome::ok()
                }
                "switchover" => {
                    let upgraded = p.upgraded.iter().find(|h| p.cluster_of[*h] == cluster && **h != self.host).cloned();
                    match upgraded {
                        Some(to) => {
                            p.leaders.insert(cluster, to);
                            StepOutcome::ok()
                        }
                        None => StepOutcome::failed("no upgraded member to hand over to"),
                    }
                }
                "upgrade" => {
                    p.upgraded.push(self.host.clone());
                    if let Some(to) = p.failover_after.get(&self.host).cloned() {
                        p.leaders.insert(cluster, to);
                    }
                    StepOutcome::ok()
                }
                _ => StepOutcome::ok(),
            }
        })
    }

    fn installed(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["exec".into(), "exec_check".into()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_of_three_upgrade_in_parallel_leader_last() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let product = Arc::new(Mutex::new(Product::default()));
    {
        let mut p = product.lock().unwrap();
        for (host, cluster) in
            [("a-1", "mc1"), ("a-2", "mc1"), ("a-3", "mc1"), ("b-1", "mc2"), ("b-2", "mc2"), ("b-3", "mc2")]
        {
            p.cluster_of.insert(host.into(), cluster.into());
        }
        p.leaders.insert("mc1".into(), "a-1".into());
        p.leaders.insert("mc2".into(), "b-3".into());
        // mc2 fails over to b-2, not upgraded yet, right after b-1 is upgraded.
        p.failover_after.insert("b-1".into(), "b-2".into());
    }
    for (host, cluster) in
        [("a-1", "mc1"), ("a-2", "mc1"), ("a-3", "mc1"), ("b-1", "mc2"), ("b-2", "mc2"), ("b-3", "mc2")]
    {
        let driver = Arc::new(ProductDriver { host: host.into(), product: product.clone() });
        c.add_agent(host, &[("role", "mc"), ("cluster", cluster)], driver)?;
    }
    c.wait_agents(6, Duration::from_secs(30)).await?;

    let id = c.submit(PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");

    let log: Vec<(String, String)> = product.lock().unwrap().log.clone();
    let at = |host: &str, cmd: &str| {
        log.iter()
            .rposition(|(h, c)| h == host && c == cmd)
            .unwrap_or_else(|| panic!("{host} never ran {cmd}: {log:?}"))
    };
    // mc1: the leader a-1 is upgraded last, after handing the leadership over.
    assert!(at("a-2", "upgrade") < at("a-1", "switchover") && at("a-3", "upgrade") < at("a-1", "switchover"));
    assert!(at("a-1", "switchover") < at("a-1", "stop"), "the leader stops only after its switchover: {log:?}");
    // mc2: b-3 led at first, b-2 took over mid-way: b-2 is upgraded last,
    // and b-3, no longer the leader, as a follower without a switchover.
    assert!(at("b-3", "upgrade") < at("b-2", "stop") && at("b-1", "upgrade") < at("b-2", "stop"), "{log:?}");
    assert!(log.iter().filter(|(h, c)| h.starts_with("b-") && c == "switchover").count() == 1, "{log:?}");
    assert!(at("b-2", "switchover") < at("b-2", "stop"));
    // Every step of every host was preceded by its leader check.
    for host in ["a-1", "a-2", "a-3", "b-1", "b-2", "b-3"] {
        let mine: Vec<&str> = log.iter().filter(|(h, _)| h == host).map(|(_, c)| c.as_str()).collect();
        for (k, cmd) in mine.iter().enumerate() {
            if matches!(*cmd, "stop" | "upgrade" | "start") {
                assert_eq!(mine[k - 1], "is-leader", "{host}: {mine:?}");
            }
        }
    }
    // The clusters ran side by side.
    let first = |prefix: &str| log.iter().position(|(h, _)| h.starts_with(prefix)).unwrap();
    let last = |prefix: &str| log.iter().rposition(|(h, _)| h.starts_with(prefix)).unwrap();
    assert!(first("b-") < last("a-") && first("a-") < last("b-"), "clusters did not overlap: {log:?}");

    let (spec, events) = c.event_log(&id).await?;
    if let Err(v) = invariants::check_final(&spec, &events) {
        panic!("invariants: {}", v.join("\n"));
    }
    c.shutdown().await;
    Ok(())
}

/// The leader a-3 does not answer its leader check (exit 2): before, a
/// failing check meant "follower" and a-3 was upgraded without a
/// switchover. Now its role is unknown: asked again until the check's
/// deadline, then a-3 fails without any step run on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_leader_is_not_taken_for_a_follower() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let product = Arc::new(Mutex::new(Product::default()));
    {
        let mut p = product.lock().unwrap();
        for host in ["a-1", "a-2", "a-3"] {
            p.cluster_of.insert(host.into(), "mc1".into());
        }
        p.leaders.insert("mc1".into(), "a-3".into());
        p.unreachable.push("a-3".into());
    }
    for host in ["a-1", "a-2", "a-3"] {
        let driver = Arc::new(ProductDriver { host: host.into(), product: product.clone() });
        c.add_agent(host, &[("role", "mc"), ("cluster", "mc1")], driver)?;
    }
    c.wait_agents(3, Duration::from_secs(30)).await?;

    let id = c.submit(PLAN).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    let a3 = status.hosts.iter().find(|h| h.host_id == "a-3").expect("a-3 in the status");
    assert_eq!(a3.state, "failed", "{a3:?}");
    assert!(a3.message.contains("could not tell leader from follower"), "{a3:?}");

    let log: Vec<(String, String)> = product.lock().unwrap().log.clone();
    let a3_ran: Vec<&str> = log.iter().filter(|(h, _)| h == "a-3").map(|(_, c)| c.as_str()).collect();
    assert!(a3_ran.len() > 1, "a-3 was asked again: {a3_ran:?}");
    assert!(a3_ran.iter().all(|c| *c == "is-leader"), "nothing but its leader check ran on a-3: {a3_ran:?}");
    // The followers went on.
    for host in ["a-1", "a-2"] {
        assert!(log.iter().any(|(h, c)| h == host && c == "upgrade"), "{host} not upgraded: {log:?}");
    }

    let (spec, events) = c.event_log(&id).await?;
    if let Err(v) = invariants::check_final(&spec, &events) {
        panic!("invariants: {}", v.join("\n"));
    }
    c.shutdown().await;
    Ok(())
}

/// The plan names the member to hand over to (`{{cluster.target}}`) and
/// its port (`{{cluster.target.label.port}}`) instead of a label written on
/// every host, and reaches the agent's install root (`{{current.mc}}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchover_hands_over_to_the_member_the_templates_name() -> anyhow::Result<()> {
    let plan = PLAN
        .replace(
            r#"exec: { command: switchover, args: ["{{host}}"] }"#,
            r#"exec: { command: switchover, args: ["{{cluster.target}}", "{{cluster.target.label.port}}"] }"#,
        )
        .replace(
            r#"exec: { command: start, args: ["{{host}}"] }"#,
            r#"exec: { command: start, args: ["{{current.mc}}", "{{cluster.others}}"] }"#,
        );
    let mut c = Cluster::start(fast_runtime()).await?;
    let product = Arc::new(Mutex::new(Product::default()));
    let members = [("a-1", "7001"), ("a-2", "7002"), ("a-3", "7003")];
    {
        let mut p = product.lock().unwrap();
        for (host, _) in members {
            p.cluster_of.insert(host.into(), "mc1".into());
        }
        p.leaders.insert("mc1".into(), "a-1".into());
    }
    for (host, port) in members {
        let driver = Arc::new(ProductDriver { host: host.into(), product: product.clone() });
        c.add_agent(host, &[("role", "mc"), ("cluster", "mc1"), ("port", port)], driver)?;
    }
    c.wait_agents(3, Duration::from_secs(30)).await?;
    let id = c.submit(&plan).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");

    {
        let p = product.lock().unwrap();
        let ran = |host: &str, cmd: &str| -> Vec<Vec<String>> {
            p.log.iter().zip(&p.args).filter(|((h, c), _)| h == host && c == cmd).map(|(_, a)| a.clone()).collect()
        };
        // a-2 was upgraded first: the leader handed over to it, on its port.
        assert_eq!(ran("a-1", "switchover"), vec![vec!["a-2".to_string(), "7002".to_string()]]);
        assert_eq!(p.leaders["mc1"], "a-2");
        for (host, _) in members {
            let start = ran(host, "start");
            assert_eq!(start.len(), 1, "{host}: {start:?}");
            assert!(start[0][0].starts_with('/') && start[0][0].ends_with("/mc/current"), "{host}: {start:?}");
            let others: Vec<&str> = members.iter().map(|(h, _)| *h).filter(|h| h != &host).collect();
            assert_eq!(start[0][1], others.join(","));
        }
    }
    let (spec, events) = c.event_log(&id).await?;
    if let Err(v) = invariants::check_final(&spec, &events) {
        panic!("invariants: {}", v.join("\n"));
    }
    c.shutdown().await;
    Ok(())
}

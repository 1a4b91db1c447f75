//! Hostile plans sent to a running coordinator: too slow to plan, huge
//! numbers, deep nesting, too many groups, oversized. Each is refused with a
//! status that names the problem, creates nothing, and the coordinator keeps
//! serving agents and operators. Prints the process's RSS before and after
//! (the coordinator runs in this process).

use std::time::Duration;

use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::logs::LogCapture;
use convoy_proto::v1 as pb;
use tonic::Code;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn submit(yaml: String) -> pb::SubmitPlanRequest {
    pb::SubmitPlanRequest {
        catalogs: Default::default(),
        file_name: "hostile.yaml".into(),
        plan_yaml: yaml,
        dry_run: false,
    }
}

const GOOD: &str = r#"
name: good
version: "2.0.0"
groups:
  - name: web
    select: { role: web }
    steps:
      - exec: { command: echo, args: [hi] }
"#;

fn many_groups(n: usize) -> String {
    let mut s = String::from("name: many\nversion: \"2\"\ngroups:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: g{i}\n    hosts: [web-0]\n    steps: [{{ exec: {{ command: \"true\" }} }}]\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_too_slow_to_plan_is_refused_without_stalling_anyone() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    // A plan may take 1 ms to plan: anything real is "too slow".
    let runtime =
        convoy_coordinator::runtime::RuntimeConfig { plan_time_limit: Duration::from_millis(1), ..fast_runtime() };
    let mut c = Cluster::start(runtime).await?;
    c.add_fake_agent("web-0", &[("role", "web")], Duration::ZERO)?;
    c.wait_agents(1, Duration::from_secs(20)).await?;
    let mut op = c.operator().await?;
    let mut refused = 0;

    // Too slow to plan: refused on the time limit, not by stalling anyone.
    let err = op.submit_plan(submit(many_groups(5_000))).await.expect_err("too slow");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("longer than"), "{}", err.message());
    logs.wait_for(&["plan refused", "took too long"], Duration::from_secs(10)).await?;
    refused += 1;
    // Meanwhile agents and operators were served.
    let agents = op.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    assert!(agents.iter().all(|a| a.connected), "{agents:?}");
    assert!(op.list_rollouts(pb::ListRolloutsRequest {}).await?.into_inner().rollouts.is_empty());
    println!("plans refused as too slow: {refused}");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plans_are_refused_and_the_coordinator_keeps_serving() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("web-0", &[("role", "web")], Duration::ZERO)?;
    c.wait_agents(1, Duration::from_secs(20)).await?;
    let rss_before = rss_kib();
    let mut refused = 0;
    let mut op = c.operator().await?;
    let max = "18446744073709551615";
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("    steps:", &format!("    strategy: {{ type: rolling, soak: {max} }}\n    steps:")),
            "hostile.yaml:7: groups[0].strategy.soak",
        ),
        (
            GOOD.replace("echo, args: [hi] }", &format!("echo, args: [hi] }}\n        timeout: {max}")),
            "groups[0].steps[0].timeout",
        ),
        (format!("name: deep\nversion: \"1\"\ngroups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)), "nested"),
        (
            GOOD.replace(
                "      - exec: { command: echo, args: [hi] }\n",
                &"      - exec: { command: echo, args: [hi] }\n".repeat(1001),
            ),
            "more than the limit",
        ),
    ];
    for (yaml, expect) in cases {
        let err = op.submit_plan(submit(yaml)).await.expect_err(expect);
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(expect), "{} should name {expect}", err.message());
        refused += 1;
    }
    // A window wider than the group is the group, not an allocation.
    let wide = GOOD.replace("    steps:", "    strategy: { type: rolling, max_parallel: 100000000000 }\n    steps:");
    let mut dry = submit(wide);
    dry.dry_run = true;
    let summary: serde_json::Value = serde_json::from_str(&op.submit_plan(dry).await?.into_inner().expansion_json)?;
    assert_eq!(summary["groups"][0]["strategy"]["max_parallel"], 1, "{summary}");
    // Larger than a gRPC message may be: refused by the transport.
    let err = op.submit_plan(submit(format!("name: big\n# {}\n", "x".repeat(50 << 20)))).await.expect_err("50 MB");
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument), "{err:?}");
    refused += 1;

    // Nothing was created, and a good plan still runs to the end.
    assert!(op.list_rollouts(pb::ListRolloutsRequest {}).await?.into_inner().rollouts.is_empty());
    let id = c.submit(GOOD).await?;
    assert_eq!(c.wait_finished(&id, Duration::from_secs(30)).await?.state, "succeeded");
    let rss_after = rss_kib();
    println!("hostile plans refused: {refused}; RSS before {rss_before} KiB, after {rss_after} KiB");
    c.shutdown().await;
    Ok(())
}

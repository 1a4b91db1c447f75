//! Facts and estimates end to end, in process (coordinator and agents over
//! real gRPC): an agent started with `--fact edition=pro` reports it, the
//! coordinator lists it and expands `{{fact.edition}}` with it, and once a
//! rollout has run, `StepTimes` and a dry-run `SubmitPlan` give the steps'
//! measured times.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_fleet::inprocess::{Cluster, FakeDriver, fast_runtime};
use convoy_proto::v1 as pb;

const PLAN: &str = r#"
name: edition-upgrade
version: "2.0"
groups:
  - name: app
    select: { role: app }
    steps:
      - name: install
        exec: { command: install, args: ["--edition={{fact.edition}}"] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_facts_reach_plans_and_step_times_reach_estimates() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for (id, edition) in [("app-1", "pro"), ("app-2", "community")] {
        let mut config = c.agent_config(id, &[("role", "app")]);
        config.facts = BTreeMap::from([("edition".to_string(), edition.to_string())]);
        let driver = Arc::new(FakeDriver {
            host: id.to_string(),
            runs: c.runs.clone(),
            delay: Duration::from_millis(5),
            installed: Mutex::new(BTreeMap::new()),
            ..Default::default()
        });
        c.start_agent(config, driver)?;
    }
    c.wait_agents(2, Duration::from_secs(30)).await?;

    let mut op = c.operator().await?;
    let agents = op.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    let app1 = agents.iter().find(|a| a.agent_id == "app-1").expect("app-1 listed");
    let facts = app1.facts.clone().unwrap_or_default();
    assert_eq!(facts.custom.get("edition").map(String::as_str), Some("pro"));
    assert!(!facts.arch.is_empty(), "the built-in facts are still there");

    let id = c.submit(PLAN).await?;
    let s = c.wait_finished(&id, Duration::from_secs(30)).await?;
    assert_eq!(s.state, "succeeded", "{s:?}");
    let mut args: Vec<(String, Vec<String>)> =
        c.runs.lock().unwrap().iter().map(|r| (r.host.clone(), r.args.clone())).collect();
    args.sort();
    assert_eq!(
        args,
        [
            ("app-1".to_string(), vec!["--edition=pro".to_string()]),
            ("app-2".to_string(), vec!["--edition=community".to_string()]),
        ]
    );

    let times = op.step_times(pb::StepTimesRequest { plan_name: "edition-upgrade".into() }).await?.into_inner();
    assert_eq!(times.steps.len(), 1, "{times:?}");
    let t = &times.steps[0];
    assert_eq!((t.group.as_str(), t.step.as_str(), t.runs), ("app", "install", 2));
    let other = op.step_times(pb::StepTimesRequest { plan_name: "other".into() }).await?.into_inner();
    assert!(other.steps.is_empty());

    let dry = op
        .submit_plan(pb::SubmitPlanRequest {
            file_name: "plan.yaml".into(),
            plan_yaml: PLAN.into(),
            dry_run: true,
            catalogs: Default::default(),
        })
        .await?
        .into_inner();
    let summary: serde_json::Value = serde_json::from_str(&dry.expansion_json)?;
    let step = &summary["groups"][0]["paths"][0]["steps"][0];
    assert_eq!(step["source"], "measured", "{summary:#}");
    assert_eq!(step["runs"], 2);
    assert_eq!(step["estimate_ms"], t.median_ms);
    assert_eq!(summary["groups"][0]["paths"][0]["hosts"], serde_json::json!(["app-1", "app-2"]));

    c.shutdown().await;
    Ok(())
}

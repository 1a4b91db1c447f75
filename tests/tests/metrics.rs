//! `/metrics` scraped during an in-process rollout: the values move as the
//! rollout runs (hosts change state, the step histogram grows, agents
//! connected equals the agents), and scraping needs a viewer token.

use std::time::Duration;

use convoy_coordinator::operators::{self, Role};
use convoy_fleet::https;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::wait::wait_until;

const PLAN: &str = r#"
name: metrics
version: "2.0.0"
component: svc
groups:
  - name: web
    select: { tier: web }
    strategy: { max_parallel: 2, max_failures: 0 }
    steps:
      - name: drain
        exec: { command: "true" }
      - name: restart
        exec: { command: "true" }
"#;

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

async fn scrape(c: &Cluster, ca: &str, token: &str) -> anyhow::Result<String> {
    let auth = format!("Bearer {token}");
    let a = https::request("GET", &format!("{}/metrics", c.http_url), ca, &[("Authorization", &auth)], "").await?;
    anyhow::ensure!(a.status == 200, "scrape answered {}: {}", a.status, a.body);
    anyhow::ensure!(a.header("content-type").is_some_and(|t| t.contains("openmetrics")), "{:?}", a.headers);
    Ok(a.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_rollout() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for i in 0..6 {
        c.add_fake_agent(&format!("web-{i}"), &[("tier", "web")], Duration::from_millis(150))?;
    }
    c.wait_agents(6, Duration::from_secs(30)).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let viewer = operators::create(&c.data_dir, "prometheus", Role::Viewer, convoy_common::model::UnixMillis(1), None)?;

    // No token, a wrong token: 401, and the refusals are counted.
    let url = format!("{}/metrics", c.http_url);
    let none = https::request("GET", &url, &ca, &[], "").await?;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = https::request("GET", &url, &ca, &[("Authorization", "Bearer nope")], "").await?;
    assert_eq!(wrong.status, 401);

    let before = scrape(&c, &ca, &viewer).await?;
    assert_eq!(value(&before, "convoy_agents_connected", &[]), 6.0, "{before}");
    assert!(before.contains("convoy_agents_connected{agent_version=\""), "{before}");
    assert_eq!(value(&before, "convoy_requests_refused_total", &[("reason", "operator_token")]), 2.0, "{before}");
    assert_eq!(value(&before, "convoy_step_duration_seconds_count", &[]), 0.0);

    let id = c.submit(PLAN).await?;
    let hosts =
        |text: &str, state: &str| value(text, "convoy_hosts", &[("rollout", &id), ("group", "web"), ("state", state)]);
    // Mid-rollout: some hosts running, some pending, at most two in flight.
    let mid = wait_until(Duration::from_secs(30), "a scrape showing hosts in flight", || {
        let (c, ca, viewer) = (&c, &ca, &viewer);
        async move {
            let t = scrape(c, ca, viewer).await.ok()?;
            (value(&t, "convoy_hosts", &[("state", "running")]) > 0.0).then_some(t)
        }
    })
    .await?;
    assert!(hosts(&mid, "running") <= 2.0, "{mid}");
    assert_eq!(value(&mid, "convoy_rollouts", &[("state", "running")]), 1.0, "{mid}");
    let pending_mid = hosts(&mid, "pending");
    assert!(pending_mid >= 1.0, "the rollout had barely started: {mid}");
    let total: f64 = ["pending", "running", "succeeded", "soaking"].iter().map(|s| hosts(&mid, s)).sum();
    assert_eq!(total, 6.0, "{mid}");

    c.wait_finished(&id, Duration::from_secs(60)).await?;
    let after = scrape(&c, &ca, &viewer).await?;
    assert_eq!(hosts(&after, "succeeded"), 6.0, "{after}");
    assert_eq!(hosts(&after, "pending"), 0.0);
    assert!(hosts(&after, "pending") < pending_mid, "hosts by state moved");
    assert_eq!(value(&after, "convoy_rollouts", &[("state", "succeeded")]), 1.0, "{after}");
    assert_eq!(value(&after, "convoy_rollouts", &[("state", "running")]), 0.0);
    // 6 hosts x 2 exec steps, every one timed.
    let steps = &[("kind", "exec"), ("outcome", "succeeded")];
    assert_eq!(value(&after, "convoy_step_duration_seconds_count", steps), 12.0, "{after}");
    // (The fake driver reports no duration, so the sum stays 0 here.)
    assert!(after.contains("convoy_step_duration_seconds_bucket{le=\"0.1\",kind=\"exec\",outcome=\"succeeded\"} 12"));
    assert!(value(&after, "convoy_event_log_flush_seconds_count", &[]) > 0.0);
    assert!(value(&after, "convoy_event_log_append_seconds_count", &[]) > 0.0);
    assert!(after.contains("convoy_runtime_queue_depth "), "{after}");

    // An agent lost shows at once in the next scrape.
    c.kill_agent("web-0").await;
    wait_until(Duration::from_secs(10), "the lost agent in /metrics", || {
        let (c, ca, viewer) = (&c, &ca, &viewer);
        async move {
            let t = scrape(c, ca, viewer).await.ok()?;
            (value(&t, "convoy_agents_connected", &[]) == 5.0 && value(&t, "convoy_agents_disconnected", &[]) == 1.0)
                .then_some(())
        }
    })
    .await?;
    c.shutdown().await;
    Ok(())
}

//! TLS session resumption across a coordinator restart: agents keep the
//! tickets the coordinator gave them, the restarted coordinator (same data
//! directory) opens them, and a resumed session is checked like a new one
//! (a revoked certificate stays refused).

use std::time::Duration;

use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::logs::LogCapture;
use convoy_fleet::wait::wait_until;
use convoy_proto::v1 as pb;

const WAIT: Duration = Duration::from_secs(20);

const PLAN: &str = r#"
name: after-restart
version: "2.0.0"
groups:
  - name: web
    select: { role: web }
    strategy: { type: rolling, max_parallel: 3 }
    steps:
      - name: noop
        exec: { command: "true" }
"#;

/// The value of the `/metrics` sample `name{labels}`, 0 if absent.
async fn sample(c: &Cluster, series: &str) -> anyhow::Result<f64> {
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let token = format!("Bearer {}", c.operator_token);
    let url = format!("{}/metrics", c.http_url);
    let scraped = convoy_fleet::https::request("GET", &url, &ca, &[("Authorization", &token)], "").await?;
    Ok(convoy_fleet::https::sample(&scraped.body, series).unwrap_or(0.0))
}

/// The hosts with a live session.
async fn live(c: &Cluster) -> anyhow::Result<Vec<String>> {
    let mut op = c.operator().await?;
    let agents = op.list_agents(pb::ListAgentsRequest::default()).await?.into_inner().agents;
    Ok(agents.into_iter().filter(|a| a.connected).map(|a| a.agent_id).collect())
}

async fn connected(c: &Cluster) -> anyhow::Result<usize> {
    Ok(live(c).await?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_its_agents_sessions() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    for id in ["web-0", "web-1", "web-2"] {
        c.add_fake_agent(id, &[("role", "web")], Duration::from_millis(5))?;
    }
    c.wait_agents(3, WAIT).await?;
    // First sessions are full handshakes (their enrolments too).
    assert!(sample(&c, "convoy_tls_handshakes_total{kind=\"full\"}").await? >= 3.0);
    let keys = convoy_coordinator::tickets::tickets_path(&c.data_dir);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&keys)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "{} readable by others", keys.display());

    c.restart_coordinator(fast_runtime()).await?;
    // Resumed handshakes are counted before the session is open; wait for
    // both, then check that every agent resumed.
    wait_until(WAIT, "three agents reconnected", || async { (connected(&c).await.ok()? == 3).then_some(()) }).await?;
    let resumed = sample(&c, "convoy_tls_handshakes_total{kind=\"resumed\"}").await?;
    assert!(resumed >= 3.0, "{resumed} resumed handshakes for 3 agents");

    // A rollout over the resumed sessions works as ever.
    let id = c.submit(PLAN).await?;
    let done = c.wait_finished(&id, WAIT).await?;
    assert_eq!(done.state, "succeeded", "{}", done.message);
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_on_a_resumed_session() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("web-0", &[], Duration::from_millis(5))?;
    c.add_fake_agent("web-1", &[], Duration::from_millis(5))?;
    c.wait_agents(2, WAIT).await?;

    // The revoked agent's session ends; it reconnects with its ticket (a
    // resumed handshake, so no certificate check by TLS) and is refused by
    // the enrolment record all the same, again and again.
    let mut op = c.operator().await?;
    op.revoke_agent(pb::RevokeAgentRequest { host_id: "web-0".into() }).await?;
    logs.wait_for(&["agent session refused", "web-0", "certificate revoked"], WAIT).await?;
    wait_until(WAIT, "resumed handshakes refused twice", || async {
        let refused = sample(&c, "convoy_requests_refused_total{reason=\"agent_session\"}").await.ok()?;
        (refused >= 2.0).then_some(())
    })
    .await?;
    let resumed = sample(&c, "convoy_tls_handshakes_total{kind=\"resumed\"}").await?;
    assert!(resumed >= 2.0, "the refused reconnects were not resumed sessions ({resumed} resumed)");
    let only_web_1 = || async { (live(&c).await.ok()? == ["web-1"]).then_some(()) };
    wait_until(WAIT, "only web-1 connected", only_web_1).await?;

    // web-1, not revoked, resumes after a restart as before; web-0 stays out.
    c.restart_coordinator(fast_runtime()).await?;
    wait_until(WAIT, "web-1 reconnected, web-0 not", || async { (live(&c).await.ok()? == ["web-1"]).then_some(()) })
        .await?;
    c.shutdown().await;
    Ok(())
}

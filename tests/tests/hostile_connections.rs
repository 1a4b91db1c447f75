//! Hostile connections: idle TCP connections, half-done TLS handshakes, a
//! flood past the connection cap. Each is dropped on its timeout (or at once
//! past the cap), logged, and the coordinator keeps serving agents and
//! operators.

use std::time::Duration;

use convoy_coordinator::connections::Limits;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::logs::LogCapture;
use convoy_fleet::wait::wait_until;
use convoy_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closed `s` (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn addr(c: &Cluster) -> String {
    c.url.trim_start_matches("https://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_done_handshakes_are_dropped_and_others_are_served() -> anyhow::Result<()> {
    let limits = Limits { handshake_timeout: Duration::from_millis(300), ..Limits::default() };
    let mut c = Cluster::start_with(fast_runtime(), limits).await?;
    c.add_fake_agent("web-0", &[("role", "web")], Duration::ZERO)?;
    c.wait_agents(1, Duration::from_secs(20)).await?;

    // 200 connections that never speak, and 20 that start a TLS handshake
    // (a ClientHello record header, then nothing).
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr(&c)).await?);
    }
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr(&c)).await?;
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await?;
        idle.push(s);
    }
    // While they hang, operators and agents are served.
    let mut op = c.operator().await?;
    let agents = op.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    assert!(agents.iter().all(|a| a.connected), "{agents:?}");
    // And then every one of them is dropped by the handshake timeout.
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(20)).await, "a silent connection was kept open");
    }
    let agents = op.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    assert!(agents.iter().all(|a| a.connected), "{agents:?}");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_logged() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let limits =
        Limits { handshake_timeout: Duration::from_millis(500), max_connections: Some(16), ..Limits::default() };
    let c = Cluster::start_with(fast_runtime(), limits).await?;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(addr(&c)).await?);
    }
    // The cap is reached: the next one is closed without waiting for a timeout.
    let mut extra = wait_until(Duration::from_secs(10), "a connection past the cap", || async {
        let mut s = TcpStream::connect(addr(&c)).await.ok()?;
        closed_within(&mut s, Duration::from_millis(200)).await.then_some(s)
    })
    .await?;
    assert!(closed_within(&mut extra, Duration::from_millis(100)).await);
    logs.wait_for(&["connection refused", "cap"], Duration::from_secs(10)).await?;
    // The held ones time out, the slots free up, operators get in again.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(20)).await);
    }
    let mut op = c.operator().await?;
    op.list_rollouts(pb::ListRolloutsRequest {}).await?;
    c.shutdown().await;
    Ok(())
}

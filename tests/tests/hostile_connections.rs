//! Hostile connections: idle TCP connections, half-done TLS handshakes, a
//! flood past the connection cap. Each is dropped on its timeout (or at once
//! past the cap), logged, and the coordinator keeps serving agents and
//! operators.

use std::sync::Arc;
use std::time::Duration;

use convoy_coordinator::connections::Limits;
use convoy_coordinator::handshakes::SLOT_TIME;
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

/// A ClientHello for the coordinator, as a client that will then say nothing more.
fn client_hello(ca_pem: &str) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_pem_certs(ca_pem)?);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(convoy_coordinator::tls::DEFAULT_SERVER_NAME)?.to_owned();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    Ok(hello)
}

fn rustls_pem_certs(pem: &str) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// Handshakes run one at a time here (`handshakes_at_once: 1`) with a
/// minute to finish. A peer that sends its ClientHello and then stalls
/// holds the slot for a second ([`SLOT_TIME`]), then is passed over; peers
/// that never send a ClientHello do not take it at all. An operator behind
/// them all gets in long before any of them times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalling_peers_do_not_keep_the_handshake_slots() -> anyhow::Result<()> {
    let limits = Limits { handshake_timeout: Duration::from_secs(60), handshakes_at_once: 1, ..Limits::default() };
    let c = Cluster::start_with(fast_runtime(), limits).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let hello = client_hello(&ca)?;
    let mut peers = Vec::new();
    // The first staller: once the server's answer arrives it holds the slot.
    let sent = std::time::Instant::now();
    let mut first = TcpStream::connect(addr(&c)).await?;
    first.write_all(&hello).await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf)).await??;
    assert!(n > 0, "the server closed instead of answering the ClientHello");
    peers.push(first);
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&c)).await?;
        s.write_all(&hello).await?;
        peers.push(s);
    }
    for _ in 0..50 {
        peers.push(TcpStream::connect(addr(&c)).await?);
    }
    let mut op = tokio::time::timeout(Duration::from_secs(20), c.operator()).await??;
    tokio::time::timeout(Duration::from_secs(20), op.list_rollouts(pb::ListRolloutsRequest {})).await??;
    // It waited for the first staller's slot to be taken back…
    let waited = sent.elapsed();
    assert!(waited >= SLOT_TIME, "the operator got in after {waited:?}, while a staller held the only slot");
    // …and the stallers were passed over, not timed out.
    for s in &mut peers {
        assert!(!closed_within(s, Duration::from_millis(1)).await, "a peer was closed after {waited:?}");
    }
    c.shutdown().await;
    Ok(())
}

/// A client certificate the coordinator's CA did not sign fails the
/// handshake; the refusal is logged with the peer's address and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_logged_and_counted() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let c = Cluster::start_with(fast_runtime(), Limits::default()).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;

    // Another CA, and a certificate for a host of the fleet signed by it.
    let other_key = rcgen::KeyPair::generate()?;
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new())?;
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_cert = other.self_signed(&other_key)?;
    let issuer = rcgen::Issuer::new(other, &other_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["web-0".to_string()])?.signed_by(&key, &issuer)?;

    // First a client that does not trust the coordinator (it trusts only the
    // other CA): it ends the handshake itself, which is not a refusal.
    let mut theirs = rustls::RootCertStore::empty();
    theirs.add(other_cert.der().clone())?;
    let distrustful = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(theirs)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(convoy_coordinator::tls::DEFAULT_SERVER_NAME)?.to_owned();
    let tcp = TcpStream::connect(addr(&c)).await?;
    let theirs_local = tcp.local_addr()?;
    let ended = tokio_rustls::TlsConnector::from(Arc::new(distrustful)).connect(name, tcp).await;
    assert!(ended.is_err(), "the client accepted a server its CA did not sign");
    logs.wait_for(&["TLS handshake ended by the client", &theirs_local.to_string()], Duration::from_secs(10)).await?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_pem_certs(&ca)?);
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der().clone()], key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(convoy_coordinator::tls::DEFAULT_SERVER_NAME)?.to_owned();
    let tcp = TcpStream::connect(addr(&c)).await?;
    let local = tcp.local_addr()?;
    // TLS 1.3: the client is done before the server has checked its
    // certificate; the refusal shows as the server closing.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await?;
        assert!(matches!(read, Ok(0) | Err(_)), "the coordinator answered: {read:?}");
    }
    logs.wait_for(&["TLS handshake refused", &local.to_string()], Duration::from_secs(10)).await?;

    let token = format!("Bearer {}", c.operator_token);
    let url = format!("{}/metrics", c.http_url);
    let scraped = convoy_fleet::https::request("GET", &url, &ca, &[("Authorization", &token)], "").await?;
    let refused = convoy_fleet::https::sample(&scraped.body, "convoy_requests_refused_total{reason=\"tls_handshake\"}");
    assert_eq!(refused, Some(1.0), "{}", scraped.body);
    c.shutdown().await;
    Ok(())
}

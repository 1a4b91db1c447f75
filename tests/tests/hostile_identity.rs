//! Hostile peers against identity: an impostor enrolling as an enrolled host,
//! a second session for a live host, a revoked certificate, join tokens
//! outside their scope, a viewer acting, a forged operator name. Each is
//! refused with a status, logged with who and from where, changes nothing,
//! and the coordinator keeps serving agents and operators.

use std::time::Duration;

use convoy_agent::config::AgentConfig;
use convoy_coordinator::operators::{self, Role};
use convoy_coordinator::store::Store;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::logs::LogCapture;
use convoy_fleet::operator::connect_operator;
use convoy_fleet::wait::wait_until;
use convoy_proto::v1 as pb;
use convoy_proto::v1::agent_service_client::AgentServiceClient;
use convoy_tests::{raw_agent_client, raw_agent_config};
use tokio_stream::StreamExt;
use tonic::Code;

const LOG_WAIT: Duration = Duration::from_secs(10);

fn agent_config(c: &Cluster, host: &str, state: &str, token: &str) -> AgentConfig {
    raw_agent_config(c, host, state, token)
}

async fn client_for(cfg: &AgentConfig) -> anyhow::Result<AgentServiceClient<tonic::transport::Channel>> {
    raw_agent_client(cfg).await
}

fn hello(id: &str) -> pb::AgentMessage {
    convoy_tests::hello(id, &[("role", "web")])
}

async fn open_session(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    host: &str,
) -> Result<tonic::Streaming<pb::CoordinatorMessage>, tonic::Status> {
    let stream = tokio_stream::iter(vec![hello(host)]).chain(tokio_stream::pending());
    Ok(client.session(stream).await?.into_inner())
}

/// A working session: hello, then a heartbeat every 50 ms (a session that
/// goes quiet may be replaced by the host's next one) until the returned
/// task is aborted, which ends the stream.
async fn open_working_session(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    host: &str,
) -> Result<(tonic::Streaming<pb::CoordinatorMessage>, tokio::task::JoinHandle<()>), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = hello(host);
    let beats = tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        for sequence in 1.. {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let beat = pb::Heartbeat { sequence, running: vec![] };
            let up = pb::AgentMessage { kind: Some(pb::agent_message::Kind::Heartbeat(beat)) };
            if tx.send(up).await.is_err() {
                return;
            }
        }
    });
    let stream = client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok((stream, beats))
}

async fn next_message(
    s: &mut tonic::Streaming<pb::CoordinatorMessage>,
) -> anyhow::Result<Option<pb::CoordinatorMessage>> {
    Ok(tokio::time::timeout(Duration::from_secs(10), s.message()).await??)
}

const ONE_STEP: &str = r#"
name: touch
version: "2.0.0"
groups:
  - name: web
    select: { role: web }
    steps:
      - exec: { command: echo, args: [hi] }
"#;

async fn join_token(c: &Cluster, uses: u32, hosts: &str) -> anyhow::Result<String> {
    let mut op = c.operator().await?;
    let r = op
        .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 0, uses, hosts: hosts.into() })
        .await?
        .into_inner();
    Ok(r.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_host_cannot_be_enrolled_again_by_an_impostor() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("web-0", &[("role", "web")], Duration::ZERO)?;
    c.wait_agents(1, Duration::from_secs(20)).await?;

    // The impostor has a valid, fleet-wide join token and its own key.
    let token = join_token(&c, 10, "").await?;
    let cfg = agent_config(&c, "web-0", "impostor", &token);
    let err = convoy_agent::enroll::ensure_identity(&cfg).await.expect_err("an enrolled host id is refused");
    assert!(err.to_string().contains("already enrolled"), "{err}");
    let line = logs.wait_for(&["enrolment refused", "web-0", "127.0.0.1"], LOG_WAIT).await?;
    assert!(line.contains("already enrolled"), "{line}");

    // Nothing changed: the real agent still gets and runs web-0's steps.
    let id = c.submit(ONE_STEP).await?;
    let s = c.wait_finished(&id, Duration::from_secs(30)).await?;
    assert_eq!(s.state, "succeeded");
    let runs = c.runs.lock().unwrap().clone();
    assert_eq!(runs.iter().filter(|r| r.host == "web-0").count(), 1, "{runs:?}");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_for_a_live_host_is_refused_and_the_first_keeps_its_steps() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let c = Cluster::start(fast_runtime()).await?;
    let cfg = agent_config(&c, "web-1", "web-1", &c.join_token);
    let mut first = client_for(&cfg).await?;
    let (mut stream, beats) = open_working_session(&mut first, "web-1").await?;
    assert!(matches!(
        next_message(&mut stream).await?.and_then(|m| m.kind),
        Some(pb::coordinator_message::Kind::Welcome(_))
    ));
    c.wait_agents(1, Duration::from_secs(10)).await?;

    // The same certificate on another connection (a copied state dir).
    let mut second = client_for(&cfg).await?;
    let err = open_session(&mut second, "web-1").await.expect_err("a second session is refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("already live"), "{}", err.message());
    logs.wait_for(&["agent session refused", "web-1", "127.0.0.1", "already live"], LOG_WAIT).await?;

    // The first session, not the second, receives the host's step.
    c.submit(ONE_STEP).await?;
    let got = loop {
        match next_message(&mut stream).await?.and_then(|m| m.kind) {
            Some(pb::coordinator_message::Kind::RunStep(r)) => break r,
            Some(_) => continue,
            None => anyhow::bail!("the first session ended"),
        }
    };
    assert!(got.execution_id.contains("web-1"), "{got:?}");

    // Once the first session is gone, the host can come back.
    beats.abort();
    drop(stream);
    drop(first);
    wait_until(Duration::from_secs(20), "the host to reconnect", || {
        let mut second = second.clone();
        async move { open_session(&mut second, "web-1").await.ok() }
    })
    .await?;
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_stops_working_at_once_and_the_host_may_enrol_again() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let c = Cluster::start(fast_runtime()).await?;
    let old_cfg = agent_config(&c, "web-2", "old-machine", &c.join_token);
    let mut old = client_for(&old_cfg).await?;
    let mut stream = open_session(&mut old, "web-2").await?;
    next_message(&mut stream).await?;

    let mut op = c.operator().await?;
    let r = op.revoke_agent(pb::RevokeAgentRequest { host_id: "web-2".into() }).await?.into_inner();
    assert_eq!(r.fingerprint.len(), 64);
    // The live session ends.
    let end =
        tokio::time::timeout(Duration::from_secs(10), async { while let Ok(Some(_)) = stream.message().await {} })
            .await;
    assert!(end.is_ok(), "the revoked host's session did not end");

    // The old certificate is refused for sessions and artifact fetches.
    let err = open_session(&mut old, "web-2").await.expect_err("revoked");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    logs.wait_for(&["agent session refused", "web-2", "certificate revoked", "127.0.0.1"], LOG_WAIT).await?;
    let identity = convoy_agent::enroll::ensure_identity(&old_cfg).await?;
    let ca = convoy_agent::tls::read_ca(&old_cfg.ca_file)?;
    let ch =
        convoy_agent::tls::connect(&old_cfg, convoy_agent::tls::client_tls(&old_cfg, &ca, Some(&identity))).await?;
    let mut artifacts = pb::artifact_service_client::ArtifactServiceClient::new(ch);
    let err = artifacts
        .fetch(pb::FetchRequest { name: "x".into(), version: "1".into(), ..Default::default() })
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    logs.wait_for(&["artifact fetch refused", "web-2"], LOG_WAIT).await?;

    // A new machine enrols under the same host id; the old one stays refused.
    let token = join_token(&c, 1, "web-2").await?;
    let new_cfg = agent_config(&c, "web-2", "new-machine", &token);
    let mut new = client_for(&new_cfg).await?;
    let mut s = open_session(&mut new, "web-2").await?;
    next_message(&mut s).await?;
    let err = open_session(&mut old, "web-2").await.expect_err("replaced");
    assert!(err.message().contains("replaced") || err.message().contains("revoked"), "{}", err.message());
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_single_use_by_default_and_keep_to_their_scope() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let c = Cluster::start(fast_runtime()).await?;

    let once = join_token(&c, 0, "").await?;
    convoy_agent::enroll::ensure_identity(&agent_config(&c, "a-1", "a-1", &once)).await?;
    let err = convoy_agent::enroll::ensure_identity(&agent_config(&c, "a-2", "a-2", &once)).await.expect_err("used");
    assert!(err.to_string().contains("used up"), "{err}");

    let web = join_token(&c, 2, "web-*").await?;
    let err = convoy_agent::enroll::ensure_identity(&agent_config(&c, "db-1", "db-1", &web)).await.expect_err("scope");
    assert!(err.to_string().contains("web-*"), "{err}");
    logs.wait_for(&["enrolment refused", "db-1", "web-*"], LOG_WAIT).await?;
    // The refusal spent nothing: both web hosts still enrol, a third does not.
    convoy_agent::enroll::ensure_identity(&agent_config(&c, "web-a", "web-a", &web)).await?;
    convoy_agent::enroll::ensure_identity(&agent_config(&c, "web-b", "web-b", &web)).await?;
    let err = convoy_agent::enroll::ensure_identity(&agent_config(&c, "web-c", "web-c", &web)).await.expect_err("used");
    assert!(err.to_string().contains("used up"), "{err}");

    // Out-of-range scopes are bad requests.
    let mut op = c.operator().await?;
    let err = op
        .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 30 * 24 * 3600, uses: 1, hosts: String::new() })
        .await
        .expect_err("too long");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = op
        .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 60, uses: 1, hosts: "a/b".into() })
        .await
        .expect_err("bad pattern");
    assert_eq!(err.code(), Code::InvalidArgument);
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_act_and_actions_are_recorded_under_the_token_name() -> anyhow::Result<()> {
    let logs = LogCapture::install();
    let mut c = Cluster::start(fast_runtime()).await?;
    let now = convoy_coordinator::runtime::Clock::system().now();
    let alice = operators::create(&c.data_dir, "alice", Role::Operator, now, None)?;
    let bob = operators::create(&c.data_dir, "bob", Role::Viewer, now, None)?;
    c.add_fake_agent("web-9", &[("role", "web")], Duration::from_millis(200))?;
    c.wait_agents(1, Duration::from_secs(20)).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;

    let mut viewer = connect_operator(&c.url, &ca, &bob).await?;
    assert!(!viewer.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents.is_empty());
    let submit = |dry_run| pb::SubmitPlanRequest {
        catalogs: Default::default(),
        file_name: "t.yaml".into(),
        plan_yaml: ONE_STEP.into(),
        dry_run,
    };
    viewer.submit_plan(submit(true)).await?; // `convoy plan` is a read
    let err = viewer.submit_plan(submit(false)).await.expect_err("a viewer cannot apply");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    logs.wait_for(&["role too low", "bob", "127.0.0.1"], LOG_WAIT).await?;

    // Alice applies and pauses, claiming to be someone else in a header.
    let mut op = connect_operator(&c.url, &ca, &alice).await?;
    let mut req = tonic::Request::new(submit(false));
    req.metadata_mut().insert("x-convoy-user", "mallory".parse()?);
    let id = op.submit_plan(req).await?.into_inner().rollout_id;
    let err = viewer
        .control(pb::ControlRequest {
            rollout_id: id.clone(),
            action: pb::ControlAction::Pause as i32,
            reason: String::new(),
        })
        .await
        .expect_err("a viewer cannot pause");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut req = tonic::Request::new(pb::ControlRequest {
        rollout_id: id.clone(),
        action: pb::ControlAction::Abort as i32,
        reason: String::new(),
    });
    req.metadata_mut().insert("x-convoy-user", "mallory".parse()?);
    op.control(req).await?;

    // A revoked token stops working on the next call.
    operators::revoke(&c.data_dir, "alice")?;
    let err = op.list_agents(pb::ListAgentsRequest {}).await.expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    logs.wait_for(&["operator call refused", "unknown or revoked"], LOG_WAIT).await?;

    c.wait_finished(&id, Duration::from_secs(30)).await?;
    c.stop_coordinator().await?;
    let store = convoy_coordinator::server::open_store(&c.data_dir)?;
    let record = store.rollouts()?.into_iter().find(|r| r.id == id).expect("stored");
    assert_eq!(record.created_by, "alice");
    let by: Vec<String> = store
        .events(&id)?
        .into_iter()
        .filter_map(|e| match e.event {
            convoy_common::engine::Event::Operator { by, .. } => Some(by),
            _ => None,
        })
        .collect();
    assert_eq!(by, vec!["alice".to_string()], "the token's name, never the header");
    Ok(())
}

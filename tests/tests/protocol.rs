//! The coordinator's edges against misbehaving peers: callers without a
//! certificate or token, an agent speaking for another host, malformed
//! session messages, bad join tokens. Each must get a gRPC status, and the
//! coordinator must keep serving.

use std::time::Duration;

use convoy_agent::config::AgentConfig;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;
use convoy_proto::v1::agent_service_client::AgentServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;

fn agent_config(c: &Cluster, host: &str) -> AgentConfig {
    convoy_tests::raw_agent_config(c, host, host, &c.join_token)
}

/// A client holding an enrolled certificate for `host`.
async fn enrolled_client(c: &Cluster, host: &str) -> anyhow::Result<AgentServiceClient<tonic::transport::Channel>> {
    convoy_tests::raw_agent_client(&agent_config(c, host)).await
}

fn hello(id: &str) -> pb::AgentMessage {
    convoy_tests::hello(id, &[])
}

async fn open_session(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    first: Vec<pb::AgentMessage>,
) -> Result<tonic::Streaming<pb::CoordinatorMessage>, tonic::Status> {
    // Keep the request stream open after the given messages, like a real agent.
    let stream = tokio_stream::iter(first).chain(tokio_stream::pending());
    Ok(client.session(stream).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_get_statuses_and_the_coordinator_keeps_serving() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;

    // An agent may only speak for the host its certificate names.
    let mut client = enrolled_client(&c, "web-1").await?;
    let err = open_session(&mut client, vec![hello("db-1")]).await.expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The first message must be a hello.
    let hb = pb::AgentMessage { kind: Some(pb::agent_message::Kind::Heartbeat(pb::Heartbeat::default())) };
    let err = open_session(&mut client, vec![hb]).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // An empty message (a kind from the future, or garbage) is not a hello either.
    let err = open_session(&mut client, vec![pb::AgentMessage { kind: None }]).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A proper session still works afterwards, and malformed results inside
    // it are dropped without ending it.
    let mut stream = open_session(
        &mut client,
        vec![
            hello("web-1"),
            pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::StepResult(pb::StepResult {
                    execution_id: String::new(),
                    status: 99,
                    ..Default::default()
                })),
            },
        ],
    )
    .await?;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await??;
    assert!(matches!(first.and_then(|m| m.kind), Some(pb::coordinator_message::Kind::Welcome(_))));
    let mut op = c.operator().await?;
    let agents = op.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    assert!(agents.iter().any(|a| a.agent_id == "web-1" && a.connected), "{agents:?}");

    // Enrolment with a wrong join token is refused.
    let mut cfg = agent_config(&c, "intruder");
    cfg.join_token = Some("not-a-token".into());
    let err = convoy_agent::enroll::ensure_identity(&cfg).await.expect_err("refused");
    assert!(err.to_string().to_lowercase().contains("token"), "{err}");

    // A session without a client certificate is refused.
    let cfg = agent_config(&c, "anon");
    let ca = convoy_agent::tls::read_ca(&cfg.ca_file)?;
    let tls = convoy_agent::tls::client_tls(&cfg, &ca, None);
    match convoy_agent::tls::connect(&cfg, tls).await {
        // With TLS 1.3 the refusal may come at the handshake or at the first call.
        Err(_) => {}
        Ok(ch) => {
            let mut anon = AgentServiceClient::new(ch);
            let err = open_session(&mut anon, vec![hello("anon")]).await.expect_err("refused");
            assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        }
    }

    // Operator calls need the token.
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name(convoy_coordinator::tls::DEFAULT_SERVER_NAME);
    let ch = tonic::transport::Channel::from_shared(c.url.clone())?.tls_config(tls)?.connect().await?;
    let mut no_token = pb::operator_service_client::OperatorServiceClient::new(ch);
    let err = no_token.list_agents(pb::ListAgentsRequest {}).await.expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated);

    // A plan that does not validate is refused with the file and line, and creates nothing.
    let err = op
        .submit_plan(pb::SubmitPlanRequest {
 catalogs: Default::default(),
            file_name: "bad.yaml".into(),
            plan_yaml: "name: x\nversion: \"1\"\ngroups:\n  - name: a\n    select: { role: nothing }\n    steps:\n      - exec: { command: \"true\" }\n".into(),
            dry_run: false,
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("bad.yaml:5"), "{}", err.message());
    assert!(err.message().contains("matches no host"), "{}", err.message());
    let rollouts = op.list_rollouts(pb::ListRolloutsRequest {}).await?.into_inner().rollouts;
    assert!(rollouts.is_empty(), "no rollout may be created: {rollouts:?}");

    c.stop_coordinator().await?;
    Ok(())
}

//! Helpers only the cross-component tests need, on top of the fleet harness
//! (`convoy_fleet`, which holds the clusters, fleets and waits): a
//! hand-made agent peer, for tests that speak the agent protocol themselves
//! to an in-process [`Cluster`].

use convoy_fleet::inprocess::Cluster;
use convoy_proto::v1 as pb;
use tonic::transport::Channel;

/// The configuration of a hand-made agent peer for `host`, with its own
/// state directory `state` under the cluster's directory, enrolling with `token`.
pub fn raw_agent_config(c: &Cluster, host: &str, state: &str, token: &str) -> convoy_agent::config::AgentConfig {
    let mut cfg = convoy_agent::config::AgentConfig::new(
        c.url.clone(),
        c.ca_file.clone(),
        host,
        c.dir.path().join("raw").join(state),
    );
    cfg.join_token = Some(token.to_string());
    cfg
}

/// A hand-made agent peer: a client holding the certificate enrolled (once,
/// then kept in its state directory) for `cfg`'s host.
pub async fn raw_agent_client(
    cfg: &convoy_agent::config::AgentConfig,
) -> anyhow::Result<pb::agent_service_client::AgentServiceClient<Channel>> {
    let identity = convoy_agent::enroll::ensure_identity(cfg).await?;
    let ca = convoy_agent::tls::read_ca(&cfg.ca_file)?;
    let tls = convoy_agent::tls::client_tls(cfg, &ca, Some(&identity));
    let channel = convoy_agent::tls::connect(cfg, tls).await?;
    Ok(pb::agent_service_client::AgentServiceClient::new(channel))
}

/// A Hello from `id` with these labels.
pub fn hello(id: &str, labels: &[(&str, &str)]) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            agent_id: id.into(),
            agent_version: "test".into(),
            protocol_version: convoy_proto::PROTOCOL_VERSION,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })),
    }
}

/// The hello of an in-process agent labelled `role=web`, for tests that
/// drive the coordinator's runtime directly (no gRPC).
pub fn runtime_hello(id: &str) -> convoy_coordinator::runtime::AgentHello {
    convoy_coordinator::runtime::AgentHello {
        id: id.into(),
        version: "test".into(),
        protocol_version: convoy_proto::PROTOCOL_VERSION,
        labels: [("role".to_string(), "web".to_string())].into(),
        hostname: id.into(),
        ..Default::default()
    }
}

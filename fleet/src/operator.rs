//! Talking to a fleet's coordinator as an operator: the client, and the waits
//! every flavour needs (agents connected, a rollout in some state) and
//! submitting a plan.

use std::time::Duration;

use convoy_common::engine::RolloutState;
use convoy_proto::v1 as pb;
use convoy_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::FleetError;
use crate::wait::wait_until;

pub type Operator = OperatorServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the operator token, and the operator name `test`, to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// Sends `authorization: Bearer <token>`.
    pub fn new(token: &str) -> Result<Bearer, FleetError> {
        Ok(Bearer(format!("Bearer {token}").parse()?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        req.metadata_mut().insert("x-convoy-user", "test".parse().expect("ascii"));
        Ok(req)
    }
}

/// An operator client for the coordinator at `url` (https), checked against
/// the CA certificate `ca_pem`, sending `token` as its bearer token.
pub async fn connect_operator(url: &str, ca_pem: &str, token: &str) -> Result<Operator, FleetError> {
    Ok(OperatorServiceClient::with_interceptor(channel(url, ca_pem).await?, Bearer::new(token)?))
}

/// The operator tools' service (logs, holds, the audit trail) at `url`.
pub type Ops = convoy_proto::v1::ops_service_client::OpsServiceClient<InterceptedService<Channel, Bearer>>;

/// An [`Ops`] client, as [`connect_operator`].
pub async fn connect_ops(url: &str, ca_pem: &str, token: &str) -> Result<Ops, FleetError> {
    let channel = channel(url, ca_pem).await?;
    Ok(convoy_proto::v1::ops_service_client::OpsServiceClient::with_interceptor(channel, Bearer::new(token)?))
}

/// A TLS channel to the coordinator at `url`, checked against `ca_pem`.
async fn channel(url: &str, ca_pem: &str) -> Result<Channel, FleetError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(convoy_coordinator::tls::DEFAULT_SERVER_NAME);
    let channel = Channel::from_shared(url.to_string())
        .map_err(|e| FleetError::NotReady(format!("bad coordinator address '{url}': {e}")))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(channel)
}

/// Poll the coordinator's agent list until `ready(list)` holds; returns that
/// list. Failed calls are retried until the deadline.
pub async fn wait_agents(
    op: &Operator,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&[pb::AgentInfo]) -> bool,
) -> Result<Vec<pb::AgentInfo>, FleetError> {
    wait_until(timeout, what, || {
        let mut op = op.clone();
        let ready = &ready;
        async move {
            let list = op.list_agents(pb::ListAgentsRequest {}).await.ok()?.into_inner().agents;
            ready(&list).then_some(list)
        }
    })
    .await
}

/// How many of `agents` are connected.
pub fn connected(agents: &[pb::AgentInfo]) -> usize {
    agents.iter().filter(|a| a.connected).count()
}

/// Poll a rollout's status until `done(status)` holds; returns that status.
pub async fn wait_rollout(
    op: &Operator,
    rollout: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&pb::RolloutStatus) -> bool,
) -> Result<pb::RolloutStatus, FleetError> {
    wait_until(timeout, what, || {
        let mut op = op.clone();
        let done = &done;
        async move {
            let s = op
                .get_rollout(pb::GetRolloutRequest { rollout_id: rollout.to_string(), ..Default::default() })
                .await
                .ok()?
                .into_inner();
            done(&s).then_some(s)
        }
    })
    .await
}

/// Whether a rollout has reached a terminal state. A state this harness does
/// not know ends the wait too, for [`known_state`] to report.
pub fn finished(s: &pb::RolloutStatus) -> bool {
    s.state.parse::<RolloutState>().map_or(true, RolloutState::is_terminal)
}

/// `s`, if its state is one this harness knows.
pub fn known_state(s: pb::RolloutStatus) -> Result<pb::RolloutStatus, FleetError> {
    s.state.parse::<RolloutState>()?;
    Ok(s)
}

/// Submit the plan `yaml` (named `file_name` in errors); returns the rollout id.
pub async fn submit(op: &Operator, file_name: &str, yaml: &str) -> Result<String, tonic::Status> {
    let r = op
        .clone()
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: file_name.into(),
            plan_yaml: yaml.into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    Ok(r.rollout_id)
}

/// The status of a rollout.
pub async fn status(op: &Operator, rollout: &str) -> Result<pb::RolloutStatus, FleetError> {
    Ok(op
        .clone()
        .get_rollout(pb::GetRolloutRequest { rollout_id: rollout.to_string(), ..Default::default() })
        .await?
        .into_inner())
}

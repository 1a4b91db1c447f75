//! Connecting to the coordinator's operator API over TLS with the operator token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::CliError;

/// Where and how to reach the coordinator, resolved once from flags/env.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Coordinator address (https://HOST:PORT); several, comma separated,
    /// for coordinators in HA (the CLI finds the leader).
    #[arg(long, global = true, env = "CONVOY_COORDINATOR")]
    pub coordinator: Option<String>,
    /// CA certificate that signed the coordinator's certificate.
    #[arg(long, global = true, env = "CONVOY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Operator token.
    #[arg(long, global = true, env = "CONVOY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A coordinator data directory on this machine: supplies the CA, the
    /// token and (if it was started with --addr-file DATA_DIR/coordinator.addr)
    /// the address.
    #[arg(long, global = true, env = "CONVOY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TLS name expected in the coordinator's certificate.
    #[arg(long, global = true, env = "CONVOY_SERVER_NAME", default_value = "convoy-coordinator")]
    pub server_name: String,
}

/// A validated connection target.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub ca_pem: String,
    pub token: String,
    pub server_name: String,
}

/// The coordinator of a local fleet (the demo's, an example's, the benchmark's).
impl From<&convoy_fleet::processes::LocalFleet> for Target {
    fn from(fleet: &convoy_fleet::processes::LocalFleet) -> Target {
        Target {
            url: fleet.url.clone(),
            ca_pem: fleet.ca_pem.clone(),
            token: fleet.operator_token.clone(),
            server_name: convoy_coordinator::tls::DEFAULT_SERVER_NAME.to_string(),
        }
    }
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.to_path_buf(), source })
}

impl ConnectArgs {
    pub fn resolve(&self) -> Result<Target, CliError> {
        let dd = self.data_dir.as_deref();
        let url = match (&self.coordinator, dd) {
            (Some(u), _) => u.clone(),
            (None, Some(d)) if d.join("coordinator.addr").exists() => {
                format!("https://{}", read(&d.join("coordinator.addr"))?.trim())
            }
            _ => "https://127.0.0.1:7443".to_string(),
        };
        let url = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| if u.contains("://") { u.to_string() } else { format!("https://{u}") })
            .collect::<Vec<_>>()
            .join(",");
        let ca_file = match (&self.ca_file, dd) {
            (Some(f), _) => f.clone(),
            (None, Some(d)) => d.join("tls").join("ca.pem"),
            (None, None) => {
                return Err(CliError::Usage(
                    "no CA certificate: pass --ca-file (or CONVOY_CA_FILE), or --data-dir of the coordinator".into(),
                ));
            }
        };
        let token = match (&self.token, dd) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => read(&d.join("operator.token"))?.trim().to_string(),
            (None, None) => {
                return Err(CliError::Usage(
                    "no operator token: pass --token (or CONVOY_TOKEN), or --data-dir of the coordinator".into(),
                ));
            }
        };
        Ok(Target { url, ca_pem: read(&ca_file)?, token, server_name: self.server_name.clone() })
    }
}

/// Adds the operator token and the caller's name to every call.
#[derive(Clone)]
pub struct Auth {
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    user: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.token.clone());
        req.metadata_mut().insert("x-convoy-user", self.user.clone());
        Ok(req)
    }
}

pub type Client = OperatorServiceClient<InterceptedService<Channel, Auth>>;

/// The largest answer the CLI accepts from the coordinator.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Connect (with a timeout) and return an authenticated operator client.
pub async fn connect(t: &Target) -> Result<Client, CliError> {
    let (channel, auth) = authenticated_channel(t).await?;
    // Status answers are capped per host; this leaves room for 100,000 of them.
    Ok(OperatorServiceClient::with_interceptor(channel, auth).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// Connect (with a timeout); the channel and the interceptor that adds the
/// operator token, for any of the coordinator's operator-facing services.
/// With several addresses (coordinators in HA), the leader's: each is tried
/// in turn with a cheap call, and a follower's redirect is followed.
pub async fn authenticated_channel(t: &Target) -> Result<(Channel, Auth), CliError> {
    if !t.url.contains(',') {
        return authenticated_channel_to(t).await;
    }
    let mut tried = Vec::new();
    let mut queue: std::collections::VecDeque<String> = t.url.split(',').map(str::to_string).collect();
    let mut last = None;
    let mut attempts = 0;
    while let Some(url) = queue.pop_front() {
        if tried.contains(&url) {
            continue;
        }
        attempts += 1;
        if attempts > 32 {
            break;
        }
        tried.push(url.clone());
        let one = Target { url: url.clone(), ..t.clone() };
        let (channel, auth) = match authenticated_channel_to(&one).await {
            Ok(c) => c,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let mut probe = OperatorServiceClient::with_interceptor(channel.clone(), auth.clone());
        let request = convoy_proto::v1::GetRolloutRequest { rollout_id: "-leader-probe-".into(), ..Default::default() };
        match tokio::time::timeout(Duration::from_secs(5), probe.get_rollout(request)).await {
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                if let Some(leader) = status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()) {
                    queue.push_front(format!("https://{leader}"));
                    tried.retain(|u| !u.ends_with(&format!("//{leader}")));
                }
                last = Some(CliError::Connect { url, message: status.message().to_string() });
            }
            Ok(_) => return Ok((channel, auth)),
            Err(_) => last = Some(CliError::Connect { url, message: "no answer within 5s".into() }),
        }
    }
    Err(last.unwrap_or_else(|| CliError::Usage("no coordinator address".into())))
}

/// The metadata key a follower coordinator puts the leader's `HOST:PORT` in.
pub const LEADER_HEADER: &str = "convoy-leader";

async fn authenticated_channel_to(t: &Target) -> Result<(Channel, Auth), CliError> {
    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem)).domain_name(t.server_name.clone());
    let endpoint = Endpoint::from_shared(t.url.clone())
        .map_err(|e| CliError::Usage(format!("bad coordinator address '{}': {e}", t.url)))?
        .tls_config(tls)
        .map_err(|e| CliError::Connect { url: t.url.clone(), message: e.to_string() })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let channel =
        endpoint.connect().await.map_err(|e| CliError::Connect { url: t.url.clone(), message: format!("{e:?}") })?;
    let token = format!("Bearer {}", t.token)
        .parse()
        .map_err(|_| CliError::Usage("the operator token has characters that cannot go in a header".into()))?;
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let user = user.parse().unwrap_or_else(|_| "operator".parse().expect("static ascii"));
    Ok((channel, Auth { token, user }))
}

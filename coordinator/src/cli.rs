//! The `convoy-coordinator` command line, also embedded in `convoy` for the demo.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::CoordinatorError;
use crate::runtime::RuntimeConfig;
use crate::server::ServerConfig;

#[derive(Debug, Parser)]
#[command(name = "convoy-coordinator", version, about = "Convoy coordinator: drives agents through upgrade plans")]
pub struct CoordinatorArgs {
    #[command(subcommand)]
    pub command: CoordinatorCommand,
}

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Create the CA, the server certificate, the operator token and a join token.
    Init {
        #[arg(long, env = "CONVOY_DATA_DIR")]
        data_dir: PathBuf,
        /// Extra DNS names for the server certificate (repeatable).
        #[arg(long = "san")]
        server_names: Vec<String>,
        /// Lifetime of the join token printed at the end, in seconds.
        #[arg(long, default_value_t = 86400)]
        join_token_ttl: u64,
    },
    /// Serve agents and operators.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "CONVOY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; see --addr-file).
    #[arg(long, env = "CONVOY_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Heartbeat interval asked of agents, in milliseconds.
    #[arg(long, env = "CONVOY_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Agents silent for this many heartbeat intervals are lost.
    #[arg(long, default_value_t = 3)]
    pub missed_heartbeats: u32,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServerConfig, CoordinatorError> {
        if self.heartbeat_ms < 10 {
            return Err(CoordinatorError::BadRequest {
                field: "--heartbeat-ms".into(),
                message: "must be at least 10".into(),
            });
        }
        if self.missed_heartbeats == 0 {
            return Err(CoordinatorError::BadRequest {
                field: "--missed-heartbeats".into(),
                message: "must be at least 1".into(),
            });
        }
        let hb = Duration::from_millis(self.heartbeat_ms);
        Ok(ServerConfig {
            data_dir: self.data_dir,
            runtime: RuntimeConfig { heartbeat_interval: hb, agent_timeout: hb * self.missed_heartbeats, ..Default::default() },
        })
    }
}

/// `init`: PKI, operator token and a join token; returns what to tell the user.
pub fn init(data_dir: &std::path::Path, server_names: &[String], join_ttl: Duration) -> Result<InitReport, CoordinatorError> {
    let out = crate::tls::init(data_dir, server_names)?;
    let store = crate::server::open_store(data_dir)?;
    let join_token = crate::grpc::issue_join_token(&store, crate::runtime::Clock::system().now(), join_ttl)?;
    Ok(InitReport { ca_file: out.ca_file, operator_token: out.operator_token, join_token, existed: out.existed })
}

#[derive(Debug, Clone)]
pub struct InitReport {
    pub ca_file: PathBuf,
    pub operator_token: String,
    pub join_token: String,
    pub existed: bool,
}

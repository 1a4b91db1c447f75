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
            runtime: RuntimeConfig {
                heartbeat_interval: hb,
                agent_timeout: hb * self.missed_heartbeats,
                ..Default::default()
            },
        })
    }
}

/// `init`: PKI, operator token and a join token; returns what to tell the user.
pub fn init(
    data_dir: &std::path::Path,
    server_names: &[String],
    join_ttl: Duration,
) -> Result<InitReport, CoordinatorError> {
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

/// What `convoy-coordinator` does for `args`; shared by the binary and the
/// `convoy __coordinator` subcommand. Serving stops when `shutdown` is cancelled.
pub async fn run(args: CoordinatorArgs, shutdown: tokio_util::sync::CancellationToken) -> Result<(), CoordinatorError> {
    match args.command {
        CoordinatorCommand::Init { data_dir, server_names, join_token_ttl } => {
            let r = init(&data_dir, &server_names, Duration::from_secs(join_token_ttl))?;
            if r.existed {
                println!("data directory {} was already initialised; kept its CA", data_dir.display());
            }
            println!("CA certificate: {}", r.ca_file.display());
            println!("operator token: {}", r.operator_token);
            println!("join token (valid {join_token_ttl}s): {}", r.join_token);
        }
        CoordinatorCommand::Serve(serve) => {
            let addr_file = serve.addr_file.clone();
            let listen = serve.listen.clone();
            let config = serve.into_config()?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|source| CoordinatorError::Bind { addr: listen.clone(), source })?;
            if let Some(f) = addr_file {
                // Written atomically so a reader never sees half an address.
                let tmp = f.with_extension("tmp");
                let addr = listener.local_addr().map_err(|source| CoordinatorError::Bind { addr: listen, source })?;
                std::fs::write(&tmp, addr.to_string())
                    .map_err(|source| CoordinatorError::Io { path: tmp.clone(), source })?;
                std::fs::rename(&tmp, &f).map_err(|source| CoordinatorError::Io { path: f.clone(), source })?;
            }
            crate::server::run(listener, config, shutdown).await?;
        }
    }
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        t.cancel();
    });
    token
}

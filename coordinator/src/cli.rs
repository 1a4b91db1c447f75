//! The `convoy-coordinator` command line, also embedded in `convoy` for the demo.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::enrolment::{HostPattern, JoinScope};
use crate::error::CoordinatorError;
use crate::operators::Role;
use crate::runtime::RuntimeConfig;
use crate::server::ServerConfig;
use convoy_common::audit::AuditAction;

#[derive(Debug, Parser)]
#[command(name = "convoy-coordinator", version, about = "Convoy coordinator: drives agents through upgrade plans")]
pub struct CoordinatorArgs {
    #[command(subcommand)]
    pub command: CoordinatorCommand,
}

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Create the CA, the server certificate and the operator token `admin`
    /// (and, if asked, a scoped join token).
    Init {
        #[arg(long, env = "CONVOY_DATA_DIR")]
        data_dir: PathBuf,
        /// Extra DNS names for the server certificate (repeatable).
        #[arg(long = "san")]
        server_names: Vec<String>,
        /// Also print a join token good for this many enrolments (none by
        /// default: make them with `convoy join-token`).
        #[arg(long, default_value_t = 0)]
        join_token_uses: u32,
        /// Only hosts whose id matches this glob may enrol with that token.
        #[arg(long)]
        join_token_hosts: Option<String>,
        /// Lifetime of that join token, in seconds (at most 7 days).
        #[arg(long, default_value_t = 3600)]
        join_token_ttl: u64,
    },
    /// Named operator tokens with a role (viewer, operator); works while the
    /// coordinator runs.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve agents and operators.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its sha256 is kept).
    Create {
        #[arg(long, env = "CONVOY_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// viewer (read only) or operator.
        #[arg(long)]
        role: Role,
        /// Expire after this many days (default: never), at most 3650.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3650))]
        ttl_days: Option<u64>,
    },
    /// List the tokens (names, roles, dates; never the secrets).
    List {
        #[arg(long, env = "CONVOY_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Revoke a token: it stops working on the next call.
    Revoke {
        #[arg(long, env = "CONVOY_DATA_DIR")]
        data_dir: PathBuf,
        name: String,
    },
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
    /// Also serve the web dashboard and /metrics over HTTPS on this address
    /// (off by default; same server certificate; operator tokens needed).
    #[arg(long, env = "CONVOY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Heartbeat interval asked of agents, in milliseconds.
    #[arg(long, env = "CONVOY_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Agents silent for this many heartbeat intervals are lost.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub missed_heartbeats: u32,
    /// Heartbeats per second the whole fleet may send: past N agents the
    /// interval each new agent is told grows to N / this (at most 60 s), and
    /// its lost timeout with it.
    #[arg(long, env = "CONVOY_MAX_HEARTBEATS_PER_SECOND",
          default_value_t = crate::runtime::DEFAULT_MAX_HEARTBEATS_PER_S,
          value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub max_heartbeats_per_second: u32,
    /// A TLS handshake not finished after this many seconds is dropped.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub handshake_timeout_s: u64,
    /// At most this many TLS handshakes run at once, in arrival order (a
    /// fleet reconnecting after a restart comes back steadily instead of
    /// all at the end).
    #[arg(long, env = "CONVOY_MAX_HANDSHAKES", default_value_t = crate::connections::DEFAULT_HANDSHAKES_AT_ONCE as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_handshakes: u64,
    /// Connections the kernel may hold for the coordinator before it
    /// accepts them. Linux caps it at net.core.somaxconn (4,096 by
    /// default): raise that for fleets larger than it (a restarted
    /// coordinator's whole fleet reconnects at once).
    #[arg(long, default_value_t = crate::connections::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,
    /// At most this many connections at once (default: the open-file limit less 256).
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Remove audit entries older than this many days (checked at start
    /// and hourly). Default: keep them all.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub audit_retention_days: Option<u32>,
    /// The largest artifact `convoy artifact add` may load, in bytes.
    #[arg(long, default_value_t = 8 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub artifact_max_bytes: u64,
    /// The most all artifacts together may take, in bytes.
    #[arg(long, default_value_t = 64 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub artifact_quota_bytes: u64,
    /// Seconds a plan may take to parse, validate and expand.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub plan_time_limit_s: u64,
    /// Keep the store on etcd instead of the embedded one and run as one of
    /// several coordinators in HA: etcd://HOST:PORT[,HOST:PORT…][/PREFIX]
    /// (builds with the `etcd` feature; docs/ha.md).
    #[arg(long, env = "CONVOY_STORE")]
    pub store: Option<String>,
    /// With --store etcd://…: the HOST:PORT others redirect agents and the
    /// CLI to while this coordinator leads (default: the bound address).
    #[arg(long, env = "CONVOY_ADVERTISE")]
    pub advertise: Option<String>,
    /// With --store etcd://… and --http-listen: the HOST:PORT followers send
    /// browsers to while this coordinator leads (default: the bound HTTPS
    /// address).
    #[arg(long, env = "CONVOY_HTTP_ADVERTISE", requires_all = ["store", "http_listen"])]
    pub http_advertise: Option<String>,
    #[command(flatten)]
    pub etcd_tls: EtcdTlsFiles,
    /// With --store etcd://…: the leader lease's time to live, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=60))]
    pub lease_ttl_s: u64,
    /// Snapshot each rollout's engine every N events of its log (every H
    /// for a rollout of H hosts, if more; and when it finishes), so a
    /// restart or takeover replays a snapshot and a short tail: 0 (none) or
    /// 10 to 1000000.
    #[arg(long, env = "CONVOY_SNAPSHOT_EVERY", default_value_t = 1000)]
    pub snapshot_every: u64,
    /// Delete the events a stored snapshot covers. `convoy verify`, host
    /// outputs and the dashboard's timelines then see only the kept tail
    /// (docs/ha.md, "Snapshots").
    #[arg(long, env = "CONVOY_COMPACT_EVENTS")]
    pub compact_events: bool,
    /// Group commit: events that come within this many milliseconds of the
    /// previous flush of the event log wait out the rest and are flushed
    /// together (0 flushes every batch at once; 0 to 100). Bounds the
    /// flushes to 1000/N a second while agents reconnect or results pour in;
    /// a quiet coordinator flushes at once.
    #[arg(long, env = "CONVOY_COMMIT_WINDOW_MS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub commit_window_ms: u64,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServerConfig, CoordinatorError> {
        if !(10..=600_000).contains(&self.heartbeat_ms) {
            return Err(CoordinatorError::BadRequest {
                field: "--heartbeat-ms".into(),
                message: "must be between 10 and 600000".into(),
            });
        }
        if self.missed_heartbeats == 0 {
            return Err(CoordinatorError::BadRequest {
                field: "--missed-heartbeats".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.snapshot_every != 0 && !crate::runtime::SNAPSHOT_EVERY.contains(&self.snapshot_every) {
            return Err(CoordinatorError::BadRequest {
                field: "--snapshot-every".into(),
                message: format!(
                    "must be 0 (no snapshots) or between {} and {}",
                    crate::runtime::SNAPSHOT_EVERY.start(),
                    crate::runtime::SNAPSHOT_EVERY.end()
                ),
            });
        }
        if self.compact_events && self.snapshot_every == 0 {
            return Err(CoordinatorError::BadRequest {
                field: "--compact-events".into(),
                message: "needs snapshots (--snapshot-every other than 0)".into(),
            });
        }
        let hb = Duration::from_millis(self.heartbeat_ms);
        Ok(ServerConfig {
            data_dir: self.data_dir,
            runtime: RuntimeConfig {
                heartbeat_interval: hb,
                agent_timeout: hb * self.missed_heartbeats,
                max_heartbeats_per_s: self.max_heartbeats_per_second,
                plan_time_limit: Duration::from_secs(self.plan_time_limit_s),
                snapshot_every: self.snapshot_every,
                compact_events: self.compact_events,
                commit_window: Duration::from_millis(self.commit_window_ms),
                ..Default::default()
            },
            connections: crate::connections::Limits {
                handshake_timeout: Duration::from_secs(self.handshake_timeout_s),
                handshakes_at_once: self.max_handshakes as usize,
                max_connections: self.max_connections.map(|n| n as usize),
                ..Default::default()
            },
            artifacts: crate::artifacts::ArtifactQuota {
                max_artifact_bytes: self.artifact_max_bytes,
                max_total_bytes: self.artifact_quota_bytes,
            },
            audit_retention: self.audit_retention_days.map(|d| Duration::from_secs(u64::from(d) * 86_400)),
        })
    }
}

/// `init`: PKI and operator token, and a join token if `join` asks for one;
/// returns what to tell the user.
pub fn init(
    data_dir: &std::path::Path,
    server_names: &[String],
    join: Option<JoinScope>,
) -> Result<InitReport, CoordinatorError> {
    let out = crate::tls::init(data_dir, server_names)?;
    let now = crate::runtime::Clock::system().now();
    crate::server::adopt_operator_token(data_dir, now)?;
    // A short wait: a coordinator serving this directory holds the store.
    let store = crate::store::SledStore::open_waiting(&crate::server::store_dir(data_dir), Duration::from_secs(1))?;
    let join_token = match join {
        Some(scope) => Some(crate::enrolment::issue_join_token(&store, now, scope, "init")?.0),
        None => None,
    };
    Ok(InitReport { ca_file: out.ca_file, operator_token: out.operator_token, join_token, existed: out.existed })
}

#[derive(Debug, Clone)]
pub struct InitReport {
    pub ca_file: PathBuf,
    pub operator_token: String,
    pub join_token: Option<String>,
    pub existed: bool,
}

fn millis_to_text(ms: u64) -> String {
    format!("{}s after the epoch", ms / 1000)
}

/// What `convoy-coordinator` does for `args`; shared by the binary and the
/// `convoy __coordinator` subcommand. Serving stops when `shutdown` is cancelled.
pub async fn run(args: CoordinatorArgs, shutdown: tokio_util::sync::CancellationToken) -> Result<(), CoordinatorError> {
    match args.command {
        CoordinatorCommand::Init { data_dir, server_names, join_token_uses, join_token_hosts, join_token_ttl } => {
            let join = match join_token_uses {
                0 => None,
                uses => Some(
                    JoinScope {
                        uses,
                        hosts: join_token_hosts.as_deref().map(HostPattern::parse).transpose()?,
                        ttl: Duration::from_secs(join_token_ttl),
                    }
                    .validate()?,
                ),
            };
            let r = init(&data_dir, &server_names, join.clone())?;
            if r.existed {
                println!("data directory {} was already initialised; kept its CA", data_dir.display());
            }
            println!("CA certificate: {}", r.ca_file.display());
            println!("operator token: {}", r.operator_token);
            println!("  (named admin, role operator; more with convoy-coordinator token create)");
            match (r.join_token, join) {
                (Some(t), Some(scope)) => {
                    let hosts = scope.hosts.map(|h| format!(", hosts {h}")).unwrap_or_default();
                    println!("join token ({} uses{hosts}, valid {}s): {t}", scope.uses, scope.ttl.as_secs());
                }
                _ => println!("join tokens: convoy join-token [--uses N] [--hosts 'web-*'] [--ttl-seconds S]"),
            }
        }
        CoordinatorCommand::Token(TokenCommand::Create { data_dir, name, role, ttl_days }) => {
            let now = crate::runtime::Clock::system().now();
            let expires = ttl_days.map(|d| now.plus(Duration::from_secs(d * 86400)));
            let created = crate::operators::create(&data_dir, &name, role, now, expires);
            let detail = format!("role {role}");
            crate::audit::queue_token_command(&data_dir, now, AuditAction::TokenCreate, &name, &detail, &created);
            let secret = created?;
            println!("{secret}");
            eprintln!("token '{name}' ({role}) created; it is shown once");
        }
        CoordinatorCommand::Token(TokenCommand::List { data_dir }) => {
            println!("{:<20} {:<9} {:<28} EXPIRES", "NAME", "ROLE", "CREATED");
            for t in crate::operators::list(&data_dir)? {
                let expires = t.expires.map(|e| millis_to_text(e.0)).unwrap_or_else(|| "never".into());
                println!("{:<20} {:<9} {:<28} {expires}", t.name, t.role.to_string(), millis_to_text(t.created.0));
            }
        }
        CoordinatorCommand::Token(TokenCommand::Revoke { data_dir, name }) => {
            let revoked = crate::operators::revoke(&data_dir, &name);
            let now = crate::runtime::Clock::system().now();
            crate::audit::queue_token_command(&data_dir, now, AuditAction::TokenRevoke, &name, "", &revoked);
            revoked?;
            println!("token '{name}' revoked");
        }
        CoordinatorCommand::Serve(serve) => {
            let addr_file = serve.addr_file.clone();
            let listen = serve.listen.clone();
            let ha = serve.store.clone().map(|store| HaFlags {
                store,
                advertise: serve.advertise.clone(),
                http_advertise: serve.http_advertise.clone(),
                lease_ttl_s: serve.lease_ttl_s,
                etcd_tls: serve.etcd_tls.clone(),
            });
            let http = match serve.http_listen.clone() {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(&addr)
                        .await
                        .map_err(|source| CoordinatorError::Bind { addr: addr.clone(), source })?,
                ),
                None => None,
            };
            let backlog = serve.listen_backlog;
            let config = (*serve).into_config()?;
            let listener = crate::connections::bind(&listen, backlog)
                .await
                .map_err(|source| CoordinatorError::Bind { addr: listen.clone(), source })?;
            match crate::connections::kernel_backlog_cap() {
                Some(cap) if cap < backlog => tracing::info!(
                    asked = backlog,
                    kernel_cap = cap,
                    "listen backlog capped by net.core.somaxconn: a fleet larger than that reconnecting at once \
                     after a restart has some SYNs dropped and retried 1-7 s later (docs/operations.md)"
                ),
                _ => tracing::debug!(backlog, "listen backlog"),
            }
            if let Some(f) = addr_file {
                // Written atomically so a reader never sees half an address.
                let tmp = f.with_extension("tmp");
                let addr = listener.local_addr().map_err(|source| CoordinatorError::Bind { addr: listen, source })?;
                std::fs::write(&tmp, addr.to_string())
                    .map_err(|source| CoordinatorError::Io { path: tmp.clone(), source })?;
                std::fs::rename(&tmp, &f).map_err(|source| CoordinatorError::Io { path: f.clone(), source })?;
            }
            if let Some(h) = &http
                && let Ok(addr) = h.local_addr()
            {
                eprintln!("dashboard and /metrics: https://{addr}/");
            }
            match ha {
                None => crate::server::serve(listener, http, config, crate::runtime::Clock::system(), shutdown).await?,
                Some(ha) => serve_ha(Listeners { grpc: listener, http }, config, ha, shutdown).await?,
            }
        }
    }
    Ok(())
}

/// `serve`'s `--etcd-ca`, `--etcd-cert` and `--etcd-key` (clap checks
/// that they come together as they must).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdTlsFiles {
    /// With --store etcd://…: reach etcd over TLS (https), trusting the CA
    /// in this PEM file for its members' certificates.
    #[arg(long = "etcd-ca", id = "etcd_ca", value_name = "FILE", requires = "store")]
    pub ca: Option<PathBuf>,
    /// With --etcd-ca: this coordinator's client certificate (PEM), for an
    /// etcd run with --client-cert-auth; needs --etcd-key.
    #[arg(long = "etcd-cert", id = "etcd_cert", value_name = "FILE", requires_all = ["etcd_ca", "etcd_key"])]
    pub cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long = "etcd-key", id = "etcd_key", value_name = "FILE", requires = "etcd_cert")]
    pub key: Option<PathBuf>,
}

#[cfg(feature = "etcd")]
impl EtcdTlsFiles {
    /// The TLS settings these files give, read now; `None` without `--etcd-ca`.
    pub fn load(&self) -> Result<Option<crate::store::EtcdTls>, CoordinatorError> {
        let read = |flag: &str, path: &std::path::Path| {
            let pem = std::fs::read_to_string(path).map_err(|e| CoordinatorError::BadRequest {
                field: flag.into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            if !pem.contains("-----BEGIN ") {
                return Err(CoordinatorError::BadRequest {
                    field: flag.into(),
                    message: format!("{} holds no PEM block", path.display()),
                });
            }
            Ok(pem)
        };
        let Some(ca) = &self.ca else { return Ok(None) };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(crate::store::EtcdIdentity {
                cert_pem: read("--etcd-cert", cert)?,
                key_pem: read("--etcd-key", key)?,
            }),
            _ => None,
        };
        Ok(Some(crate::store::EtcdTls { ca_pem: read("--etcd-ca", ca)?, identity }))
    }
}

/// What `serve` listens on: gRPC, and HTTPS if asked.
// Without etcd, `serve_ha` only refuses: it never reads them.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
struct Listeners {
    grpc: tokio::net::TcpListener,
    http: Option<tokio::net::TcpListener>,
}

/// `serve`'s flags for coordinators in HA.
// Without etcd, `serve_ha` only refuses: it reads the store alone.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
struct HaFlags {
    store: String,
    advertise: Option<String>,
    http_advertise: Option<String>,
    lease_ttl_s: u64,
    etcd_tls: EtcdTlsFiles,
}

/// `serve --store etcd://…`.
#[cfg(feature = "etcd")]
async fn serve_ha(
    Listeners { grpc: listener, http }: Listeners,
    config: ServerConfig,
    flags: HaFlags,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), CoordinatorError> {
    let HaFlags { store, advertise, http_advertise, lease_ttl_s, etcd_tls } = flags;
    let mut target = crate::store::EtcdTarget::parse(&store)?;
    if let Some(tls) = etcd_tls.load()? {
        target = target.with_tls(tls);
    }
    let advertise = match advertise {
        Some(a) => a,
        None => listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind { addr: "listener".into(), source })?
            .to_string(),
    };
    let ha = crate::ha::HaConfig { target, advertise, http_advertise, lease_ttl: Duration::from_secs(lease_ttl_s) };
    crate::ha::run(listener, http, config, ha, shutdown).await
}

/// `serve --store …` in a build without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
async fn serve_ha(
    _listeners: Listeners,
    _config: ServerConfig,
    flags: HaFlags,
    _shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), CoordinatorError> {
    Err(CoordinatorError::BadRequest {
        field: "--store".into(),
        message: format!("{:?}: this coordinator was built without etcd support (cargo feature `etcd`)", flags.store),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve(extra: &[&str]) -> Result<ServerConfig, CoordinatorError> {
        let args = [&["convoy-coordinator", "serve", "--data-dir", "/tmp/x"][..], extra].concat();
        match CoordinatorArgs::try_parse_from(args).expect("parses").command {
            CoordinatorCommand::Serve(s) => (*s).into_config(),
            _ => unreachable!("serve"),
        }
    }

    #[test]
    fn http_advertise_needs_a_store_and_an_https_listener() {
        let parse = |extra: &[&str]| {
            let args = [&["convoy-coordinator", "serve", "--data-dir", "/tmp/x"][..], extra].concat();
            CoordinatorArgs::try_parse_from(args).map(|_| ()).map_err(|e| e.to_string())
        };
        let alone = parse(&["--http-advertise", "10.0.0.1:7451"]).unwrap_err();
        assert!(alone.contains("--store") || alone.contains("--http-listen"), "{alone}");
        let no_http = parse(&["--http-advertise", "10.0.0.1:7451", "--store", "etcd://127.0.0.1:2379"]).unwrap_err();
        assert!(no_http.contains("--http-listen"), "{no_http}");
        parse(&["--http-advertise", "a:1", "--store", "etcd://127.0.0.1:2379", "--http-listen", "127.0.0.1:0"])
            .unwrap();
    }

    #[test]
    fn the_commit_window_defaults_to_the_runtimes_and_is_bounded() {
        assert_eq!(serve(&[]).unwrap().runtime.commit_window, crate::runtime::DEFAULT_COMMIT_WINDOW);
        assert_eq!(serve(&["--commit-window-ms", "0"]).unwrap().runtime.commit_window, Duration::ZERO);
        let max = *crate::runtime::COMMIT_WINDOW.end();
        let at_max = serve(&["--commit-window-ms", &max.as_millis().to_string()]).unwrap();
        assert_eq!(at_max.runtime.commit_window, max);
        for bad in ["101", "5ms", "1000000"] {
            let err = CoordinatorArgs::try_parse_from(["convoy-coordinator", "serve", "--commit-window-ms", bad]);
            let err = err.err().unwrap_or_else(|| panic!("{bad} accepted")).to_string();
            assert!(err.contains("--commit-window-ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn snapshot_flags_default_to_every_1000_kept_whole_and_are_bounded() {
        let c = serve(&[]).unwrap();
        assert_eq!((c.runtime.snapshot_every, c.runtime.compact_events), (1000, false));
        let c = serve(&["--snapshot-every", "10", "--compact-events"]).unwrap();
        assert_eq!((c.runtime.snapshot_every, c.runtime.compact_events), (10, true));
        assert_eq!(serve(&["--snapshot-every", "0"]).unwrap().runtime.snapshot_every, 0);
        for bad in ["9", "1000001"] {
            let err = serve(&["--snapshot-every", bad]).unwrap_err().to_string();
            assert!(err.contains("--snapshot-every"), "{bad}: {err}");
        }
        let err = serve(&["--snapshot-every", "0", "--compact-events"]).unwrap_err().to_string();
        assert!(err.contains("--compact-events"), "{err}");
    }

    #[test]
    fn the_audit_trail_is_kept_whole_unless_a_bounded_retention_is_given() {
        assert_eq!(serve(&[]).unwrap().audit_retention, None);
        let c = serve(&["--audit-retention-days", "90"]).unwrap();
        assert_eq!(c.audit_retention, Some(Duration::from_secs(90 * 86_400)));
        for bad in ["0", "36501", "a year"] {
            let args = ["convoy-coordinator", "serve", "--data-dir", "/tmp/x", "--audit-retention-days", bad];
            let err = CoordinatorArgs::try_parse_from(args).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("--audit-retention-days"), "{bad}: {err}");
        }
    }

    /// The etcd TLS flags come together: a CA with a store, a certificate
    /// with its key and a CA.
    #[test]
    fn etcd_tls_flags_need_each_other() {
        let parse = |extra: &[&str]| {
            let args = [&["convoy-coordinator", "serve", "--data-dir", "/tmp/x"][..], extra].concat();
            CoordinatorArgs::try_parse_from(args).map(drop).map_err(|e| e.to_string())
        };
        let store = ["--store", "etcd://127.0.0.1:2379"];
        assert!(parse(&[&store[..], &["--etcd-ca", "ca.pem"]].concat()).is_ok());
        let full = ["--etcd-ca", "ca.pem", "--etcd-cert", "c.pem", "--etcd-key", "k.pem"];
        assert!(parse(&[&store[..], &full[..]].concat()).is_ok());
        for (bad, names) in [
            (vec!["--etcd-ca", "ca.pem"], "--store"),
            ([&store[..], &["--etcd-ca", "ca.pem", "--etcd-cert", "c.pem"]].concat(), "--etcd-key"),
            ([&store[..], &["--etcd-cert", "c.pem", "--etcd-key", "k.pem"]].concat(), "--etcd-ca"),
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(err.contains(names), "{bad:?}: {err}");
        }
    }
}

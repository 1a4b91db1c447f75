//! Wiring: open the store, load the PKI, start the runtime and serve gRPC
//! over mTLS on a listener the caller binds (tests bind port 0), and, when
//! given a second listener, the dashboard and `/metrics` over HTTPS
//! ([`crate::http`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_proto::v1::agent_service_server::AgentServiceServer;
use convoy_proto::v1::artifact_service_server::ArtifactServiceServer;
use convoy_proto::v1::operator_service_server::OperatorServiceServer;
use convoy_proto::v1::ops_service_server::OpsServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::artifacts::{ArtifactStore, ArtifactSvc};
use crate::connections::Counted;
use crate::error::CoordinatorError;
use crate::grpc::{AgentSvc, OperatorSvc};
use crate::operators::{self, OperatorAuth, Role};
use crate::runtime::{self, Clock, RuntimeConfig};
use crate::store::{SledStore, Store};
use crate::tickets::SessionTickets;
use crate::tls::{CertificateAuthority, PkiPaths, operator_token_path};

/// A validated coordinator configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub runtime: RuntimeConfig,
    pub connections: crate::connections::Limits,
    pub artifacts: crate::artifacts::ArtifactQuota,
    /// Audit entries older than this are removed (`None`: kept forever).
    pub audit_retention: Option<Duration>,
}

/// Where the embedded store lives under a data directory.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Open the embedded store of a data directory (one process at a time).
pub fn open_store(data_dir: &Path) -> Result<SledStore, CoordinatorError> {
    SledStore::open(&store_dir(data_dir))
}

fn read(path: &Path) -> Result<String, CoordinatorError> {
    std::fs::read_to_string(path).map_err(|source| CoordinatorError::Io { path: path.to_path_buf(), source })
}

/// Serve until `shutdown` is cancelled. The data directory must have been
/// initialised (`convoy-coordinator init`).
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    run_with_clock(listener, config, Clock::system(), shutdown).await
}

/// [`run`] on `clock` instead of the system's.
pub async fn run_with_clock(
    listener: TcpListener,
    config: ServerConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    serve(listener, None, config, clock, shutdown).await
}

/// [`run_with_clock`], also serving the dashboard and `/metrics` over HTTPS
/// on `http` if given (with the same server certificate).
pub async fn serve(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: ServerConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let started = std::time::Instant::now();
    let store: Arc<dyn Store> = Arc::new(open_store(&config.data_dir)?);
    tracing::info!(elapsed = ?started.elapsed(), "store opened");
    let fds = crate::connections::raise_fd_limit();
    let cap = crate::connections::effective_cap(&config.connections, fds);
    tracing::info!(max_connections = cap, handshake_timeout = ?config.connections.handshake_timeout, "connection limits");
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "coordinator serving");
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let incoming = crate::connections::CappedIncoming::new(listener, cap).with_metrics(metrics.clone());
    let http = http.map(|l| crate::http::HttpIncoming::listen(l, Some(metrics.clone()))).transpose()?;
    serve_incoming(incoming, http, config, store, clock, metrics, shutdown).await
}

/// The server's TLS settings: its identity, agents' certificates checked
/// against the CA (optional: enrolment comes before a certificate), and
/// the session tickets it issues, if given.
pub(crate) fn server_tls(
    config: &ServerConfig,
    tickets: Option<Arc<SessionTickets>>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertificateAuthority>), CoordinatorError> {
    let paths = PkiPaths::new(&config.data_dir);
    let ca = Arc::new(CertificateAuthority::load(&paths)?);
    let tls = crate::handshakes::grpc_config(
        &read(&paths.server_cert())?,
        &read(&paths.server_key())?,
        ca.ca_pem(),
        tickets,
    )?;
    Ok((tls, ca))
}

/// How often the ticket keys are checked for rotation (they rotate daily).
const TICKET_ROTATION_CHECK: Duration = Duration::from_secs(3600);

/// Rotates `tickets`' keys every [`TICKET_ROTATION_CHECK`] until `stop`.
fn rotate_tickets(tickets: Arc<SessionTickets>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICKET_ROTATION_CHECK);
        every.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {
                    // A rotation writes and syncs the key file: off the runtime's threads.
                    let t = tickets.clone();
                    match tokio::task::spawn_blocking(move || t.rotate()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "session ticket keys not rotated"),
                        Err(e) => tracing::warn!(error = %e, "session ticket key rotation stopped"),
                    }
                }
            }
        }
    })
}

/// The gRPC listener's connections once their handshake is done: see
/// [`crate::handshakes`].
pub(crate) fn handshaken<I>(
    incoming: I,
    tls: Arc<rustls::ServerConfig>,
    limits: &crate::connections::Limits,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    stop: CancellationToken,
) -> crate::handshakes::TlsIncoming
where
    I: tokio_stream::Stream<Item = std::io::Result<Counted>> + Send + Unpin + 'static,
{
    crate::handshakes::Handshakes {
        config: tls,
        timeout: limits.handshake_timeout,
        at_once: limits.handshakes_at_once,
        metrics,
    }
    .run(incoming, stop)
}

/// Serve the connections of `incoming` (and the HTTPS listener `http`, if
/// any) on `store` until `shutdown` is cancelled (or the runtime stops by
/// itself: [`CoordinatorError::RuntimeDied`]), counting in `metrics`.
pub(crate) async fn serve_incoming<I>(
    incoming: I,
    http: Option<crate::http::HttpIncoming>,
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Clock,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError>
where
    I: tokio_stream::Stream<Item = std::io::Result<Counted>> + Send + Unpin + 'static,
{
    let tickets = Arc::new(SessionTickets::open(&config.data_dir, clock)?);
    let (tls, ca) = server_tls(&config, Some(tickets.clone()))?;
    adopt_operator_token(&config.data_dir, clock.now())?;

    // The runtime stops with the server; a child token so that stopping the
    // runtime never cancels the caller's token.
    let stop = shutdown.child_token();
    let artifacts = Arc::new(ArtifactStore::open_with(&config.data_dir, config.artifacts)?);
    let (handle, runtime_task) = runtime::spawn_with_metrics(
        store.clone(),
        artifacts.clone(),
        config.runtime.clone(),
        clock,
        metrics.clone(),
        stop.clone(),
    )?;
    let _abort_runtime = AbortOnDrop(runtime_task.abort_handle());
    let _abort_rotation = AbortOnDrop(rotate_tickets(tickets.clone(), stop.clone()).abort_handle());
    let _abort_pruner = config
        .audit_retention
        .map(|r| AbortOnDrop(crate::audit::spawn_pruner(store.clone(), r, clock, stop.clone()).abort_handle()));
    let _abort_trimmer = {
        let metrics = metrics.clone();
        AbortOnDrop(crate::memory::spawn_trimmer(move || metrics.handshakes_total(), stop.clone()).abort_handle())
    };
    // Watches the runtime task: if it ends while the server has not been
    // asked to stop (a panic in it), serving stops too.
    let died = CancellationToken::new();
    let monitor = {
        let (died, stop) = (died.clone(), stop.clone());
        tokio::spawn(async move {
            let ended = runtime_task.await;
            if stop.is_cancelled() {
                return None;
            }
            let why = match ended {
                Ok(()) => "it returned".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(%why, "the runtime task stopped unexpectedly; stopping the coordinator");
            died.cancel();
            Some(why)
        })
    };

    let limits = config.connections;
    let agent_svc = AgentSvc {
        runtime: handle.clone(),
        store: store.clone(),
        ca,
        clock,
        shutdown: stop.clone(),
        enrol_lock: tokio::sync::Mutex::new(()),
        metrics: metrics.clone(),
    };
    let auth = OperatorAuth::new(&config.data_dir, clock).with_audit(store.clone()).with_metrics(metrics.clone());
    let http_task = match http {
        Some(http) => {
            let paths = PkiPaths::new(&config.data_dir);
            let tls = crate::handshakes::https_config(
                &read(&paths.server_cert())?,
                &read(&paths.server_key())?,
                Some(tickets.clone()),
            )?;
            let state = Arc::new(crate::http::HttpState {
                runtime: handle.clone(),
                store: store.clone(),
                auth: auth.clone(),
                metrics: metrics.clone(),
                sessions: Default::default(),
                clock,
                shutdown: stop.clone(),
            });
            let stop = stop.clone();
            let timeout = config.connections.handshake_timeout;
            Some(tokio::spawn(async move {
                if let Err(e) = crate::http::serve(http, tls, timeout, state, stop).await {
                    tracing::error!(error = %e, "the https listener stopped");
                }
            }))
        }
        None => None,
    };
    // Issue 13: the operator tools' service, and audit entries queued by
    // local token commands while no coordinator ran.
    let ops_svc = crate::ops::OpsSvc { runtime: handle.clone(), store: store.clone(), clock };
    crate::audit::ingest_local(&config.data_dir, store.as_ref())?;
    let operator_svc = OperatorSvc { runtime: handle, store: store.clone(), clock };
    let artifact_svc =
        ArtifactSvc { store: artifacts, auth: auth.clone(), enrolments: store.clone(), clock, shutdown: stop.clone() };
    let result = Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(AgentServiceServer::new(agent_svc))
        .add_service(OperatorServiceServer::with_interceptor(operator_svc, auth.clone()))
        .add_service(OpsServiceServer::with_interceptor(ops_svc, auth.clone()))
        .add_service(ArtifactServiceServer::new(artifact_svc))
        .serve_with_incoming_shutdown(handshaken(incoming, tls, &limits, Some(metrics.clone()), stop.clone()), {
            let stop = stop.clone();
            let died = died.clone();
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = died.cancelled() => {}
                }
                // End sessions and watches first so graceful shutdown does not
                // wait on streams that never end by themselves.
                stop.cancel();
            }
        })
        .await
        .map_err(|e| CoordinatorError::Transport(e.to_string()));
    stop.cancel();
    if let Some(task) = http_task
        && tokio::time::timeout(Duration::from_secs(10), task).await.is_err()
    {
        tracing::warn!("the https listener did not stop within 10s");
    }
    let why = monitor.await.unwrap_or_else(|e| Some(e.to_string()));
    // A runtime that stopped by itself is an error even if serving ended
    // cleanly: the process must exit non-zero so a supervisor restarts it
    // (it recovers every rollout from its log).
    match why {
        Some(why) => Err(CoordinatorError::RuntimeDied(why)),
        None => result,
    }
}

/// The token `init` wrote to `operator.token` is the operator token named
/// `admin` (data directories from before named tokens get it added here).
pub fn adopt_operator_token(data_dir: &Path, now: convoy_common::model::UnixMillis) -> Result<(), CoordinatorError> {
    let path = operator_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => operators::ensure(data_dir, "admin", Role::Operator, t.trim(), now),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CoordinatorError::Io { path, source }),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! Coordinators in high availability on etcd (cargo feature `etcd`,
//! `serve --store etcd://…`; docs/ha.md).
//!
//! One process goes through terms. As a **follower** it campaigns in the
//! election ([`election`]) and answers every call with a redirect to the
//! leader ([`redirect`]). Once elected it is the **leader**: it opens the
//! etcd store fenced by its leader key, starts the runtime (which loads the
//! unfinished rollouts and re-sends their in-flight executions under the
//! same ids, as after a restart; every agent gets a fresh grace period since
//! all are lost until they reconnect) and serves the real services. The term
//! ends when the lease may be lost, a fenced write is refused, the runtime
//! stops, or the process is asked to stop (then the lease is revoked so a
//! follower takes over at once). After a lost term the process is a
//! follower again.
//!
//! The listener is accepted on by one task for the whole life of the
//! process; each term's server takes its connections from a channel that the
//! next term replaces, so the port never closes.

pub mod dashboard;
pub mod election;
pub mod redirect;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_proto::v1::agent_service_server::AgentServiceServer;
use convoy_proto::v1::artifact_service_server::ArtifactServiceServer;
use convoy_proto::v1::operator_service_server::OperatorServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::artifacts::ArtifactSvc;
use crate::connections::{CappedIncoming, Counted};
use crate::error::CoordinatorError;
use crate::grpc::{AgentSvc, OperatorSvc};
use crate::runtime::Clock;
use crate::server::ServerConfig;
use crate::store::{EtcdStore, EtcdTarget, Store};
use redirect::Redirect;

/// HA settings from `serve`.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub target: EtcdTarget,
    /// `HOST:PORT` agents and the CLI are redirected to while this one leads.
    pub advertise: String,
    /// `HOST:PORT` browsers are sent to while this one leads (its HTTPS
    /// listener's bound address if `None`).
    pub http_advertise: Option<String>,
    /// The leader lease's time to live.
    pub lease_ttl: Duration,
}

/// How long a term's server may take to close after the term ended.
const TERM_DRAIN: Duration = Duration::from_secs(5);

type Conn = std::io::Result<Counted>;
type Slot = Arc<Mutex<mpsc::Sender<Conn>>>;

/// A fresh channel for the next term's server; connections accepted from
/// now on queue in it.
fn next_term(slot: &Slot) -> ReceiverStream<Conn> {
    let (tx, rx) = mpsc::channel(1024);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    ReceiverStream::new(rx)
}

/// Accepts on `listener` for the whole life of the process (capped at
/// `cap`), handing each connection to the current term's channel in `slot`.
/// Outside tokio's cooperative budget, as the single-coordinator accept
/// loop is ([`crate::handshakes`]): each time it runs it drains the
/// kernel's backlog.
fn accept_into(listener: TcpListener, cap: usize, slot: Slot, shutdown: CancellationToken) {
    let mut incoming = CappedIncoming::new(listener, cap);
    tokio::spawn(tokio::task::unconstrained(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = incoming.next() => match c { Some(c) => c, None => return },
            };
            let tx = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let _ = tx.send(conn).await;
        }
    }));
}

/// Serve as one of several coordinators on etcd until `shutdown`; the
/// HTTPS listener `http`, if any, serves the leader's dashboard and
/// `/metrics`, and on a follower what [`crate::http::follower`] says.
pub async fn run(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: ServerConfig,
    ha: HaConfig,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let clock = Clock::system();
    let fds = crate::connections::raise_fd_limit();
    let cap = crate::connections::effective_cap(&config.connections, fds);
    let (first_tx, first_rx) = mpsc::channel(1024);
    let slot: Slot = Arc::new(Mutex::new(first_tx));
    let mut first = Some(ReceiverStream::new(first_rx));
    accept_into(listener, cap, slot.clone(), shutdown.clone());
    // The HTTPS listener likewise: its port stays open across terms.
    let http = match http {
        Some(l) => {
            let local = l.local_addr().map_err(|source| CoordinatorError::Bind { addr: "https".into(), source })?;
            let (tx, _) = mpsc::channel(1);
            let http_slot: Slot = Arc::new(Mutex::new(tx));
            accept_into(l, crate::http::MAX_CONNECTIONS, http_slot.clone(), shutdown.clone());
            Some((http_slot, local))
        }
        None => None,
    };
    let http_term = |http: &Option<(Slot, std::net::SocketAddr)>| {
        http.as_ref()
            .map(|(slot, local)| crate::http::HttpIncoming { incoming: Box::pin(next_term(slot)), local: *local })
    };
    // The first term's HTTPS channel now, as for gRPC: connections that
    // come while etcd is reached wait in it.
    let mut first_http = http_term(&http);
    let client = ha.target.client().await?;
    tracing::info!(store = %ha.target, advertise = %ha.advertise, ttl = ?ha.lease_ttl, "coordinator in HA: campaigning");
    while !shutdown.is_cancelled() {
        // ---- follower
        let incoming = first.take().unwrap_or_else(|| next_term(&slot));
        let follower_stop = shutdown.child_token();
        let (leader_tx, leader_rx) = watch::channel(None);
        tokio::spawn(election::follow_leader(client.clone(), ha.target.clone(), leader_tx, follower_stop.clone()));
        let follower_http = first_http.take().or_else(|| http_term(&http)).map(|h| {
            let (dashboard_tx, dashboard_rx) = watch::channel(None);
            let (c, t, l, s) = (client.clone(), ha.target.clone(), leader_rx.clone(), follower_stop.clone());
            tokio::spawn(dashboard::follow(c, t, l, dashboard_tx, s));
            let addrs = crate::http::follower::FollowerAddrs { leader: leader_rx.clone(), dashboard: dashboard_rx };
            tokio::spawn(serve_follower_http(h, config.clone(), addrs, follower_stop.clone()))
        });
        let follower = tokio::spawn(serve_redirects(incoming, config.clone(), leader_rx, follower_stop.clone()));
        let won = async {
            let lease = election::lease(&client, ha.lease_ttl).await?;
            match election::campaign(&client, &ha.target, &ha.advertise, &lease).await {
                Ok(l) => Ok(l),
                Err(e) => {
                    lease.lost.cancel();
                    Err(e)
                }
            }
        };
        let leadership = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = won => match r {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying in 500ms");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    None
                }
            },
        };
        // The next server's channel first, so no connection is lost between terms.
        let incoming = next_term(&slot);
        let http_incoming = if leadership.is_some() { http_term(&http) } else { None };
        follower_stop.cancel();
        let _ = follower.await;
        if let Some(h) = follower_http {
            let _ = h.await;
        }
        let Some(leadership) = leadership else { continue };
        // ---- leader
        let started = std::time::Instant::now();
        tracing::info!(key = %String::from_utf8_lossy(&leadership.fence.key), "elected leader; loading the store");
        let (target, fence) = (ha.target.clone(), leadership.fence.clone());
        let store = match tokio::task::spawn_blocking(move || EtcdStore::open(&target, Some(fence))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot open the etcd store; stepping down");
                leadership.lost.cancel();
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "opening the etcd store panicked; stepping down");
                leadership.lost.cancel();
                continue;
            }
        };
        let term = shutdown.child_token();
        {
            let (term, lost, refused) = (term.clone(), leadership.lost.clone(), store.lost());
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.cancelled() => {}
                    _ = lost.cancelled() => { tracing::error!("the leader lease may be lost: stepping down"); term.cancel(); }
                    _ = refused.cancelled() => { tracing::error!("a write was refused: stepping down"); term.cancel(); }
                }
            });
        }
        let store: Arc<dyn Store> = Arc::new(store);
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "leading");
        if let Some((_, local)) = &http {
            let https = ha.http_advertise.clone().unwrap_or_else(|| local.to_string());
            let announcement = dashboard::Announcement::new(&ha.advertise, &https);
            let (c, target, lease) = (client.clone(), ha.target.clone(), leadership.lease);
            // Beside the term, not before it: a slow etcd must not delay
            // the takeover. Without it followers answer browsers with 503
            // naming the leader instead of a redirect: a warning, not the term.
            tokio::spawn(async move {
                if let Err(e) = dashboard::announce(&c, &target, lease, &announcement).await {
                    tracing::warn!(error = %e, "cannot announce the dashboard's address to followers");
                }
            });
        }
        // Each term counts afresh.
        let metrics = Arc::new(crate::metrics::Metrics::ha_leader());
        let serve =
            crate::server::serve_incoming(incoming, http_incoming, config.clone(), store, clock, metrics, term.clone());
        tokio::pin!(serve);
        // A deposed leader stops acting at once, whatever its connections
        // do: once the term ends, the server gets TERM_DRAIN to close
        // gracefully, then it is dropped (its runtime task is aborted with it).
        let ended = tokio::select! {
            r = &mut serve => r,
            _ = async { term.cancelled().await; tokio::time::sleep(TERM_DRAIN).await } => {
                tracing::warn!(drain = ?TERM_DRAIN, "the term's server did not stop in time; dropping it");
                Ok(())
            }
        };
        term.cancel();
        leadership.lost.cancel();
        // Free the election now (not when the lease runs out) so a follower
        // takes over at once; the keep-alive task would too, but the process
        // may exit first.
        let mut c = client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(leadership.lease)).await;
        match ended {
            Ok(()) if shutdown.is_cancelled() => tracing::info!("stopped leading: shutting down"),
            Ok(()) => tracing::warn!("stopped leading; following again"),
            Err(e) => tracing::warn!(error = %e, "stopped leading; following again"),
        }
    }
    Ok(())
}

/// A follower's HTTPS listener ([`crate::http::follower`]).
async fn serve_follower_http(
    incoming: crate::http::HttpIncoming,
    config: ServerConfig,
    leader: crate::http::follower::FollowerAddrs,
    stop: CancellationToken,
) {
    let paths = crate::tls::PkiPaths::new(&config.data_dir);
    let tls = std::fs::read_to_string(paths.server_cert())
        .and_then(|cert| Ok((cert, std::fs::read_to_string(paths.server_key())?)))
        .map_err(|e| CoordinatorError::Tls { what: "server certificate".into(), message: e.to_string() })
        .and_then(|(cert, key)| crate::handshakes::https_config(&cert, &key, None));
    let tls = match tls {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "follower: cannot load the HTTPS listener's TLS");
            return;
        }
    };
    let auth = crate::operators::OperatorAuth::new(&config.data_dir, Clock::system());
    let timeout = config.connections.handshake_timeout;
    if let Err(e) = crate::http::follower::serve(incoming, tls, timeout, auth, leader, stop).await {
        tracing::warn!(error = %e, "follower https listener stopped");
    }
}

/// A follower's server: TLS like the leader's, every call redirected.
async fn serve_redirects(
    incoming: ReceiverStream<Conn>,
    config: ServerConfig,
    leader: watch::Receiver<Option<String>>,
    stop: CancellationToken,
) {
    let tls = match crate::server::server_tls(&config, None) {
        Ok((tls, _)) => tls,
        Err(e) => {
            tracing::error!(error = %e, "follower: cannot load TLS");
            return;
        }
    };
    let incoming = crate::server::handshaken(incoming, tls, &config.connections, None, stop.clone());
    let r = Server::builder()
        .add_service(Redirect::<AgentServiceServer<AgentSvc>>::new(leader.clone()))
        .add_service(Redirect::<OperatorServiceServer<OperatorSvc>>::new(leader.clone()))
        .add_service(Redirect::<ArtifactServiceServer<ArtifactSvc>>::new(leader))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "follower server stopped");
    }
}

//! The coordinator's HTTPS listener: the web dashboard and `/metrics`.
//!
//! Off by default; `convoy-coordinator serve --http-listen ADDR` turns it on.
//! It is a second listener beside the gRPC one, with the same server
//! certificate (`DATA_DIR/pki/server.pem`), its own connection cap and the
//! same handshake timeout. It stops with the coordinator's shutdown token;
//! its live streams (server-sent events) end on it too.
//!
//! Modules:
//! - [`auth`]: who is calling — an `Authorization: Bearer` operator token
//!   (scrapers, scripts) or a dashboard session cookie made by the login
//!   form; CSRF tokens for the dashboard's action forms.
//! - [`follower`]: what a follower in HA serves instead (`/metrics` with
//!   `convoy_ha_leader 0`, 503 naming the leader elsewhere).
//! - [`metrics`]: `GET /metrics` (viewer role or better).
//! - [`pages`]: the dashboard's HTML pages (rollouts, one rollout, agents,
//!   the audit trail) and its action posts.
//! - [`render`]: HTML helpers and the DAG drawn as inline SVG.
//! - [`sse`]: the live changes of one rollout as server-sent events.
//!
//! No JavaScript toolchain: pages are rendered on the server; one small
//! hand-written script and one stylesheet are embedded in the binary
//! (`include_str!`) and served under `/static/`.

pub mod auth;
pub mod follower;
pub mod metrics;
pub mod pages;
pub mod render;
pub mod sse;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::connections::{CappedIncoming, Counted};
use crate::error::CoordinatorError;
use crate::handshakes::{Handshakes, Tls, TlsIncoming};
use crate::metrics::Metrics;
use crate::operators::OperatorAuth;
use crate::runtime::{Clock, RuntimeHandle};
use crate::store::Store;

/// At most this many HTTPS connections at once (browsers and scrapers are
/// few; agents never use this listener).
pub const MAX_CONNECTIONS: usize = 256;

/// TLS handshakes at once on this listener.
const HANDSHAKES_AT_ONCE: usize = 16;

/// What every handler shares.
pub struct HttpState {
    pub runtime: RuntimeHandle,
    pub store: Arc<dyn Store>,
    pub auth: OperatorAuth,
    pub metrics: Arc<Metrics>,
    pub sessions: auth::Sessions,
    pub clock: Clock,
    /// Ends live streams when the coordinator stops.
    pub shutdown: CancellationToken,
}

/// Accepted TLS connections once their handshake is done ([`crate::handshakes`]).
pub struct TlsListener {
    incoming: TlsIncoming,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = Tls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.next().await {
            Some(Ok(tls)) => {
                let peer = tls.peer_addr();
                (tls, peer)
            }
            // The handshakes stopped (shutdown): accept nothing more.
            Some(Err(_)) | None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The peer's address, for logs and refusals.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Connections for the HTTPS listener, with the address it listens on.
pub struct HttpIncoming {
    pub incoming: Pin<Box<dyn Stream<Item = std::io::Result<Counted>> + Send>>,
    pub local: SocketAddr,
}

impl HttpIncoming {
    /// `listener`'s connections, at most [`MAX_CONNECTIONS`] at once
    /// (refusals counted in `metrics`, if given).
    pub fn listen(listener: TcpListener, metrics: Option<Arc<Metrics>>) -> Result<HttpIncoming, CoordinatorError> {
        let local = listener.local_addr().map_err(|source| CoordinatorError::Bind { addr: "https".into(), source })?;
        let capped = CappedIncoming::new(listener, MAX_CONNECTIONS);
        let capped = match metrics {
            Some(m) => capped.with_metrics(m),
            None => capped,
        };
        Ok(HttpIncoming { incoming: Box::pin(capped), local })
    }
}

/// TLS handshakes for `incoming`, as a listener axum serves.
pub(crate) fn handshaken(
    incoming: HttpIncoming,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
    shutdown: &CancellationToken,
) -> TlsListener {
    let handshakes = Handshakes { config: tls, timeout: handshake_timeout, at_once: HANDSHAKES_AT_ONCE, metrics };
    TlsListener { incoming: handshakes.run(incoming.incoming, shutdown.clone()), local: incoming.local }
}

/// Serve the dashboard and `/metrics` on `incoming` until `shutdown`.
pub async fn serve(
    incoming: HttpIncoming,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    state: Arc<HttpState>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let local = incoming.local;
    let listener = handshaken(incoming, tls, handshake_timeout, Some(state.metrics.clone()), &shutdown);
    tracing::info!(addr = %local, "dashboard and /metrics serving over https");
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("https: {e}")))
}

const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(pages::rollouts))
        .route("/rollouts/{id}", get(pages::rollout))
        .route("/rollouts/{id}/events", get(sse::events))
        .route("/rollouts/{id}/{action}", post(pages::control))
        .route("/agents", get(pages::agents))
        .route("/audit", get(pages::audit))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/metrics", get(metrics::metrics))
        .route("/static/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/static/dashboard.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body)
}

/// Headers on every answer: no framing (the action buttons cannot be
/// clickjacked), scripts and styles only from this origin, no referrer.
pub(crate) async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

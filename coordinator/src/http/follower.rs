//! What a follower in HA (`serve --store etcd://…`) serves on the HTTPS
//! listener: it runs no rollouts and holds no agents, so `/metrics` says
//! only `convoy_ha_leader 0` (Prometheus scrapes every coordinator and sees
//! one leader), and every other path is 503 naming the leader.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{HttpIncoming, Peer, handshaken, metrics, security_headers};
use crate::error::CoordinatorError;
use crate::operators::OperatorAuth;

/// What a follower in HA serves on the HTTPS listener until `shutdown`:
/// `/metrics` (viewer role or better) with `convoy_ha_leader 0`, and for
/// everything else 503 naming the leader's gRPC address. A dashboard
/// session does not survive a change of leader: log in on the new one.
pub async fn serve(
    incoming: HttpIncoming,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    auth: OperatorAuth,
    leader: tokio::sync::watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let listener = handshaken(incoming, tls, handshake_timeout, None, &shutdown);
    let follower = Arc::new(Follower { auth, leader });
    let app = Router::new()
        .route("/metrics", get(follower_metrics))
        .fallback(follower_elsewhere)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(follower)
        .into_make_service_with_connect_info::<Peer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("https (follower): {e}")))
}

/// What a follower's handlers share.
struct Follower {
    auth: OperatorAuth,
    leader: tokio::sync::watch::Receiver<Option<String>>,
}

async fn follower_metrics(
    axum::extract::State(f): axum::extract::State<Arc<Follower>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let refused = match bearer.map(|t| f.auth.authenticate(t.trim())) {
        Some(Ok(caller)) if caller.role >= crate::operators::Role::Viewer => None,
        Some(Ok(caller)) => Some(format!("reading metrics needs the viewer role; this token is a {}", caller.role)),
        Some(Err(e)) => Some(e.to_string()),
        None => Some("operator token missing".to_string()),
    };
    if let Some(why) = refused {
        tracing::warn!(peer = %peer.0, error = %why, "https call refused (follower)");
        return (axum::http::StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], why).into_response();
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], crate::metrics::follower_scrape()).into_response()
}

async fn follower_elsewhere(axum::extract::State(f): axum::extract::State<Arc<Follower>>) -> axum::response::Response {
    let body = match f.leader.borrow().clone() {
        Some(l) => format!(
            "this coordinator is a follower; the leader is the coordinator at {l} (gRPC): its dashboard is on \
             its --http-listen address\n"
        ),
        None => "this coordinator is a follower and no leader is elected yet; try again shortly\n".to_string(),
    };
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response()
}

//! What a follower in HA (`serve --store etcd://…`) serves on the HTTPS
//! listener: it runs no rollouts and holds no agents, so `/metrics` says
//! only `convoy_ha_leader 0` (Prometheus scrapes every coordinator and sees
//! one leader), and every other path is a redirect to the leader's
//! dashboard (503 naming the leader while it has not announced one).

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

/// What a follower knows of the leader: its gRPC address (the election's
/// value) and its dashboard's, once announced (`ha::dashboard`).
pub struct FollowerAddrs {
    pub leader: tokio::sync::watch::Receiver<Option<String>>,
    pub dashboard: tokio::sync::watch::Receiver<Option<String>>,
}

/// What a follower in HA serves on the HTTPS listener until `shutdown`:
/// `/metrics` (viewer role or better) with `convoy_ha_leader 0`, and for
/// everything else a temporary redirect to the same path on the leader's
/// dashboard, or 503 naming the leader's gRPC address while the leader has
/// announced none. A dashboard session does not survive a change of
/// leader (the login is the origin's): log in on the new one.
pub async fn serve(
    incoming: HttpIncoming,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    auth: OperatorAuth,
    leader: FollowerAddrs,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let listener = handshaken(incoming, tls, handshake_timeout, None, &shutdown);
    let follower = Arc::new(Follower { auth, leader: leader.leader, dashboard: leader.dashboard });
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
    dashboard: tokio::sync::watch::Receiver<Option<String>>,
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

async fn follower_elsewhere(
    axum::extract::State(f): axum::extract::State<Arc<Follower>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    if let Some(https) = f.dashboard.borrow().clone() {
        // The host is the announced one; only the path comes from the request.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{https}{path}");
        let body = format!("this coordinator is a follower; the leader's dashboard is at {location}\n");
        return (axum::http::StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)], body).into_response();
    }
    let body = match f.leader.borrow().clone() {
        Some(l) => format!(
            "this coordinator is a follower; the leader is the coordinator at {l} (gRPC): its dashboard is on \
             its --http-listen address\n"
        ),
        None => "this coordinator is a follower and no leader is elected yet; try again shortly\n".to_string(),
    };
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response()
}

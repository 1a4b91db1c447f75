//! `GET /metrics`: the coordinator's metrics in the OpenMetrics text format
//! (which Prometheus scrapes natively).
//!
//! Access: an operator token with the viewer role or better, sent as
//! `Authorization: Bearer TOKEN` (Prometheus: `authorization: {credentials_file: …}`).
//! There is no separate metrics token: one kind of credential, named,
//! revocable and listed by `convoy-coordinator token list`, is easier to
//! audit than two. Make one for the scraper with
//! `convoy-coordinator token create --name prometheus --role viewer`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Answer, require};
use super::{HttpState, Peer};
use crate::operators::Role;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require(&state, &headers, peer, Role::Viewer, "reading metrics", Answer::Api) {
        return *r;
    }
    let (agents, rollouts) = match tokio::try_join!(state.runtime.list_agents(), state.runtime.list_rollouts()) {
        Ok(v) => v,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let body = state.metrics.scrape(&agents, &rollouts).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

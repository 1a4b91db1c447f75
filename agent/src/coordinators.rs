//! Several coordinators: `--coordinator` may list several URLs, comma
//! separated (coordinators in HA, docs/ha.md). The agent dials one at a
//! time: the first at start; after a call answered by a follower, the leader
//! that follower names (`convoy-leader` metadata on an `UNAVAILABLE`
//! status); after a connection failure, the next in the list.
//!
//! The choice is kept per configured list (process-wide), so the session,
//! enrolment and artifact fetches all follow the same leader.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::config::AgentConfig;

/// The metadata key a follower puts the leader's `HOST:PORT` in.
pub const LEADER_HEADER: &str = "convoy-leader";

fn chosen() -> &'static Mutex<HashMap<String, String>> {
    static CHOSEN: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    CHOSEN.get_or_init(Default::default)
}

/// The URLs of a configured list, in order.
pub fn urls(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// The URL to dial now.
pub fn current(config: &AgentConfig) -> String {
    let list = &config.coordinator_url;
    let map = chosen().lock().unwrap_or_else(|p| p.into_inner());
    match map.get(list) {
        Some(u) => u.clone(),
        None => urls(list).first().map(|u| u.to_string()).unwrap_or_default(),
    }
}

/// A call failed with `status`: if a follower named the leader, dial it
/// next; returns whether it did.
pub fn follow(config: &AgentConfig, status: &tonic::Status) -> bool {
    let Some(leader) = status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()) else { return false };
    if leader.is_empty() || leader.contains(['/', ' ', ',']) {
        return false;
    }
    let url = format!("https://{leader}");
    tracing::info!(leader = %url, "redirected to the leader coordinator");
    chosen().lock().unwrap_or_else(|p| p.into_inner()).insert(config.coordinator_url.clone(), url);
    redirected().lock().unwrap_or_else(|p| p.into_inner()).insert(config.coordinator_url.clone());
    true
}

fn redirected() -> &'static Mutex<std::collections::HashSet<String>> {
    static REDIRECTED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    REDIRECTED.get_or_init(Default::default)
}

/// Whether a redirect was followed since the last call (the session loop
/// then retries at once instead of backing off further).
pub fn take_redirected(config: &AgentConfig) -> bool {
    redirected().lock().unwrap_or_else(|p| p.into_inner()).remove(&config.coordinator_url)
}

/// The coordinator dialled could not be reached: try the next one of the
/// list (no-op with a single URL).
pub fn next(config: &AgentConfig) {
    let all = urls(&config.coordinator_url);
    if all.len() < 2 {
        return;
    }
    let now = current(config);
    let i = all.iter().position(|u| *u == now).map_or(0, |i| (i + 1) % all.len());
    chosen().lock().unwrap_or_else(|p| p.into_inner()).insert(config.coordinator_url.clone(), all[i].to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_is_followed_and_a_failure_moves_to_the_next_url() {
        let config = AgentConfig::new("https://a:1,https://b:2,https://c:3", "/ca.pem", "h", "/tmp/x-coordinators");
        assert_eq!(current(&config), "https://a:1");
        next(&config);
        assert_eq!(current(&config), "https://b:2");
        let mut status = tonic::Status::unavailable("follower");
        status.metadata_mut().insert(LEADER_HEADER, "c:3".parse().unwrap());
        assert!(follow(&config, &status));
        assert_eq!(current(&config), "https://c:3");
        next(&config);
        assert_eq!(current(&config), "https://a:1", "wraps around");
        assert!(!follow(&config, &tonic::Status::unavailable("no header")));
    }
}

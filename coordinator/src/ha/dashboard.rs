//! Where the leader's dashboard is. The leader announces its HTTPS address
//! under a key bound to its lease (so it goes when the leader does), naming
//! itself by its election value; followers read it and send browsers there
//! ([`crate::http::follower`]). An announcement that names another leader
//! than the election's current one is stale and ignored.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::store::EtcdTarget;

/// The format this release writes (and the only one it reads).
const VERSION: u32 = 1;

/// How long one etcd call here may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The announcement: which leader, and its dashboard's `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub version: u32,
    /// The leader's election value (its gRPC `--advertise` address).
    pub leader: String,
    /// Its HTTPS listener (`--http-advertise`, or the bound address).
    pub https: String,
}

impl Announcement {
    pub fn new(leader: &str, https: &str) -> Announcement {
        Announcement { version: VERSION, leader: leader.to_string(), https: https.to_string() }
    }

    /// The dashboard address if this announcement is of the format this
    /// release knows and of `leader`; `None` otherwise.
    pub fn of(bytes: &[u8], leader: &str) -> Option<String> {
        let a: Announcement = serde_json::from_slice(bytes).ok()?;
        (a.version == VERSION && a.leader == leader).then_some(a.https)
    }
}

/// Announce `announcement` under `lease` (the leader's).
pub async fn announce(
    client: &Client,
    target: &EtcdTarget,
    lease: i64,
    announcement: &Announcement,
) -> Result<(), CoordinatorError> {
    let value = serde_json::to_vec(announcement)
        .map_err(|e| CoordinatorError::Store { op: "announce dashboard", message: e.to_string() })?;
    let mut c = client.clone();
    let put = c.put(target.dashboard_key(), value, Some(PutOptions::new().with_lease(lease)));
    match tokio::time::timeout(CALL_TIMEOUT, put).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(CoordinatorError::Store { op: "announce dashboard", message: format!("etcd: {e}") }),
        Err(_) => {
            Err(CoordinatorError::Store { op: "announce dashboard", message: format!("no answer in {CALL_TIMEOUT:?}") })
        }
    }
}

/// Keep `dashboard` set to the current leader's dashboard address (as
/// `leader` names the leader) until `stop`.
pub async fn follow(
    client: Client,
    target: EtcdTarget,
    leader: watch::Receiver<Option<String>>,
    dashboard: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let key = target.dashboard_key();
    super::election::poll_into(dashboard, stop, move || {
        let (mut c, key, leader) = (client.clone(), key.clone(), leader.borrow().clone());
        async move {
            let leader = leader?;
            match tokio::time::timeout(CALL_TIMEOUT, c.get(key, None)).await {
                Ok(Ok(r)) => r.kvs().first().and_then(|kv| Announcement::of(kv.value(), &leader)),
                _ => None,
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_counts_only_for_the_leader_it_names_and_in_a_known_format() {
        let bytes = serde_json::to_vec(&Announcement::new("10.0.0.1:7443", "10.0.0.1:7453")).unwrap();
        assert_eq!(Announcement::of(&bytes, "10.0.0.1:7443").as_deref(), Some("10.0.0.1:7453"));
        assert_eq!(Announcement::of(&bytes, "10.0.0.2:7443"), None, "a stale one, of the previous leader");
        let newer = br#"{"version":2,"leader":"10.0.0.1:7443","https":"10.0.0.1:7453"}"#;
        assert_eq!(Announcement::of(newer, "10.0.0.1:7443"), None);
        assert_eq!(Announcement::of(b"10.0.0.1:7453", "10.0.0.1:7443"), None);
    }
}

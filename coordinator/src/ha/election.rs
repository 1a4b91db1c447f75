//! Leader election on etcd: a lease kept alive by a task of ours (the
//! client does not renew leases by itself) and etcd's election API
//! (`Campaign` blocks until this coordinator's key is the oldest under the
//! election's name). The leader key and its create revision become the
//! [`Fence`] of the leader's store.
//!
//! A leader stops leading on its own clock before etcd can give the lease to
//! anyone else: when no keep-alive has succeeded for two thirds of the TTL,
//! [`Leadership::lost`] is cancelled. Fencing covers what the clock cannot
//! (a process paused past its lease): its next write is refused.

use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::store::{EtcdTarget, Fence};

fn etcd_err(op: &'static str, e: etcd_client::Error) -> CoordinatorError {
    CoordinatorError::Store { op, message: format!("etcd: {e}") }
}

/// This coordinator's term as leader.
#[derive(Debug)]
pub struct Leadership {
    pub fence: Fence,
    pub lease: i64,
    /// Cancelled when the lease may be lost (keep-alives failing).
    pub lost: CancellationToken,
}

/// A lease and the task that keeps it alive.
#[derive(Debug)]
pub struct Lease {
    pub id: i64,
    pub lost: CancellationToken,
}

/// Grant a lease of `ttl` and keep it alive until `lost` is cancelled (by
/// us, on keep-alives failing for 2/3 of the TTL, or by the caller).
pub async fn lease(client: &Client, ttl: Duration) -> Result<Lease, CoordinatorError> {
    let mut c = client.clone();
    let secs = ttl.as_secs().max(1) as i64;
    let granted = tokio::time::timeout(Duration::from_secs(3), c.lease_grant(secs, None))
        .await
        .map_err(|_| CoordinatorError::Store { op: "grant lease", message: "etcd did not answer within 3s".into() })?
        .map_err(|e| etcd_err("grant lease", e))?;
    let id = granted.id();
    let lost = CancellationToken::new();
    tokio::spawn(keep_alive(client.clone(), id, ttl, lost.clone()));
    Ok(Lease { id, lost })
}

async fn keep_alive(mut client: Client, id: i64, ttl: Duration, lost: CancellationToken) {
    let tick = ttl / 4;
    let give_up = ttl * 2 / 3;
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= give_up {
            tracing::warn!(lease = id, "lease keep-alives failed for 2/3 of its TTL; leadership ends");
            lost.cancel();
        }
        if lost.is_cancelled() {
            // Best effort: free the election at once for the others.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
            return;
        }
        let attempt = async {
            if stream.is_none() {
                stream = Some(client.lease_keep_alive(id).await?);
            }
            let (keeper, responses) = stream.as_mut().expect("just set");
            keeper.keep_alive().await?;
            match responses.message().await? {
                Some(r) if r.ttl() > 0 => Ok(true),
                _ => Ok::<bool, etcd_client::Error>(false),
            }
        };
        let pause = match tokio::time::timeout(tick.max(Duration::from_millis(200)), attempt).await {
            Ok(Ok(true)) => {
                last_ok = Instant::now();
                tick
            }
            Ok(Ok(false)) => {
                tracing::warn!(lease = id, "the lease has expired; leadership ends");
                lost.cancel();
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = id, error = %e, "lease keep-alive failed; retrying");
                stream = None;
                Duration::from_millis(100)
            }
            Err(_) => {
                stream = None;
                Duration::from_millis(100)
            }
        };
        tokio::select! {
            _ = lost.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Campaign under `target`'s election with `lease`, announcing `advertise`;
/// returns once this coordinator leads (or fails when the lease is lost).
pub async fn campaign(
    client: &Client,
    target: &EtcdTarget,
    advertise: &str,
    lease: &Lease,
) -> Result<Leadership, CoordinatorError> {
    let mut c = client.clone();
    let won = tokio::select! {
        r = c.campaign(target.election_name(), advertise.as_bytes().to_vec(), lease.id) => r.map_err(|e| etcd_err("campaign", e))?,
        _ = lease.lost.cancelled() => return Err(CoordinatorError::Deposed { message: "the lease was lost while campaigning".into() }),
    };
    let key = won
        .leader()
        .ok_or_else(|| CoordinatorError::Store { op: "campaign", message: "no leader key in the answer".into() })?;
    Ok(Leadership {
        fence: Fence { key: key.key().to_vec(), create_revision: key.rev() },
        lease: lease.id,
        lost: lease.lost.clone(),
    })
}

/// Keep `leader` set to the current leader's address until `stop`.
pub async fn follow_leader(
    client: Client,
    target: EtcdTarget,
    leader: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let name = target.election_name();
    poll_into(leader, stop, move || {
        let (mut c, name) = (client.clone(), name.clone());
        async move {
            match tokio::time::timeout(Duration::from_secs(2), c.leader(name)).await {
                Ok(Ok(r)) => r.kv().map(|kv| String::from_utf8_lossy(kv.value()).to_string()),
                _ => None,
            }
        }
    })
    .await
}

/// Every 300 ms until `stop`, `read` what etcd says now into `into`
/// (watchers are woken only when it changes).
pub async fn poll_into<F, R>(into: watch::Sender<Option<String>>, stop: CancellationToken, mut read: R)
where
    R: FnMut() -> F,
    F: std::future::Future<Output = Option<String>>,
{
    loop {
        let now = read().await;
        into.send_if_modified(|v| {
            let changed = *v != now;
            *v = now.clone();
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

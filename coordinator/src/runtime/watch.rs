//! Watching a rollout: one full snapshot, then the changes of each committed
//! batch.
//!
//! Why changes: a full [`RolloutSnapshot`] lists every host, so building one
//! per batch while anyone watches costs the actor O(hosts) per batch (at
//! 10,000 hosts, milliseconds per batch: most of its time). Instead each
//! rollout keeps a [`ChangeTracker`] beside its engine and, after a batch
//! that touched the rollout, publishes a [`RolloutChange`] (costing
//! O(hosts touched and groups)) on a bounded [`broadcast`] channel. A watcher subscribes
//! through the actor, which hands it a full snapshot and a receiver taken at
//! the same instant (after the batch's change was published), so applying
//! every change received to that snapshot keeps it exact. A watcher that
//! falls more than [`RuntimeConfig::watch_capacity`] changes behind is told
//! it lagged; [`RolloutWatch::next`] then subscribes again and yields a
//! fresh full snapshot: a watcher can be slow, never silently wrong.
//!
//! Nobody watching: the tracker only moves its group counters for the hosts
//! touched ([`ChangeTracker::absorb`]), so the engine's touched set is
//! drained every batch either way and never grows.

use super::*;
use convoy_common::view::{ChangeTracker, RolloutChange};
use tokio::sync::broadcast;

/// What a [`RolloutWatch`] yields.
#[derive(Debug, Clone)]
pub enum Watched {
    /// The whole rollout: the first item, and again after a resync.
    /// Replaces whatever the watcher held.
    Full(Arc<RolloutSnapshot>),
    /// What one committed batch changed; apply it to what the watcher
    /// holds ([`RolloutSnapshot::apply`]).
    Change(Arc<RolloutChange>),
}

/// A watcher of one rollout (see the module docs).
#[derive(Debug)]
pub struct RolloutWatch {
    handle: RuntimeHandle,
    id: String,
    /// The full snapshot not yet yielded (the first one, or a resync's).
    full: Option<RolloutSnapshot>,
    rx: broadcast::Receiver<Arc<RolloutChange>>,
    /// The receiver lagged in [`RolloutWatch::try_change`]: resync next.
    lagged: bool,
    resyncs: u64,
}

impl RolloutWatch {
    /// The rollout's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many times it fell behind and started again from a full snapshot.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// The next item: the full snapshot first (and after a resync), then
    /// each batch's change in order. `None` once the runtime is gone.
    pub async fn next(&mut self) -> Option<Watched> {
        loop {
            if let Some(full) = self.full.take() {
                return Some(Watched::Full(Arc::new(full)));
            }
            if self.lagged {
                self.resync().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(change) => return Some(Watched::Change(change)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(rollout = %self.id, missed, "watcher lagged; resyncing from a full snapshot");
                    self.lagged = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A change already waiting, without waiting: `None` when there is
    /// none, or when the watcher lagged (then [`RolloutWatch::next`]
    /// resyncs). Lets a slow consumer coalesce everything pending into one
    /// message.
    pub fn try_change(&mut self) -> Option<Arc<RolloutChange>> {
        if self.full.is_some() || self.lagged {
            return None;
        }
        match self.rx.try_recv() {
            Ok(change) => Some(change),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                self.lagged = true;
                None
            }
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => None,
        }
    }

    async fn resync(&mut self) -> Option<()> {
        let (full, rx) = self.handle.subscribe(Some(self.id.clone())).await.ok()?;
        self.full = Some(full);
        self.rx = rx;
        self.lagged = false;
        self.resyncs += 1;
        Some(())
    }
}

impl RolloutSnapshot {
    /// Bring this snapshot up to date with `change` (the next one after it).
    pub fn apply(&mut self, change: &RolloutChange) {
        self.updated = change.updated;
        change.apply(&mut self.view);
    }
}

impl RuntimeHandle {
    /// Watch a rollout (the latest if `None`): see [`RolloutWatch`].
    pub async fn watch(&self, rollout_id: Option<String>) -> Result<RolloutWatch, CoordinatorError> {
        let (full, rx) = self.subscribe(rollout_id).await?;
        Ok(RolloutWatch { handle: self.clone(), id: full.id.clone(), full: Some(full), rx, lagged: false, resyncs: 0 })
    }

    async fn subscribe(
        &self,
        rollout_id: Option<String>,
    ) -> Result<(RolloutSnapshot, broadcast::Receiver<Arc<RolloutChange>>), CoordinatorError> {
        self.ask(|reply| Command::Watch { rollout_id, reply }).await
    }
}

/// A rollout's watchers' side: the channel and the tracker.
pub(super) struct Publisher {
    changes: broadcast::Sender<Arc<RolloutChange>>,
    tracker: ChangeTracker,
}

impl Publisher {
    /// Start publishing `engine`'s changes (drains its touched hosts).
    pub(super) fn new(engine: &mut Engine, now: UnixMillis, capacity: usize) -> Publisher {
        let (tracker, _) = ChangeTracker::start(engine, now);
        Publisher { changes: broadcast::Sender::new(capacity.max(1)), tracker }
    }

    /// After a batch that touched the rollout: send its change to the
    /// watchers, or with none, only keep the tracker's counts.
    pub(super) fn publish(&mut self, engine: &mut Engine, updated: UnixMillis) {
        if self.changes.receiver_count() == 0 {
            self.tracker.absorb(engine);
        } else {
            // An error means every receiver went away meanwhile: nothing to do.
            let _ = self.changes.send(Arc::new(self.tracker.change(engine, updated)));
        }
    }

    /// A receiver of the changes published from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<RolloutChange>> {
        self.changes.subscribe()
    }
}

impl Actor {
    /// `Watch`: answered after the batch's changes are published, so the
    /// snapshot and the receiver are of the same instant.
    pub(super) fn watch_command(&mut self, rollout_id: Option<String>, reply: Reply<WatchStart>) {
        match self.resolve(rollout_id) {
            Ok(id) => self.after_commit.push(Box::new(move |actor: &Actor| {
                let r = actor
                    .rollouts
                    .get(&id)
                    .map(|run| (run.snapshot(), run.publisher.subscribe()))
                    .ok_or(CoordinatorError::UnknownRollout { id });
                let _ = reply.send(r);
            })),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// What the actor answers a `Watch` with.
pub(super) type WatchStart = (RolloutSnapshot, broadcast::Receiver<Arc<RolloutChange>>);

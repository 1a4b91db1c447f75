//! `WatchRollout`'s stream: the runtime's changes turned into
//! `RolloutStatus` messages.
//!
//! The task keeps its own full snapshot of the rollout, applies each change
//! the runtime publishes, and before sending drains every change already
//! waiting into that one message: a slow client gets fewer, fresher
//! messages, and costs the runtime's actor nothing (the actor publishes
//! each change once, whoever watches). A client that asked for
//! `changes_only` gets the first status in full, then only the groups,
//! host entries and backups that changed (`RolloutStatus.changes_only`);
//! older clients never ask and get a full status per message, as before.

use convoy_common::view::RolloutChange;
use convoy_proto::v1 as pb;
use convoy_wire::status::{RolloutMeta, rollout_changes};
use tokio::sync::mpsc;
use tonic::Status;

use crate::runtime::{RolloutSnapshot, RolloutWatch, Watched};

/// What the changes folded into one message touched.
#[derive(Default)]
struct Touched {
    groups: Vec<usize>,
    hosts: Vec<usize>,
    backups_from: Option<usize>,
}

impl Touched {
    fn add(&mut self, c: &RolloutChange) {
        self.groups.extend(c.groups.iter().map(|(i, _)| *i));
        self.hosts.extend(c.hosts.iter().map(|(i, _)| *i));
        // The earliest cut wins: the status carries every backup from it on.
        self.backups_from = Some(self.backups_from.map_or(c.backups_from, |b| b.min(c.backups_from)));
    }

    /// The `changes_only` status of `s` (after these changes).
    fn status(mut self, s: &RolloutSnapshot) -> pb::RolloutStatus {
        self.groups.sort_unstable();
        self.groups.dedup();
        self.hosts.sort_unstable();
        self.hosts.dedup();
        let from = self.backups_from.unwrap_or(s.view.backups.len());
        rollout_changes(meta(s), &s.view, &self.groups, &self.hosts, from)
    }
}

fn meta(s: &RolloutSnapshot) -> RolloutMeta<'_> {
    RolloutMeta {
        id: &s.id,
        plan_name: &s.plan_name,
        target_version: &s.target_version,
        created: s.created,
        updated: s.updated,
    }
}

/// Send `watch`'s rollout to `tx` until the rollout ends, the runtime
/// stops or the client goes away. `held` goes on every message.
pub(super) async fn stream(
    mut watch: RolloutWatch,
    changes_only: bool,
    held: Vec<pb::HeldHost>,
    tx: mpsc::Sender<Result<pb::RolloutStatus, Status>>,
) {
    let mut snap: Option<RolloutSnapshot> = None;
    loop {
        let item = tokio::select! {
            _ = tx.closed() => break,
            item = watch.next() => item,
        };
        let mut status = match item {
            None => break,
            Some(Watched::Full(full)) => {
                let full = std::sync::Arc::unwrap_or_clone(full);
                let status = super::rollout_to_wire(&full);
                snap = Some(full);
                status
            }
            Some(Watched::Change(change)) => {
                // Never without a full snapshot first: `next` yields one first.
                let Some(s) = snap.as_mut() else { continue };
                let mut touched = Touched::default();
                let mut change = Some(change);
                // Coalesce: every change already waiting goes into this message.
                while let Some(c) = change.take().or_else(|| watch.try_change()) {
                    s.apply(&c);
                    touched.add(&c);
                }
                if changes_only { touched.status(s) } else { super::rollout_to_wire(s) }
            }
        };
        status.held.clone_from(&held);
        let done = snap.as_ref().is_some_and(|s| s.view.state.is_terminal());
        if tx.send(Ok(status)).await.is_err() || done {
            break;
        }
    }
}

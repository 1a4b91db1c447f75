//! Rollouts as operators see them on the wire: the engine's
//! [`RolloutView`] with the coordinator's record of the rollout, as a
//! `RolloutStatus`.
//!
//! Each host's message and captured values are capped at
//! [`STATUS_MESSAGE_CAP`], so a status answer stays well under the message
//! limit at any fleet size.

use convoy_common::engine::HostState;
use convoy_common::model::{UnixMillis, keep_tail};
use convoy_common::view::{BackupView, GroupView, HostView, RolloutView};
use convoy_proto::v1 as pb;

/// Most bytes of a host's message or of one captured value in a status answer.
pub const STATUS_MESSAGE_CAP: usize = 1024;

/// What the coordinator knows of a rollout besides its engine's view.
#[derive(Debug, Clone, Copy)]
pub struct RolloutMeta<'a> {
    pub id: &'a str,
    pub plan_name: &'a str,
    pub target_version: &'a str,
    pub created: UnixMillis,
    pub updated: UnixMillis,
}

/// The `RolloutStatus` of a rollout.
pub fn rollout_status(meta: RolloutMeta<'_>, view: &RolloutView) -> pb::RolloutStatus {
    pb::RolloutStatus {
        rollout_id: meta.id.to_string(),
        plan_name: meta.plan_name.to_string(),
        state: view.state.as_str().to_string(),
        groups: view.groups.iter().map(group_status).collect(),
        hosts: view.hosts.iter().map(host_status).collect(),
        message: view.message.clone(),
        created_unix_ms: meta.created.0,
        updated_unix_ms: meta.updated.0,
        target_version: meta.target_version.to_string(),
        backups: view.backups.iter().map(rollout_backup).collect(),
        // Filled in by the coordinator (holds live beside the engine).
        held: Vec::new(),
        changes_only: false,
        group_indices: Vec::new(),
        host_indices: Vec::new(),
        backups_from: 0,
    }
}

/// A `changes_only` `RolloutStatus` (see the proto): the header of the
/// rollout now (`view` is its full, current view), the groups and host
/// entries at positions `groups` and `hosts`, and the backups from the
/// `backups_from`th on. Costs O(positions given), not O(hosts).
pub fn rollout_changes(
    meta: RolloutMeta<'_>,
    view: &RolloutView,
    groups: &[usize],
    hosts: &[usize],
    backups_from: usize,
) -> pb::RolloutStatus {
    let (groups, group_indices): (Vec<_>, Vec<_>) =
        groups.iter().filter_map(|&i| Some((group_status(view.groups.get(i)?), i as u32))).unzip();
    let (hosts, host_indices): (Vec<_>, Vec<_>) =
        hosts.iter().filter_map(|&i| Some((host_status(view.hosts.get(i)?), i as u32))).unzip();
    let backups_from = backups_from.min(view.backups.len());
    pb::RolloutStatus {
        rollout_id: meta.id.to_string(),
        plan_name: meta.plan_name.to_string(),
        state: view.state.as_str().to_string(),
        groups,
        hosts,
        message: view.message.clone(),
        created_unix_ms: meta.created.0,
        updated_unix_ms: meta.updated.0,
        target_version: meta.target_version.to_string(),
        backups: view.backups[backups_from..].iter().map(rollout_backup).collect(),
        held: Vec::new(),
        changes_only: true,
        group_indices,
        host_indices,
        backups_from: backups_from as u32,
    }
}

/// Fold a message of a `WatchRollout` stream into the status `held` (the
/// stream's first message, then every merge): a full status replaces it, a
/// `changes_only` one updates the header and the groups, hosts and backups
/// it names. `held` stays a full status (`changes_only` false). Positions
/// past the end of `held`'s lists (a change of another rollout) are ignored.
pub fn merge_status(held: &mut pb::RolloutStatus, next: pb::RolloutStatus) {
    if !next.changes_only {
        *held = next;
        return;
    }
    let pb::RolloutStatus {
        rollout_id,
        plan_name,
        state,
        groups,
        hosts,
        message,
        created_unix_ms,
        updated_unix_ms,
        target_version,
        backups,
        held: held_hosts,
        changes_only: _,
        group_indices,
        host_indices,
        backups_from,
    } = next;
    held.rollout_id = rollout_id;
    held.plan_name = plan_name;
    held.state = state;
    held.message = message;
    held.created_unix_ms = created_unix_ms;
    held.updated_unix_ms = updated_unix_ms;
    held.target_version = target_version;
    held.held = held_hosts;
    for (g, i) in groups.into_iter().zip(group_indices) {
        if let Some(slot) = held.groups.get_mut(i as usize) {
            *slot = g;
        }
    }
    for (h, i) in hosts.into_iter().zip(host_indices) {
        if let Some(slot) = held.hosts.get_mut(i as usize) {
            *slot = h;
        }
    }
    held.backups.truncate(backups_from as usize);
    held.backups.extend(backups);
}

fn group_status(g: &GroupView) -> pb::GroupStatus {
    pb::GroupStatus {
        name: g.name.clone(),
        state: g.state_str().to_string(),
        done: g.done as u32,
        running: g.running as u32,
        failed: g.failed as u32,
        pending: g.pending as u32,
        total: g.total as u32,
        windows: g.window.as_ref().map(|w| w.windows.clone()).unwrap_or_default(),
        window_timezone: g.window.as_ref().map(|w| w.timezone.clone()).unwrap_or_default(),
        window_waiting_until_unix_ms: g.window.as_ref().and_then(|w| w.waiting_until).map_or(0, |t| t.0),
        window_closes_unix_ms: g.window.as_ref().and_then(|w| w.closes_at).map_or(0, |t| t.0),
        windows_overridden_by: g.window.as_ref().and_then(|w| w.overridden_by.clone()).unwrap_or_default(),
    }
}

fn host_status(h: &HostView) -> pb::HostStatus {
    pb::HostStatus {
        host_id: h.host.clone(),
        group: h.group.clone(),
        state: h.state.as_str().to_string(),
        version: h.version.clone().unwrap_or_default(),
        current_step: h.current_step.clone().unwrap_or_default(),
        message: keep_tail(
            match &h.state {
                HostState::Failed { reason, .. } if h.message.is_empty() => reason.clone(),
                _ => h.message.clone(),
            },
            STATUS_MESSAGE_CAP,
        ),
        captured: h.captured.iter().map(|(k, v)| (k.clone(), keep_tail(v.clone(), STATUS_MESSAGE_CAP))).collect(),
    }
}

fn rollout_backup(b: &BackupView) -> pb::RolloutBackup {
    pb::RolloutBackup {
        host_id: b.host.clone(),
        group: b.group.clone(),
        step: b.step.clone(),
        location: b.location.clone(),
        size_bytes: b.size_bytes,
        taken_unix_ms: b.at.0,
    }
}

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
    }
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

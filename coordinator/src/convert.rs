//! Domain <-> wire conversions, at the transport edge only.

use convoy_common::engine::{ExecutionId, HostState};
use convoy_common::model::{StepOutcome, keep_tail};

/// Most bytes of a host's message or of one captured value in a status answer.
pub const STATUS_MESSAGE_CAP: usize = 1024;
use convoy_proto::v1 as pb;

use crate::error::CoordinatorError;
use crate::runtime::{AgentSnapshot, RolloutSnapshot};

/// An agent's result as a domain outcome; refuses results without an id or status.
pub fn result_from_wire(r: pb::StepResult) -> Result<(ExecutionId, StepOutcome), CoordinatorError> {
    let id: ExecutionId = r.execution_id.parse().map_err(|e: convoy_common::engine::BadExecutionId| {
        CoordinatorError::BadRequest { field: "step_result.execution_id".into(), message: e.to_string() }
    })?;
    // The shared conversion reads an unknown status as a failure; the
    // coordinator refuses it instead, so a garbled result never decides.
    match pb::StepStatus::try_from(r.status) {
        Ok(
            pb::StepStatus::Succeeded | pb::StepStatus::Failed | pb::StepStatus::Unsupported | pb::StepStatus::TimedOut,
        ) => Ok((id, convoy_wire::result_to_outcome(&r).capped())),
        Ok(pb::StepStatus::Unspecified) | Err(_) => Err(CoordinatorError::BadRequest {
            field: "step_result.status".into(),
            message: format!("unknown status {} for {}", r.status, r.execution_id),
        }),
    }
}

/// One recorded result of a host, as `HostOutputs` returns it.
pub fn host_output_to_wire(
    execution_id: &ExecutionId,
    o: &StepOutcome,
    finished: convoy_common::model::UnixMillis,
) -> pb::HostOutput {
    let r = convoy_wire::outcome_to_result(&execution_id.to_string(), o, false);
    pb::HostOutput {
        execution_id: execution_id.to_string(),
        status: r.status,
        exit_code: r.exit_code,
        message: r.message,
        stdout_tail: r.stdout_tail,
        stderr_tail: r.stderr_tail,
        finished_unix_ms: finished.0,
    }
}

pub fn rollout_to_wire(s: &RolloutSnapshot) -> pb::RolloutStatus {
    pb::RolloutStatus {
        rollout_id: s.id.clone(),
        plan_name: s.plan_name.clone(),
        state: s.view.state.as_str().to_string(),
        groups: s
            .view
            .groups
            .iter()
            .map(|g| pb::GroupStatus {
                name: g.name.clone(),
                state: g.state.as_str().to_string(),
                done: g.done as u32,
                running: g.running as u32,
                failed: g.failed as u32,
                pending: g.pending as u32,
                total: g.total as u32,
            })
            .collect(),
        hosts: s
            .view
            .hosts
            .iter()
            .map(|h| pb::HostStatus {
                host_id: h.host.clone(),
                group: h.group.clone(),
                state: h.state.as_str().to_string(),
                version: h.version.clone().unwrap_or_default(),
                current_step: h.current_step.clone().unwrap_or_default(),
                // Per host a few KiB at most, so a status answer stays well
                // under the message limit at any fleet size.
                message: keep_tail(
                    match &h.state {
                        HostState::Failed { reason, .. } if h.message.is_empty() => reason.clone(),
                        _ => h.message.clone(),
                    },
                    STATUS_MESSAGE_CAP,
                ),
                captured: h
                    .captured
                    .iter()
                    .map(|(k, v)| (k.clone(), keep_tail(v.clone(), STATUS_MESSAGE_CAP)))
                    .collect(),
            })
            .collect(),
        message: s.view.message.clone(),
        created_unix_ms: s.created.0,
        updated_unix_ms: s.updated.0,
        target_version: s.target_version.clone(),
        backups: s
            .view
            .backups
            .iter()
            .map(|b| pb::RolloutBackup {
                host_id: b.host.clone(),
                group: b.group.clone(),
                step: b.step.clone(),
                location: b.location.clone(),
                size_bytes: b.size_bytes,
                taken_unix_ms: b.at.0,
            })
            .collect(),
    }
}

pub fn agent_to_wire(a: &AgentSnapshot) -> pb::AgentInfo {
    let r = &a.record;
    pb::AgentInfo {
        agent_id: r.id.clone(),
        agent_version: r.version.clone(),
        connected: a.connected,
        labels: r.labels.clone().into_iter().collect(),
        facts: Some(pb::Facts {
            hostname: r.hostname.clone(),
            os: r.os.clone(),
            arch: r.arch.clone(),
            installed: r.installed.clone().into_iter().collect(),
            custom: r.facts.clone().into_iter().collect(),
        }),
        last_seen_unix_ms: r.last_seen.0,
        protocol_version: r.protocol_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_without_id_or_with_unknown_status_are_refused() {
        let ok = pb::StepResult {
            execution_id: "r1/h/0/1".into(),
            status: pb::StepStatus::Succeeded as i32,
            component: "demo".into(),
            installed_version: "2".into(),
            ..Default::default()
        };
        let (id, out) = result_from_wire(ok.clone()).unwrap();
        assert_eq!(id, "r1/h/0/1");
        assert_eq!(out.installed, Some(("demo".into(), "2".into())));
        assert_eq!(out.exit_code, None);
        let err = result_from_wire(pb::StepResult { execution_id: String::new(), ..ok.clone() }).unwrap_err();
        assert!(err.to_string().contains("execution_id"));
        let err = result_from_wire(pb::StepResult { status: 42, ..ok }).unwrap_err();
        assert!(err.to_string().contains("unknown status 42"));
    }
}

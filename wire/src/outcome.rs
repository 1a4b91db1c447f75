//! Step outcomes on the wire: the `StepResult` an agent reports and the
//! `HostOutput` an operator reads, with their size caps.
//!
//! Both ends cap an outcome ([`StepOutcome::capped`]): the agent before it
//! sends, the coordinator again when it receives, so no peer can make a
//! result, the event log or a status answer large. The coordinator refuses a
//! result without an execution id or with a status it does not know, so a
//! garbled result never decides anything.

use convoy_common::engine::ExecutionId;
use convoy_common::model::{BackupRecord, StepOutcome, StepStatus, UnixMillis};
use convoy_proto::v1 as pb;

use crate::error::{WireError, required};

/// The protocol status of a domain status.
pub fn status_to_proto(status: StepStatus) -> pb::StepStatus {
    match status {
        StepStatus::Succeeded => pb::StepStatus::Succeeded,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Unsupported => pb::StepStatus::Unsupported,
        StepStatus::TimedOut => pb::StepStatus::TimedOut,
    }
}

/// The `StepResult` reporting `outcome` for `execution_id` (what an agent sends).
pub fn outcome_to_result(execution_id: &str, outcome: &StepOutcome, replayed: bool) -> pb::StepResult {
    let outcome = &outcome.clone().capped();
    let (component, installed_version) = outcome.installed.clone().unwrap_or_default();
    pb::StepResult {
        execution_id: execution_id.to_string(),
        status: status_to_proto(outcome.status) as i32,
        exit_code: outcome.exit_code.unwrap_or(0),
        has_exit_code: outcome.exit_code.is_some(),
        stdout_tail: outcome.stdout_tail.clone(),
        stderr_tail: outcome.stderr_tail.clone(),
        message: outcome.message.clone(),
        duration_ms: outcome.duration_ms,
        installed_version,
        component,
        replayed,
        backup: outcome
            .backup
            .as_ref()
            .map(|b| pb::BackupRecord { location: b.location.clone(), size_bytes: b.size_bytes }),
        http_status: outcome.http_status.map_or(0, u32::from),
    }
}

/// The execution id and capped domain outcome an agent's `StepResult`
/// reports (what a coordinator receives).
pub fn result_from_proto(result: pb::StepResult) -> Result<(ExecutionId, StepOutcome), WireError> {
    required("step_result.execution_id", &result.execution_id)?;
    let execution_id: ExecutionId =
        result.execution_id.parse().map_err(|e: convoy_common::engine::BadExecutionId| {
            WireError::invalid("step_result.execution_id", e.to_string())
        })?;
    let status = match pb::StepStatus::try_from(result.status) {
        Ok(pb::StepStatus::Succeeded) => StepStatus::Succeeded,
        Ok(pb::StepStatus::Failed) => StepStatus::Failed,
        Ok(pb::StepStatus::Unsupported) => StepStatus::Unsupported,
        Ok(pb::StepStatus::TimedOut) => StepStatus::TimedOut,
        Ok(pb::StepStatus::Unspecified) | Err(_) => {
            return Err(WireError::invalid(
                "step_result.status",
                format!("unknown status {} for {}", result.status, result.execution_id),
            ));
        }
    };
    let installed = if result.component.is_empty() && result.installed_version.is_empty() {
        None
    } else {
        Some((result.component, result.installed_version))
    };
    let outcome = StepOutcome {
        status,
        exit_code: result.has_exit_code.then_some(result.exit_code),
        message: result.message,
        stdout_tail: result.stdout_tail,
        stderr_tail: result.stderr_tail,
        duration_ms: result.duration_ms,
        installed,
        backup: result.backup.map(|b| BackupRecord { location: b.location, size_bytes: b.size_bytes }),
        // Anything but a real status (0 included) is no status.
        http_status: u16::try_from(result.http_status).ok().filter(|s| (100..=599).contains(s)),
    };
    Ok((execution_id, outcome.capped()))
}

/// The outcome an agent reports for a `RunStep` it cannot convert.
pub fn unsupported_outcome(why: &WireError) -> StepOutcome {
    StepOutcome { status: StepStatus::Unsupported, exit_code: None, ..StepOutcome::failed(why.to_string()) }
}

/// One recorded result of a host, as `HostOutputs` returns it.
pub fn host_output(execution_id: &str, outcome: &StepOutcome, finished: UnixMillis) -> pb::HostOutput {
    let r = outcome_to_result(execution_id, outcome, false);
    pb::HostOutput {
        execution_id: r.execution_id,
        status: r.status,
        exit_code: r.exit_code,
        message: r.message,
        stdout_tail: r.stdout_tail,
        stderr_tail: r.stderr_tail,
        finished_unix_ms: finished.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_to_outcome(r: &pb::StepResult) -> StepOutcome {
        result_from_proto(r.clone()).unwrap().1
    }

    #[test]
    fn outcomes_round_trip() {
        let mut o = StepOutcome::failed("boom");
        o.exit_code = Some(-1);
        o.stdout_tail = "a".into();
        o.stderr_tail = "b".into();
        o.duration_ms = 42;
        o.installed = Some(("app".into(), "2.0".into()));
        let backup = StepOutcome {
            backup: Some(BackupRecord { location: "/var/backups/db.dump".into(), size_bytes: 1 << 40 }),
            ..StepOutcome::ok()
        };
        let http = StepOutcome { http_status: Some(503), stdout_tail: "replica".into(), ..StepOutcome::failed("503") };
        for outcome in [o, backup, http, StepOutcome::ok(), unsupported_outcome(&WireError::empty("x"))] {
            let r = outcome_to_result("r/h/0/1", &outcome, true);
            assert!(r.replayed);
            assert_eq!(r.execution_id, "r/h/0/1");
            assert_eq!(result_to_outcome(&r), outcome);
        }
        // A status no HTTP server sends reads as none.
        let bogus = pb::StepResult { http_status: 70_000, ..outcome_to_result("r/h/0/2", &StepOutcome::ok(), false) };
        assert_eq!(result_to_outcome(&bogus).http_status, None);
        for s in [StepStatus::Succeeded, StepStatus::Failed, StepStatus::Unsupported, StepStatus::TimedOut] {
            let o = StepOutcome { status: s, ..StepOutcome::ok() };
            assert_eq!(result_to_outcome(&outcome_to_result("r/h/0/3", &o, false)).status, s);
        }
    }

    #[test]
    fn results_without_id_or_with_unknown_status_are_refused() {
        let ok = pb::StepResult {
            execution_id: "r1/h/0/1".into(),
            status: pb::StepStatus::Succeeded as i32,
            component: "demo".into(),
            installed_version: "2".into(),
            ..Default::default()
        };
        let (id, out) = result_from_proto(ok.clone()).unwrap();
        assert_eq!(id, "r1/h/0/1");
        assert_eq!(out.installed, Some(("demo".into(), "2".into())));
        assert_eq!(out.exit_code, None);
        let err = result_from_proto(pb::StepResult { execution_id: String::new(), ..ok.clone() }).unwrap_err();
        assert!(err.to_string().contains("execution_id"));
        let err = result_from_proto(pb::StepResult { status: 42, ..ok.clone() }).unwrap_err();
        assert!(err.to_string().contains("unknown status 42"));
        assert_eq!(err.field, "step_result.status");
        let err = result_from_proto(pb::StepResult { status: pb::StepStatus::Unspecified as i32, ..ok }).unwrap_err();
        assert_eq!(err.field, "step_result.status");
    }
}

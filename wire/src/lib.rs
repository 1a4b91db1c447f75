//! Conversions between protocol messages and domain types, in one place for
//! both transport edges (the agent decodes steps and encodes results; the
//! coordinator the reverse), so a new step kind is mapped once.
//!
//! Drivers only ever see `convoy_common::model` types. A `RunStep` that cannot
//! be turned into a domain step — its `kind` oneof is empty because a newer
//! coordinator sent a kind this agent does not know, or a field is out of range
//! — is reported as `STEP_STATUS_UNSUPPORTED` with the reason, never a panic.
//!
//! Proto3 has no "unset" for scalars, so empty strings map to `None` for
//! optional fields, a zero `expect_status` means 200, and a missing
//! `CheckPolicy` means [`CheckPolicy::default`].

use std::time::Duration;

use convoy_common::metric::MetricFormat;
use convoy_common::model::{
    AptSpec, ArchiveRollbackSpec, ArchiveSpec, BackupRecord, BackupSpec, CheckPolicy, DpkgSpec, ExecCheckSpec,
    ExecSpec, FileCheckSpec, FileSpec, HttpCheckSpec, JsonExpect, MetricCheckSpec, MetricSource, PkgManager,
    PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec, StepKind, StepOutcome, StepSpec,
    StepStatus, TcpCheckSpec, Threshold,
};
use convoy_proto::v1 as pb;
use pb::step_spec::Kind as PbKind;

/// Why a `RunStep` could not be converted; reported as "unsupported".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconvertible {
    pub reason: String,
}

impl std::fmt::Display for Unconvertible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn unconvertible(reason: impl Into<String>) -> Unconvertible {
    Unconvertible { reason: reason.into() }
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() { None } else { Some(s.to_string()) }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The domain step of a `RunStep` (its name is the RunStep's `step_name`).
pub fn step_from_run_step(run: &pb::RunStep) -> Result<StepSpec, Unconvertible> {
    let spec = run.step.as_ref().ok_or_else(|| unconvertible("RunStep carries no step"))?;
    step_from_proto(&run.step_name, spec)
}

/// Converts a protocol step into a domain step.
pub fn step_from_proto(name: &str, spec: &pb::StepSpec) -> Result<StepSpec, Unconvertible> {
    let kind = match spec.kind.as_ref() {
        None => {
            return Err(unconvertible(format!(
                "step {name:?} has a kind this agent (version {}) does not know",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Some(PbKind::Exec(e)) => StepKind::Exec(exec_from_proto(e)?),
        Some(PbKind::Archive(a)) => {
            for (field, value) in [("component", &a.component), ("version", &a.version), ("source", &a.source)] {
                if value.is_empty() {
                    return Err(unconvertible(format!("archive step has an empty {field}")));
                }
            }
            StepKind::Archive(ArchiveSpec {
                component: a.component.clone(),
                version: a.version.clone(),
                source: a.source.clone(),
                sha256: a.sha256.clone(),
                install_root: non_empty(&a.install_root),
            })
        }
        Some(PbKind::ArchiveRollback(a)) => {
            if a.component.is_empty() {
                return Err(unconvertible("archive rollback step has an empty component"));
            }
            StepKind::ArchiveRollback(ArchiveRollbackSpec {
                component: a.component.clone(),
                to_version: non_empty(&a.to_version),
                install_root: non_empty(&a.install_root),
            })
        }
        Some(PbKind::Apt(a)) => StepKind::Apt(apt_from_proto(a)?),
        Some(PbKind::Dpkg(d)) => {
            nonempty_fields("dpkg", &[("package", &d.package), ("version", &d.version), ("source", &d.source)])?;
            StepKind::Dpkg(DpkgSpec {
                package: d.package.clone(),
                version: d.version.clone(),
                source: d.source.clone(),
                sha256: d.sha256.clone(),
            })
        }
        Some(PbKind::Rpm(r)) => StepKind::Rpm(rpm_from_proto(r)?),
        Some(PbKind::Service(sv)) => StepKind::Service(service_from_proto(sv)?),
        Some(PbKind::PkgRollback(r)) => {
            nonempty_fields("pkg_rollback", &[("package", &r.package)])?;
            let manager = PkgManager::parse(&r.manager)
                .ok_or_else(|| unconvertible(format!("pkg_rollback step has an unknown manager {:?}", r.manager)))?;
            StepKind::PkgRollback(PkgRollbackSpec {
                package: r.package.clone(),
                manager,
                to_version: non_empty(&r.to_version),
            })
        }
        Some(PbKind::File(f)) => {
            if f.path.is_empty() {
                return Err(unconvertible("file step has an empty path"));
            }
            StepKind::File(FileSpec { path: f.path.clone(), content: f.content.clone() })
        }
        Some(PbKind::HttpCheck(h)) => {
            let expect_status = match h.expect_status {
                0 => 200,
                s => u16::try_from(s)
                    .ok()
                    .filter(|s| (100..=999).contains(s))
                    .ok_or_else(|| unconvertible(format!("http check expects impossible status {s}")))?,
            };
            StepKind::HttpCheck(HttpCheckSpec {
                url: h.url.clone(),
                expect_status,
                body_contains: non_empty(&h.body_contains),
                json: (!h.json_path.is_empty())
                    .then(|| JsonExpect { path: h.json_path.clone(), equals: h.json_equals.clone() }),
                policy: policy_from_proto(h.policy.as_ref()),
            })
        }
        Some(PbKind::TcpCheck(t)) => {
            if t.address.is_empty() {
                return Err(unconvertible("tcp check has an empty address"));
            }
            StepKind::TcpCheck(TcpCheckSpec {
                address: t.address.clone(),
                policy: policy_from_proto(t.policy.as_ref()),
            })
        }
        Some(PbKind::ExecCheck(c)) => {
            let exec = c.exec.as_ref().ok_or_else(|| unconvertible("exec check carries no command"))?;
            StepKind::ExecCheck(ExecCheckSpec {
                exec: exec_from_proto(exec)?,
                policy: policy_from_proto(c.policy.as_ref()),
            })
        }
        Some(PbKind::FileCheck(f)) => {
            if f.path.is_empty() {
                return Err(unconvertible("file check has an empty path"));
            }
            StepKind::FileCheck(FileCheckSpec {
                path: f.path.clone(),
                contains: non_empty(&f.contains),
                policy: policy_from_proto(f.policy.as_ref()),
            })
        }
        Some(PbKind::MetricCheck(m)) => StepKind::MetricCheck(metric_from_proto(m)?),
        Some(PbKind::Backup(b)) => {
            let command = b.command.as_ref().ok_or_else(|| unconvertible("backup step carries no command"))?;
            StepKind::Backup(BackupSpec { command: exec_from_proto(command)?, path: non_empty(&b.path) })
        }
    };
    Ok(StepSpec {
        name: name.to_string(),
        timeout: Duration::from_millis(spec.timeout_ms),
        kind,
        rerun_safe: spec.rerun_safe,
    })
}

fn nonempty_fields(kind: &str, fields: &[(&str, &String)]) -> Result<(), Unconvertible> {
    match fields.iter().find(|(_, v)| v.is_empty()) {
        Some((field, _)) => Err(unconvertible(format!("{kind} step has an empty {field}"))),
        None => Ok(()),
    }
}

fn apt_from_proto(a: &pb::AptStep) -> Result<AptSpec, Unconvertible> {
    nonempty_fields("apt", &[("package", &a.package), ("version", &a.version)])?;
    let hold = match a.hold.as_str() {
        "" => None,
        "hold" => Some(true),
        "unhold" => Some(false),
        other => return Err(unconvertible(format!("apt step has an unknown hold {other:?}"))),
    };
    Ok(AptSpec {
        package: a.package.clone(),
        version: a.version.clone(),
        hold,
        allow_downgrade: a.allow_downgrade,
        update: a.update,
    })
}

fn rpm_from_proto(r: &pb::RpmStep) -> Result<RpmSpec, Unconvertible> {
    nonempty_fields("rpm", &[("package", &r.package), ("version", &r.version)])?;
    let manager = match r.manager.as_str() {
        "" | "dnf" => RpmManager::Dnf,
        "yum" => RpmManager::Yum,
        "rpm" => RpmManager::Rpm,
        other => return Err(unconvertible(format!("rpm step has an unknown manager {other:?}"))),
    };
    Ok(RpmSpec {
        package: r.package.clone(),
        version: r.version.clone(),
        manager,
        source: non_empty(&r.source),
        sha256: non_empty(&r.sha256),
        allow_downgrade: r.allow_downgrade,
    })
}

fn service_from_proto(sv: &pb::ServiceStep) -> Result<ServiceSpec, Unconvertible> {
    nonempty_fields("service", &[("name", &sv.name)])?;
    let action = match sv.action.as_str() {
        "start" => ServiceAction::Start,
        "stop" => ServiceAction::Stop,
        "restart" => ServiceAction::Restart,
        "status" => ServiceAction::Status,
        other => return Err(unconvertible(format!("service step has an unknown action {other:?}"))),
    };
    let manager = match sv.manager.as_str() {
        "" | "auto" => ServiceManager::Auto,
        "systemd" => ServiceManager::Systemd,
        "supervised" => ServiceManager::Supervised,
        other => return Err(unconvertible(format!("service step has an unknown manager {other:?}"))),
    };
    Ok(ServiceSpec {
        name: sv.name.clone(),
        action,
        manager,
        command: sv.command.as_ref().map(exec_from_proto).transpose()?,
        pidfile: non_empty(&sv.pidfile),
        log: non_empty(&sv.log),
        stop_grace: sv.has_stop_grace.then(|| Duration::from_millis(sv.stop_grace_ms)),
    })
}

fn exec_from_proto(e: &pb::ExecStep) -> Result<ExecSpec, Unconvertible> {
    if e.command.is_empty() {
        return Err(unconvertible("exec step has an empty command"));
    }
    Ok(ExecSpec {
        command: e.command.clone(),
        args: e.args.clone(),
        env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: non_empty(&e.workdir),
    })
}

fn policy_from_proto(p: Option<&pb::CheckPolicy>) -> CheckPolicy {
    match p {
        None => CheckPolicy::default(),
        Some(p) => CheckPolicy {
            retries: p.retries,
            interval: Duration::from_millis(p.interval_ms),
            deadline: Duration::from_millis(p.deadline_ms),
            min_healthy: Duration::from_millis(p.min_healthy_ms),
        },
    }
}

/// Converts a domain step into its protocol form (what a coordinator sends).
pub fn step_to_proto(step: &StepSpec) -> pb::StepSpec {
    let kind = match &step.kind {
        StepKind::Exec(e) => PbKind::Exec(exec_to_proto(e)),
        StepKind::Archive(a) => PbKind::Archive(pb::ArchiveStep {
            component: a.component.clone(),
            version: a.version.clone(),
            source: a.source.clone(),
            sha256: a.sha256.clone(),
            install_root: a.install_root.clone().unwrap_or_default(),
        }),
        StepKind::ArchiveRollback(a) => PbKind::ArchiveRollback(pb::ArchiveRollbackStep {
            component: a.component.clone(),
            to_version: a.to_version.clone().unwrap_or_default(),
            install_root: a.install_root.clone().unwrap_or_default(),
        }),
        StepKind::File(f) => PbKind::File(pb::FileStep { path: f.path.clone(), content: f.content.clone() }),
        StepKind::Apt(a) => PbKind::Apt(pb::AptStep {
            package: a.package.clone(),
            version: a.version.clone(),
            hold: match a.hold {
                None => String::new(),
                Some(true) => "hold".into(),
                Some(false) => "unhold".into(),
            },
            allow_downgrade: a.allow_downgrade,
            update: a.update,
        }),
        StepKind::Dpkg(d) => PbKind::Dpkg(pb::DpkgStep {
            package: d.package.clone(),
            version: d.version.clone(),
            source: d.source.clone(),
            sha256: d.sha256.clone(),
        }),
        StepKind::Rpm(r) => PbKind::Rpm(pb::RpmStep {
            package: r.package.clone(),
            version: r.version.clone(),
            manager: r.manager.command().to_string(),
            source: r.source.clone().unwrap_or_default(),
            sha256: r.sha256.clone().unwrap_or_default(),
            allow_downgrade: r.allow_downgrade,
        }),
        StepKind::Service(sv) => PbKind::Service(pb::ServiceStep {
            name: sv.name.clone(),
            action: sv.action.as_str().to_string(),
            manager: sv.manager.as_str().to_string(),
            command: sv.command.as_ref().map(exec_to_proto),
            pidfile: sv.pidfile.clone().unwrap_or_default(),
            log: sv.log.clone().unwrap_or_default(),
            stop_grace_ms: sv.stop_grace.map(millis).unwrap_or(0),
            has_stop_grace: sv.stop_grace.is_some(),
        }),
        StepKind::PkgRollback(r) => PbKind::PkgRollback(pb::PkgRollbackStep {
            package: r.package.clone(),
            manager: r.manager.as_str().to_string(),
            to_version: r.to_version.clone().unwrap_or_default(),
        }),
        StepKind::HttpCheck(h) => PbKind::HttpCheck(pb::HttpCheck {
            url: h.url.clone(),
            expect_status: u32::from(h.expect_status),
            body_contains: h.body_contains.clone().unwrap_or_default(),
            policy: Some(policy_to_proto(&h.policy)),
            json_path: h.json.as_ref().map(|j| j.path.clone()).unwrap_or_default(),
            json_equals: h.json.as_ref().map(|j| j.equals.clone()).unwrap_or_default(),
        }),
        StepKind::TcpCheck(t) => {
            PbKind::TcpCheck(pb::TcpCheck { address: t.address.clone(), policy: Some(policy_to_proto(&t.policy)) })
        }
        StepKind::ExecCheck(c) => PbKind::ExecCheck(pb::ExecCheck {
            exec: Some(exec_to_proto(&c.exec)),
            policy: Some(policy_to_proto(&c.policy)),
        }),
        StepKind::FileCheck(f) => PbKind::FileCheck(pb::FileCheck {
            path: f.path.clone(),
            contains: f.contains.clone().unwrap_or_default(),
            policy: Some(policy_to_proto(&f.policy)),
        }),
        StepKind::MetricCheck(m) => PbKind::MetricCheck(metric_to_proto(m)),
        StepKind::Backup(b) => PbKind::Backup(pb::BackupStep {
            command: Some(exec_to_proto(&b.command)),
            path: b.path.clone().unwrap_or_default(),
        }),
    };
    pb::StepSpec { timeout_ms: millis(step.timeout), kind: Some(kind), rerun_safe: step.rerun_safe }
}

fn exec_to_proto(e: &ExecSpec) -> pb::ExecStep {
    pb::ExecStep {
        command: e.command.clone(),
        args: e.args.clone(),
        env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: e.workdir.clone().unwrap_or_default(),
    }
}

fn policy_to_proto(p: &CheckPolicy) -> pb::CheckPolicy {
    pb::CheckPolicy {
        retries: p.retries,
        interval_ms: millis(p.interval),
        deadline_ms: millis(p.deadline),
        min_healthy_ms: millis(p.min_healthy),
    }
}

fn metric_from_proto(m: &pb::MetricCheck) -> Result<MetricCheckSpec, Unconvertible> {
    let source = match (m.url.is_empty(), &m.command) {
        (false, None) => MetricSource::Http { url: m.url.clone() },
        (true, Some(c)) => MetricSource::Command(exec_from_proto(c)?),
        (false, Some(_)) => return Err(unconvertible("metric check has both a url and a command")),
        (true, None) => return Err(unconvertible("metric check has neither a url nor a command")),
    };
    let format = match (m.prometheus.is_empty(), m.json_path.is_empty()) {
        (false, true) => MetricFormat::Prometheus {
            name: m.prometheus.clone(),
            labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        },
        (true, false) => MetricFormat::Json { path: m.json_path.clone() },
        (true, true) => MetricFormat::Plain,
        (false, false) => return Err(unconvertible("metric check has both a prometheus name and a json path")),
    };
    let threshold = |v: Option<f64>| -> Result<Option<Threshold>, Unconvertible> {
        match v {
            Some(x) if !x.is_finite() => Err(unconvertible(format!("metric threshold {x} is not finite"))),
            other => Ok(other.map(Threshold)),
        }
    };
    let (below, above) = (threshold(m.below)?, threshold(m.above)?);
    if below.is_none() && above.is_none() {
        return Err(unconvertible("metric check has no threshold"));
    }
    Ok(MetricCheckSpec { source, format, below, above, policy: policy_from_proto(m.policy.as_ref()) })
}

fn metric_to_proto(m: &MetricCheckSpec) -> pb::MetricCheck {
    let (url, command) = match &m.source {
        MetricSource::Http { url } => (url.clone(), None),
        MetricSource::Command(e) => (String::new(), Some(exec_to_proto(e))),
    };
    let (prometheus, labels, json_path) = match &m.format {
        MetricFormat::Prometheus { name, labels } => {
            (name.clone(), labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), String::new())
        }
        MetricFormat::Json { path } => (String::new(), Default::default(), path.clone()),
        MetricFormat::Plain => (String::new(), Default::default(), String::new()),
    };
    pb::MetricCheck {
        url,
        command,
        prometheus,
        labels,
        json_path,
        below: m.below.map(|t| t.0),
        above: m.above.map(|t| t.0),
        policy: Some(policy_to_proto(&m.policy)),
    }
}

/// The protocol status of a domain status.
pub fn status_to_proto(status: StepStatus) -> pb::StepStatus {
    match status {
        StepStatus::Succeeded => pb::StepStatus::Succeeded,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Unsupported => pb::StepStatus::Unsupported,
        StepStatus::TimedOut => pb::StepStatus::TimedOut,
    }
}

/// The `StepResult` reporting `outcome` for `execution_id`.
pub fn outcome_to_result(execution_id: &str, outcome: &StepOutcome, replayed: bool) -> pb::StepResult {
    // What an agent sends is capped at the source (the coordinator caps again).
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

/// The domain outcome a `StepResult` reports (an unknown or unspecified status
/// reads as `Failed`: a result nobody can interpret is not a success).
pub fn result_to_outcome(result: &pb::StepResult) -> StepOutcome {
    let status = match pb::StepStatus::try_from(result.status) {
        Ok(pb::StepStatus::Succeeded) => StepStatus::Succeeded,
        Ok(pb::StepStatus::Unsupported) => StepStatus::Unsupported,
        Ok(pb::StepStatus::TimedOut) => StepStatus::TimedOut,
        Ok(pb::StepStatus::Failed | pb::StepStatus::Unspecified) | Err(_) => StepStatus::Failed,
    };
    let installed = if result.component.is_empty() && result.installed_version.is_empty() {
        None
    } else {
        Some((result.component.clone(), result.installed_version.clone()))
    };
    StepOutcome {
        status,
        exit_code: result.has_exit_code.then_some(result.exit_code),
        message: result.message.clone(),
        stdout_tail: result.stdout_tail.clone(),
        stderr_tail: result.stderr_tail.clone(),
        duration_ms: result.duration_ms,
        installed,
        backup: result.backup.as_ref().map(|b| BackupRecord { location: b.location.clone(), size_bytes: b.size_bytes }),
        // Anything but a real status (0 included) is no status.
        http_status: u16::try_from(result.http_status).ok().filter(|s| (100..=599).contains(s)),
    }
}

/// The result reported for a `RunStep` the agent cannot convert.
pub fn unsupported_outcome(reason: &Unconvertible) -> StepOutcome {
    StepOutcome { status: StepStatus::Unsupported, exit_code: None, ..StepOutcome::failed(reason.reason.clone()) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn policy() -> CheckPolicy {
        CheckPolicy {
            retries: 3,
            interval: Duration::from_millis(250),
            deadline: Duration::from_secs(9),
            min_healthy: Duration::from_millis(1500),
        }
    }

    fn exec() -> ExecSpec {
        ExecSpec {
            command: "systemctl".into(),
            args: vec!["restart".into(), "app".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            workdir: Some("/tmp".into()),
        }
    }

    fn all_kinds() -> Vec<StepKind> {
        vec![
            StepKind::Exec(exec()),
            StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            StepKind::Archive(ArchiveSpec {
                component: "app".into(),
                version: "3.40.0".into(),
                source: "/srv/app.tar.gz".into(),
                sha256: "ab".repeat(32),
                install_root: Some("/opt".into()),
            }),
            StepKind::Archive(ArchiveSpec {
                component: "app".into(),
                version: "1".into(),
                source: "a.tgz".into(),
                sha256: String::new(),
                install_root: None,
            }),
            StepKind::File(FileSpec { path: "/etc/app.conf".into(), content: "x=1\n".into() }),
            StepKind::ArchiveRollback(ArchiveRollbackSpec {
                component: "app".into(),
                to_version: Some("3.39.1".into()),
                install_root: None,
            }),
            StepKind::ArchiveRollback(ArchiveRollbackSpec {
                component: "app".into(),
                to_version: None,
                install_root: None,
            }),
            StepKind::HttpCheck(HttpCheckSpec {
                url: "http://127.0.0.1:8080/health".into(),
                expect_status: 204,
                body_contains: Some("ok".into()),
                json: Some(JsonExpect { path: "status.db".into(), equals: "up".into() }),
                policy: policy(),
            }),
            StepKind::HttpCheck(HttpCheckSpec {
                url: "http://h/".into(),
                expect_status: 200,
                body_contains: None,
                json: None,
                policy: CheckPolicy::default(),
            }),
            StepKind::TcpCheck(TcpCheckSpec { address: "127.0.0.1:5432".into(), policy: policy() }),
            StepKind::ExecCheck(ExecCheckSpec { exec: exec(), policy: policy() }),
            StepKind::FileCheck(FileCheckSpec {
                path: "/run/app.pid".into(),
                contains: Some("1".into()),
                policy: policy(),
            }),
            StepKind::FileCheck(FileCheckSpec { path: "/run/app.pid".into(), contains: None, policy: policy() }),
            StepKind::MetricCheck(MetricCheckSpec {
                source: MetricSource::Http { url: "http://127.0.0.1:15692/metrics".into() },
                format: MetricFormat::Prometheus {
                    name: "rabbitmq_queue_messages".into(),
                    labels: BTreeMap::from([("queue".into(), "events".into())]),
                },
                below: Some(Threshold(1000.0)),
                above: None,
                policy: policy(),
            }),
            StepKind::MetricCheck(MetricCheckSpec {
                source: MetricSource::Command(exec()),
                format: MetricFormat::Json { path: "queues.0.messages".into() },
                below: Some(Threshold(10.5)),
                above: Some(Threshold(-1.0)),
                policy: policy(),
            }),
            StepKind::MetricCheck(MetricCheckSpec {
                source: MetricSource::Command(exec()),
                format: MetricFormat::Plain,
                below: None,
                above: Some(Threshold(0.0)),
                policy: policy(),
            }),
            StepKind::Apt(AptSpec {
                package: "demo-api".into(),
                version: "1:2.0.0-1".into(),
                hold: Some(true),
                allow_downgrade: true,
                update: true,
            }),
            StepKind::Apt(AptSpec {
                package: "demo-api".into(),
                version: "2.0.0".into(),
                hold: Some(false),
                allow_downgrade: false,
                update: false,
            }),
            StepKind::Apt(AptSpec {
                package: "demo-api".into(),
                version: "2.0.0".into(),
                hold: None,
                allow_downgrade: false,
                update: false,
            }),
            StepKind::Dpkg(DpkgSpec {
                package: "demo-db".into(),
                version: "2.0.0".into(),
                source: "/srv/debs/demo-db_2.0.0_all.deb".into(),
                sha256: "cd".repeat(32),
            }),
            StepKind::Rpm(RpmSpec {
                package: "demo-api".into(),
                version: "2.0.0-1.el9".into(),
                manager: RpmManager::Rpm,
                source: Some("/srv/demo-api.rpm".into()),
                sha256: Some("ef".repeat(32)),
                allow_downgrade: true,
            }),
            StepKind::Rpm(RpmSpec {
                package: "demo-api".into(),
                version: "2.0.0".into(),
                manager: RpmManager::Yum,
                source: None,
                sha256: None,
                allow_downgrade: false,
            }),
            StepKind::Rpm(RpmSpec {
                package: "demo-api".into(),
                version: "2.0.0".into(),
                manager: RpmManager::Dnf,
                source: None,
                sha256: None,
                allow_downgrade: false,
            }),
            StepKind::Service(ServiceSpec {
                name: "demo-api".into(),
                action: ServiceAction::Restart,
                manager: ServiceManager::Supervised,
                command: Some(exec()),
                pidfile: Some("/run/demo-api.pid".into()),
                log: Some("/var/log/demo-api.log".into()),
                stop_grace: Some(Duration::from_millis(2500)),
            }),
            StepKind::Service(ServiceSpec {
                name: "demo-api".into(),
                action: ServiceAction::Stop,
                manager: ServiceManager::Auto,
                command: None,
                pidfile: None,
                log: None,
                stop_grace: Some(Duration::ZERO),
            }),
            StepKind::Service(ServiceSpec {
                name: "nginx".into(),
                action: ServiceAction::Status,
                manager: ServiceManager::Systemd,
                command: None,
                pidfile: None,
                log: None,
                stop_grace: None,
            }),
            StepKind::Service(ServiceSpec {
                name: "nginx".into(),
                action: ServiceAction::Start,
                manager: ServiceManager::Auto,
                command: None,
                pidfile: None,
                log: None,
                stop_grace: None,
            }),
            StepKind::PkgRollback(PkgRollbackSpec {
                package: "demo-db".into(),
                manager: PkgManager::Dpkg,
                to_version: Some("1.0.0".into()),
            }),
            StepKind::PkgRollback(PkgRollbackSpec {
                package: "demo-db".into(),
                manager: PkgManager::Apt,
                to_version: None,
            }),
            StepKind::PkgRollback(PkgRollbackSpec { package: "x".into(), manager: PkgManager::Dnf, to_version: None }),
            StepKind::PkgRollback(PkgRollbackSpec { package: "x".into(), manager: PkgManager::Yum, to_version: None }),
            StepKind::PkgRollback(PkgRollbackSpec { package: "x".into(), manager: PkgManager::Rpm, to_version: None }),
            StepKind::Backup(BackupSpec { command: exec(), path: Some("/var/backups/db.dump".into()) }),
            StepKind::Backup(BackupSpec {
                command: ExecSpec { command: "pg_dump-latest".into(), ..ExecSpec::default() },
                path: None,
            }),
        ]
    }

    #[test]
    fn every_kind_name_is_covered() {
        let names: std::collections::BTreeSet<&str> = all_kinds().iter().map(StepKind::kind_name).collect();
        for n in
            ["apt", "dpkg", "rpm", "service", "pkg_rollback", "exec", "archive", "archive_rollback", "metric", "backup"]
        {
            assert!(names.contains(n), "{n} missing from all_kinds");
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in all_kinds() {
            let step = StepSpec { name: "s".into(), timeout: Duration::from_millis(1500), kind, rerun_safe: false };
            let wire = step_to_proto(&step);
            let run = pb::RunStep {
                execution_id: "e1".into(),
                rollout_id: "r".into(),
                step_name: "s".into(),
                step: Some(wire),
            };
            assert_eq!(step_from_run_step(&run).unwrap(), step);
        }
    }

    #[test]
    fn empty_oneof_is_unsupported() {
        let run = pb::RunStep {
            execution_id: "e1".into(),
            step_name: "future".into(),
            step: Some(pb::StepSpec { timeout_ms: 10, kind: None, rerun_safe: false }),
            ..Default::default()
        };
        let err = step_from_run_step(&run).unwrap_err();
        assert!(err.reason.contains("does not know"), "{err}");
        let outcome = unsupported_outcome(&err);
        assert_eq!(outcome.status, StepStatus::Unsupported);
        let result = outcome_to_result("e1", &outcome, false);
        assert_eq!(result.status, pb::StepStatus::Unsupported as i32);
        assert!(!result.has_exit_code);

        let no_step = pb::RunStep { execution_id: "e2".into(), ..Default::default() };
        assert!(step_from_run_step(&no_step).is_err());
    }

    #[test]
    fn malformed_fields_are_unsupported_not_panics() {
        let bad = [
            PbKind::Exec(pb::ExecStep::default()),
            PbKind::HttpCheck(pb::HttpCheck { url: "http://h/".into(), expect_status: 70000, ..Default::default() }),
            PbKind::ExecCheck(pb::ExecCheck { exec: None, policy: None }),
            PbKind::Archive(pb::ArchiveStep::default()),
            PbKind::File(pb::FileStep::default()),
            PbKind::TcpCheck(pb::TcpCheck::default()),
            PbKind::FileCheck(pb::FileCheck::default()),
            PbKind::Apt(pb::AptStep::default()),
            PbKind::Apt(pb::AptStep {
                package: "p".into(),
                version: "1".into(),
                hold: "sometimes".into(),
                ..Default::default()
            }),
            PbKind::Dpkg(pb::DpkgStep { package: "p".into(), version: "1".into(), ..Default::default() }),
            PbKind::Rpm(pb::RpmStep {
                package: "p".into(),
                version: "1".into(),
                manager: "zypper".into(),
                ..Default::default()
            }),
            PbKind::Rpm(pb::RpmStep::default()),
            PbKind::Service(pb::ServiceStep { name: "s".into(), ..Default::default() }),
            PbKind::Service(pb::ServiceStep { name: "s".into(), action: "reload".into(), ..Default::default() }),
            PbKind::Service(pb::ServiceStep {
                name: "s".into(),
                action: "start".into(),
                manager: "openrc".into(),
                ..Default::default()
            }),
            PbKind::Service(pb::ServiceStep {
                name: "s".into(),
                action: "start".into(),
                command: Some(pb::ExecStep::default()),
                ..Default::default()
            }),
            PbKind::PkgRollback(pb::PkgRollbackStep { package: "p".into(), manager: "".into(), ..Default::default() }),
            PbKind::PkgRollback(pb::PkgRollbackStep {
                package: "".into(),
                manager: "apt".into(),
                ..Default::default()
            }),
            PbKind::Backup(pb::BackupStep { command: None, path: "/b".into() }),
            PbKind::Backup(pb::BackupStep { command: Some(pb::ExecStep::default()), path: String::new() }),
        ];
        for kind in bad {
            let spec = pb::StepSpec { timeout_ms: 0, kind: Some(kind.clone()), rerun_safe: false };
            assert!(step_from_proto("s", &spec).is_err(), "{kind:?} accepted");
        }
    }

    #[test]
    fn proto_defaults() {
        let spec = pb::StepSpec {
            timeout_ms: 0,
            kind: Some(PbKind::HttpCheck(pb::HttpCheck { url: "http://h/".into(), ..Default::default() })),
            rerun_safe: false,
        };
        let step = step_from_proto("s", &spec).unwrap();
        let StepKind::HttpCheck(h) = step.kind else { panic!() };
        assert_eq!(h.expect_status, 200);
        assert_eq!(h.policy, CheckPolicy::default());
        assert_eq!(h.body_contains, None);
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
        for outcome in [o, backup, http, StepOutcome::ok(), unsupported_outcome(&unconvertible("x"))] {
            let r = outcome_to_result("id", &outcome, true);
            assert!(r.replayed);
            assert_eq!(r.execution_id, "id");
            assert_eq!(result_to_outcome(&r), outcome);
        }
        // A status no HTTP server sends reads as none.
        let bogus = pb::StepResult { http_status: 70_000, ..outcome_to_result("i", &StepOutcome::ok(), false) };
        assert_eq!(result_to_outcome(&bogus).http_status, None);
        for s in [StepStatus::Succeeded, StepStatus::Failed, StepStatus::Unsupported, StepStatus::TimedOut] {
            let o = StepOutcome { status: s, ..StepOutcome::ok() };
            assert_eq!(result_to_outcome(&outcome_to_result("i", &o, false)).status, s);
        }
    }
}

//! Steps on the wire: a [`StepSpec`] and each [`StepKind`] in both
//! directions, and the `RunStep` that carries one to an agent.
//!
//! Both directions match every kind (no catch-all), so a new kind does not
//! compile until it is mapped. A step the agent cannot convert — an empty
//! `kind` oneof because a newer coordinator sent a kind this agent does not
//! know, or a field out of range — is a [`WireError`] the agent reports as
//! "unsupported", never a panic. Health checks are mapped in `check.rs`,
//! package and service steps in `package.rs`.

use std::time::Duration;

use convoy_common::model::{
    AgentUpgradeSpec, ArchiveRollbackSpec, ArchiveSpec, BackupSpec, ExecSpec, FileSpec, RunAs, StepKind, StepSpec,
};
use convoy_proto::v1 as pb;
use pb::step_spec::Kind as PbKind;

use crate::check::{
    exec_check_from_proto, exec_check_to_proto, file_check_from_proto, file_check_to_proto, http_from_proto,
    http_to_proto, metric_from_proto, metric_to_proto, tcp_from_proto, tcp_to_proto,
};
use crate::error::{Problem, WireError, required};
use crate::package::{
    apt_from_proto, apt_to_proto, dpkg_from_proto, dpkg_to_proto, pkg_rollback_from_proto, pkg_rollback_to_proto,
    rpm_from_proto, rpm_to_proto, service_from_proto, service_to_proto,
};
use crate::signing::{signing_from_proto, signing_to_proto};
use crate::{millis, non_empty};

/// The `RunStep` asking an agent to run `step` as execution `execution_id`.
pub fn run_step(execution_id: &str, step: &StepSpec) -> pb::RunStep {
    pb::RunStep {
        execution_id: execution_id.to_string(),
        step_name: step.name.clone(),
        step: Some(step_to_proto(step)),
    }
}

/// The domain step of a `RunStep` (its name is the RunStep's `step_name`).
pub fn step_from_run_step(run: &pb::RunStep) -> Result<StepSpec, WireError> {
    let spec = run.step.as_ref().ok_or(WireError::empty("run_step.step"))?;
    step_from_proto(&run.step_name, spec)
}

/// Converts a protocol step into a domain step named `name`.
pub fn step_from_proto(name: &str, spec: &pb::StepSpec) -> Result<StepSpec, WireError> {
    let kind = match spec.kind.as_ref() {
        None => {
            return Err(WireError {
                field: "step.kind",
                problem: Problem::UnknownKind { step: name.to_string(), version: env!("CARGO_PKG_VERSION") },
            });
        }
        Some(PbKind::Exec(e)) => StepKind::Exec(exec_from_proto(e, "exec.command")?),
        Some(PbKind::Archive(a)) => StepKind::Archive(archive_from_proto(a)?),
        Some(PbKind::ArchiveRollback(a)) => StepKind::ArchiveRollback(archive_rollback_from_proto(a)?),
        Some(PbKind::Apt(a)) => StepKind::Apt(apt_from_proto(a)?),
        Some(PbKind::Dpkg(d)) => StepKind::Dpkg(dpkg_from_proto(d)?),
        Some(PbKind::Rpm(r)) => StepKind::Rpm(rpm_from_proto(r)?),
        Some(PbKind::Service(sv)) => StepKind::Service(service_from_proto(sv)?),
        Some(PbKind::PkgRollback(r)) => StepKind::PkgRollback(pkg_rollback_from_proto(r)?),
        Some(PbKind::File(f)) => {
            required("file.path", &f.path)?;
            StepKind::File(FileSpec { path: f.path.clone(), content: f.content.clone() })
        }
        Some(PbKind::HttpCheck(h)) => StepKind::HttpCheck(http_from_proto(h)?),
        Some(PbKind::TcpCheck(t)) => StepKind::TcpCheck(tcp_from_proto(t)?),
        Some(PbKind::ExecCheck(c)) => StepKind::ExecCheck(exec_check_from_proto(c)?),
        Some(PbKind::FileCheck(f)) => StepKind::FileCheck(file_check_from_proto(f)?),
        Some(PbKind::MetricCheck(m)) => StepKind::MetricCheck(metric_from_proto(m)?),
        Some(PbKind::AgentUpgrade(a)) => StepKind::AgentUpgrade(agent_upgrade_from_proto(a)?),
        Some(PbKind::Backup(b)) => {
            let command = b.command.as_ref().ok_or(WireError::empty("backup.command"))?;
            StepKind::Backup(BackupSpec {
                command: exec_from_proto(command, "backup.command.command")?,
                path: non_empty(&b.path),
            })
        }
    };
    Ok(StepSpec {
        name: name.to_string(),
        timeout: Duration::from_millis(spec.timeout_ms),
        kind,
        rerun_safe: spec.rerun_safe,
    })
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
            signing: signing_to_proto(&a.signing),
        }),
        StepKind::ArchiveRollback(a) => PbKind::ArchiveRollback(pb::ArchiveRollbackStep {
            component: a.component.clone(),
            to_version: a.to_version.clone().unwrap_or_default(),
            install_root: a.install_root.clone().unwrap_or_default(),
        }),
        StepKind::File(f) => PbKind::File(pb::FileStep { path: f.path.clone(), content: f.content.clone() }),
        StepKind::Apt(a) => PbKind::Apt(apt_to_proto(a)),
        StepKind::Dpkg(d) => PbKind::Dpkg(dpkg_to_proto(d)),
        StepKind::Rpm(r) => PbKind::Rpm(rpm_to_proto(r)),
        StepKind::Service(sv) => PbKind::Service(service_to_proto(sv)),
        StepKind::PkgRollback(r) => PbKind::PkgRollback(pkg_rollback_to_proto(r)),
        StepKind::HttpCheck(h) => PbKind::HttpCheck(http_to_proto(h)),
        StepKind::TcpCheck(t) => PbKind::TcpCheck(tcp_to_proto(t)),
        StepKind::ExecCheck(c) => PbKind::ExecCheck(exec_check_to_proto(c)),
        StepKind::FileCheck(f) => PbKind::FileCheck(file_check_to_proto(f)),
        StepKind::MetricCheck(m) => PbKind::MetricCheck(metric_to_proto(m)),
        StepKind::Backup(b) => PbKind::Backup(pb::BackupStep {
            command: Some(exec_to_proto(&b.command)),
            path: b.path.clone().unwrap_or_default(),
        }),
        StepKind::AgentUpgrade(a) => PbKind::AgentUpgrade(pb::AgentUpgradeStep {
            version: a.version.clone(),
            source: a.source.clone(),
            sha256: a.sha256.clone(),
            signing: signing_to_proto(&a.signing),
            deadline_ms: millis(a.deadline),
            force: a.force,
        }),
    };
    pb::StepSpec { timeout_ms: millis(step.timeout), kind: Some(kind), rerun_safe: step.rerun_safe }
}

/// The longest deadline an agent accepts for a new build to come back.
pub const MAX_AGENT_UPGRADE_DEADLINE: Duration = Duration::from_secs(600);

fn agent_upgrade_from_proto(a: &pb::AgentUpgradeStep) -> Result<AgentUpgradeSpec, WireError> {
    required("agent_upgrade.version", &a.version)?;
    required("agent_upgrade.source", &a.source)?;
    required("agent_upgrade.sha256", &a.sha256)?;
    let deadline = Duration::from_millis(a.deadline_ms);
    if deadline.is_zero() || deadline > MAX_AGENT_UPGRADE_DEADLINE {
        return Err(WireError::invalid(
            "agent_upgrade.deadline_ms",
            format!("{} ms is outside 1 ms ..= {} ms", a.deadline_ms, MAX_AGENT_UPGRADE_DEADLINE.as_millis()),
        ));
    }
    Ok(AgentUpgradeSpec {
        version: a.version.clone(),
        source: a.source.clone(),
        sha256: a.sha256.clone(),
        signing: signing_from_proto("agent_upgrade.signing", a.signing.as_ref())?,
        deadline,
        force: a.force,
    })
}

fn archive_from_proto(a: &pb::ArchiveStep) -> Result<ArchiveSpec, WireError> {
    required("archive.component", &a.component)?;
    required("archive.version", &a.version)?;
    required("archive.source", &a.source)?;
    Ok(ArchiveSpec {
        component: a.component.clone(),
        version: a.version.clone(),
        source: a.source.clone(),
        sha256: a.sha256.clone(),
        install_root: non_empty(&a.install_root),
        signing: signing_from_proto("archive.signing", a.signing.as_ref())?,
    })
}

fn archive_rollback_from_proto(a: &pb::ArchiveRollbackStep) -> Result<ArchiveRollbackSpec, WireError> {
    required("archive_rollback.component", &a.component)?;
    Ok(ArchiveRollbackSpec {
        component: a.component.clone(),
        to_version: non_empty(&a.to_version),
        install_root: non_empty(&a.install_root),
    })
}

/// A command; `command_field` names its `command` in the enclosing message.
pub(crate) fn exec_from_proto(e: &pb::ExecStep, command_field: &'static str) -> Result<ExecSpec, WireError> {
    required(command_field, &e.command)?;
    Ok(ExecSpec {
        command: e.command.clone(),
        args: e.args.clone(),
        env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: non_empty(&e.workdir),
        run_as: e.run_as.as_ref().map(run_as_from_proto).transpose()?,
    })
}

/// A `run_as`, its names checked ([`convoy_common::run_as::check`]).
fn run_as_from_proto(r: &pb::RunAs) -> Result<RunAs, WireError> {
    let run_as = RunAs { user: r.user.clone(), group: non_empty(&r.group) };
    convoy_common::run_as::check(&run_as).map_err(|m| WireError::invalid("exec.run_as", m))?;
    Ok(run_as)
}

pub(crate) fn exec_to_proto(e: &ExecSpec) -> pb::ExecStep {
    pb::ExecStep {
        command: e.command.clone(),
        args: e.args.clone(),
        env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: e.workdir.clone().unwrap_or_default(),
        run_as: e
            .run_as
            .as_ref()
            .map(|r| pb::RunAs { user: r.user.clone(), group: r.group.clone().unwrap_or_default() }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use convoy_common::metric::MetricFormat;
    use convoy_common::model::{
        AptSpec, CheckPolicy, DpkgSpec, ExecCheckSpec, FileCheckSpec, HttpCheckSpec, JsonExpect, MetricCheckSpec,
        MetricSource, OutputExpect, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager,
        ServiceSpec, StepKindName, StepStatus, TcpCheckSpec, Threshold,
    };

    use convoy_common::model::Signing;

    use super::*;
    use crate::outcome::{outcome_to_result, unsupported_outcome};

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
            run_as: Some(RunAs { user: "postgres".into(), group: Some("ssl-cert".into()) }),
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
                signing: Signing { required: true, signature: Some("convoy-signature: 1\n".into()) },
            }),
            StepKind::Archive(ArchiveSpec {
                component: "app".into(),
                version: "1".into(),
                source: "a.tgz".into(),
                sha256: String::new(),
                install_root: None,
                signing: Signing::default(),
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
            StepKind::ExecCheck(ExecCheckSpec { exec: exec(), policy: policy(), output: OutputExpect::default() }),
            StepKind::ExecCheck(ExecCheckSpec {
                exec: exec(),
                policy: policy(),
                output: OutputExpect {
                    equals: Some(String::new()),
                    contains: Some("t".into()),
                    matches: Some(r"^\w+$".into()),
                },
            }),
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
                signing: Signing { required: false, signature: Some("sig".into()) },
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
            StepKind::AgentUpgrade(AgentUpgradeSpec {
                version: "0.2.0".into(),
                source: "artifact:convoy-agent@0.2.0".into(),
                sha256: "ab".repeat(32),
                signing: Signing { required: true, signature: Some("convoy-signature v1\n".into()) },
                deadline: Duration::from_secs(30),
                force: true,
            }),
        ]
    }

    #[test]
    fn every_kind_name_is_covered() {
        let names: std::collections::BTreeSet<StepKindName> = all_kinds().iter().map(StepKind::name).collect();
        for n in StepKindName::ALL {
            assert!(names.contains(n), "{n} missing from all_kinds");
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in all_kinds() {
            let step = StepSpec { name: "s".into(), timeout: Duration::from_millis(1500), kind, rerun_safe: false };
            let run = run_step("e1", &step);
            assert_eq!(run.execution_id, "e1");
            assert_eq!(step_from_run_step(&run).unwrap(), step);
        }
    }

    #[test]
    fn empty_oneof_is_unsupported() {
        let run = pb::RunStep {
            execution_id: "e1".into(),
            step_name: "future".into(),
            step: Some(pb::StepSpec { timeout_ms: 10, kind: None, rerun_safe: false }),
        };
        let err = step_from_run_step(&run).unwrap_err();
        assert!(err.to_string().contains("does not know"), "{err}");
        assert_eq!(err.field, "step.kind");
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
            PbKind::AgentUpgrade(pb::AgentUpgradeStep {
                version: "0.2.0".into(),
                source: "artifact:convoy-agent@0.2.0".into(),
                sha256: "ab".repeat(32),
                deadline_ms: 0,
                ..Default::default()
            }),
            PbKind::AgentUpgrade(pb::AgentUpgradeStep {
                version: "0.2.0".into(),
                source: "artifact:convoy-agent@0.2.0".into(),
                sha256: "ab".repeat(32),
                deadline_ms: u64::MAX,
                ..Default::default()
            }),
            PbKind::AgentUpgrade(pb::AgentUpgradeStep { deadline_ms: 1000, ..Default::default() }),
            PbKind::HttpCheck(pb::HttpCheck { url: "http://h/".into(), expect_status: 70000, ..Default::default() }),
            PbKind::ExecCheck(pb::ExecCheck::default()),
            PbKind::ExecCheck(pb::ExecCheck {
                exec: Some(pb::ExecStep { command: "true".into(), ..Default::default() }),
                stdout_matches: Some("(".into()),
                ..Default::default()
            }),
            PbKind::Exec(pb::ExecStep {
                command: "true".into(),
                run_as: Some(pb::RunAs { user: "root postgres".into(), group: String::new() }),
                ..Default::default()
            }),
            PbKind::Exec(pb::ExecStep {
                command: "true".into(),
                run_as: Some(pb::RunAs { user: "postgres".into(), group: "-x".into() }),
                ..Default::default()
            }),
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
        let field_of =
            |kind| step_from_proto("s", &pb::StepSpec { kind: Some(kind), ..Default::default() }).unwrap_err().field;
        assert_eq!(field_of(PbKind::Exec(pb::ExecStep::default())), "exec.command");
        assert_eq!(field_of(PbKind::ExecCheck(pb::ExecCheck::default())), "exec_check.exec");
        assert_eq!(
            field_of(PbKind::Service(pb::ServiceStep {
                name: "s".into(),
                action: "reload".into(),
                ..Default::default()
            })),
            "service.action"
        );
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
}

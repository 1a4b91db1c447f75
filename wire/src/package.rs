//! Package and service steps on the wire: apt, dpkg, rpm, pkg_rollback and
//! service, in both directions.
//!
//! Their enums travel as the words plans use (`hold`, `dnf`, `restart`); an
//! empty word is the domain default where there is one.

use std::time::Duration;

use convoy_common::model::{
    AptSpec, DpkgSpec, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec,
};
use convoy_proto::v1 as pb;

use crate::error::{WireError, required};
use crate::step::{exec_from_proto, exec_to_proto};
use crate::{millis, non_empty};

pub(crate) fn apt_from_proto(a: &pb::AptStep) -> Result<AptSpec, WireError> {
    required("apt.package", &a.package)?;
    required("apt.version", &a.version)?;
    let hold = match a.hold.as_str() {
        "" => None,
        "hold" => Some(true),
        "unhold" => Some(false),
        other => return Err(WireError::invalid("apt.hold", format!("apt step has an unknown hold {other:?}"))),
    };
    Ok(AptSpec {
        package: a.package.clone(),
        version: a.version.clone(),
        hold,
        allow_downgrade: a.allow_downgrade,
        update: a.update,
    })
}

pub(crate) fn apt_to_proto(a: &AptSpec) -> pb::AptStep {
    pb::AptStep {
        package: a.package.clone(),
        version: a.version.clone(),
        hold: match a.hold {
            None => String::new(),
            Some(true) => "hold".into(),
            Some(false) => "unhold".into(),
        },
        allow_downgrade: a.allow_downgrade,
        update: a.update,
    }
}

pub(crate) fn dpkg_from_proto(d: &pb::DpkgStep) -> Result<DpkgSpec, WireError> {
    required("dpkg.package", &d.package)?;
    required("dpkg.version", &d.version)?;
    required("dpkg.source", &d.source)?;
    Ok(DpkgSpec {
        package: d.package.clone(),
        version: d.version.clone(),
        source: d.source.clone(),
        sha256: d.sha256.clone(),
        signing: crate::signing::signing_from_proto("dpkg.signing", d.signing.as_ref())?,
    })
}

pub(crate) fn dpkg_to_proto(d: &DpkgSpec) -> pb::DpkgStep {
    pb::DpkgStep {
        package: d.package.clone(),
        version: d.version.clone(),
        source: d.source.clone(),
        sha256: d.sha256.clone(),
        signing: crate::signing::signing_to_proto(&d.signing),
    }
}

pub(crate) fn rpm_from_proto(r: &pb::RpmStep) -> Result<RpmSpec, WireError> {
    required("rpm.package", &r.package)?;
    required("rpm.version", &r.version)?;
    let manager = match r.manager.as_str() {
        "" | "dnf" => RpmManager::Dnf,
        "yum" => RpmManager::Yum,
        "rpm" => RpmManager::Rpm,
        other => return Err(WireError::invalid("rpm.manager", format!("rpm step has an unknown manager {other:?}"))),
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

pub(crate) fn rpm_to_proto(r: &RpmSpec) -> pb::RpmStep {
    pb::RpmStep {
        package: r.package.clone(),
        version: r.version.clone(),
        manager: r.manager.command().to_string(),
        source: r.source.clone().unwrap_or_default(),
        sha256: r.sha256.clone().unwrap_or_default(),
        allow_downgrade: r.allow_downgrade,
    }
}

pub(crate) fn pkg_rollback_from_proto(r: &pb::PkgRollbackStep) -> Result<PkgRollbackSpec, WireError> {
    required("pkg_rollback.package", &r.package)?;
    let manager = PkgManager::parse(&r.manager).ok_or_else(|| {
        WireError::invalid("pkg_rollback.manager", format!("pkg_rollback step has an unknown manager {:?}", r.manager))
    })?;
    Ok(PkgRollbackSpec { package: r.package.clone(), manager, to_version: non_empty(&r.to_version) })
}

pub(crate) fn pkg_rollback_to_proto(r: &PkgRollbackSpec) -> pb::PkgRollbackStep {
    pb::PkgRollbackStep {
        package: r.package.clone(),
        manager: r.manager.as_str().to_string(),
        to_version: r.to_version.clone().unwrap_or_default(),
    }
}

pub(crate) fn service_from_proto(sv: &pb::ServiceStep) -> Result<ServiceSpec, WireError> {
    required("service.name", &sv.name)?;
    let action = match sv.action.as_str() {
        "start" => ServiceAction::Start,
        "stop" => ServiceAction::Stop,
        "restart" => ServiceAction::Restart,
        "status" => ServiceAction::Status,
        other => {
            return Err(WireError::invalid("service.action", format!("service step has an unknown action {other:?}")));
        }
    };
    let manager = match sv.manager.as_str() {
        "" | "auto" => ServiceManager::Auto,
        "systemd" => ServiceManager::Systemd,
        "supervised" => ServiceManager::Supervised,
        other => {
            return Err(WireError::invalid(
                "service.manager",
                format!("service step has an unknown manager {other:?}"),
            ));
        }
    };
    Ok(ServiceSpec {
        name: sv.name.clone(),
        action,
        manager,
        command: sv.command.as_ref().map(|c| exec_from_proto(c, "service.command.command")).transpose()?,
        pidfile: non_empty(&sv.pidfile),
        log: non_empty(&sv.log),
        stop_grace: sv.has_stop_grace.then(|| Duration::from_millis(sv.stop_grace_ms)),
    })
}

pub(crate) fn service_to_proto(sv: &ServiceSpec) -> pb::ServiceStep {
    pb::ServiceStep {
        name: sv.name.clone(),
        action: sv.action.as_str().to_string(),
        manager: sv.manager.as_str().to_string(),
        command: sv.command.as_ref().map(exec_to_proto),
        pidfile: sv.pidfile.clone().unwrap_or_default(),
        log: sv.log.clone().unwrap_or_default(),
        stop_grace_ms: sv.stop_grace.map(millis).unwrap_or(0),
        has_stop_grace: sv.stop_grace.is_some(),
    }
}

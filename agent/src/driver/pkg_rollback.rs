//! The `pkg_rollback` step: the undo of an `apt`, `dpkg` or `rpm` step.
//!
//! The version to go back to is the spec's `to_version` (what the inventory
//! reported before the rollout) or else the `previous` of the package's
//! `.pkg-history` record (see [`super::pkg`]). Then:
//! - that version already installed: success, nothing done (a re-run is harmless);
//! - no target known (no record, no `to_version`): the step fails, saying
//!   there is nothing to roll back to;
//! - the last record is itself a rollback and there is no `to_version`: the
//!   rollback already happened; success, nothing done;
//! - **the package was not installed before** (the record's `previous` is
//!   empty, no `to_version`): it is removed, with `dpkg --remove` (apt and
//!   dpkg) or `rpm -e` (dnf, yum, rpm). Removal keeps conffiles and data
//!   (not a purge), and these tools refuse to remove a package other
//!   installed packages depend on, so a rollback never takes other packages
//!   with it: it fails and says so instead;
//! - otherwise the target version is installed, allowing a downgrade:
//!   apt: `apt-get install PKG=VERSION --allow-downgrades`; dpkg: `dpkg -i`
//!   of the `.deb` the record says the previous version came from
//!   (`previous_source`; its sha256 was checked when it was installed, and
//!   `dpkg-deb` checks it still holds that package and version), else apt
//!   when the host has it, else a clear failure; dnf/yum: install or
//!   downgrade (from the recorded `.rpm` when there is one); rpm: `rpm -U
//!   --oldpackage` of the recorded `.rpm` (required).
//!
//! A successful rollback marks the new record as a rollback.

use std::time::Duration;

use convoy_common::model::StepOutcome;

use super::pkg::{self, AptSpec, Budget, DpkgSpec, PkgEnv, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec};
use super::{apt, dpkg, rpm};

/// The `pkg_rollback` step. A zero `timeout` means [`pkg::DEFAULT_TIMEOUT`].
pub async fn run_pkg_rollback(spec: &PkgRollbackSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
    let budget = Budget::new(timeout);
    let name = &spec.package;
    let m = spec.manager.as_str();
    let checked =
        pkg::check_package(name).and_then(|()| spec.to_version.as_deref().map(pkg::check_version).unwrap_or(Ok(())));
    if let Err(e) = checked {
        return pkg::refuse(format!("pkg_rollback ({m}): {e}"));
    }
    let record = pkg::history(env, name);
    let installed = match installed_version(spec, env, &budget).await {
        Ok(v) => v,
        Err(e) => return pkg::refuse(format!("pkg_rollback {name} ({m}): reading the installed version failed: {e}")),
    };
    let target: Option<String> = match (&spec.to_version, &record) {
        (Some(v), _) => Some(v.clone()),
        (None, None) => {
            return pkg::refuse(format!(
                "pkg_rollback {name} ({m}): nothing to roll back to: no version change of {name} is recorded on this \
                 host (installed: {}) and the step names no version",
                installed.as_deref().unwrap_or("not installed")
            ));
        }
        (None, Some(r)) if r.rollback => {
            let msg = format!(
                "pkg_rollback {name}: already rolled back (to {}); nothing to do",
                if r.current.is_empty() { "not installed" } else { &r.current }
            );
            return match installed {
                Some(v) => pkg::installed_ok(name, &v, msg, None),
                None => StepOutcome { message: msg, exit_code: None, ..StepOutcome::ok() },
            };
        }
        (None, Some(r)) => r.previous.clone(),
    };

    let Some(target) = target else {
        return remove(spec, env, installed, &budget).await;
    };
    if installed.as_deref().is_some_and(|v| same_version(spec.manager, v, &target)) {
        let msg = format!("pkg_rollback {name}: {target} is installed; nothing to do");
        return pkg::installed_ok(name, &target, msg, None);
    }
    let from = installed.as_deref().unwrap_or("not installed");
    let source = record
        .as_ref()
        .filter(|r| r.previous.as_deref() == Some(target.as_str()))
        .and_then(|r| r.previous_source.as_ref().filter(|s| std::path::Path::new(s).is_file()).cloned());
    let apt_spec =
        AptSpec { package: name.clone(), version: target.clone(), hold: None, allow_downgrade: true, update: false };
    let (mut outcome, how) = match spec.manager {
        PkgManager::Apt => (apt::run_apt(&apt_spec, env, budget.remaining()).await, "apt".to_string()),
        PkgManager::Dpkg => match &source {
            Some(src) => match sha256_of(src).await {
                Ok(sha256) => {
                    let d = DpkgSpec {
                        package: name.clone(),
                        version: target.clone(),
                        source: src.clone(),
                        sha256,
                        signing: Default::default(),
                    };
                    (dpkg::run_dpkg(&d, env, budget.remaining()).await, format!("dpkg -i {src}"))
                }
                Err(e) => return pkg::refuse(format!("pkg_rollback {name} ({m}): {e}")),
            },
            None if pkg::find_tool(env, "apt-get").is_some() && env.dpkg_root.is_none() => (
                apt::run_apt(&apt_spec, env, budget.remaining()).await,
                "apt (no staged .deb of that version is recorded)".to_string(),
            ),
            None => {
                return pkg::refuse(format!(
                    "pkg_rollback {name} ({m}): cannot go back from {from} to {target}: no staged .deb of {target} \
                     is recorded on this host (or it is gone) and apt-get is not available"
                ));
            }
        },
        PkgManager::Dnf | PkgManager::Yum | PkgManager::Rpm => {
            let manager = match spec.manager {
                PkgManager::Yum => RpmManager::Yum,
                PkgManager::Rpm => RpmManager::Rpm,
                _ => RpmManager::Dnf,
            };
            let sha256 = match &source {
                Some(src) => match sha256_of(src).await {
                    Ok(s) => Some(s),
                    Err(e) => return pkg::refuse(format!("pkg_rollback {name} ({m}): {e}")),
                },
                None => None,
            };
            if manager == RpmManager::Rpm && source.is_none() {
                return pkg::refuse(format!(
                    "pkg_rollback {name} (rpm): cannot go back from {from} to {target}: no staged .rpm of {target} \
                     is recorded on this host (or it is gone)"
                ));
            }
            let r = RpmSpec {
                package: name.clone(),
                version: target.clone(),
                manager,
                source: source.clone(),
                sha256,
                allow_downgrade: true,
            };
            (rpm::run_rpm(&r, env, budget.remaining()).await, manager.command().to_string())
        }
    };
    outcome.message = format!("pkg_rollback {name} from {from} to {target} through {how}: {}", outcome.message);
    if outcome.status.is_success()
        && let Err(e) = mark_rollback(env, name).await
    {
        outcome.message.push_str(&format!("; {e}"));
    }
    outcome
}

/// The package was not installed before: remove it (not purge).
async fn remove(spec: &PkgRollbackSpec, env: &PkgEnv, installed: Option<String>, budget: &Budget) -> StepOutcome {
    let name = &spec.package;
    let Some(current) = installed else {
        let msg = format!("pkg_rollback {name}: it was not installed before and is not installed now; nothing to do");
        return StepOutcome { message: msg, exit_code: None, ..StepOutcome::ok() };
    };
    let ran = match spec.manager {
        PkgManager::Apt | PkgManager::Dpkg => {
            let mut args = env.dpkg_args();
            args.extend(["--remove".to_string(), "--".to_string(), name.clone()]);
            pkg::run_tool(env, "dpkg", &args, &[], budget, None).await
        }
        PkgManager::Dnf | PkgManager::Yum | PkgManager::Rpm => {
            pkg::run_tool(env, "rpm", &["-e".into(), "--".into(), name.clone()], &[], budget, None).await
        }
    };
    if !ran.success() {
        return ran.failure(format!(
            "pkg_rollback {name}: it was not installed before; removing {current} failed: {}{}",
            ran.ended(),
            pkg::tail_note(&ran)
        ));
    }
    let mut message = format!("pkg_rollback {name}: it was not installed before; removed {current} (conffiles kept)");
    let record = pkg::PkgHistory {
        package: name.clone(),
        manager: spec.manager.as_str().to_string(),
        previous: Some(current),
        current: String::new(),
        source: None,
        previous_source: pkg::history(env, name).and_then(|h| h.source),
        changed_at_unix_ms: crate::wallclock::now_unix_ms(),
        rollback: true,
    };
    if let Err(e) = pkg::write_history(env, &record).await {
        message.push_str(&format!("; {e}"));
    }
    StepOutcome {
        message,
        exit_code: ran.exit_code(),
        stdout_tail: ran.run.stdout_tail.clone(),
        stderr_tail: ran.run.stderr_tail.clone(),
        ..StepOutcome::ok()
    }
}

/// The installed version through the manager's database (`None`: not installed).
async fn installed_version(spec: &PkgRollbackSpec, env: &PkgEnv, budget: &Budget) -> Result<Option<String>, String> {
    match spec.manager {
        PkgManager::Apt | PkgManager::Dpkg => match dpkg::query(env, &spec.package, budget).await {
            Ok(s) => Ok(s.and_then(|s| s.installed_version().map(str::to_string))),
            Err(ran) => Err(ran.ended()),
        },
        PkgManager::Dnf | PkgManager::Yum | PkgManager::Rpm => match rpm::query(env, &spec.package, budget).await.0 {
            rpm::RpmQuery::Installed(vs) => Ok(vs.last().cloned()),
            rpm::RpmQuery::NotInstalled => Ok(None),
            rpm::RpmQuery::Error(e) => Err(e),
        },
    }
}

fn same_version(manager: PkgManager, installed: &str, wanted: &str) -> bool {
    match manager {
        PkgManager::Apt | PkgManager::Dpkg => installed == wanted,
        PkgManager::Dnf | PkgManager::Yum | PkgManager::Rpm => rpm::version_matches(installed, wanted),
    }
}

async fn sha256_of(path: &str) -> Result<String, String> {
    let p = std::path::PathBuf::from(path);
    match tokio::task::spawn_blocking(move || super::archive::sha256_file(&p, None)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(super::archive::Fail::Failed(m) | super::archive::Fail::TimedOut(m))) => Err(m),
        Err(e) => Err(format!("hashing {path}: task failed: {e}")),
    }
}

async fn mark_rollback(env: &PkgEnv, package: &str) -> Result<(), String> {
    match pkg::history(env, package) {
        Some(mut h) if !h.rollback => {
            h.rollback = true;
            pkg::write_history(env, &h).await
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(to: Option<&str>) -> PkgRollbackSpec {
        PkgRollbackSpec { package: "demo-nothing".into(), manager: PkgManager::Dpkg, to_version: to.map(Into::into) }
    }

    fn scratch_env(dir: &std::path::Path) -> PkgEnv {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        let mut env = PkgEnv::new(dir.join("state"));
        env.dpkg_root = Some(root);
        env
    }

    #[tokio::test]
    async fn nothing_recorded_fails_clearly() {
        if pkg::find_tool(&PkgEnv::new("/tmp"), "dpkg-query").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let env = scratch_env(dir.path());
        let out = run_pkg_rollback(&spec(None), &env, Duration::from_secs(30)).await;
        assert!(!out.status.is_success());
        assert!(out.message.contains("nothing to roll back to"), "{}", out.message);
    }

    #[tokio::test]
    async fn not_installed_before_and_not_now_is_a_no_op() {
        if pkg::find_tool(&PkgEnv::new("/tmp"), "dpkg-query").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let env = scratch_env(dir.path());
        pkg::record_change(&env, "dpkg", "demo-nothing", None, "2.0.0", None).await.unwrap();
        let out = run_pkg_rollback(&spec(None), &env, Duration::from_secs(30)).await;
        assert!(out.status.is_success(), "{}", out.message);
        assert!(out.message.contains("nothing to do"), "{}", out.message);
    }

    #[tokio::test]
    async fn a_missing_staged_deb_without_apt_fails_clearly() {
        if pkg::find_tool(&PkgEnv::new("/tmp"), "dpkg-query").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let env = scratch_env(dir.path());
        pkg::record_change(&env, "dpkg", "demo-nothing", Some("1.0.0"), "2.0.0", None).await.unwrap();
        let out = run_pkg_rollback(&spec(None), &env, Duration::from_secs(30)).await;
        assert!(!out.status.is_success());
        assert!(out.message.contains("no staged .deb of 1.0.0"), "{}", out.message);
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let env = PkgEnv::new("/tmp");
        let mut s = spec(Some("-1"));
        let out = run_pkg_rollback(&s, &env, Duration::from_secs(5)).await;
        assert!(out.message.contains("invalid version"), "{}", out.message);
        s.package = "--all".into();
        let out = run_pkg_rollback(&s, &env, Duration::from_secs(5)).await;
        assert!(out.message.contains("invalid package name"), "{}", out.message);
    }
}

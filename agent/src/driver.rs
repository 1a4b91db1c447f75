//! Drivers: what actually performs a step on the host.
//!
//! [`Driver`] is the seam between the session (protocol, dedup, reporting) and
//! the work. [`LocalDriver`] does the real thing on this host; tests plug in
//! fakes. Drivers take and return domain types only and never fail with an
//! error: whatever goes wrong is a [`StepOutcome`] the coordinator can act on.
//!
//! `LocalDriver` rules worth knowing:
//! - A zero step timeout means "no timeout" (proto3 cannot tell unset from 0).
//! - Relative paths in steps (file, file check, archive source, exec workdir)
//!   are resolved against the driver's install root, never against the agent's
//!   working directory, which depends on how the agent was started.
//! - A file step keeps the permissions of the file it replaces. It ignores the
//!   step timeout (one small atomic write); every other kind honours it.
//!
//! Submodules: [`exec`] (commands, process groups, output tails), [`archive`]
//! (verified, atomic installs), [`check`] (the retry policy and the tcp, file
//! and exec checks) and [`http`] (a minimal HTTP/1.1 GET client). Package and
//! service steps: [`pkg`] (their specs and shared command layer), [`dpkg`],
//! [`apt`], [`rpm`], [`service`] and [`pkg_rollback`]. [`backup`] runs a
//! command through [`exec`], then finds and measures the backup it wrote.

pub mod apt;
pub mod archive;
pub mod backup;
pub mod check;
pub mod dpkg;
pub mod exec;
pub mod http;
pub mod metric;
pub mod pkg;
pub mod pkg_rollback;
pub mod rpm;
pub mod service;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy_common::model::{
    ArchiveRollbackSpec, ArchiveSpec, FileSpec, MetricSource, StepKind, StepKindName, StepOutcome, StepSpec, StepStatus,
};
use convoy_common::step_kinds::StepFeature;
use tokio::time::Instant;

use crate::fetch::ArtifactSource;
use crate::fsutil;

/// Whether [`LocalDriver`] performs steps of `kind`. One arm per kind, so a
/// new kind is a decision here; [`local_capabilities`] is computed from it.
pub const fn supports(kind: StepKindName) -> bool {
    match kind {
        StepKindName::Exec
        | StepKindName::Archive
        | StepKindName::ArchiveRollback
        | StepKindName::File
        | StepKindName::HttpCheck
        | StepKindName::TcpCheck
        | StepKindName::ExecCheck
        | StepKindName::FileCheck
        | StepKindName::MetricCheck
        | StepKindName::Apt
        | StepKindName::Dpkg
        | StepKindName::Rpm
        | StepKindName::Service
        | StepKindName::PkgRollback
        | StepKindName::Backup
        | StepKindName::AgentUpgrade => true,
    }
}

/// Capabilities beyond step kinds: fields of a step this agent honours
/// that an older one would ignore (`run_as`: commands run as another user).
pub const FEATURES: &[StepFeature] = StepFeature::ALL;

/// The step kinds [`LocalDriver`] performs, as Hello names them, then the
/// [`FEATURES`] it honours.
pub fn local_capabilities() -> Vec<String> {
    let kinds = StepKindName::ALL.iter().filter(|k| supports(**k)).map(|k| k.as_str().to_string());
    kinds.chain(FEATURES.iter().map(|f| f.as_str().to_string())).collect()
}

/// Performs steps on a host.
pub trait Driver: Send + Sync + 'static {
    /// Runs `step` to completion (or timeout) and says how it went.
    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        step: &'a StepSpec,
    ) -> Pin<Box<dyn Future<Output = StepOutcome> + Send + 'a>>;
    /// Component -> version installed on the host, reported in Hello.
    fn installed(&self) -> BTreeMap<String, String>;
    /// Step kinds this driver performs, reported in Hello.
    fn capabilities(&self) -> Vec<String>;
    /// Called once each session is established (Hello welcomed): a driver
    /// with an execution that finishes by the agent coming back (a
    /// self-upgrade, [`crate::selfupgrade`]) records its outcome with
    /// `record` (durably, then reported).
    fn welcomed(&self, record: &mut dyn FnMut(&str, &StepOutcome) -> Result<(), crate::AgentError>) {
        let _ = record;
    }
}

/// The driver that works on the local host.
#[derive(Debug, Clone)]
pub struct LocalDriver {
    install_root: PathBuf,
    /// Resolves `artifact:NAME@VERSION` sources (see [`crate::fetch`]).
    pub(crate) artifacts: Option<Arc<dyn ArtifactSource>>,
    /// Archives unpacking to more than this many bytes are refused.
    max_unpacked_bytes: u64,
    /// Which artifacts need a valid signature, and the keys that may sign.
    pub(crate) trust: crate::trust::Trust,
    /// This agent process's part in self-upgrades (`None`: an embedded or
    /// test driver, which cannot replace its process).
    self_upgrade: Option<Arc<crate::selfupgrade::SelfUpgrade>>,
}

impl LocalDriver {
    pub fn new(install_root: impl Into<PathBuf>) -> LocalDriver {
        LocalDriver {
            install_root: install_root.into(),
            artifacts: None,
            max_unpacked_bytes: crate::config::DEFAULT_MAX_UNPACKED_BYTES,
            trust: crate::trust::Trust::default(),
            self_upgrade: None,
        }
    }

    /// Lets `agent_upgrade` steps replace this process ([`crate::selfupgrade`]).
    pub fn with_self_upgrade(mut self, up: Arc<crate::selfupgrade::SelfUpgrade>) -> LocalDriver {
        self.self_upgrade = Some(up);
        self
    }

    /// The signature policy ([`crate::trust`]): trusted keys, and whether
    /// every artifact needs a signature.
    pub fn with_trust(mut self, trust: crate::trust::Trust) -> LocalDriver {
        self.trust = trust;
        self
    }

    /// Archives that unpack to more than `bytes` are refused.
    pub fn with_max_unpacked_bytes(mut self, bytes: u64) -> LocalDriver {
        self.max_unpacked_bytes = bytes;
        self
    }

    /// Where `artifact:NAME@VERSION` sources come from (the coordinator).
    pub fn with_artifacts(mut self, source: Arc<dyn ArtifactSource>) -> LocalDriver {
        self.artifacts = Some(source);
        self
    }

    pub fn install_root(&self) -> &Path {
        &self.install_root
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.install_root.join(p) }
    }

    /// Runs a step; the outcome's `duration_ms` is filled in.
    pub async fn run_step(&self, step: &StepSpec) -> StepOutcome {
        self.run_execution("", step).await
    }

    /// [`LocalDriver::run_step`] for execution `execution_id` (a
    /// self-upgrade records its outcome under it after the switch).
    pub async fn run_execution(&self, execution_id: &str, step: &StepSpec) -> StepOutcome {
        let started = Instant::now();
        let timeout = (!step.timeout.is_zero()).then_some(step.timeout);
        let deadline = timeout.map(|t| started + t);
        let mut outcome = match &step.kind {
            StepKind::Exec(e) => exec::exec_step(e, e.workdir.as_deref().map(|w| self.resolve(w)), timeout).await,
            StepKind::Archive(a) => self.archive(a, deadline).await,
            StepKind::ArchiveRollback(a) => self.archive_rollback(a).await,
            StepKind::Apt(a) => apt::run_apt(a, &self.pkg_env(), step.timeout).await,
            // `dpkg_step` fetches an `artifact:NAME@VERSION` source first ([`crate::fetch`]).
            StepKind::Dpkg(d) => self.dpkg_step(d, &self.pkg_env(), step.timeout).await,
            StepKind::Rpm(r) => rpm::run_rpm(r, &self.pkg_env(), step.timeout).await,
            StepKind::Service(sv) => service::run_service(sv, &self.pkg_env(), step.timeout).await,
            StepKind::PkgRollback(r) => pkg_rollback::run_pkg_rollback(r, &self.pkg_env(), step.timeout).await,
            StepKind::Backup(b) => backup::run_backup(b, &self.install_root, timeout).await,
            StepKind::AgentUpgrade(a) => {
                crate::selfupgrade::step::run(self, self.self_upgrade.as_deref(), execution_id, a, deadline).await
            }
            StepKind::File(f) => self.write_file(f).await,
            StepKind::HttpCheck(h) => match http::parse_url(&h.url) {
                Err(e) => StepOutcome::failed(e),
                Ok(url) => {
                    check::run_check("http check", &h.policy, deadline, |budget| http::http_attempt(h, &url, budget))
                        .await
                }
            },
            StepKind::TcpCheck(t) => {
                check::run_check("tcp check", &t.policy, deadline, |budget| check::tcp_attempt(&t.address, budget))
                    .await
            }
            StepKind::ExecCheck(c) => {
                let workdir = c.exec.workdir.as_deref().map(|w| self.resolve(w));
                check::run_check("exec check", &c.policy, deadline, |budget| {
                    check::exec_attempt(&c.exec, &c.output, workdir.clone(), budget)
                })
                .await
            }
            StepKind::FileCheck(f) => {
                let path = self.resolve(&f.path);
                check::run_check("file check", &f.policy, deadline, |_| {
                    check::file_attempt(&path, f.contains.as_deref())
                })
                .await
            }
            StepKind::MetricCheck(m) => {
                let workdir = match &m.source {
                    MetricSource::Command(e) => e.workdir.as_deref().map(|w| self.resolve(w)),
                    MetricSource::Http { .. } => None,
                };
                check::run_check("metric check", &m.policy, deadline, |budget| {
                    metric::metric_attempt(m, workdir.clone(), budget)
                })
                .await
            }
        };
        outcome.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        outcome
    }

    async fn archive(&self, spec: &ArchiveSpec, deadline: Option<Instant>) -> StepOutcome {
        // The signature, when one is needed, before anything is fetched.
        let what = format!("archive {}@{} ({})", spec.component, spec.version, spec.source);
        if let Err(refused) = self.trust.check(crate::trust::Need::IfRequired, &spec.signing, &spec.sha256, &what) {
            return StepOutcome::failed(refused);
        }
        // An `artifact:NAME@VERSION` source is fetched into the cache first.
        let spec = &match self.resolve_source(&spec.source, &spec.sha256, deadline).await {
            Ok(source) => ArchiveSpec { source, ..spec.clone() },
            Err(outcome) => return outcome,
        };
        let root = spec.install_root.as_deref().map(PathBuf::from).unwrap_or_else(|| self.install_root.clone());
        let source = {
            let p = Path::new(&spec.source);
            if p.is_absolute() { p.to_path_buf() } else { root.join(p) }
        };
        let job_spec = spec.clone();
        let limit = self.max_unpacked_bytes;
        let deadline = deadline.map(Instant::into_std);
        // Unpacking is blocking I/O; it watches the deadline itself, so the
        // step is never reported as timed out while it is still switching.
        let job = tokio::task::spawn_blocking(move || archive::install(&job_spec, &root, &source, deadline, limit));
        match job.await {
            Ok(Ok(done)) => StepOutcome {
                message: done.message,
                installed: Some((spec.component.clone(), spec.version.clone())),
                exit_code: None,
                ..StepOutcome::ok()
            },
            Ok(Err(archive::Fail::Failed(m))) => StepOutcome::failed(m),
            Ok(Err(archive::Fail::TimedOut(m))) => {
                StepOutcome { status: StepStatus::TimedOut, ..StepOutcome::failed(m) }
            }
            Err(e) => StepOutcome::failed(format!("archive install task failed: {e}")),
        }
    }

    async fn archive_rollback(&self, spec: &ArchiveRollbackSpec) -> StepOutcome {
        let root = spec.install_root.as_deref().map(PathBuf::from).unwrap_or_else(|| self.install_root.clone());
        let job_spec = spec.clone();
        match tokio::task::spawn_blocking(move || archive::rollback(&job_spec, &root)).await {
            Ok(Ok(done)) => StepOutcome {
                message: done.message,
                installed: done.version.map(|v| (spec.component.clone(), v)),
                exit_code: None,
                ..StepOutcome::ok()
            },
            Ok(Err(archive::Fail::Failed(m) | archive::Fail::TimedOut(m))) => StepOutcome::failed(m),
            Err(e) => StepOutcome::failed(format!("archive rollback task failed: {e}")),
        }
    }

    async fn write_file(&self, spec: &FileSpec) -> StepOutcome {
        let path = self.resolve(&spec.path);
        let content = spec.content.clone();
        let shown = path.display().to_string();
        let job = tokio::task::spawn_blocking(move || {
            let mode = std::fs::metadata(&path).ok().map(|m| m.permissions().mode() & 0o7777);
            fsutil::write_atomic(&path, content.as_bytes(), mode)
        });
        match job.await {
            Ok(Ok(())) => StepOutcome {
                message: format!("wrote {} bytes to {shown}", spec.content.len()),
                exit_code: None,
                ..StepOutcome::ok()
            },
            Ok(Err(e)) => StepOutcome::failed(format!("write {shown}: {e}")),
            Err(e) => StepOutcome::failed(format!("write {shown}: task failed: {e}")),
        }
    }
}

impl Driver for LocalDriver {
    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        step: &'a StepSpec,
    ) -> Pin<Box<dyn Future<Output = StepOutcome> + Send + 'a>> {
        Box::pin(async move {
            tracing::info!(execution_id, step = %step.name, kind = step.kind.kind_name(), "step started");
            let outcome = self.run_execution(execution_id, step).await;
            tracing::info!(
                execution_id,
                step = %step.name,
                status = ?outcome.status,
                duration_ms = outcome.duration_ms,
                message = %outcome.message,
                "step finished"
            );
            outcome
        })
    }

    fn installed(&self) -> BTreeMap<String, String> {
        // Archive components, then the packages package steps manage here
        // (those with a `.pkg-history` record), as dpkg reports them.
        let env = self.pkg_env();
        let mut installed = archive::installed_under(&self.install_root);
        installed.extend(dpkg::installed_packages_blocking(&env, &pkg::managed_packages(&env)));
        installed
    }

    fn capabilities(&self) -> Vec<String> {
        local_capabilities()
    }

    fn welcomed(&self, record: &mut dyn FnMut(&str, &StepOutcome) -> Result<(), crate::AgentError>) {
        if let Some(up) = &self.self_upgrade {
            up.welcomed(record);
        }
    }
}

/// Builds a [`StepSpec`] (for tests and callers assembling steps by hand).
pub fn step(name: &str, timeout: Duration, kind: StepKind) -> StepSpec {
    StepSpec { name: name.to_string(), timeout, kind, rerun_safe: false }
}

#[cfg(test)]
mod tests {
    use convoy_common::metric::MetricFormat;
    use convoy_common::model::{
        AptSpec, BackupSpec, CheckPolicy, DpkgSpec, ExecCheckSpec, ExecSpec, FileCheckSpec, HttpCheckSpec,
        MetricCheckSpec, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec,
        TcpCheckSpec, Threshold,
    };

    use super::*;

    /// One step of `kind`; the match has an arm per kind, so a new kind
    /// needs a sample before this test compiles.
    fn sample(kind: StepKindName) -> StepKind {
        let exec = ExecSpec { command: "true".into(), ..ExecSpec::default() };
        let policy = CheckPolicy::default();
        match kind {
            StepKindName::Exec => StepKind::Exec(exec),
            StepKindName::Archive => StepKind::Archive(ArchiveSpec {
                component: "app".into(),
                version: "2".into(),
                source: "app.tar.gz".into(),
                sha256: String::new(),
                install_root: None,
                signing: Default::default(),
            }),
            StepKindName::ArchiveRollback => StepKind::ArchiveRollback(ArchiveRollbackSpec {
                component: "app".into(),
                to_version: None,
                install_root: None,
            }),
            StepKindName::File => StepKind::File(FileSpec { path: "f".into(), content: String::new() }),
            StepKindName::HttpCheck => StepKind::HttpCheck(HttpCheckSpec {
                url: "http://127.0.0.1/".into(),
                expect_status: 200,
                body_contains: None,
                json: None,
                policy,
            }),
            StepKindName::TcpCheck => StepKind::TcpCheck(TcpCheckSpec { address: "127.0.0.1:1".into(), policy }),
            StepKindName::ExecCheck => StepKind::ExecCheck(ExecCheckSpec { exec, policy, output: Default::default() }),
            StepKindName::FileCheck => StepKind::FileCheck(FileCheckSpec { path: "f".into(), contains: None, policy }),
            StepKindName::MetricCheck => StepKind::MetricCheck(MetricCheckSpec {
                source: MetricSource::Command(exec),
                format: MetricFormat::Plain,
                below: Some(Threshold(1.0)),
                above: None,
                policy,
            }),
            StepKindName::Apt => StepKind::Apt(AptSpec {
                package: "p".into(),
                version: "1".into(),
                hold: None,
                allow_downgrade: false,
                update: false,
            }),
            StepKindName::Dpkg => StepKind::Dpkg(DpkgSpec {
                package: "p".into(),
                version: "1".into(),
                source: "p.deb".into(),
                sha256: String::new(),
                signing: Default::default(),
            }),
            StepKindName::Rpm => StepKind::Rpm(RpmSpec {
                package: "p".into(),
                version: "1".into(),
                manager: RpmManager::Dnf,
                source: None,
                sha256: None,
                allow_downgrade: false,
            }),
            StepKindName::Service => StepKind::Service(ServiceSpec {
                name: "s".into(),
                action: ServiceAction::Status,
                manager: ServiceManager::Auto,
                command: None,
                pidfile: None,
                log: None,
                stop_grace: None,
            }),
            StepKindName::PkgRollback => StepKind::PkgRollback(PkgRollbackSpec {
                package: "p".into(),
                manager: PkgManager::Apt,
                to_version: None,
            }),
            StepKindName::Backup => StepKind::Backup(BackupSpec { command: exec, path: None }),
            StepKindName::AgentUpgrade => StepKind::AgentUpgrade(convoy_common::model::AgentUpgradeSpec {
                version: "0.2.0".into(),
                source: "artifact:convoy-agent@0.2.0".into(),
                sha256: "ab".repeat(32),
                signing: Default::default(),
                deadline: Duration::from_secs(30),
                force: false,
            }),
        }
    }

    #[tokio::test]
    async fn an_agent_upgrade_without_a_process_to_replace_or_a_signature_is_refused() {
        let step = step("agent", Duration::from_secs(60), sample(StepKindName::AgentUpgrade));
        let out = LocalDriver::new("/nonexistent").run_execution("e1", &step).await;
        assert_eq!(out.status, StepStatus::Failed);
        assert!(out.message.contains("cannot upgrade itself"), "{}", out.message);

        let dir = tempfile::tempdir().unwrap();
        let up = crate::selfupgrade::SelfUpgrade::new(
            dir.path(),
            crate::selfupgrade::intent::Launch { program: "/bin/false".into(), prefix: vec![] },
            vec![],
            false,
        );
        let driver = LocalDriver::new(dir.path()).with_self_upgrade(Arc::new(up));
        let out = driver.run_execution("e1", &step).await;
        assert_eq!(out.status, StepStatus::Failed);
        assert!(out.message.contains("signature"), "an unsigned agent build is refused: {}", out.message);
        assert!(!dir.path().join("versions").exists(), "nothing installed");
    }

    #[test]
    fn every_kind_the_local_driver_runs_is_advertised() {
        let advertised = LocalDriver::new("/nonexistent").capabilities();
        for &name in StepKindName::ALL {
            let kind = sample(name);
            assert_eq!(kind.name(), name);
            // `run_step` matches every `StepKind`, so the local driver runs them all.
            assert!(supports(kind.name()), "{name} is run but not supported");
            assert!(advertised.iter().any(|c| c == kind.kind_name()), "{name} is run but not advertised");
        }
        assert!(advertised.iter().any(|c| c == "archive_rollback"));
        assert!(advertised.iter().any(|c| c == "run_as"));
        assert_eq!(advertised.len(), StepKindName::ALL.len() + FEATURES.len());
    }
}

//! Package and service steps: the specs, and the command layer they share.
//!
//! The specs ([`AptSpec`], [`DpkgSpec`], [`RpmSpec`], [`ServiceSpec`],
//! [`PkgRollbackSpec`]) live in `convoy_common::model` (they are `StepKind`
//! variants) and are re-exported here. The drivers are in [`super::apt`], [`super::dpkg`],
//! [`super::rpm`] and [`super::service`]; each has a public
//! `async fn run_*(spec, &PkgEnv, timeout) -> StepOutcome`.
//!
//! Rules every package and service step follows:
//! - **A timeout always applies.** The step's timeout bounds the whole step, all
//!   the commands it runs together; a zero timeout (proto3 "unset") means
//!   [`DEFAULT_TIMEOUT`], never "forever". A command still running at the
//!   deadline is killed with its process group (the exec driver's machinery)
//!   and the step reports `TimedOut`.
//! - **Failures say everything.** A failure message names the package, the
//!   command, how it ended (exit code, signal, timeout, "X not found on this
//!   host"), what the tool's output means when it is recognised (lock held, no
//!   such version, dependency problem…), the package's state afterwards, and
//!   the last lines of stderr. The full tails are in the outcome as usual.
//! - **Nothing from a spec is taken as an option.** Package names and versions
//!   starting with `-` or containing whitespace, `/` or `=` are refused.
//! - **Tools run non-interactively** (`DEBIAN_FRONTEND=noninteractive`, stdin
//!   closed) with a `PATH` that includes the `sbin` directories, which `dpkg`
//!   needs (`ldconfig`, `start-stop-daemon`) even when the agent was started
//!   with a short `PATH`.
//! - **The previous version is remembered** for a later rollback, in
//!   `<state root>/.pkg-history/<package>.json` (a [`PkgHistory`]), written
//!   atomically after a successful install that changed the version. A step
//!   that finds its version already installed leaves the record alone, so
//!   running it again does not forget what came before.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use convoy_common::model::{
    AptSpec, DpkgSpec, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec,
};
use convoy_common::model::{ExecSpec, StepOutcome, StepStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::LocalDriver;
use super::exec::{self, CommandRun, Ended};
use crate::fsutil;

/// The time limit of a package or service step whose timeout is zero.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Longest a read-only query (`dpkg-query`, `rpm -q`, `apt-mark showhold`) may take.
pub const QUERY_CAP: Duration = Duration::from_secs(60);

/// Directories appended to `PATH` for package tools when missing.
const SYSTEM_PATH: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

// ---------------------------------------------------------------------------
// The environment the steps run in
// ---------------------------------------------------------------------------

/// Where and how package and service steps run on this host. Agent-side
/// configuration, not part of any spec.
#[derive(Debug, Clone)]
pub struct PkgEnv {
    /// The agent's install root: relative sources are resolved against it,
    /// and `.pkg-history/` and `.services/` live under it.
    pub state_root: PathBuf,
    /// Passed to `dpkg` and `dpkg-query` as `--root` (tests use a scratch
    /// root so the host's package database is never touched). `None`: the host.
    pub dpkg_root: Option<PathBuf>,
    /// `PATH` for every tool. `None`: the agent's own, plus the standard
    /// `sbin`/`bin` directories it lacks.
    pub path: Option<OsString>,
    /// Whether systemd runs the host. `None`: detected (`/run/systemd/system`).
    pub systemd: Option<bool>,
}

impl PkgEnv {
    pub fn new(state_root: impl Into<PathBuf>) -> PkgEnv {
        PkgEnv { state_root: state_root.into(), dpkg_root: None, path: None, systemd: None }
    }

    /// `path` resolved against the state root when relative.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.state_root.join(p) }
    }

    /// Whether systemd is PID 1 here.
    pub fn systemd(&self) -> bool {
        self.systemd.unwrap_or_else(|| Path::new("/run/systemd/system").is_dir())
    }

    pub(crate) fn child_path(&self) -> OsString {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let current = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&current).collect();
        for d in SYSTEM_PATH {
            if !dirs.iter().any(|x| x == Path::new(d)) {
                dirs.push(PathBuf::from(d));
            }
        }
        std::env::join_paths(dirs).unwrap_or(current)
    }

    /// `--root=<dir>` for dpkg tools, when a scratch root is configured.
    pub(crate) fn dpkg_root_args(&self) -> Vec<String> {
        self.dpkg_root.iter().map(|r| format!("--root={}", r.display())).collect()
    }

    /// Leading arguments of `dpkg` itself: with a scratch root, its log goes
    /// there too rather than to the host's `/var/log/dpkg.log`.
    pub(crate) fn dpkg_args(&self) -> Vec<String> {
        let mut args = self.dpkg_root_args();
        if let Some(r) = &self.dpkg_root {
            args.push(format!("--log={}", r.join("var/log/dpkg.log").display()));
        }
        args
    }

    pub(crate) fn history_path(&self, package: &str) -> PathBuf {
        self.state_root.join(".pkg-history").join(format!("{package}.json"))
    }
}

impl LocalDriver {
    /// The [`PkgEnv`] package and service steps of this driver run in.
    pub fn pkg_env(&self) -> PkgEnv {
        PkgEnv::new(self.install_root())
    }
}

// ---------------------------------------------------------------------------
// Version history (for rollback)
// ---------------------------------------------------------------------------

/// What the agent remembers about the last change of a package's version,
/// in `<state root>/.pkg-history/<package>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkgHistory {
    pub package: String,
    /// `apt`, `dpkg`, `dnf`, `yum` or `rpm`: what installed `current`.
    pub manager: String,
    /// The version before the change; `None` when it was not installed.
    pub previous: Option<String>,
    /// The version installed by the change; empty when the change was a
    /// rollback that removed the package.
    pub current: String,
    /// The staged file `current` came from (dpkg, rpm), so that a later
    /// install can record it as `previous_source`.
    #[serde(default)]
    pub source: Option<String>,
    /// The staged file `previous` came from, when a dpkg/rpm step installed it
    /// (a rollback can reinstall it from there).
    #[serde(default)]
    pub previous_source: Option<String>,
    pub changed_at_unix_ms: u64,
    /// The change was a `pkg_rollback` (which a later `pkg_rollback` without
    /// a target version does not undo again).
    #[serde(default)]
    pub rollback: bool,
}

/// The record of `package`'s last version change, if any.
pub fn history(env: &PkgEnv, package: &str) -> Option<PkgHistory> {
    if check_package(package).is_err() {
        return None;
    }
    let text = std::fs::read_to_string(env.history_path(package)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The version `package` had before its last change by a package step
/// (`None`: no record, or it was not installed before).
pub fn previous_version(env: &PkgEnv, package: &str) -> Option<String> {
    history(env, package).and_then(|h| h.previous)
}

/// Packages a package step has changed on this host (those with a
/// `.pkg-history` record), sorted: a default for the packages whose
/// versions the agent reports in its facts.
pub fn managed_packages(env: &PkgEnv) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(env.state_root.join(".pkg-history")) else { return Vec::new() };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .filter(|n| check_package(n).is_ok())
        .collect();
    names.sort();
    names
}

/// Records a change `previous -> current`; the error is a message for the outcome.
pub(crate) async fn record_change(
    env: &PkgEnv,
    manager: &str,
    package: &str,
    previous: Option<&str>,
    current: &str,
    source: Option<&Path>,
) -> Result<(), String> {
    let old = history(env, package);
    let previous_source = old.filter(|h| previous == Some(h.current.as_str())).and_then(|h| h.source);
    let record = PkgHistory {
        package: package.to_string(),
        manager: manager.to_string(),
        previous: previous.map(str::to_string),
        current: current.to_string(),
        source: source.map(|s| s.display().to_string()),
        previous_source,
        changed_at_unix_ms: crate::wallclock::now_unix_ms(),
        rollback: false,
    };
    write_history(env, &record).await
}

/// Writes `record` atomically; the error is a message for the outcome.
pub(crate) async fn write_history(env: &PkgEnv, record: &PkgHistory) -> Result<(), String> {
    let path = env.history_path(&record.package);
    let json = serde_json::to_vec_pretty(record).map_err(|e| format!("encode version history: {e}"))?;
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || fsutil::write_atomic(&path, &json, None)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("could not record the previous version in {shown}: {e}")),
        Err(e) => Err(format!("could not record the previous version in {shown}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

fn plain_arg(what: &str, value: &str) -> Result<(), String> {
    let bad = value.is_empty()
        || value.starts_with('-')
        || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '=');
    if bad {
        Err(format!(
            "invalid {what} {value:?}: must be non-empty, not start with '-', and contain no spaces, '/' or '='"
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn check_package(package: &str) -> Result<(), String> {
    plain_arg("package name", package)
}

pub(crate) fn check_version(version: &str) -> Result<(), String> {
    plain_arg("version", version)
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Verifies `path` against `expected` (hex sha256) before `deadline`.
pub(crate) async fn verify_sha256(path: &Path, expected: &str, budget: &Budget) -> Result<(), StepOutcome> {
    let expected = expected.trim().to_ascii_lowercase();
    if !is_sha256_hex(&expected) {
        return Err(StepOutcome::failed(format!(
            "{} needs a sha256 (64 hex digits), got {expected:?}; nothing installed",
            path.display()
        )));
    }
    let job_path = path.to_path_buf();
    let deadline = budget.deadline.into_std();
    let job = tokio::task::spawn_blocking(move || super::archive::sha256_file(&job_path, Some(deadline)));
    let actual = match job.await {
        Ok(Ok(a)) => a,
        Ok(Err(super::archive::Fail::Failed(m))) => return Err(StepOutcome::failed(format!("{m}; nothing installed"))),
        Ok(Err(super::archive::Fail::TimedOut(m))) => {
            return Err(StepOutcome { status: StepStatus::TimedOut, ..StepOutcome::failed(m) });
        }
        Err(e) => return Err(StepOutcome::failed(format!("hashing {}: task failed: {e}", path.display()))),
    };
    if actual != expected {
        return Err(StepOutcome::failed(format!(
            "sha256 mismatch for {}: expected {expected}, actual {actual}; nothing installed",
            path.display()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// The time left to a step.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
    total: Duration,
}

impl Budget {
    /// From a step timeout; zero means [`DEFAULT_TIMEOUT`].
    pub fn new(timeout: Duration) -> Budget {
        let total = if timeout.is_zero() { DEFAULT_TIMEOUT } else { timeout };
        Budget { deadline: Instant::now() + total, total }
    }
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
    pub fn total(&self) -> Duration {
        self.total
    }
}

/// One tool run: the command as shown in messages, and how it went.
#[derive(Debug)]
pub(crate) struct Ran {
    pub shown: String,
    pub program: String,
    pub run: CommandRun,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.run.success()
    }
    pub fn exit_code(&self) -> Option<i32> {
        self.run.exit_code()
    }
    pub fn timed_out(&self) -> bool {
        matches!(self.run.ended, Ended::TimedOut(_))
    }
    pub fn not_found(&self) -> bool {
        matches!(&self.run.ended, Ended::SpawnFailed(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
    /// stdout and stderr together, for recognising messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.run.stdout_tail, self.run.stderr_tail)
    }
    /// "`cmd` exited with code N" / "dnf not found on this host" / timed out…
    pub fn ended(&self) -> String {
        if self.not_found() {
            return format!("{} not found on this host (could not start {})", self.program, self.shown);
        }
        exec::ended_message(&self.shown, &self.run.ended)
    }
    /// The outcome of a failed run; `message` says everything (see module docs).
    pub fn failure(&self, message: String) -> StepOutcome {
        StepOutcome {
            status: if self.timed_out() { StepStatus::TimedOut } else { StepStatus::Failed },
            exit_code: self.exit_code(),
            message,
            stdout_tail: self.run.stdout_tail.clone(),
            stderr_tail: self.run.stderr_tail.clone(),
            duration_ms: 0,
            installed: None,
            backup: None,
            http_status: None,
        }
    }
}

/// The last few lines of `text` (at most ~600 bytes), on one line, for messages.
pub(crate) fn short_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    let mut s = lines[start..].join(" | ");
    if s.len() > 600 {
        let mut cut = s.len() - 600;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("...{}", &s[cut..]);
    }
    s
}

/// `; stderr: <tail>` or `; stdout: <tail>` (when stderr is empty), or nothing.
pub(crate) fn tail_note(ran: &Ran) -> String {
    let err = short_tail(&ran.run.stderr_tail);
    if !err.is_empty() {
        return format!("; stderr: {err}");
    }
    let out = short_tail(&ran.run.stdout_tail);
    if !out.is_empty() { format!("; stdout (stderr empty): {out}") } else { String::new() }
}

/// Runs `program args…` non-interactively, within `cap` (if any) and the budget.
pub(crate) async fn run_tool(
    env: &PkgEnv,
    program: &str,
    args: &[String],
    extra_env: &[(&str, &str)],
    budget: &Budget,
    cap: Option<Duration>,
) -> Ran {
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("PATH".to_string(), env.child_path().to_string_lossy().into_owned());
    vars.insert("LC_ALL".to_string(), "C".to_string());
    vars.insert("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string());
    vars.insert("DEBCONF_NONINTERACTIVE_SEEN".to_string(), "true".to_string());
    vars.insert("APT_LISTCHANGES_FRONTEND".to_string(), "none".to_string());
    vars.insert("NEEDRESTART_MODE".to_string(), "l".to_string());
    for (k, v) in extra_env {
        vars.insert(k.to_string(), v.to_string());
    }
    let spec = ExecSpec { command: program.to_string(), args: args.to_vec(), env: vars, workdir: None, run_as: None };
    let shown = exec::describe(&spec);
    let limit = match cap {
        Some(c) => c.min(budget.remaining()),
        None => budget.remaining(),
    };
    let run = if limit.is_zero() {
        CommandRun { ended: Ended::TimedOut(Duration::ZERO), stdout_tail: String::new(), stderr_tail: String::new() }
    } else {
        exec::run_command(&spec, None, Some(limit)).await
    };
    Ran { shown, program: program.to_string(), run }
}

/// Where `program` is on the tools' `PATH`, if anywhere.
pub fn find_tool(env: &PkgEnv, program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&env.child_path())
        .map(|d| d.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

pub(crate) fn strings<const N: usize>(args: [&str; N]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A failed outcome that ran no command (bad spec…).
pub(crate) fn refuse(message: String) -> StepOutcome {
    StepOutcome { exit_code: None, ..StepOutcome::failed(message) }
}

/// A successful outcome reporting `(package, version)` installed.
pub(crate) fn installed_ok(package: &str, version: &str, message: String, last: Option<&Ran>) -> StepOutcome {
    StepOutcome {
        message,
        exit_code: last.and_then(Ran::exit_code),
        stdout_tail: last.map(|r| r.run.stdout_tail.clone()).unwrap_or_default(),
        stderr_tail: last.map(|r| r.run.stderr_tail.clone()).unwrap_or_default(),
        installed: Some((package.to_string(), version.to_string())),
        ..StepOutcome::ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_options_are_refused() {
        for ok in ["nginx", "libssl3", "g++", "python3.11", "1:2.0.0-1", "2.0.0-1.el9", "foo~rc1"] {
            assert!(check_package(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-y", "--force-all", "a b", "a/b", "a=b", "a\nb"] {
            assert!(check_package(bad).is_err(), "{bad:?}");
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_tail_keeps_last_lines() {
        let t = "a\n\nb\nc\nd\ne\nf\ng\n";
        assert_eq!(short_tail(t), "c | d | e | f | g");
        assert_eq!(short_tail(""), "");
        let long = "é".repeat(1000);
        assert!(short_tail(&long).len() <= 605);
    }

    #[test]
    fn child_path_has_sbin() {
        let env = PkgEnv::new("/tmp");
        let p = env.child_path();
        let dirs: Vec<_> = std::env::split_paths(&p).collect();
        assert!(dirs.iter().any(|d| d == Path::new("/usr/sbin")));
        assert!(dirs.iter().any(|d| d == Path::new("/sbin")));
    }

    #[test]
    fn specs_round_trip_with_defaults() {
        let apt: AptSpec = serde_json::from_str(r#"{"package":"demo-api","version":"2.0.0"}"#).unwrap();
        assert_eq!(apt.hold, None);
        assert!(!apt.allow_downgrade && !apt.update);
        let svc: ServiceSpec = serde_json::from_str(r#"{"name":"demo","action":"restart"}"#).unwrap();
        assert_eq!(svc.manager, ServiceManager::Auto);
        let rpm: RpmSpec = serde_json::from_str(r#"{"package":"x","version":"1-1"}"#).unwrap();
        assert_eq!(rpm.manager, RpmManager::Dnf);
        let back: RpmSpec = serde_json::from_str(&serde_json::to_string(&rpm).unwrap()).unwrap();
        assert_eq!(back, rpm);
    }
}

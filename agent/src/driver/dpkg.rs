//! The `dpkg` step, and the `dpkg-query` layer the `apt` step and the facts share.
//!
//! `dpkg` installs a staged `.deb`:
//! 1. the file's sha256 is checked (mismatch: nothing is touched);
//! 2. `dpkg-deb -f FILE Package Version` must name the spec's package and
//!    version (a wrong artifact is refused before it is installed);
//! 3. the package's state is read with `dpkg-query`; if an interrupted run
//!    left it unpacked or half-configured, `dpkg --configure -a` runs first
//!    (and the message says so); if the wanted version is already installed,
//!    nothing is installed;
//! 4. `dpkg -i --force-confdef --force-confold FILE` with
//!    `DEBIAN_FRONTEND=noninteractive`; while another process holds the dpkg
//!    lock it is retried every second until the step's deadline;
//! 5. `dpkg-query` must then report the package `installed` at the spec's
//!    version; the outcome's `installed` is `(package, version)` and the
//!    previous version is recorded (see [`super::pkg`]).
//!
//! A failure reports the command, its exit code, the stderr tail and the
//! package's state afterwards (e.g. "half-configured 2.0.0"), which is what an
//! operator needs to decide between retrying and fixing the host.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use convoy_common::model::StepOutcome;

use super::pkg::{self, Budget, DpkgSpec, PkgEnv, Ran, run_tool, strings, tail_note};

/// The `${Status}` state word of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkgState {
    NotInstalled,
    ConfigFiles,
    HalfInstalled,
    Unpacked,
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
    Other(String),
}

impl PkgState {
    pub fn parse(word: &str) -> PkgState {
        match word {
            "not-installed" => PkgState::NotInstalled,
            "config-files" => PkgState::ConfigFiles,
            "half-installed" => PkgState::HalfInstalled,
            "unpacked" => PkgState::Unpacked,
            "half-configured" => PkgState::HalfConfigured,
            "triggers-awaited" => PkgState::TriggersAwaited,
            "triggers-pending" => PkgState::TriggersPending,
            "installed" => PkgState::Installed,
            other => PkgState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PkgState::NotInstalled => "not-installed",
            PkgState::ConfigFiles => "config-files",
            PkgState::HalfInstalled => "half-installed",
            PkgState::Unpacked => "unpacked",
            PkgState::HalfConfigured => "half-configured",
            PkgState::TriggersAwaited => "triggers-awaited",
            PkgState::TriggersPending => "triggers-pending",
            PkgState::Installed => "installed",
            PkgState::Other(s) => s,
        }
    }

    /// Its files are in place and it is configured (pending triggers aside).
    pub fn is_installed(&self) -> bool {
        matches!(self, PkgState::Installed | PkgState::TriggersPending | PkgState::TriggersAwaited)
    }

    /// An interrupted install or upgrade left it here; `dpkg --configure -a`
    /// (or reinstalling) finishes the job.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, PkgState::HalfInstalled | PkgState::Unpacked | PkgState::HalfConfigured)
    }
}

/// One line of `dpkg-query -W -f='${Package}\t${Status}\t${Version}\n'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgStatus {
    pub package: String,
    /// Selection: `install`, `hold`, `deinstall`, `purge`, `unknown`.
    pub want: String,
    /// `ok` or `reinstreq` (the package must be reinstalled).
    pub flag: String,
    pub state: PkgState,
    /// Empty for a package dpkg knows of but has no version of.
    pub version: Option<String>,
}

impl DpkgStatus {
    pub fn installed_version(&self) -> Option<&str> {
        if self.state.is_installed() { self.version.as_deref() } else { None }
    }
    pub fn held(&self) -> bool {
        self.want == "hold"
    }
}

impl fmt::Display for DpkgStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.state.as_str())?;
        if let Some(v) = &self.version {
            write!(f, " {v}")?;
        }
        if self.flag != "ok" {
            write!(f, " ({})", self.flag)?;
        }
        if self.held() {
            write!(f, ", held")?;
        }
        Ok(())
    }
}

/// The `dpkg-query` format [`parse_query`] reads.
pub const QUERY_FORMAT: &str = "${Package}\t${Status}\t${Version}\n";

/// Parses `dpkg-query -W -f=QUERY_FORMAT` output; lines that do not parse are skipped.
pub fn parse_query(stdout: &str) -> Vec<DpkgStatus> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let package = fields.next()?.trim();
            let status = fields.next()?;
            let version = fields.next().unwrap_or("").trim();
            let mut words = status.split_whitespace();
            let (want, flag, state) = (words.next()?, words.next()?, words.next()?);
            if package.is_empty() {
                return None;
            }
            Some(DpkgStatus {
                package: package.to_string(),
                want: want.to_string(),
                flag: flag.to_string(),
                state: PkgState::parse(state),
                version: (!version.is_empty()).then(|| version.to_string()),
            })
        })
        .collect()
}

/// `package -> version` of the installed ones among `statuses`.
pub fn installed_versions(statuses: &[DpkgStatus]) -> BTreeMap<String, String> {
    statuses.iter().filter_map(|s| s.installed_version().map(|v| (s.package.clone(), v.to_string()))).collect()
}

fn query_args(env: &PkgEnv, names: &[&str]) -> Vec<String> {
    let mut args = env.dpkg_root_args();
    args.push("-W".into());
    args.push(format!("-f={QUERY_FORMAT}"));
    args.push("--".into());
    args.extend(names.iter().map(|n| n.to_string()));
    args
}

/// The state of `package`; `Ok(None)` when dpkg has never heard of it.
pub(crate) async fn query(env: &PkgEnv, package: &str, budget: &Budget) -> Result<Option<DpkgStatus>, Ran> {
    let ran = run_tool(env, "dpkg-query", &query_args(env, &[package]), &[], budget, Some(pkg::QUERY_CAP)).await;
    let found = parse_query(&ran.run.stdout_tail);
    // Several lines for a Multi-Arch package: prefer an installed one.
    let best = found
        .iter()
        .filter(|s| s.package == package)
        .max_by_key(|s| (s.state.is_installed(), s.state.is_interrupted()))
        .cloned();
    match (best, ran.exit_code()) {
        (Some(s), _) => Ok(Some(s)),
        // Exit 1 with "no packages found matching": unknown to dpkg.
        (None, Some(1)) => Ok(None),
        (None, _) => Err(ran),
    }
}

/// "half-configured 2.0.0" / "not installed" / "unknown (dpkg-query failed: …)".
pub(crate) async fn state_note(env: &PkgEnv, package: &str, budget: &Budget) -> String {
    // Reading the state after a failure gets a little time even past the deadline.
    let after = Budget::new(budget.remaining().max(Duration::from_secs(5)).min(pkg::QUERY_CAP));
    match query(env, package, &after).await {
        Ok(Some(s)) => s.to_string(),
        Ok(None) => "not installed".to_string(),
        Err(ran) => format!("unknown ({})", ran.ended()),
    }
}

/// `package -> installed version` for those of `names` that are installed,
/// with one `dpkg-query` call (bounded by [`pkg::QUERY_CAP`]). Packages not
/// installed, or only half-installed, are left out; so is everything when
/// dpkg is not there.
pub async fn installed_packages(env: &PkgEnv, names: &[String]) -> BTreeMap<String, String> {
    let names: Vec<&str> = names.iter().map(String::as_str).filter(|n| pkg::check_package(n).is_ok()).collect();
    if names.is_empty() {
        return BTreeMap::new();
    }
    let budget = Budget::new(pkg::QUERY_CAP);
    let ran = run_tool(env, "dpkg-query", &query_args(env, &names), &[], &budget, None).await;
    if !ran.success() && ran.exit_code() != Some(1) {
        tracing::warn!(command = %ran.shown, "{}", ran.ended());
    }
    installed_versions(&parse_query(&ran.run.stdout_tail))
}

/// [`installed_packages`] for synchronous callers (`Driver::installed`): the
/// same single `dpkg-query` call, killed after [`BLOCKING_QUERY_CAP`].
pub fn installed_packages_blocking(env: &PkgEnv, names: &[String]) -> BTreeMap<String, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let names: Vec<&str> = names.iter().map(String::as_str).filter(|n| pkg::check_package(n).is_ok()).collect();
    if names.is_empty() || pkg::find_tool(env, "dpkg-query").is_none() {
        return BTreeMap::new();
    }
    let child = Command::new("dpkg-query")
        .args(query_args(env, &names))
        .env("PATH", env.child_path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return BTreeMap::new() };
    let Some(mut stdout) = child.stdout.take() else { return BTreeMap::new() };
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < BLOCKING_QUERY_CAP => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("dpkg-query did not answer within {BLOCKING_QUERY_CAP:?}; no package facts");
                return BTreeMap::new();
            }
        }
    }
    installed_versions(&parse_query(&reader.join().unwrap_or_default()))
}

/// Longest [`installed_packages_blocking`] waits for `dpkg-query`.
pub const BLOCKING_QUERY_CAP: Duration = Duration::from_secs(10);

/// Recognised dpkg failures, for messages.
pub fn explain_dpkg(output: &str) -> Option<&'static str> {
    let o = output;
    if is_lock_error(o) {
        Some("another process holds the dpkg lock")
    } else if o.contains("dependency problems") || o.contains("depends on") && o.contains("however:") {
        Some("dependency problems: a package it depends on is missing or at the wrong version")
    } else if o.contains("script subprocess returned error") // dpkg >= 1.20
        || o.contains("script returned error exit status") // older dpkg
        || o.contains("maintainer script")
    {
        Some("a maintainer script of the package failed")
    } else if o.contains("trying to overwrite") {
        Some("the package tries to overwrite a file owned by another package")
    } else if o.contains("requested operation requires superuser privilege") {
        Some("dpkg needs root")
    } else if o.contains("is not a Debian format archive") || o.contains("not a debian format archive") {
        Some("the file is not a .deb")
    } else if o.contains("No space left on device") {
        Some("the disk is full")
    } else if o.contains("dpkg was interrupted") {
        Some("an earlier dpkg run was interrupted; `dpkg --configure -a` is needed")
    } else {
        None
    }
}

pub(crate) fn is_lock_error(output: &str) -> bool {
    output.contains("dpkg frontend lock")
        || output.contains("status database area is locked")
        || output.contains("lock was locked by another process")
        || output.contains("Could not get lock")
        || output.contains("is locked by another process")
}

/// Runs `dpkg --configure -a` (finishing an interrupted run); returns the run.
pub(crate) async fn configure_pending(env: &PkgEnv, budget: &Budget) -> Ran {
    let mut args = env.dpkg_args();
    args.extend(strings(["--force-confdef", "--force-confold", "--configure", "-a"]));
    run_tool(env, "dpkg", &args, &[], budget, None).await
}

/// Parses `dpkg-deb -f FILE Package Version` output into (package, version).
pub fn parse_control_fields(stdout: &str) -> (Option<String>, Option<String>) {
    let mut package = None;
    let mut version = None;
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("Package:") {
            package = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_string());
        }
    }
    (package, version)
}

/// The `dpkg` step. A zero `timeout` means [`pkg::DEFAULT_TIMEOUT`].
pub async fn run_dpkg(spec: &DpkgSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
    let budget = Budget::new(timeout);
    let name = &spec.package;
    if let Err(e) = pkg::check_package(name).and_then(|()| pkg::check_version(&spec.version)) {
        return pkg::refuse(format!("dpkg step: {e}"));
    }
    let source = env.resolve(&spec.source);
    if let Err(out) = pkg::verify_sha256(&source, &spec.sha256, &budget).await {
        return StepOutcome { message: format!("dpkg {name} {}: {}", spec.version, out.message), ..out };
    }

    // The file must be the package and version the step says.
    let shown_src = source.display().to_string();
    let fields = run_tool(
        env,
        "dpkg-deb",
        &["-f".into(), shown_src.clone(), "Package".into(), "Version".into()],
        &[],
        &budget,
        Some(pkg::QUERY_CAP),
    )
    .await;
    if !fields.success() {
        return fields.failure(format!(
            "dpkg {name} {}: cannot read the control fields of {shown_src}: {}{}; nothing installed",
            spec.version,
            fields.ended(),
            tail_note(&fields)
        ));
    }
    match parse_control_fields(&fields.run.stdout_tail) {
        (Some(p), Some(v)) if p == *name && v == spec.version => {}
        (p, v) => {
            return pkg::refuse(format!(
                "dpkg {name} {}: {shown_src} holds package {} version {}, not what the step asks; nothing installed",
                spec.version,
                p.as_deref().unwrap_or("?"),
                v.as_deref().unwrap_or("?")
            ));
        }
    }

    let mut notes = Vec::new();
    let before = match query(env, name, &budget).await {
        Ok(b) => b,
        Err(ran) => {
            return ran.failure(format!(
                "dpkg {name} {}: reading the package state failed: {}{}",
                spec.version,
                ran.ended(),
                tail_note(&ran)
            ));
        }
    };
    let mut before_version = before.as_ref().and_then(|s| s.installed_version()).map(str::to_string);
    if let Some(b) = before.as_ref().filter(|b| b.state.is_interrupted()) {
        let fix = configure_pending(env, &budget).await;
        if fix.success() {
            notes.push(format!("found {name} {b}, ran `dpkg --configure -a` first"));
        } else {
            // dpkg -i of the package may still repair it; carry on and say so.
            notes.push(format!("found {name} {b}; `dpkg --configure -a` failed ({})", fix.ended()));
        }
        if let Ok(Some(now)) = query(env, name, &budget).await {
            before_version = now.installed_version().map(str::to_string);
        }
    }
    if before_version.as_deref() == Some(spec.version.as_str()) {
        notes.push(format!("{name} {} already installed; nothing to do", spec.version));
        return pkg::installed_ok(name, &spec.version, format!("dpkg: {}", notes.join("; ")), None);
    }

    let mut args = env.dpkg_args();
    args.extend(strings(["--force-confdef", "--force-confold", "-i"]));
    args.push(shown_src.clone());
    let ran = loop {
        let ran = run_tool(env, "dpkg", &args, &[], &budget, None).await;
        if ran.success() || ran.timed_out() || !is_lock_error(&ran.output()) {
            break ran;
        }
        if budget.remaining() <= Duration::from_secs(1) {
            break ran;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !ran.success() {
        let why = explain_dpkg(&ran.output()).map(|w| format!(" ({w})")).unwrap_or_default();
        let state = state_note(env, name, &budget).await;
        let pre = if notes.is_empty() { String::new() } else { format!("{}; ", notes.join("; ")) };
        return ran.failure(format!(
            "dpkg: installing {name} {} failed: {pre}{}{why}; {name} is now: {state}{}",
            spec.version,
            ran.ended(),
            tail_note(&ran)
        ));
    }
    finish_install(env, "dpkg", name, &spec.version, before_version.as_deref(), Some(&source), notes, &ran, &budget)
        .await
}

/// After a successful install command: check `dpkg-query` reports `version`
/// installed, record the change, and build the outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish_install(
    env: &PkgEnv,
    manager: &str,
    name: &str,
    version: &str,
    before: Option<&str>,
    source: Option<&std::path::Path>,
    mut notes: Vec<String>,
    ran: &Ran,
    budget: &Budget,
) -> StepOutcome {
    let after = query(env, name, budget).await;
    match &after {
        Ok(Some(s)) if s.installed_version() == Some(version) => {}
        _ => {
            let state = match after {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => "not installed".to_string(),
                Err(r) => format!("unknown ({})", r.ended()),
            };
            return ran.failure(format!(
                "{manager}: {} succeeded but {name} is now: {state}, not installed at {version}",
                ran.shown
            ));
        }
    }
    notes.insert(0, format!("installed {name} {version} (previous: {})", before.unwrap_or("not installed")));
    if before != Some(version)
        && let Err(e) = pkg::record_change(env, manager, name, before, version, source).await
    {
        notes.push(e);
    }
    pkg::installed_ok(name, version, format!("{manager}: {}", notes.join("; ")), Some(ran))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from dpkg 1.21 (Debian 12) with QUERY_FORMAT.
    const QUERY: &str = "coreutils\tinstall ok installed\t9.1-1\n\
demo-api\thold ok installed\t2.0.0\n\
demo-db\tinstall ok half-configured\t2.0.0\n\
demo-poller\tinstall reinstreq half-installed\t1.1.0\n\
demo-old\tdeinstall ok config-files\t1.0.0\n\
demo-gone\tunknown ok not-installed\t\n\
libc6\tinstall ok installed\t2.36-9+deb12u4\n\
libc6\tinstall ok not-installed\t\n\
demo-trig\tinstall ok triggers-pending\t1.0.0\n\
garbage line\n";

    #[test]
    fn parses_recorded_dpkg_query_output() {
        let all = parse_query(QUERY);
        assert_eq!(all.len(), 9);
        let api = &all[1];
        assert_eq!(api.state, PkgState::Installed);
        assert!(api.held());
        assert_eq!(api.to_string(), "installed 2.0.0, held");
        let db = &all[2];
        assert_eq!(db.state, PkgState::HalfConfigured);
        assert!(db.state.is_interrupted());
        assert_eq!(db.installed_version(), None);
        assert_eq!(db.to_string(), "half-configured 2.0.0");
        assert_eq!(all[3].to_string(), "half-installed 1.1.0 (reinstreq)");
        assert_eq!(all[4].state, PkgState::ConfigFiles);
        assert_eq!(all[5].version, None);
        assert_eq!(all[5].to_string(), "not-installed");
        let versions = installed_versions(&all);
        let expected: Vec<(&str, &str)> =
            vec![("coreutils", "9.1-1"), ("demo-api", "2.0.0"), ("demo-trig", "1.0.0"), ("libc6", "2.36-9+deb12u4")];
        assert_eq!(versions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), expected);
        assert_eq!(PkgState::parse("weird"), PkgState::Other("weird".into()));
    }

    #[test]
    fn parses_control_fields() {
        let out = "Package: demo-api\nVersion: 1:2.0.0-1\n";
        assert_eq!(parse_control_fields(out), (Some("demo-api".into()), Some("1:2.0.0-1".into())));
        assert_eq!(parse_control_fields(""), (None, None));
    }

    #[test]
    fn explains_known_failures() {
        let lock = "dpkg: error: dpkg frontend lock was locked by another process with pid 4242\nNote: removing the lock file is always wrong, can damage the locked area\nand the entire system. See <https://wiki.debian.org/Teams/Dpkg/FAQ#db-lock>.\n";
        assert!(is_lock_error(lock));
        assert_eq!(explain_dpkg(lock), Some("another process holds the dpkg lock"));
        let post = "Setting up demo-api (2.0.0) ...\nmigration failed\ndpkg: error processing package demo-api (--install):\n installed demo-api package post-installation script subprocess returned error exit status 1\nErrors were encountered while processing:\n demo-api\n";
        assert_eq!(explain_dpkg(post), Some("a maintainer script of the package failed"));
        let old = "dpkg: error processing demo-api (--configure):\n subprocess installed post-installation script returned error exit status 1\n";
        assert_eq!(explain_dpkg(old), Some("a maintainer script of the package failed"));
        let deps = "dpkg: dependency problems prevent configuration of demo-api:\n demo-api depends on demo-db (>= 2.0.0); however:\n  Package demo-db is not installed.\n";
        assert!(explain_dpkg(deps).unwrap().contains("dependency"));
        assert_eq!(explain_dpkg("all fine"), None);
    }
}

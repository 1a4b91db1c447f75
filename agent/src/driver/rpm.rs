//! The `rpm` step (dnf, yum or rpm): the command layer and its parsing.
//!
//! There is no RPM host among this project's machines: the parsing of
//! versions and errors is tested on outputs recorded from dnf 4, yum 3 and
//! rpm 4, and running the step on a host without the tool fails with a clear
//! "dnf not found on this host".
//!
//! 1. With a `source`, the staged `.rpm` is checked by sha256 first.
//! 2. `rpm -q --qf '%{VERSION}-%{RELEASE}\n' PKG` gives the installed
//!    version(s) ("package PKG is not installed", exit 1, when none). The
//!    wanted version already installed means nothing is done.
//! 3. dnf/yum: `<manager> -y install PKG-VERSION` (or the staged file);
//!    with `allow_downgrade` and a newer version installed,
//!    `<manager> -y downgrade …`. rpm: `rpm -U [--oldpackage] FILE`.
//! 4. `rpm -q` must then report the version; the change is recorded for a
//!    later rollback like the Debian steps do.
//!
//! A version matches when it equals `VERSION-RELEASE` or, when the spec
//! gives only `VERSION`, the part before the last `-`.

use std::time::Duration;

use convoy_common::model::StepOutcome;

use super::pkg::{self, Budget, PkgEnv, Ran, RpmManager, RpmSpec, run_tool, strings, tail_note};

/// The `rpm -q` query format.
pub const RPM_QUERY_FORMAT: &str = "%{VERSION}-%{RELEASE}\\n";

/// What `rpm -q --qf RPM_QUERY_FORMAT PKG` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpmQuery {
    /// Every installed `VERSION-RELEASE` (several for kernels and the like).
    Installed(Vec<String>),
    NotInstalled,
    /// rpm failed otherwise (database locked or broken…).
    Error(String),
}

/// Parses the output of `rpm -q --qf '%{VERSION}-%{RELEASE}\n' PKG`.
pub fn parse_rpm_query(exit_code: Option<i32>, stdout: &str, stderr: &str) -> RpmQuery {
    let all = format!("{stdout}\n{stderr}");
    if all.lines().any(|l| l.trim().starts_with("package ") && l.trim().ends_with(" is not installed")) {
        return RpmQuery::NotInstalled;
    }
    let versions: Vec<String> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(char::is_whitespace))
        .map(str::to_string)
        .collect();
    if exit_code == Some(0) && !versions.is_empty() {
        RpmQuery::Installed(versions)
    } else {
        RpmQuery::Error(pkg::short_tail(&all))
    }
}

/// Whether an installed `VERSION-RELEASE` is the `wanted` `VERSION-RELEASE` or `VERSION`.
pub fn version_matches(installed: &str, wanted: &str) -> bool {
    installed == wanted || installed.rsplit_once('-').is_some_and(|(v, _)| v == wanted)
}

/// A recognised dnf / yum / rpm failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpmError {
    /// No such package (or version) in the enabled repositories.
    NoMatch,
    /// Another process holds the package manager's lock (its pid when given).
    LockHeld(Option<u32>),
    /// Dependency resolution failed; the first problem line.
    Depsolve(String),
    /// Metadata or package download failed.
    Download,
    /// Already installed at that (or a newer) version; nothing done.
    NothingToDo,
    /// The transaction failed (scriptlet, conflicts, disk).
    Transaction,
    NotRoot,
}

impl RpmError {
    pub fn describe(&self) -> String {
        match self {
            RpmError::NoMatch => "no such package or version in the enabled repositories".into(),
            RpmError::LockHeld(Some(pid)) => format!("another process (pid {pid}) holds the package manager lock"),
            RpmError::LockHeld(None) => "another process holds the package manager lock".into(),
            RpmError::Depsolve(p) => format!("dependency problem: {p}"),
            RpmError::Download => "downloading metadata or packages failed".into(),
            RpmError::NothingToDo => "nothing to do (already installed, or a newer version is)".into(),
            RpmError::Transaction => "the transaction failed (scriptlet, file conflict or disk)".into(),
            RpmError::NotRoot => "the package manager needs root".into(),
        }
    }
}

fn pid_after(text: &str, marker: &str) -> Option<u32> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies the output (stdout and stderr) of a failed dnf / yum / rpm run.
pub fn classify_rpm_error(output: &str) -> Option<RpmError> {
    let o = output;
    if o.contains("No match for argument")
        || o.contains("Unable to find a match")
        || o.contains("No package ") && o.contains(" available")
        || o.contains("No packages marked for")
    {
        return Some(RpmError::NoMatch);
    }
    if o.contains("Waiting for process with pid") {
        return Some(RpmError::LockHeld(pid_after(o, "Waiting for process with pid")));
    }
    if o.contains("holding the yum lock") || o.contains("Existing lock /var/run/yum.pid") {
        return Some(RpmError::LockHeld(pid_after(o, "The other application is: ").or_else(|| pid_after(o, "  PID:"))));
    }
    if o.contains("can't create transaction lock") || o.contains("Failed to obtain rpm transaction lock") {
        return Some(RpmError::LockHeld(None));
    }
    if o.contains("This command has to be run with superuser privileges")
        || o.contains("You need to be root")
        || o.contains("Permission denied") && o.contains("/var/lib/rpm")
    {
        return Some(RpmError::NotRoot);
    }
    if o.contains("Problem:") || o.contains("Failed dependencies:") || o.contains("Error: Package:") {
        let first = o
            .lines()
            .map(str::trim)
            .skip_while(|l| {
                !(l.starts_with("Problem:")
                    || l.starts_with("error: Failed dependencies:")
                    || l.starts_with("Error: Package:"))
            })
            .find(|l| l.starts_with("- ") || l.contains("is needed by") || l.starts_with("Requires:"))
            .unwrap_or("see stderr")
            .trim_start_matches("- ")
            .to_string();
        return Some(RpmError::Depsolve(first));
    }
    if o.contains("Failed to download metadata")
        || o.contains("Cannot download")
        || o.contains("Curl error")
        || o.contains("Cannot retrieve repository metadata")
    {
        return Some(RpmError::Download);
    }
    if o.contains("Error: Nothing to do")
        || o.contains("Nothing to do")
        || o.contains("is already installed")
        || o.contains("already installed and latest version")
    {
        return Some(RpmError::NothingToDo);
    }
    if o.contains("Transaction check error")
        || o.contains("Error: Transaction test error")
        || o.contains("scriptlet failed")
        || o.contains("Error in PREIN scriptlet")
        || o.contains("Error in POSTIN scriptlet")
        || o.contains("conflicts with file from package")
        || o.contains("installing package") && o.contains("needs") && o.contains("on the")
    {
        return Some(RpmError::Transaction);
    }
    None
}

pub(crate) async fn query(env: &PkgEnv, package: &str, budget: &Budget) -> (RpmQuery, Ran) {
    let args = vec!["-q".into(), "--qf".into(), RPM_QUERY_FORMAT.replace("\\n", "\n"), "--".into(), package.into()];
    let ran = run_tool(env, "rpm", &args, &[], budget, Some(pkg::QUERY_CAP)).await;
    let parsed = if ran.not_found() || ran.timed_out() {
        RpmQuery::Error(ran.ended())
    } else {
        parse_rpm_query(ran.exit_code(), &ran.run.stdout_tail, &ran.run.stderr_tail)
    };
    (parsed, ran)
}

/// The `rpm` step. A zero `timeout` means [`pkg::DEFAULT_TIMEOUT`].
pub async fn run_rpm(spec: &RpmSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
    let budget = Budget::new(timeout);
    let name = &spec.package;
    let version = &spec.version;
    let manager = spec.manager.command();
    if let Err(e) = pkg::check_package(name).and_then(|()| pkg::check_version(version)) {
        return pkg::refuse(format!("{manager} step: {e}"));
    }
    for tool in [manager, "rpm"] {
        if pkg::find_tool(env, tool).is_none() {
            return pkg::refuse(format!(
                "{manager}: cannot install {name} {version}: {tool} not found on this host (searched {})",
                env.child_path().to_string_lossy()
            ));
        }
    }
    let source = match (&spec.source, spec.manager) {
        (None, RpmManager::Rpm) => {
            return pkg::refuse(format!("rpm {name} {version}: manager rpm needs a staged source file"));
        }
        (None, _) => None,
        (Some(s), _) => {
            let path = env.resolve(s);
            let Some(sha) = spec.sha256.as_deref() else {
                return pkg::refuse(format!("{manager} {name} {version}: a source file needs its sha256"));
            };
            if let Err(out) = pkg::verify_sha256(&path, sha, &budget).await {
                return StepOutcome { message: format!("{manager} {name} {version}: {}", out.message), ..out };
            }
            Some(path)
        }
    };

    let (before, ran) = query(env, name, &budget).await;
    let before_version = match &before {
        RpmQuery::Installed(vs) => vs.last().cloned(),
        RpmQuery::NotInstalled => None,
        RpmQuery::Error(e) => {
            return ran.failure(format!("{manager}: reading the state of {name} failed: {e}{}", tail_note(&ran)));
        }
    };
    if let RpmQuery::Installed(vs) = &before
        && vs.iter().any(|v| version_matches(v, version))
    {
        let msg = format!("{manager}: {name} {version} already installed; nothing to do");
        return pkg::installed_ok(name, version, msg, None);
    }

    let target = match &source {
        Some(p) => p.display().to_string(),
        None => format!("{name}-{version}"),
    };
    let mut args = match spec.manager {
        RpmManager::Rpm => {
            let mut a = strings(["-U", "-v"]);
            if spec.allow_downgrade {
                a.push("--oldpackage".into());
            }
            a
        }
        RpmManager::Dnf | RpmManager::Yum => strings(["-y", "install"]),
    };
    args.push("--".into());
    args.push(target.clone());
    let mut ran = run_tool(env, manager, &args, &[], &budget, None).await;
    // dnf/yum `install` of an older version says "nothing to do": downgrade instead.
    if spec.allow_downgrade
        && spec.manager != RpmManager::Rpm
        && before_version.is_some()
        && !ran.timed_out()
        && (!ran.success() || ran.output().contains("Nothing to do"))
        && classify_rpm_error(&ran.output()) == Some(RpmError::NothingToDo)
    {
        let args = vec!["-y".into(), "downgrade".into(), "--".into(), target.clone()];
        ran = run_tool(env, manager, &args, &[], &budget, None).await;
    }
    let (after, _) = query(env, name, &budget).await;
    let state = match &after {
        RpmQuery::Installed(vs) => format!("installed {}", vs.join(", ")),
        RpmQuery::NotInstalled => "not installed".to_string(),
        RpmQuery::Error(e) => format!("unknown ({e})"),
    };
    let ok = matches!(&after, RpmQuery::Installed(vs) if vs.iter().any(|v| version_matches(v, version)));
    if !ran.success() || !ok {
        let why = classify_rpm_error(&ran.output()).map(|e| format!(" ({})", e.describe())).unwrap_or_default();
        let how =
            if ran.success() { format!("{} succeeded but the version did not change", ran.shown) } else { ran.ended() };
        return ran.failure(format!(
            "{manager}: installing {name} {version} failed: {how}{why}; {name} is now: {state}{}",
            tail_note(&ran)
        ));
    }
    let mut message = format!(
        "{manager}: installed {name} {version} (previous: {})",
        before_version.as_deref().unwrap_or("not installed")
    );
    if let Err(e) = pkg::record_change(env, manager, name, before_version.as_deref(), version, source.as_deref()).await
    {
        message.push_str(&format!("; {e}"));
    }
    pkg::installed_ok(name, version, message, Some(&ran))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outputs recorded from rpm 4.16 / dnf 4.14 (Rocky 9) and yum 3.4 (CentOS 7).
    const RPM_Q_ONE: &str = "2.0.0-1.el9\n";
    const RPM_Q_KERNEL: &str = "5.14.0-362.8.1.el9_3\n5.14.0-427.13.1.el9_4\n";
    const RPM_Q_MISSING: &str = "package demo-api is not installed\n";
    const RPM_Q_LOCKED: &str = "error: can't create transaction lock on /var/lib/rpm/.rpm.lock (Resource temporarily unavailable)\nerror: cannot open Packages database in /var/lib/rpm\n";

    const DNF_NO_MATCH: &str = "Last metadata expiration check: 0:01:02 ago on Tue 04 Jun 2024 10:00:00 AM UTC.\nNo match for argument: demo-nope-1.0.0\nError: Unable to find a match: demo-nope-1.0.0\n";
    const DNF_LOCK: &str = "Waiting for process with pid 4321 to finish.\n";
    const DNF_DEPSOLVE: &str = "Last metadata expiration check: 0:00:12 ago.\nError: \n Problem: conflicting requests\n  - nothing provides demo-db >= 2.0.0 needed by demo-api-2.0.0-1.el9.x86_64\n(try to add '--skip-broken' to skip uninstallable packages or '--nobest' to use not only best candidate packages)\n";
    const DNF_NOTHING: &str = "Package demo-api-2.0.0-1.el9.x86_64 is already installed.\nDependencies resolved.\nNothing to do.\nComplete!\n";
    const DNF_METADATA: &str = "Errors during downloading metadata for repository 'demo':\n  - Curl error (7): Couldn't connect to server for http://repo.example/demo/repodata/repomd.xml\nError: Failed to download metadata for repo 'demo': Cannot download repomd.xml\n";
    const DNF_NOT_ROOT: &str =
        "Error: This command has to be run with superuser privileges (under the root user on most systems).\n";
    const DNF_SCRIPTLET: &str = "Running transaction\n  Running scriptlet: demo-api-2.0.0-1.el9.x86_64\nerror: %prein(demo-api-2.0.0-1.el9.x86_64) scriptlet failed, exit status 1\nError in PREIN scriptlet in rpm package demo-api\n";
    const YUM_NO_PKG: &str = "Loaded plugins: fastestmirror\nLoading mirror speeds from cached hostfile\nNo package demo-nope-1.0.0 available.\nError: Nothing to do\n";
    const YUM_LOCK: &str = "Loaded plugins: fastestmirror\nExisting lock /var/run/yum.pid: another copy is running as pid 2345.\nAnother app is currently holding the yum lock; waiting for it to exit...\n  The other application is: yum\n    Memory :  42 M RSS (340 MB VSZ)\n";
    const YUM_DEPS: &str = "Error: Package: demo-api-2.0.0-1.el7.x86_64 (demo)\n           Requires: demo-db >= 2.0.0\n           Installed: demo-db-1.0.0-1.el7.x86_64 (@demo)\n";
    const RPM_FAILED_DEPS: &str =
        "error: Failed dependencies:\n\tdemo-db >= 2.0.0 is needed by demo-api-2.0.0-1.el9.x86_64\n";
    const RPM_ALREADY: &str = "\tpackage demo-api-2.0.0-1.el9.x86_64 is already installed\n";

    #[test]
    fn parses_rpm_queries() {
        assert_eq!(parse_rpm_query(Some(0), RPM_Q_ONE, ""), RpmQuery::Installed(vec!["2.0.0-1.el9".into()]));
        match parse_rpm_query(Some(0), RPM_Q_KERNEL, "") {
            RpmQuery::Installed(v) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_rpm_query(Some(1), RPM_Q_MISSING, ""), RpmQuery::NotInstalled);
        match parse_rpm_query(Some(1), "", RPM_Q_LOCKED) {
            RpmQuery::Error(e) => assert!(e.contains("transaction lock"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matches_versions_with_or_without_release() {
        assert!(version_matches("2.0.0-1.el9", "2.0.0-1.el9"));
        assert!(version_matches("2.0.0-1.el9", "2.0.0"));
        assert!(!version_matches("2.0.0-1.el9", "2.0"));
        assert!(!version_matches("2.0.10-1", "2.0.1"));
    }

    #[test]
    fn classifies_recorded_failures() {
        assert_eq!(classify_rpm_error(DNF_NO_MATCH), Some(RpmError::NoMatch));
        assert_eq!(classify_rpm_error(YUM_NO_PKG), Some(RpmError::NoMatch));
        assert_eq!(classify_rpm_error(DNF_LOCK), Some(RpmError::LockHeld(Some(4321))));
        assert!(matches!(classify_rpm_error(YUM_LOCK), Some(RpmError::LockHeld(_))));
        assert_eq!(classify_rpm_error(RPM_Q_LOCKED), Some(RpmError::LockHeld(None)));
        match classify_rpm_error(DNF_DEPSOLVE) {
            Some(RpmError::Depsolve(p)) => assert!(p.contains("nothing provides demo-db"), "{p}"),
            other => panic!("{other:?}"),
        }
        match classify_rpm_error(YUM_DEPS) {
            Some(RpmError::Depsolve(p)) => assert!(p.contains("Requires: demo-db"), "{p}"),
            other => panic!("{other:?}"),
        }
        match classify_rpm_error(RPM_FAILED_DEPS) {
            Some(RpmError::Depsolve(p)) => assert!(p.contains("is needed by"), "{p}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(classify_rpm_error(DNF_METADATA), Some(RpmError::Download));
        assert_eq!(classify_rpm_error(DNF_NOT_ROOT), Some(RpmError::NotRoot));
        assert_eq!(classify_rpm_error(DNF_NOTHING), Some(RpmError::NothingToDo));
        assert_eq!(classify_rpm_error(RPM_ALREADY), Some(RpmError::NothingToDo));
        assert_eq!(classify_rpm_error(DNF_SCRIPTLET), Some(RpmError::Transaction));
        assert_eq!(classify_rpm_error("Complete!\n"), None);
        assert!(RpmError::LockHeld(Some(4321)).describe().contains("4321"));
    }
}

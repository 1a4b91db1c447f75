//! The `apt` step: install an exact version from the host's repositories.
//!
//! 1. `apt-get update` first when the step asks for it;
//! 2. the package's state is read with `dpkg-query`; a package an interrupted
//!    run left unpacked or half-configured gets `dpkg --configure -a` first
//!    (apt refuses to work otherwise; the message says it was done). The
//!    wanted version already installed means nothing is installed;
//! 3. `apt-get install -y -o Dpkg::Options::=--force-confdef -o
//!    Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=<secs> PKG=VERSION`
//!    (`--allow-downgrades` when asked, `--allow-change-held-packages` when the
//!    package is held), non-interactive. apt waits for the dpkg lock up to half
//!    the time left (at most 5 minutes), so a held lock is reported as such by
//!    apt rather than as a step timeout. If apt still says dpkg was interrupted,
//!    `dpkg --configure -a` runs and the install is tried once more;
//! 4. `dpkg-query` must report the version installed; then the hold is applied
//!    (`apt-mark hold`/`unhold`, see [`AptSpec::hold`]) and the previous version
//!    recorded for a later rollback.
//!
//! Failures name the package, the command, its exit code, what apt's message
//! means when recognised ([`explain_apt`]), the package's state afterwards and
//! the stderr tail.

use std::time::Duration;

use convoy_common::model::StepOutcome;

use super::dpkg;
use super::pkg::{self, AptSpec, Budget, PkgEnv, Ran, run_tool, strings, tail_note};

/// Longest apt waits for the dpkg lock.
const LOCK_WAIT_CAP: Duration = Duration::from_secs(300);

/// What a failed apt-get's output means, when it is recognised.
pub fn explain_apt(output: &str) -> Option<&'static str> {
    let o = output;
    if o.contains("Unable to locate package") {
        Some("the package is in none of the host's repositories (is the repository configured and updated?)")
    } else if o.contains("for '") && o.contains("' was not found") && o.contains("Version '") {
        Some(
            "that version is not available from the host's repositories (wrong version string, or apt-get update needed)",
        )
    } else if o.contains("-y was used without --allow-downgrades") {
        Some("it would be a downgrade; set allow_downgrade to allow it")
    } else if o.contains("-y was used without --allow-change-held-packages") {
        Some("the package is held")
    } else if o.contains("Could not get lock")
        || o.contains("Unable to acquire the dpkg frontend lock")
        || o.contains("Unable to lock the administration directory")
    {
        if o.contains("are you root?") || o.contains("Permission denied") {
            Some("apt needs root")
        } else {
            Some("another process holds the dpkg lock (waited for it)")
        }
    } else if o.contains("dpkg was interrupted") {
        Some("an earlier dpkg run was interrupted; `dpkg --configure -a` is needed")
    } else if o.contains("Unmet dependencies") || o.contains("have unmet dependencies") {
        Some("unmet dependencies")
    } else if o.contains("Failed to fetch") || o.contains("Unable to fetch some archives") {
        Some("downloading the package failed")
    } else if o.contains("Sub-process /usr/bin/dpkg returned an error code") {
        Some(dpkg::explain_dpkg(o).unwrap_or("dpkg failed while installing"))
    } else if o.contains("No space left on device") || o.contains("You don't have enough free space") {
        Some("the disk is full")
    } else {
        None
    }
}

fn lock_timeout_secs(budget: &Budget) -> u64 {
    (budget.remaining() / 2).min(LOCK_WAIT_CAP).as_secs().max(1)
}

fn install_args(spec: &AptSpec, held: bool, budget: &Budget) -> Vec<String> {
    let mut args = strings([
        "install",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    args.push("-o".into());
    args.push(format!("DPkg::Lock::Timeout={}", lock_timeout_secs(budget)));
    if spec.allow_downgrade {
        args.push("--allow-downgrades".into());
    }
    if held {
        args.push("--allow-change-held-packages".into());
    }
    args.push("--".into());
    args.push(format!("{}={}", spec.package, spec.version));
    args
}

/// The `apt` step. A zero `timeout` means [`pkg::DEFAULT_TIMEOUT`].
pub async fn run_apt(spec: &AptSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
    let budget = Budget::new(timeout);
    let name = &spec.package;
    let version = &spec.version;
    if let Err(e) = pkg::check_package(name).and_then(|()| pkg::check_version(version)) {
        return pkg::refuse(format!("apt step: {e}"));
    }
    if env.dpkg_root.is_some() {
        return pkg::refuse(format!("apt {name} {version}: apt cannot work on a scratch dpkg root"));
    }
    let failed = |ran: &Ran, doing: &str, notes: &[String], state: Option<&str>| {
        let why = explain_apt(&ran.output()).map(|w| format!(" ({w})")).unwrap_or_default();
        let pre = if notes.is_empty() { String::new() } else { format!("{}; ", notes.join("; ")) };
        let state = state.map(|s| format!("; {name} is now: {s}")).unwrap_or_default();
        ran.failure(format!("apt: {doing} failed: {pre}{}{why}{state}{}", ran.ended(), tail_note(ran)))
    };
    let mut notes: Vec<String> = Vec::new();

    if spec.update {
        let mut args = strings(["update", "-q", "-o"]);
        args.push(format!("DPkg::Lock::Timeout={}", lock_timeout_secs(&budget)));
        let ran = run_tool(env, "apt-get", &args, &[], &budget, None).await;
        if !ran.success() {
            return failed(&ran, &format!("updating the package lists before installing {name}={version}"), &[], None);
        }
        notes.push("ran apt-get update".into());
    }

    let before = match dpkg::query(env, name, &budget).await {
        Ok(b) => b,
        Err(ran) => return failed(&ran, &format!("reading the state of {name}"), &notes, None),
    };
    let held = before.as_ref().is_some_and(|b| b.held());
    let mut before_version = before.as_ref().and_then(|b| b.installed_version()).map(str::to_string);
    let mut configured = false;
    if let Some(b) = before.as_ref().filter(|b| b.state.is_interrupted()) {
        let fix = dpkg::configure_pending(env, &budget).await;
        if !fix.success() {
            let state = dpkg::state_note(env, name, &budget).await;
            return failed(
                &fix,
                &format!("found {name} {b} (an interrupted install); finishing it with dpkg --configure -a"),
                &notes,
                Some(&state),
            );
        }
        configured = true;
        notes.push(format!("found {name} {b}, ran `dpkg --configure -a` first"));
        if let Ok(Some(now)) = dpkg::query(env, name, &budget).await {
            before_version = now.installed_version().map(str::to_string);
        }
    }

    let last = if before_version.as_deref() == Some(version.as_str()) {
        notes.push(format!("{name} {version} already installed; nothing to install"));
        None
    } else {
        let mut ran = run_tool(env, "apt-get", &install_args(spec, held, &budget), &[], &budget, None).await;
        if !ran.success() && !ran.timed_out() && !configured && ran.output().contains("dpkg was interrupted") {
            let fix = dpkg::configure_pending(env, &budget).await;
            if !fix.success() {
                let state = dpkg::state_note(env, name, &budget).await;
                return failed(&fix, "`dpkg --configure -a` (apt said dpkg was interrupted)", &notes, Some(&state));
            }
            notes.push("apt said dpkg was interrupted: ran `dpkg --configure -a` and tried again".into());
            ran = run_tool(env, "apt-get", &install_args(spec, held, &budget), &[], &budget, None).await;
        }
        if !ran.success() {
            let state = dpkg::state_note(env, name, &budget).await;
            return failed(&ran, &format!("installing {name}={version}"), &notes, Some(&state));
        }
        Some(ran)
    };

    // Check the version, record the change.
    let mut outcome = match &last {
        Some(ran) => {
            dpkg::finish_install(env, "apt", name, version, before_version.as_deref(), None, notes, ran, &budget).await
        }
        None => {
            // An interrupted upgrade to this version, just finished: record the
            // change it made (from the version last recorded) for a rollback.
            let recorded = pkg::history(env, name).map(|h| h.current).filter(|c| !c.is_empty());
            if configured
                && recorded.as_deref().is_some_and(|r| r != version.as_str())
                && let Err(e) = pkg::record_change(env, "apt", name, recorded.as_deref(), version, None).await
            {
                notes.push(e);
            }
            pkg::installed_ok(name, version, format!("apt: {}", notes.join("; ")), None)
        }
    };
    if outcome.installed.is_none() {
        return outcome;
    }

    // The hold, last: it must not stop the install itself.
    let mark = match spec.hold {
        Some(true) if !held || last.is_some() => Some("hold"),
        Some(false) if held => Some("unhold"),
        None if held && last.is_some() => Some("hold"),
        _ => None,
    };
    if let Some(mark) = mark {
        let ran = run_tool(env, "apt-mark", &[mark.to_string(), "--".into(), name.clone()], &[], &budget, None).await;
        if !ran.success() {
            let failure = ran.failure(format!(
                "{}; but apt-mark {mark} {name} failed: {}{}",
                outcome.message,
                ran.ended(),
                tail_note(&ran)
            ));
            return StepOutcome { installed: outcome.installed, ..failure };
        }
        outcome.message.push_str(&format!("; {}", if mark == "hold" { "held" } else { "hold released" }));
    } else if spec.hold == Some(true) || (spec.hold.is_none() && held) {
        outcome.message.push_str("; held");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from apt 2.6 (Debian 12).
    const NOT_FOUND: &str = "Reading package lists...\nBuilding dependency tree...\nReading state information...\nE: Unable to locate package demo-nope\n";
    const NO_VERSION: &str = "Reading package lists...\nBuilding dependency tree...\nReading state information...\nE: Version '9.9.9' for 'demo-api' was not found\n";
    const DOWNGRADE: &str = "The following packages will be DOWNGRADED:\n  demo-api\n0 upgraded, 0 newly installed, 1 downgraded, 0 to remove and 0 not upgraded.\nE: Packages were downgraded and -y was used without --allow-downgrades.\n";
    const HELD: &str = "The following held packages will be changed:\n  demo-api\nE: Held packages were changed and -y was used without --allow-change-held-packages.\n";
    const LOCK: &str = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (apt-get)\nN: Be aware that removing the lock file is not a solution and may break your system.\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?\n";
    const NOT_ROOT: &str = "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?\n";
    const INTERRUPTED: &str =
        "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem. \n";
    const UNMET: &str = "Some packages could not be installed. This may mean that you have\nrequested an impossible situation...\nThe following packages have unmet dependencies:\n demo-api : Depends: demo-db (>= 2.0.0) but 1.0.0 is to be installed\nE: Unable to correct problems, you have held broken packages.\n";
    const SCRIPT: &str = "Setting up demo-api (2.0.0) ...\ndpkg: error processing package demo-api (--configure):\n installed demo-api package post-installation script subprocess returned error exit status 1\nErrors were encountered while processing:\n demo-api\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n";
    const FETCH: &str = "Err:1 http://deb.example/debian bookworm/main amd64 demo-api amd64 2.0.0\n  Could not connect to deb.example:80\nE: Failed to fetch http://deb.example/debian/pool/main/d/demo-api/demo-api_2.0.0_amd64.deb  Could not connect\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n";

    #[test]
    fn recognises_recorded_apt_failures() {
        let cases = [
            (NOT_FOUND, "none of the host's repositories"),
            (NO_VERSION, "version is not available"),
            (DOWNGRADE, "downgrade"),
            (HELD, "held"),
            (LOCK, "holds the dpkg lock"),
            (NOT_ROOT, "needs root"),
            (INTERRUPTED, "interrupted"),
            (UNMET, "unmet dependencies"),
            (SCRIPT, "maintainer script"),
            (FETCH, "downloading"),
        ];
        for (output, expected) in cases {
            let got = explain_apt(output).unwrap_or_else(|| panic!("not recognised: {output}"));
            assert!(got.contains(expected), "{got:?} for {output}");
        }
        assert_eq!(explain_apt("Reading package lists...\n"), None);
    }

    #[test]
    fn install_command_line() {
        let spec = AptSpec {
            package: "demo-api".into(),
            version: "1:2.0.0-1".into(),
            hold: None,
            allow_downgrade: true,
            update: false,
        };
        let args = install_args(&spec, true, &Budget::new(Duration::from_secs(60)));
        let line = args.join(" ");
        assert!(line.starts_with("install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout="), "{line}");
        assert!(line.ends_with("--allow-downgrades --allow-change-held-packages -- demo-api=1:2.0.0-1"), "{line}");
        let secs: u64 = args[8].trim_start_matches("DPkg::Lock::Timeout=").parse().unwrap();
        assert!((29..=30).contains(&secs), "{secs}");
    }
}

//! The apt and dnf steps' orchestration, against fake `apt-get`, `apt-mark`,
//! `dpkg`, `dpkg-query`, `rpm` and `dnf` scripts (the tools' `PATH` is a
//! temporary directory holding only those). The fakes print outputs recorded
//! from the real tools and log how they were called; nothing on this machine
//! is installed or removed. The real apt path is exercised by the container
//! fleet tests.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use convoy_agent::driver::apt::run_apt;
use convoy_agent::driver::pkg::{AptSpec, PkgEnv, RpmManager, RpmSpec, previous_version};
use convoy_agent::driver::rpm::run_rpm;
use convoy_common::model::StepStatus;

const T: Duration = Duration::from_secs(30);

struct Fake {
    _dir: tempfile::TempDir,
    d: PathBuf,
    env: PkgEnv,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        let env =
            PkgEnv { path: Some(d.join("bin").into_os_string()), systemd: Some(false), ..PkgEnv::new(d.join("agent")) };
        Fake { _dir: dir, d, env }
    }

    /// A fake tool; `@/` in `body` stands for the fake's directory.
    fn tool(&self, name: &str, body: &str) {
        let p = self.d.join("bin").join(name);
        let script = format!("#!/bin/sh\necho \"{name} $* [DEBIAN_FRONTEND=$DEBIAN_FRONTEND]\" >> @/log\n{body}\n")
            .replace("@/", &format!("{}/", self.d.display()));
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write(&self, name: &str, content: &str) {
        std::fs::write(self.d.join(name), content).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.d.join("log")).unwrap_or_default()
    }

    /// dpkg-query / dpkg / apt-mark / apt-get fakes over `@/state` ("<state>\t<version>")
    /// and `@/held`.
    fn debian(&self) {
        self.tool(
            "dpkg-query",
            "if [ -f @/state ]; then want=install; [ -f @/held ] && want=hold
  IFS='\t' read -r st ver < @/state; printf 'demo\\t%s ok %s\\t%s\\n' \"$want\" \"$st\" \"$ver\"; exit 0; fi
echo 'dpkg-query: no packages found matching demo' >&2; exit 1",
        );
        self.tool(
            "dpkg",
            "IFS='\t' read -r st ver < @/state; printf 'installed\\t%s\\n' \"$ver\" > @/state; echo \"Setting up demo ($ver) ...\"",
        );
        self.tool(
            "apt-mark",
            "case \"$1\" in hold) : > @/held; echo 'demo set on hold.';; unhold) /bin/rm -f @/held; echo 'Canceled hold on demo.';; esac",
        );
        self.tool(
            "apt-get",
            "[ \"$1\" = update ] && exit 0
if [ -f @/apt-sleep ]; then exec /bin/sleep 30; fi
if [ -f @/apt-fail ]; then /bin/cat @/apt-fail >&2; exit 100; fi
for a in \"$@\"; do case \"$a\" in demo=*) v=\"${a#demo=}\";; esac; done
printf 'installed\\t%s\\n' \"$v\" > @/state
echo \"Setting up demo ($v) ...\"",
        );
    }
}

fn apt(version: &str) -> AptSpec {
    AptSpec { package: "demo".into(), version: version.into(), hold: None, allow_downgrade: false, update: false }
}

fn installs(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("apt-get install")).collect()
}

#[tokio::test]
async fn apt_upgrade_holds_and_remembers_the_previous_version() {
    let f = Fake::new();
    f.debian();
    f.write("state", "installed\t1.0.0\n");
    let spec = AptSpec { hold: Some(true), update: true, ..apt("2.0.0-1") };
    let out = run_apt(&spec, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}\n{}", f.log());
    assert_eq!(out.installed, Some(("demo".into(), "2.0.0-1".into())));
    assert!(out.message.contains("previous: 1.0.0") && out.message.contains("held"), "{}", out.message);
    let log = f.log();
    assert!(log.contains("apt-get update -q -o DPkg::Lock::Timeout="), "{log}");
    let inst = installs(&log);
    assert_eq!(inst.len(), 1, "{log}");
    assert!(inst[0].contains("install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout="), "{}", inst[0]);
    assert!(inst[0].contains("-- demo=2.0.0-1 [DEBIAN_FRONTEND=noninteractive]"), "{}", inst[0]);
    assert!(!inst[0].contains("--allow-downgrades"));
    assert!(log.contains("apt-mark hold -- demo"), "{log}");
    assert!(f.d.join("held").exists());
    assert_eq!(previous_version(&f.env, "demo").as_deref(), Some("1.0.0"));

    // Held now: a downgrade back needs --allow-change-held-packages, keeps the hold
    // (hold unset), and records 2.0.0-1 as the previous version.
    let back = AptSpec { allow_downgrade: true, ..apt("1.0.0") };
    let out = run_apt(&back, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let log = f.log();
    let last = installs(&log).pop().unwrap().to_string();
    assert!(last.contains("--allow-downgrades --allow-change-held-packages -- demo=1.0.0"), "{last}");
    assert!(f.d.join("held").exists(), "the hold was kept");
    assert_eq!(previous_version(&f.env, "demo").as_deref(), Some("2.0.0-1"));

    // Already there: apt-get install is not run; unhold asked.
    let out = run_apt(&AptSpec { hold: Some(false), ..apt("1.0.0") }, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("already installed") && out.message.contains("hold released"), "{}", out.message);
    assert_eq!(installs(&f.log()).len(), 2);
    assert!(!f.d.join("held").exists());
    assert_eq!(previous_version(&f.env, "demo").as_deref(), Some("2.0.0-1"));
}

#[tokio::test]
async fn apt_finishes_an_interrupted_install_first() {
    let f = Fake::new();
    f.debian();
    f.write("state", "half-configured\t1.0.0\n");
    let out = run_apt(&apt("2.0.0"), &f.env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}\n{}", f.log());
    assert!(
        out.message.contains("found demo half-configured 1.0.0, ran `dpkg --configure -a` first"),
        "{}",
        out.message
    );
    assert!(out.message.contains("previous: 1.0.0"), "{}", out.message);
    let log = f.log();
    let configure = log.find("dpkg --force-confdef --force-confold --configure -a").expect(&log);
    assert!(configure < log.find("apt-get install").unwrap());
}

#[tokio::test]
async fn apt_failure_names_package_command_code_state_and_stderr() {
    let f = Fake::new();
    f.debian();
    f.write("state", "installed\t1.0.0\n");
    f.write(
        "apt-fail",
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\nE: Version '9.9.9' for 'demo' was not found\n",
    );
    let out = run_apt(&apt("9.9.9"), &f.env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert_eq!(out.exit_code, Some(100));
    assert_eq!(out.installed, None);
    let m = &out.message;
    for needle in [
        "installing demo=9.9.9 failed",
        "`apt-get install",
        "exited with code 100",
        "version is not available",
        "demo is now: installed 1.0.0",
        "stderr: ",
        "E: Version '9.9.9' for 'demo' was not found",
    ] {
        assert!(m.contains(needle), "{needle:?} missing from: {m}");
    }
    assert_eq!(previous_version(&f.env, "demo"), None);
}

#[tokio::test]
async fn apt_is_killed_at_the_step_timeout() {
    let f = Fake::new();
    f.debian();
    f.write("state", "installed\t1.0.0\n");
    f.write("apt-sleep", "");
    let started = Instant::now();
    let out = run_apt(&apt("2.0.0"), &f.env, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(out.status, StepStatus::TimedOut, "{out:?}");
    assert!(out.message.contains("did not finish within") && out.message.contains("demo"), "{}", out.message);
}

#[tokio::test]
async fn missing_tools_are_named() {
    let f = Fake::new(); // an empty PATH
    let out = run_apt(&apt("2.0.0"), &f.env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("dpkg-query not found on this host"), "{}", out.message);
    let rpm = RpmSpec {
        package: "demo".into(),
        version: "2.0.0".into(),
        manager: RpmManager::Dnf,
        source: None,
        sha256: None,
        allow_downgrade: false,
    };
    let out = run_rpm(&rpm, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("dnf not found on this host"), "{}", out.message);
}

fn rpm_fakes(f: &Fake) {
    f.tool(
        "rpm",
        "if [ -f @/rpm-state ]; then /bin/cat @/rpm-state; exit 0; fi\necho 'package demo is not installed'; exit 1",
    );
    f.tool(
        "dnf",
        "if [ -f @/dnf-fail ]; then /bin/cat @/dnf-fail >&2; exit 1; fi
for a in \"$@\"; do case \"$a\" in demo-*) v=\"${a#demo-}\";; esac; done
echo \"$v-1.el9\" > @/rpm-state; echo Complete!",
    );
}

#[tokio::test]
async fn dnf_install_and_failure() {
    let f = Fake::new();
    rpm_fakes(&f);
    let spec = RpmSpec {
        package: "demo".into(),
        version: "2.0.0".into(),
        manager: RpmManager::Dnf,
        source: None,
        sha256: None,
        allow_downgrade: false,
    };
    let out = run_rpm(&spec, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}\n{}", f.log());
    assert!(out.message.contains("installed demo 2.0.0 (previous: not installed)"), "{}", out.message);
    assert!(f.log().contains("dnf -y install -- demo-2.0.0"), "{}", f.log());
    assert!(f.log().contains("rpm -q --qf %{VERSION}-%{RELEASE}"), "{}", f.log());

    let out = run_rpm(&spec, &f.env, T).await;
    assert!(out.message.contains("already installed"), "{}", out.message);

    f.write(
        "dnf-fail",
        "Error: \n Problem: conflicting requests\n  - nothing provides demo-db >= 3.0.0 needed by demo-3.0.0-1.el9.x86_64\n",
    );
    let out = run_rpm(&RpmSpec { version: "3.0.0".into(), ..spec }, &f.env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    let m = &out.message;
    for needle in [
        "installing demo 3.0.0",
        "`dnf -y install -- demo-3.0.0`",
        "code 1",
        "nothing provides demo-db",
        "is now: installed 2.0.0-1.el9",
    ] {
        assert!(m.contains(needle), "{needle:?} missing from: {m}");
    }
    assert_eq!(previous_version(&f.env, "demo"), None, "2.0.0 was a fresh install");
}

//! The service step's own supervision (hosts without systemd), for real:
//! `sleep` processes started, checked, restarted and stopped on this machine.

use std::path::Path;
use std::time::Duration;

use convoy_agent::driver::pkg::{PkgEnv, ServiceAction, ServiceManager, ServiceSpec};
use convoy_agent::driver::service::run_service;
use convoy_common::model::{ExecSpec, StepStatus};

const T: Duration = Duration::from_secs(30);

fn env(dir: &Path) -> PkgEnv {
    PkgEnv { systemd: Some(false), ..PkgEnv::new(dir) }
}

fn spec(name: &str, action: ServiceAction, command: &str, args: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        action,
        manager: ServiceManager::Auto,
        command: Some(ExecSpec {
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ExecSpec::default()
        }),
        pidfile: None,
        log: None,
        stop_grace: Some(Duration::from_secs(2)),
    }
}

fn with(mut s: ServiceSpec, action: ServiceAction) -> ServiceSpec {
    s.action = action;
    s
}

fn pid_of(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join(".services").join(name).join("pid")).unwrap().trim().parse().unwrap()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().next().unwrap().to_string();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        if f[2] == pgid.to_string() && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: still not true after 5s");
}

#[tokio::test]
async fn start_status_restart_stop() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let base = spec("sleeper", ServiceAction::Status, "sleep", &["1000"]);

    let out = run_service(&base, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("sleeper is not running"), "{}", out.message);

    let out = run_service(&with(base.clone(), ServiceAction::Start), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let first = pid_of(dir.path(), "sleeper");
    assert!(alive(first));
    assert!(out.message.contains(&format!("pid {first}")), "{}", out.message);
    assert!(dir.path().join(".services/sleeper/output.log").exists());

    // Starting a running service leaves it alone.
    let out = run_service(&with(base.clone(), ServiceAction::Start), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("already running"), "{}", out.message);
    assert_eq!(pid_of(dir.path(), "sleeper"), first);

    let out = run_service(&base, &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains(&format!("running (pid {first}")), "{}", out.message);

    let out = run_service(&with(base.clone(), ServiceAction::Restart), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let second = pid_of(dir.path(), "sleeper");
    assert_ne!(first, second, "restart must change the pid");
    assert!(alive(second));
    eventually("the first sleep is gone", || !alive(first)).await;
    assert!(out.message.contains("stopped") && out.message.contains("started"), "{}", out.message);

    let out = run_service(&with(base.clone(), ServiceAction::Stop), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("SIGTERM"), "{}", out.message);
    eventually("the second sleep is gone", || !alive(second)).await;
    assert!(!dir.path().join(".services/sleeper/pid").exists());

    let out = run_service(&base, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");

    let out = run_service(&with(base, ServiceAction::Stop), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("was not running"), "{}", out.message);
}

#[tokio::test]
async fn stop_kills_the_whole_group_and_escalates_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    // Ignores SIGTERM itself; its children are in its group.
    let mut s = spec(
        "stubborn",
        ServiceAction::Start,
        "sh",
        &["-c", "trap '' TERM; sleep 1000 & sleep 1000 & echo ready; while :; do sleep 0.05; done"],
    );
    s.stop_grace = Some(Duration::from_millis(500));
    let out = run_service(&s, &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let pid = pid_of(dir.path(), "stubborn");
    eventually("the children are up", || group_members(pid).len() >= 3).await;

    let out = run_service(&with(s.clone(), ServiceAction::Stop), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("SIGKILL"), "{}", out.message);
    eventually("the group is empty", || group_members(pid).is_empty()).await;
    let log = std::fs::read_to_string(dir.path().join(".services/stubborn/output.log")).unwrap();
    assert!(log.contains("ready"), "{log}");
}

#[tokio::test]
async fn a_command_that_dies_at_once_fails_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let mut s = spec("crasher", ServiceAction::Start, "sh", &["-c", "echo 'bad config: port' >&2; exit 3"]);
    s.log = Some("logs/crasher.log".into());
    let out = run_service(&s, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert_eq!(out.exit_code, Some(3));
    assert!(out.message.contains("did not stay up") && out.message.contains("code 3"), "{}", out.message);
    assert!(out.message.contains("bad config: port"), "{}", out.message);
    assert!(dir.path().join("logs/crasher.log").exists());
    assert_eq!(run_service(&with(s, ServiceAction::Status), &env, T).await.status, StepStatus::Failed);
}

#[tokio::test]
async fn a_recycled_pid_is_not_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    // A pidfile naming a live process (this test) with another start time.
    let svc = dir.path().join(".services/ghost");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("pid"), format!("{}\n", std::process::id())).unwrap();
    std::fs::write(svc.join("pid.starttime"), "1\n").unwrap();
    let s = spec("ghost", ServiceAction::Status, "sleep", &["1000"]);
    let out = run_service(&s, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    let out = run_service(&with(s.clone(), ServiceAction::Stop), &env, T).await;
    assert!(out.message.contains("was not running"), "{}", out.message);
    // (and this test process is, evidently, still alive)
    let out = run_service(&with(s.clone(), ServiceAction::Start), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let pid = pid_of(dir.path(), "ghost");
    assert_ne!(pid, std::process::id());
    let out = run_service(&with(s, ServiceAction::Stop), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
}

#[tokio::test]
async fn no_systemd_and_no_command_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("nothing", ServiceAction::Start, "x", &[]);
    s.command = None;
    let out = run_service(&s, &env(dir.path()), T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("no systemd") && out.message.contains("no command"), "{}", out.message);
    s.name = "../etc".into();
    let out = run_service(&s, &env(dir.path()), T).await;
    assert!(out.message.contains("invalid service name"), "{}", out.message);
}

#[tokio::test]
async fn systemctl_missing_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let env = PkgEnv { systemd: Some(true), path: Some(dir.path().as_os_str().to_owned()), ..PkgEnv::new(dir.path()) };
    let s = spec("web", ServiceAction::Restart, "sleep", &["1"]);
    let out = run_service(&s, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("systemctl not found on this host"), "{}", out.message);
}

//! The exec step against real processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use convoy_agent::driver::{LocalDriver, step};
use convoy_common::model::{ExecSpec, StepKind, StepStatus};

fn sh(script: &str) -> ExecSpec {
    ExecSpec { command: "sh".into(), args: vec!["-c".into(), script.into()], ..ExecSpec::default() }
}

#[tokio::test]
async fn success_captures_output_tails() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let mut spec = sh("echo hello; echo \"$GREETING from $(pwd)\" >&2; seq 1 5000");
    spec.env = BTreeMap::from([("GREETING".into(), "hi".into())]);
    spec.workdir = Some(dir.path().display().to_string());
    let out = driver.run_step(&step("s", Duration::from_secs(30), StepKind::Exec(spec))).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    // Only the tail of stdout is kept: the start ("hello") is cut off.
    assert!(out.stdout_tail.len() <= 4096);
    assert!(out.stdout_tail.ends_with("4999\n5000\n"), "{:?}", &out.stdout_tail[out.stdout_tail.len() - 20..]);
    assert!(!out.stdout_tail.contains("hello"));
    assert!(out.stderr_tail.contains(&format!("hi from {}", dir.path().display())), "{}", out.stderr_tail);
}

#[tokio::test]
async fn non_zero_exit_fails_naming_command_and_code() {
    let driver = LocalDriver::new("/nonexistent");
    let out = driver.run_step(&step("s", Duration::from_secs(30), StepKind::Exec(sh("echo oops >&2; exit 3")))).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert_eq!(out.exit_code, Some(3));
    assert!(out.message.contains("sh -c") && out.message.contains("code 3"), "{}", out.message);
    assert_eq!(out.stderr_tail, "oops\n");
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let driver = LocalDriver::new(dir.path());
    // A child of the shell (in the background) would touch the marker if it
    // outlived the timeout; the whole group must die.
    let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
    let started = Instant::now();
    let out = driver.run_step(&step("s", Duration::from_millis(300), StepKind::Exec(sh(&script)))).await;
    let took = started.elapsed();
    assert_eq!(out.status, StepStatus::TimedOut, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(out.message.contains("killed"), "{}", out.message);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Wait past the moment the background child would have written.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert!(!marker.exists(), "a process of the group survived the timeout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!marker.exists());
}

#[tokio::test]
async fn missing_command_fails_with_os_error() {
    let driver = LocalDriver::new("/nonexistent");
    let spec = ExecSpec { command: "convoy-no-such-command".into(), ..ExecSpec::default() };
    let out = driver.run_step(&step("s", Duration::from_secs(5), StepKind::Exec(spec))).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(
        out.message.contains("could not start") && out.message.contains("convoy-no-such-command"),
        "{}",
        out.message
    );
    assert!(out.message.contains("No such file"), "{}", out.message);
}

#[tokio::test]
async fn zero_timeout_means_none() {
    let driver = LocalDriver::new("/nonexistent");
    let out = driver.run_step(&step("s", Duration::ZERO, StepKind::Exec(sh("exit 0")))).await;
    assert_eq!(out.status, StepStatus::Succeeded);
}

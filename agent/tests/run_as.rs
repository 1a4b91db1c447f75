//! `run_as:` against real processes: exec steps, exec checks and backups run
//! as `nobody` through the agent binary's trampoline. Switching user needs
//! root (CI runs as root); elsewhere those tests print SKIPPED.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use convoy_agent::driver::{LocalDriver, step};
use convoy_common::model::{
    BackupSpec, CheckPolicy, ExecCheckSpec, ExecSpec, OutputExpect, RunAs, StepKind, StepOutcome, StepStatus,
};

fn as_user(script: &str, user: &str, group: Option<&str>) -> ExecSpec {
    convoy_agent::run_as::set_helper(env!("CARGO_BIN_EXE_convoy-agent"));
    ExecSpec {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        run_as: Some(RunAs { user: user.into(), group: group.map(str::to_string) }),
        ..ExecSpec::default()
    }
}

fn root(test: &str) -> bool {
    let root = is_root();
    if !root {
        println!("SKIPPED {test}: needs root to switch users");
    }
    root
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

async fn run(kind: StepKind) -> StepOutcome {
    LocalDriver::new("/nonexistent").run_step(&step("s", Duration::from_secs(30), kind)).await
}

#[tokio::test]
async fn exec_runs_as_nobody_with_its_environment() {
    if !root("exec_runs_as_nobody_with_its_environment") {
        return;
    }
    let spec = as_user("id -u; id -g; id -G; echo $HOME $USER $LOGNAME; pwd; echo $EXTRA", "nobody", None);
    let spec = ExecSpec { env: [("EXTRA".to_string(), "kept".to_string())].into(), ..spec };
    let out = run(StepKind::Exec(spec)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    // nobody's home (/nonexistent) is not a directory: the command runs in /.
    assert_eq!(out.stdout_tail, "65534\n65534\n65534\n/nonexistent nobody nobody\n/\nkept\n", "{out:?}");
}

#[tokio::test]
async fn a_group_replaces_the_primary_one_and_supplementary_groups_stay() {
    if !root("a_group_replaces_the_primary_one_and_supplementary_groups_stay") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = ExecSpec {
        workdir: Some(tmp.path().display().to_string()),
        ..as_user("id -u; id -g; id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' '; echo; pwd", "65534", Some("daemon"))
    };
    let out = run(StepKind::Exec(spec)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    // uid nobody, group daemon (1), and nobody's own primary group kept as a
    // supplementary one (std's `CommandExt::uid` would have dropped it).
    assert_eq!(out.stdout_tail, format!("65534\n1\n1 65534 \n{}\n", tmp.path().display()), "{out:?}");
}

#[tokio::test]
async fn unknown_user_or_group_fails_naming_it_and_the_host() {
    let host = convoy_agent::facts::hostname().unwrap_or_default();
    let out = run(StepKind::Exec(as_user("echo ran", "convoy-no-such-user", None))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("unknown user 'convoy-no-such-user' (not in /etc/passwd)"), "{}", out.message);
    assert!(out.message.contains(&format!("on {host}")), "{}", out.message);
    assert!(out.stdout_tail.is_empty(), "the command must not run: {out:?}");

    let out = run(StepKind::Exec(as_user("echo ran", "nobody", Some("convoy-no-such-group")))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("unknown group 'convoy-no-such-group'"), "{}", out.message);
}

#[tokio::test]
async fn exec_check_runs_as_the_user() {
    if !root("exec_check_runs_as_the_user") {
        return;
    }
    let policy = CheckPolicy { retries: 0, ..CheckPolicy::default() };
    let check = |expected: &str| {
        StepKind::ExecCheck(ExecCheckSpec {
            exec: as_user("id -un", "nobody", None),
            policy,
            output: OutputExpect { equals: Some(expected.into()), ..OutputExpect::default() },
        })
    };
    let out = run(check("nobody")).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let out = run(check("root")).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
}

#[tokio::test]
async fn backup_runs_as_the_user_and_its_file_is_theirs() {
    if !root("backup_runs_as_the_user_and_its_file_is_theirs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = tmp.path().join("dump.sql");
    let command = as_user(&format!("echo data > {0}; echo {0}", file.display()), "nobody", None);
    let out = run(StepKind::Backup(BackupSpec { command, path: None })).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
}

#[tokio::test]
async fn a_missing_command_exits_127_with_the_reason() {
    if !root("a_missing_command_exits_127_with_the_reason") {
        return;
    }
    let spec = ExecSpec { command: "convoy-no-such-command".into(), args: Vec::new(), ..as_user("", "nobody", None) };
    let out = run(StepKind::Exec(spec)).await;
    assert_eq!((out.status, out.exit_code), (StepStatus::Failed, Some(127)), "{out:?}");
    assert!(out.stderr_tail.contains("cannot run convoy-no-such-command"), "{out:?}");
}

//! The backup step against real commands and files: the backup is found at
//! its `path` or where the command's last line of output says, measured
//! (a file, a directory tree), and a missing or empty backup fails the step
//! naming the path.

use std::time::Duration;

use convoy_agent::driver::{LocalDriver, step};
use convoy_common::model::{BackupRecord, BackupSpec, ExecSpec, StepKind, StepOutcome, StepStatus};

fn sh(script: &str) -> ExecSpec {
    ExecSpec { command: "sh".into(), args: vec!["-c".into(), script.into()], ..ExecSpec::default() }
}

async fn backup(driver: &LocalDriver, command: ExecSpec, path: Option<&str>) -> StepOutcome {
    let kind = StepKind::Backup(BackupSpec { command, path: path.map(str::to_string) });
    driver.run_step(&step("backup-db", Duration::from_secs(30), kind)).await
}

#[tokio::test]
async fn a_file_at_the_given_path_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let file = dir.path().join("db.dump");
    let out = backup(&driver, sh(&format!("head -c 1536 /dev/zero > {}", file.display())), file.to_str()).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    let location = file.display().to_string();
    assert_eq!(out.backup, Some(BackupRecord { location: location.clone(), size_bytes: 1536 }));
    assert!(out.message.contains(&location) && out.message.contains("1.5 KiB"), "{}", out.message);
}

#[tokio::test]
async fn a_relative_path_is_under_the_install_root() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let out = backup(&driver, sh(&format!("printf 12345 > {}/rel.dump", dir.path().display())), Some("rel.dump")).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let record = out.backup.expect("a backup");
    assert_eq!((record.location, record.size_bytes), (dir.path().join("rel.dump").display().to_string(), 5));
}

#[tokio::test]
async fn a_directory_is_the_sum_of_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let target = dir.path().join("snap");
    let script = format!(
        "mkdir -p {t}/a/b && printf 1234567890 > {t}/one && head -c 100 /dev/zero > {t}/a/b/two && ln -s /etc {t}/a/etc",
        t = target.display()
    );
    let out = backup(&driver, sh(&script), target.to_str()).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.backup.map(|b| b.size_bytes), Some(110), "the link to /etc is not followed");
}

#[tokio::test]
async fn without_a_path_the_last_line_of_stdout_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new("/nonexistent");
    let mut command = sh("echo dumping...; printf abc > out/db-$$.dump; echo out/db-$$.dump; echo");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    command.workdir = Some(dir.path().display().to_string());
    let out = backup(&driver, command, None).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    let record = out.backup.clone().expect("a backup");
    // Relative to the command's working directory, where it ran.
    assert!(record.location.starts_with(&dir.path().join("out/db-").display().to_string()), "{record:?}");
    assert_eq!(record.size_bytes, 3);
    assert!(out.stdout_tail.contains("dumping..."), "the output is kept: {out:?}");
}

#[tokio::test]
async fn an_empty_backup_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let file = dir.path().join("empty.dump");
    let out = backup(&driver, sh(&format!(": > {}", file.display())), file.to_str()).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert_eq!(out.backup, None);
    assert!(out.message.contains(&file.display().to_string()) && out.message.contains("empty"), "{}", out.message);

    // An empty directory is an empty backup too.
    let empty_dir = dir.path().join("empty-dir");
    let out = backup(&driver, sh(&format!("mkdir -p {}", empty_dir.display())), empty_dir.to_str()).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("empty (0 bytes)"), "{}", out.message);
}

#[tokio::test]
async fn a_missing_backup_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let file = dir.path().join("never-written.dump");
    let out = backup(&driver, sh("true"), file.to_str()).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert_eq!(out.backup, None);
    let shown = file.display().to_string();
    assert!(out.message.contains(&shown) && out.message.contains("does not exist"), "{}", out.message);

    // Named on stdout, but not there.
    let out = backup(&driver, sh(&format!("echo {shown}")), None).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains(&shown) && out.message.contains("does not exist"), "{}", out.message);

    // Nothing printed, no path.
    let out = backup(&driver, sh("true"), None).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("printed no backup path"), "{}", out.message);
}

#[tokio::test]
async fn a_failing_or_slow_command_fails_without_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(dir.path());
    let file = dir.path().join("db.dump");
    let out = backup(&driver, sh(&format!("echo partial > {}; exit 4", file.display())), file.to_str()).await;
    assert_eq!((out.status, out.exit_code), (StepStatus::Failed, Some(4)), "{out:?}");
    assert_eq!(out.backup, None, "a backup whose command failed is not recorded");
    assert!(out.message.contains("backup command failed") && out.message.contains("code 4"), "{}", out.message);

    let kind = StepKind::Backup(BackupSpec { command: sh("sleep 30"), path: file.to_str().map(str::to_string) });
    let out = driver.run_step(&step("slow", Duration::from_millis(300), kind)).await;
    assert_eq!(out.status, StepStatus::TimedOut, "{out:?}");
    assert_eq!(out.backup, None);
}

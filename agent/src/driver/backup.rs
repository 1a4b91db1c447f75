//! The `backup` step: run a command that writes a backup, then find the
//! backup and measure it.
//!
//! The command runs exactly like an `exec` step ([`super::exec`]: its own
//! process group, killed with it at the step's timeout, output tails kept).
//! When it succeeds, the backup's location is the step's `path`, or else the
//! last non-empty line of the command's standard output (trimmed). A
//! relative `path` is resolved against the install root, like every path in
//! a step; a relative path printed by the command is resolved against the
//! command's working directory when the step sets one (that is where the
//! command ran), else against the install root.
//!
//! The size is a file's length, or for a directory the sum of the lengths of
//! the regular files in its tree. Symbolic links inside the tree are not
//! followed (nor counted), so a link to `/` cannot make a backup look big;
//! the location itself may be a link (a `latest` link to the newest dump).
//! Measuring counts against the step's timeout.
//!
//! The step fails, naming the path, when the backup does not exist, cannot
//! be read, is neither a file nor a directory, or is empty (0 bytes: a dump
//! that wrote nothing is not a backup). On success the outcome carries the
//! [`BackupRecord`] and the message says where and how large.

use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_common::model::{BackupRecord, BackupSpec, StepOutcome, StepStatus, human_size};
use tokio::time::Instant;

use super::exec;

/// `path` against `base` when it is relative.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// The last non-empty line of `stdout`, trimmed.
fn last_line(stdout: &str) -> Option<&str> {
    stdout.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// The `backup` step; relative paths are resolved against `install_root`.
pub(crate) async fn run_backup(spec: &BackupSpec, install_root: &Path, timeout: Option<Duration>) -> StepOutcome {
    let started = Instant::now();
    let workdir = spec.command.workdir.as_deref().map(|w| resolve(install_root, w));
    let ran = exec::exec_step(&spec.command, workdir.clone(), timeout).await;
    if !ran.status.is_success() {
        return StepOutcome { message: format!("backup command failed: {}", ran.message), ..ran };
    }
    let location = match (&spec.path, last_line(&ran.stdout_tail)) {
        (Some(p), _) => resolve(install_root, p),
        (None, Some(line)) => resolve(workdir.as_deref().unwrap_or(install_root), line),
        (None, None) => {
            let message = format!(
                "backup: {} printed no backup path on its standard output, and the step has no `path`",
                exec::describe(&spec.command)
            );
            return StepOutcome { status: StepStatus::Failed, message, ..ran };
        }
    };
    let shown = location.display().to_string();
    let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
    let job = tokio::task::spawn_blocking(move || measure(&location));
    let measured = match left {
        None => job.await,
        Some(left) => match tokio::time::timeout(left, job).await {
            Ok(done) => done,
            Err(_) => {
                let message = format!("backup: measuring {shown} did not finish within the step's timeout");
                return StepOutcome { status: StepStatus::TimedOut, message, ..ran };
            }
        },
    };
    let failed = |message: String| StepOutcome { status: StepStatus::Failed, message, ..ran.clone() };
    match measured {
        Ok(Ok(0)) => failed(format!("backup {shown} is empty (0 bytes)")),
        Ok(Ok(size_bytes)) => StepOutcome {
            message: format!("backup {shown}: {} ({size_bytes} bytes)", human_size(size_bytes)),
            backup: Some(BackupRecord { location: shown, size_bytes }),
            ..ran
        },
        Ok(Err(why)) => failed(format!("backup {shown} {why}")),
        Err(e) => failed(format!("backup {shown}: measuring task failed: {e}")),
    }
}

/// The size of the backup at `path` (see the module docs), or what is wrong
/// with it, phrased to follow the path.
pub fn measure(path: &Path) -> Result<u64, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("does not exist".to_string()),
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Err("is neither a file nor a directory".to_string());
    }
    let mut total: u64 = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot be read: {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot be read: {}: {e}", dir.display()))?;
            // `file_type` and `metadata` of a directory entry do not follow links.
            let kind = entry.file_type().map_err(|e| format!("cannot be read: {}: {e}", entry.path().display()))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                let len =
                    entry.metadata().map_err(|e| format!("cannot be read: {}: {e}", entry.path().display()))?.len();
                total = total.saturating_add(len);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_non_empty_line_names_the_backup() {
        assert_eq!(last_line("dumping...\n/var/backups/db.dump\n\n  \n"), Some("/var/backups/db.dump"));
        assert_eq!(last_line("  rel/out.tar  "), Some("rel/out.tar"));
        assert_eq!(last_line("\n \n"), None);
        assert_eq!(last_line(""), None);
    }

    #[test]
    fn directory_sizes_do_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        std::fs::create_dir_all(b.join("sub/deeper")).unwrap();
        std::fs::write(b.join("a"), [0u8; 100]).unwrap();
        std::fs::write(b.join("sub/deeper/c"), [0u8; 23]).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 10_000]).unwrap();
        std::os::unix::fs::symlink(&big, b.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(dir.path(), b.join("sub/link-to-dir")).unwrap();
        assert_eq!(measure(&b), Ok(123));
        // The location itself may be a link.
        let latest = dir.path().join("latest");
        std::os::unix::fs::symlink(&big, &latest).unwrap();
        assert_eq!(measure(&latest), Ok(10_000));
        assert_eq!(measure(&dir.path().join("nope")), Err("does not exist".to_string()));
    }
}

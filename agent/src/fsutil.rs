//! Durable file writes shared by the store, the file step and the TLS files.
//!
//! "Durable" means: write a temporary file in the same directory, fsync it,
//! rename it over the target, then fsync the directory so the rename itself
//! survives a power cut. Readers see either the old or the new file, never a
//! torn one. These functions block; async callers use `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

/// A sibling temporary name `.<name>.tmp-<random>` for `path`.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix: u64 = rand::rng().random();
    path.with_file_name(format!(".{name}.tmp-{suffix:016x}"))
}

/// Writes `contents` to `path` atomically and durably, creating parent
/// directories. `mode` sets the permission bits of a new file (e.g. 0o600 for
/// private keys); `None` uses 0o644 filtered by the umask.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = replace(path, contents, mode)?;
    sync_dir(&dir)
}

/// Writes several files as [`write_atomic`] does, in order, with one fsync
/// per directory at the end: each file is whole or absent after a crash,
/// but a later one may be there while an earlier one is not. On error, the
/// path that failed.
pub(crate) fn write_atomic_all(files: &[(&Path, &[u8], Option<u32>)]) -> Result<(), (PathBuf, std::io::Error)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for &(path, contents, mode) in files {
        let dir = replace(path, contents, mode).map_err(|e| (path.to_path_buf(), e))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        sync_dir(&dir).map_err(|e| (dir, e))?;
    }
    Ok(())
}

/// Writes `contents` to a temporary sibling of `path`, fsyncs it and renames
/// it over `path`; returns the directory, whose fsync makes the rename
/// durable.
fn replace(path: &Path, contents: &[u8], mode: Option<u32>) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode.unwrap_or(0o644)).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| dir)
}

/// fsyncs a directory so renames and creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/key.pem");
        super::write_atomic(&p, b"one", Some(0o600)).unwrap();
        super::write_atomic(&p, b"two", Some(0o600)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn writes_several_files_with_their_modes_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("t/id"), dir.path().join("t/cert.pem"));
        super::write_atomic_all(&[(&a, b"one", None), (&b, b"two", Some(0o600))]).unwrap();
        super::write_atomic_all(&[(&a, b"three", None), (&b, b"four", Some(0o600))]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "three");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "four");
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), 2);
        // A file that cannot be written is named: a directory stands where it should go.
        let blocked = dir.path().join("t/blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let (path, _) = super::write_atomic_all(&[(&a, b"five", None), (&blocked, b"six", None)]).unwrap_err();
        assert_eq!(path, blocked);
        assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), 3, "no temporaries left");
    }
}

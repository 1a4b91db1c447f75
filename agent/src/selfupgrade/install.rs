//! Side-by-side installs of agent builds on the host:
//!
//! ```text
//! <state>/versions/<version>/convoy-agent   each build, 0755, fsynced
//! <state>/versions/<version>/BAD            present: the build failed on this host (evidence inside)
//! <state>/current -> versions/<version>     the build to run; switched atomically
//! ```
//!
//! `current` is replaced by creating a new symlink beside it and renaming it
//! over the old one (rename is atomic), then fsyncing the directory, so a
//! crash leaves the old link or the new one. A version marked bad is refused
//! by [`install`] unless forced.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::AgentError;
use crate::selfupgrade::identity::valid_version;

/// The binary's name inside a version directory.
pub const BINARY: &str = "convoy-agent";

/// `<state>/versions`.
pub fn versions_dir(state: &Path) -> PathBuf {
    state.join("versions")
}

/// `<state>/versions/<version>/convoy-agent`.
pub fn binary_path(state: &Path, version: &str) -> PathBuf {
    versions_dir(state).join(version).join(BINARY)
}

/// `<state>/current`.
pub fn current_link(state: &Path) -> PathBuf {
    state.join("current")
}

fn invalid(version: &str) -> AgentError {
    AgentError::InvalidConfig { field: "agent version", message: format!("{version:?} is not a plain version") }
}

fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(AgentError::io(dir))
}

/// Why `version` was marked bad on this host, if it was.
pub fn bad_reason(state: &Path, version: &str) -> Option<String> {
    std::fs::read_to_string(versions_dir(state).join(version).join("BAD")).ok()
}

/// Marks `version` bad on this host with `evidence` (durable).
pub fn mark_bad(state: &Path, version: &str, evidence: &str) -> Result<(), AgentError> {
    if !valid_version(version) {
        return Err(invalid(version));
    }
    let dir = versions_dir(state).join(version);
    std::fs::create_dir_all(&dir).map_err(AgentError::io(&dir))?;
    let path = dir.join("BAD");
    let mut f = std::fs::File::create(&path).map_err(AgentError::io(&path))?;
    f.write_all(evidence.as_bytes()).and_then(|()| f.sync_all()).map_err(AgentError::io(&path))?;
    sync_dir(&dir)
}

/// Copies the verified build at `from` to `<state>/versions/<version>/`
/// (executable, fsynced) and returns its path. Refuses a version marked bad
/// on this host unless `force`. Does not switch `current`.
pub fn install(state: &Path, version: &str, from: &Path, force: bool) -> Result<PathBuf, AgentError> {
    if !valid_version(version) {
        return Err(invalid(version));
    }
    if let Some(reason) = bad_reason(state, version) {
        if !force {
            return Err(AgentError::InvalidConfig {
                field: "agent version",
                message: format!(
                    "{version} was marked bad on this host ({}); refused unless forced",
                    reason.lines().next().unwrap_or("no evidence recorded")
                ),
            });
        }
        let _ = std::fs::remove_file(versions_dir(state).join(version).join("BAD"));
    }
    let dir = versions_dir(state).join(version);
    std::fs::create_dir_all(&dir).map_err(AgentError::io(&dir))?;
    let tmp = dir.join(format!(".{BINARY}.tmp"));
    std::fs::copy(from, &tmp).map_err(AgentError::io(&tmp))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(AgentError::io(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(AgentError::io(&tmp))?;
    let dest = dir.join(BINARY);
    std::fs::rename(&tmp, &dest).map_err(AgentError::io(&dest))?;
    sync_dir(&dir)?;
    Ok(dest)
}

/// Points `<state>/current` at `versions/<version>` atomically.
pub fn switch_current(state: &Path, version: &str) -> Result<(), AgentError> {
    if !valid_version(version) {
        return Err(invalid(version));
    }
    let target = Path::new("versions").join(version);
    if !state.join(&target).join(BINARY).exists() {
        return Err(AgentError::InvalidConfig {
            field: "agent version",
            message: format!("{version} is not installed under {}", versions_dir(state).display()),
        });
    }
    let tmp = state.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).map_err(AgentError::io(&tmp))?;
    let link = current_link(state);
    std::fs::rename(&tmp, &link).map_err(AgentError::io(&link))?;
    sync_dir(state)
}

/// The version `current` points at, if any.
pub fn current_version(state: &Path) -> Option<String> {
    let target = std::fs::read_link(current_link(state)).ok()?;
    let name = target.strip_prefix("versions").ok()?.to_str()?.to_string();
    valid_version(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_atomic_switch_and_bad_versions() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let build = state.join("download");
        std::fs::write(&build, b"#!/bin/sh\n").unwrap();
        assert_eq!(current_version(state), None);

        let p1 = install(state, "0.1.0", &build, false).unwrap();
        let p2 = install(state, "0.2.0", &build, false).unwrap();
        assert_eq!(p2, binary_path(state, "0.2.0"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p1).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755);
        switch_current(state, "0.1.0").unwrap();
        assert_eq!(current_version(state).as_deref(), Some("0.1.0"));
        switch_current(state, "0.2.0").unwrap();
        assert_eq!(current_version(state).as_deref(), Some("0.2.0"));
        assert!(current_link(state).join(BINARY).exists(), "the link resolves");
        assert!(p1.exists(), "the previous build stays for a revert");
        assert!(switch_current(state, "9.9.9").is_err(), "not installed");
        assert!(install(state, "../x", &build, false).is_err());

        mark_bad(state, "0.3.0", "exit code 1 after 40 ms\nlast log: boom").unwrap();
        let err = install(state, "0.3.0", &build, false).unwrap_err().to_string();
        assert!(err.contains("marked bad") && err.contains("exit code 1"), "{err}");
        install(state, "0.3.0", &build, true).unwrap();
        assert_eq!(bad_reason(state, "0.3.0"), None, "forcing clears the mark");
    }
}

//! The version this agent binary reports, and `convoy-agent --self-check`.
//!
//! The version is the crate version the binary was built with, unless a
//! **sidecar** file sits beside the executable: `<exe>.version`, one line,
//! a plain version token. The sidecar is a **test device**: it lets the
//! process tests make a "new build" without a second compile (a copy of the
//! binary with bytes appended, so its sha256 differs, and a sidecar naming
//! its version). A real release is a real build with its own crate version
//! and no sidecar. The sidecar is read once per process, bounded, and a
//! malformed one is ignored with a warning (the built-in version is
//! reported): it can only rename a binary the agent is already running.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The version compiled in.
pub const BUILT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bytes a sidecar may have.
const MAX_SIDECAR_BYTES: u64 = 128;

/// `<exe>.version`.
pub fn sidecar_path(exe: &Path) -> PathBuf {
    let mut p = exe.as_os_str().to_owned();
    p.push(".version");
    PathBuf::from(p)
}

/// A plain version token: what artifact versions allow.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && !v.starts_with(['.', '-'])
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '~'))
}

/// The version of the binary at `exe`: its sidecar's, or [`BUILT_VERSION`].
pub fn version_of(exe: &Path) -> String {
    let sidecar = sidecar_path(exe);
    let Ok(meta) = std::fs::metadata(&sidecar) else { return BUILT_VERSION.to_string() };
    if meta.len() > MAX_SIDECAR_BYTES {
        tracing::warn!(path = %sidecar.display(), "version sidecar too large; ignored");
        return BUILT_VERSION.to_string();
    }
    match std::fs::read_to_string(&sidecar) {
        Ok(text) if valid_version(text.trim()) => text.trim().to_string(),
        _ => {
            tracing::warn!(path = %sidecar.display(), "version sidecar unreadable or not a version; ignored");
            BUILT_VERSION.to_string()
        }
    }
}

/// The version this process reports (read once).
pub fn agent_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| match std::env::current_exe() {
        Ok(exe) => version_of(&exe),
        Err(_) => BUILT_VERSION.to_string(),
    })
}

/// What `--self-check` found: the version and whether it is the one expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheck {
    pub version: String,
    pub expected: Option<String>,
}

impl SelfCheck {
    /// Passes when no version was expected or the version is the expected one.
    pub fn passed(&self) -> bool {
        self.expected.as_deref().is_none_or(|e| e == self.version)
    }

    /// One line of JSON, what the installer reads.
    pub fn to_json(&self, config_ok: Result<(), String>) -> String {
        serde_json::json!({
            "version": self.version,
            "expected": self.expected,
            "version_ok": self.passed(),
            "config_ok": config_ok.is_ok(),
            "config_error": config_ok.err(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_or_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("convoy-agent");
        std::fs::write(&exe, b"binary").unwrap();
        assert_eq!(version_of(&exe), BUILT_VERSION);
        std::fs::write(sidecar_path(&exe), "0.2.0\n").unwrap();
        assert_eq!(version_of(&exe), "0.2.0");
        std::fs::write(sidecar_path(&exe), "../../etc").unwrap();
        assert_eq!(version_of(&exe), BUILT_VERSION, "a malformed sidecar is ignored");
        std::fs::write(sidecar_path(&exe), "9".repeat(200)).unwrap();
        assert_eq!(version_of(&exe), BUILT_VERSION, "an oversized sidecar is ignored");
        let check = SelfCheck { version: "0.2.0".into(), expected: Some("0.3.0".into()) };
        assert!(!check.passed());
        assert!(check.to_json(Ok(())).contains("\"version_ok\":false"));
    }
}

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

/// The marker of a version **trailer**: a test build made by copying a
/// binary and appending `\n<TRAILER>VERSION\n` reports VERSION. Like the
/// sidecar, a test device; unlike it, it travels with the (signed) bytes, so
/// a build installed under `versions/` keeps its version.
pub const TRAILER: &str = "convoy-agent-test-version=";

/// The version in the last bytes of `exe`, if they are a trailer.
fn trailer_version(exe: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(exe).ok()?;
    let len = f.metadata().ok()?.len();
    let take = len.min(MAX_SIDECAR_BYTES);
    f.seek(SeekFrom::Start(len - take)).ok()?;
    let mut tail = Vec::new();
    f.take(take).read_to_end(&mut tail).ok()?;
    let text = std::str::from_utf8(tail.rsplit(|b| *b == 0).next()?).ok()?;
    let line = text.strip_suffix('\n')?.rsplit('\n').next()?;
    let v = line.strip_prefix(TRAILER)?;
    valid_version(v).then(|| v.to_string())
}

/// Appends a version trailer to the file at `path` (how tests and the demo
/// make a "new build" without a second compile).
pub fn append_trailer(path: &Path, version: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    write!(f, "\n{TRAILER}{version}\n")
}

/// The version of the binary at `exe`: its trailer's, its sidecar's, or [`BUILT_VERSION`].
pub fn version_of(exe: &Path) -> String {
    if let Some(v) = trailer_version(exe) {
        return v;
    }
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
        // A trailer wins over the sidecar and travels with the bytes.
        append_trailer(&exe, "0.4.0").unwrap();
        assert_eq!(version_of(&exe), "0.4.0");
        let copy = dir.path().join("elsewhere");
        std::fs::copy(&exe, &copy).unwrap();
        assert_eq!(version_of(&copy), "0.4.0");
        append_trailer(&copy, "../x").unwrap();
        assert_eq!(version_of(&copy), BUILT_VERSION, "a malformed trailer is ignored");
        let check = SelfCheck { version: "0.2.0".into(), expected: Some("0.3.0".into()) };
        assert!(!check.passed());
        assert!(check.to_json(Ok(())).contains("\"version_ok\":false"));
    }
}

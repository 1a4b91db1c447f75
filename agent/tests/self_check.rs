//! `convoy-agent --self-check` on the real binary, and on a "new build"
//! made the way the self-upgrade tests make one: a copy with bytes appended
//! (so its sha256 differs) and a version sidecar (a test device, see
//! `docs/self-upgrade.md`).

use std::process::Command;

fn agent() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_convoy-agent"))
}

fn self_check(exe: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not read by --self-check").unwrap();
    let out = Command::new(exe)
        .args(["--coordinator", "https://127.0.0.1:1", "--host-id", "h1", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--ca-file")
        .arg(&ca)
        .arg("--self-check")
        .args(extra)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn self_check_reports_the_version_and_judges_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let built = env!("CARGO_PKG_VERSION");
    let (code, out) = self_check(&agent(), dir.path(), &["--expect-version", built]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("\"version\":\"{built}\"")) && out.contains("\"config_ok\":true"), "{out}");

    // A new build: other bytes, its version in a sidecar.
    let new = dir.path().join("convoy-agent-0.2.0");
    let mut bytes = std::fs::read(agent()).unwrap();
    bytes.extend_from_slice(b"\nconvoy test build 0.2.0\n");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("convoy-agent-0.2.0.version"), "0.2.0\n").unwrap();
    let (code, out) = self_check(&new, dir.path(), &["--expect-version", "0.2.0"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = self_check(&new, dir.path(), &["--expect-version", "0.3.0"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("\"version_ok\":false"), "{out}");

    // A configuration the new build does not accept: refused.
    let missing = dir.path().join("missing.pub");
    let (code, out) = self_check(&new, dir.path(), &["--trusted-key", missing.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("\"config_ok\":false") && out.contains("missing.pub"), "{out}");
}

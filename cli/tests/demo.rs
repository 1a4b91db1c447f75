//! The README's first command, as a test: `convoy demo --bad-release` runs a
//! real 12-process fleet, upgrades it 1.0.0 -> 2.0.0, then tries a broken
//! 3.0.0 that must be stopped at the canary and rolled back, with every other
//! host untouched. The demo checks every service's /health itself and exits
//! non-zero if anything is off; here we also check what it printed.

use std::process::Command;

#[test]
fn demo_upgrades_the_fleet_and_contains_a_bad_release_at_the_canary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["demo", "--bad-release", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("demo done: 12 hosts upgraded 1.0.0 -> 2.0.0"), "{stdout}");
    assert_eq!(stdout.matches("{\"status\":\"ok\",\"version\":\"2.0.0\"}").count(), 12, "{stdout}");
    assert!(stdout.contains("bad release stopped at canary db-1 and rolled back"), "{stdout}");
    // The canary's own report: rolled back, and back on 2.0.0.
    let canary_line = stdout.lines().find(|l| l.trim_start().starts_with("db-1") && l.contains("rolled_back"));
    assert!(canary_line.is_some_and(|l| l.contains("2.0.0")), "{stdout}");
    // No service process is left behind.
    let leftovers = std::fs::read_dir(dir.path().join("hosts"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("install/demo-service/service.pid")).ok())
        .count();
    assert_eq!(leftovers, 0, "demo services still recorded as running");
}

//! The dpkg step with the real `dpkg`, on a scratch root (`dpkg --root`):
//! real `.deb`s built with `dpkg-deb`, installed into a temporary directory
//! with its own package database. This machine's package database is never
//! touched (the test checks it knows nothing of the test package afterwards).
//!
//! Needs `dpkg` and `dpkg-deb`, and root (dpkg refuses to install otherwise);
//! skipped, saying so, when either is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use convoy_agent::driver::dpkg::{installed_packages, installed_packages_blocking, run_dpkg};
use convoy_agent::driver::pkg::{DpkgSpec, PkgEnv, history, managed_packages, previous_version};
use convoy_common::model::StepStatus;
use sha2::{Digest, Sha256};

const PKG: &str = "convoy-test-demo";
const T: Duration = Duration::from_secs(60);

fn usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().next() == Some("0")))
        .unwrap_or(false);
    let tools = ["dpkg", "dpkg-deb", "dpkg-query"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !(root && tools) {
        eprintln!("skipped: needs root and dpkg/dpkg-deb (root: {root}, tools: {tools})");
    }
    root && tools
}

fn host_knows_test_package() -> bool {
    Command::new("dpkg-query").args(["-W", PKG]).output().unwrap().status.success()
}

/// An empty dpkg database under `root`.
fn scratch_root(root: &Path) {
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
}

/// Builds `<out>/<name>_<version>_all.deb` installing `/opt/<name>/VERSION`.
fn build_deb(out: &Path, name: &str, version: &str, depends: Option<&str>) -> (PathBuf, String) {
    let src = out.join(format!("src-{name}-{version}"));
    std::fs::create_dir_all(src.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(src.join("opt").join(name)).unwrap();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Convoy tests <t@example.invalid>\nDescription: test package\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    std::fs::write(src.join("DEBIAN/control"), control).unwrap();
    std::fs::write(src.join("opt").join(name).join("VERSION"), format!("{version}\n")).unwrap();
    let deb = out.join(format!("{name}_{version}_all.deb"));
    let st = Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&src).arg(&deb).output().unwrap();
    assert!(st.status.success(), "dpkg-deb: {}", String::from_utf8_lossy(&st.stderr));
    let sha = hex::encode(Sha256::digest(std::fs::read(&deb).unwrap()));
    (deb, sha)
}

fn spec(version: &str, deb: &Path, sha: &str) -> DpkgSpec {
    DpkgSpec {
        package: PKG.into(),
        version: version.into(),
        source: deb.display().to_string(),
        sha256: sha.into(),
        signing: Default::default(),
    }
}

fn set_status(root: &Path, state: &str) {
    let p = root.join("var/lib/dpkg/status");
    let s = std::fs::read_to_string(&p).unwrap();
    let s = s.replace("Status: install ok installed", &format!("Status: install ok {state}"));
    std::fs::write(p, s).unwrap();
}

#[tokio::test]
async fn installs_upgrades_and_remembers_the_previous_version() {
    if !usable() {
        return;
    }
    assert!(!host_knows_test_package(), "the host's dpkg database must not know {PKG}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    scratch_root(&root);
    let state = dir.path().join("state");
    let env = PkgEnv { dpkg_root: Some(root.clone()), ..PkgEnv::new(&state) };
    let (deb1, sha1) = build_deb(dir.path(), PKG, "1.0.0", None);
    let (deb2, sha2) = build_deb(dir.path(), PKG, "2.0.0-1", None);

    // Fresh install.
    let out = run_dpkg(&spec("1.0.0", &deb1, &sha1), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.installed, Some((PKG.to_string(), "1.0.0".to_string())));
    assert!(out.message.contains("previous: not installed"), "{}", out.message);
    assert_eq!(std::fs::read_to_string(root.join("opt").join(PKG).join("VERSION")).unwrap(), "1.0.0\n");
    let names = vec![PKG.to_string(), "convoy-not-there".to_string()];
    let facts = installed_packages(&env, &names).await;
    assert_eq!(facts.into_iter().collect::<Vec<_>>(), vec![(PKG.to_string(), "1.0.0".to_string())]);
    assert_eq!(installed_packages_blocking(&env, &names), installed_packages(&env, &names).await);
    assert_eq!(previous_version(&env, PKG), None);
    assert_eq!(managed_packages(&env), vec![PKG.to_string()]);

    // Upgrade: the previous version and its .deb are remembered.
    let out = run_dpkg(&spec("2.0.0-1", &deb2, &sha2), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("previous: 1.0.0"), "{}", out.message);
    assert_eq!(previous_version(&env, PKG).as_deref(), Some("1.0.0"));
    let h = history(&env, PKG).unwrap();
    assert_eq!((h.manager.as_str(), h.current.as_str()), ("dpkg", "2.0.0-1"));
    assert_eq!(h.previous_source.as_deref(), Some(deb1.to_str().unwrap()));
    assert!(state.join(".pkg-history").join(format!("{PKG}.json")).exists());

    // Again: nothing to do, and the record still says where we came from.
    let out = run_dpkg(&spec("2.0.0-1", &deb2, &sha2), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("already installed"), "{}", out.message);
    assert_eq!(previous_version(&env, PKG).as_deref(), Some("1.0.0"));

    // A corrupted artifact: nothing installed.
    let out = run_dpkg(&spec("1.0.0", &deb1, &sha2), &env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("sha256 mismatch") && out.message.contains("nothing installed"), "{}", out.message);
    // The wrong package or version in the file: refused before dpkg runs.
    let out = run_dpkg(&spec("3.0.0", &deb1, &sha1), &env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("holds package") && out.message.contains("1.0.0"), "{}", out.message);

    // Rollback by reinstalling the previous .deb after an interrupted run left
    // the package half-configured: `dpkg --configure -a` first.
    set_status(&root, "half-configured");
    let prev = history(&env, PKG).unwrap().previous_source.unwrap();
    let out = run_dpkg(&spec("1.0.0", Path::new(&prev), &sha1), &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("half-configured") && out.message.contains("dpkg --configure -a"), "{}", out.message);
    assert_eq!(out.installed, Some((PKG.to_string(), "1.0.0".to_string())));
    assert_eq!(previous_version(&env, PKG).as_deref(), Some("2.0.0-1"));

    // The host never heard of any of it; the dpkg log went to the scratch root.
    assert!(!host_knows_test_package());
    assert!(root.join("var/log/dpkg.log").exists());
}

#[tokio::test]
async fn a_failed_install_says_what_state_the_package_is_in() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    scratch_root(&root);
    let env = PkgEnv { dpkg_root: Some(root.clone()), ..PkgEnv::new(dir.path().join("state")) };
    let (deb, sha) = build_deb(dir.path(), PKG, "1.0.0", Some("convoy-test-missing-dep (>= 9)"));
    let out = run_dpkg(&spec("1.0.0", &deb, &sha), &env, T).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert_eq!(out.exit_code, Some(1));
    let m = &out.message;
    for needle in [PKG, "dpkg", "-i", "exited with code 1", "dependency problems", "is now: unpacked 1.0.0", "stderr:"]
    {
        assert!(m.contains(needle), "{needle:?} missing from: {m}");
    }
    assert!(out.stderr_tail.contains("convoy-test-missing-dep"), "{}", out.stderr_tail);
    assert_eq!(previous_version(&env, PKG), None);
    assert!(installed_packages(&env, &[PKG.to_string()]).await.is_empty());
    assert!(!host_knows_test_package());
}

#[tokio::test]
async fn a_missing_file_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let env = PkgEnv { dpkg_root: Some(dir.path().join("root")), ..PkgEnv::new(dir.path()) };
    let s = DpkgSpec {
        package: PKG.into(),
        version: "1.0.0".into(),
        source: "staged/nope.deb".into(),
        sha256: "0".repeat(64),
        signing: Default::default(),
    };
    let out = run_dpkg(&s, &env, T).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains(&dir.path().join("staged/nope.deb").display().to_string()), "{}", out.message);
    let bad = DpkgSpec { package: "--force-all".into(), ..s };
    assert!(run_dpkg(&bad, &env, T).await.message.contains("invalid package name"));
}

#[tokio::test]
async fn pkg_rollback_reinstalls_the_previous_deb_then_removes_a_fresh_install() {
    use convoy_agent::driver::pkg::{PkgManager, PkgRollbackSpec};
    use convoy_agent::driver::pkg_rollback::run_pkg_rollback;
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    scratch_root(&root);
    let env = PkgEnv { dpkg_root: Some(root.clone()), ..PkgEnv::new(dir.path().join("state")) };
    let (deb1, sha1) = build_deb(dir.path(), PKG, "1.0.0", None);
    let (deb2, sha2) = build_deb(dir.path(), PKG, "2.0.0", None);
    let undo = PkgRollbackSpec { package: PKG.into(), manager: PkgManager::Dpkg, to_version: None };

    assert_eq!(run_dpkg(&spec("1.0.0", &deb1, &sha1), &env, T).await.status, StepStatus::Succeeded);
    assert_eq!(run_dpkg(&spec("2.0.0", &deb2, &sha2), &env, T).await.status, StepStatus::Succeeded);

    // Back to 1.0.0 from the recorded .deb.
    let out = run_pkg_rollback(&undo, &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.installed, Some((PKG.to_string(), "1.0.0".to_string())));
    assert!(out.message.contains("from 2.0.0 to 1.0.0 through dpkg -i"), "{}", out.message);
    assert_eq!(std::fs::read_to_string(root.join("opt").join(PKG).join("VERSION")).unwrap(), "1.0.0\n");
    assert!(history(&env, PKG).unwrap().rollback);

    // Run again (a resent execution): the rollback is not undone.
    let out = run_pkg_rollback(&undo, &env, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("already rolled back"), "{}", out.message);
    assert_eq!(installed_packages(&env, &[PKG.to_string()]).await.get(PKG).map(String::as_str), Some("1.0.0"));

    // With the inventory's version: already there, nothing to do.
    let to = PkgRollbackSpec { to_version: Some("1.0.0".into()), ..undo.clone() };
    let out = run_pkg_rollback(&to, &env, T).await;
    assert!(out.status.is_success() && out.message.contains("nothing to do"), "{out:?}");

    // A fresh install rolled back: the package is removed.
    let fresh = tempfile::tempdir().unwrap();
    let root2 = fresh.path().join("root");
    scratch_root(&root2);
    let env2 = PkgEnv { dpkg_root: Some(root2.clone()), ..PkgEnv::new(fresh.path().join("state")) };
    assert_eq!(run_dpkg(&spec("2.0.0", &deb2, &sha2), &env2, T).await.status, StepStatus::Succeeded);
    let out = run_pkg_rollback(&undo, &env2, T).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("not installed before; removed 2.0.0"), "{}", out.message);
    assert!(installed_packages(&env2, &[PKG.to_string()]).await.is_empty());
    assert!(!root2.join("opt").join(PKG).join("VERSION").exists());
    let out = run_pkg_rollback(&undo, &env2, T).await;
    assert!(out.status.is_success() && out.message.contains("already rolled back"), "{out:?}");
    assert!(!host_knows_test_package());
}

//! The archive step on real files: verified, atomic, refusing escapes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_agent::driver::{Driver, LocalDriver, step};
use convoy_common::model::{ArchiveSpec, StepKind, StepOutcome, StepStatus};
use sha2::{Digest, Sha256};

enum Entry<'a> {
    File(&'a str, &'a str),
    /// Name written raw, bypassing the tar crate's own path checks.
    RawFile(&'a [u8], &'a str),
    Symlink(&'a str, &'a [u8]),
}

fn build(dir: &Path, name: &str, entries: &[Entry]) -> (PathBuf, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match e {
            Entry::File(path, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
            Entry::RawFile(path, data) => {
                h.as_old_mut().name[..path.len()].copy_from_slice(path);
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
            Entry::Symlink(path, target) => {
                h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    let bytes = b.into_inner().unwrap().finish().unwrap();
    let path = dir.join(name);
    fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
    (path, hex::encode(Sha256::digest(&bytes)))
}

fn spec(version: &str, source: &Path, sha256: &str) -> StepKind {
    StepKind::Archive(ArchiveSpec {
        component: "app".into(),
        version: version.into(),
        source: source.display().to_string(),
        sha256: sha256.into(),
        install_root: None,
        signing: Default::default(),
    })
}

async fn install(driver: &LocalDriver, kind: StepKind) -> StepOutcome {
    driver.run_step(&step("install", Duration::from_secs(30), kind)).await
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

#[tokio::test]
async fn installs_switches_and_keeps_previous() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let driver = LocalDriver::new(&root);
    let (a1, s1) =
        build(tmp.path(), "app-1.tar.gz", &[Entry::File("bin/app", "v1"), Entry::Symlink("bin/alias", b"app")]);
    let (a2, s2) = build(tmp.path(), "app-2.tar.gz", &[Entry::File("./bin/app", "v2"), Entry::File("etc/conf", "x")]);

    let out = install(&driver, spec("1.0.0", &a1, &s1)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.installed, Some(("app".into(), "1.0.0".into())));
    let app = root.join("app");
    assert_eq!(fs::read_to_string(app.join("releases/1.0.0/bin/app")).unwrap(), "v1");
    assert_eq!(fs::read_link(app.join("current")).unwrap(), PathBuf::from("releases/1.0.0"));
    assert_eq!(fs::read_to_string(app.join("current/bin/alias")).unwrap(), "v1");
    assert!(!app.join("previous").exists());
    assert_eq!(driver.installed().get("app").map(String::as_str), Some("1.0.0"));

    let out = install(&driver, spec("2.0.0", &a2, &s2.to_uppercase())).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(fs::read_to_string(app.join("current/bin/app")).unwrap(), "v2");
    assert_eq!(fs::read_link(app.join("previous")).unwrap(), PathBuf::from("releases/1.0.0"));
    assert!(app.join("releases/1.0.0/bin/app").exists(), "the previous release is kept");
    assert_eq!(driver.installed().get("app").map(String::as_str), Some("2.0.0"));

    // Back to 1.0.0 from the same archive: no unpacking, just a switch.
    let out = install(&driver, spec("1.0.0", &a1, &s1)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("already unpacked"), "{}", out.message);
    assert_eq!(fs::read_link(app.join("current")).unwrap(), PathBuf::from("releases/1.0.0"));
    assert_eq!(fs::read_link(app.join("previous")).unwrap(), PathBuf::from("releases/2.0.0"));

    // The same version from different bytes is refused.
    let out = install(&driver, spec("1.0.0", &a2, &s2)).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("different archive"), "{}", out.message);
    // No temporary directories or links left behind.
    assert_eq!(names(&app), vec!["current", "previous", "releases"]);
    assert_eq!(names(&app.join("releases")), vec![".1.0.0.sha256", ".2.0.0.sha256", "1.0.0", "2.0.0"]);
}

#[tokio::test]
async fn sha256_mismatch_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let driver = LocalDriver::new(&root);
    let (a, actual) = build(tmp.path(), "a.tar.gz", &[Entry::File("f", "x")]);
    let wrong = "0".repeat(64);
    let out = install(&driver, spec("1", &a, &wrong)).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains(&wrong) && out.message.contains(&actual), "{}", out.message);
    assert_eq!(out.installed, None);
    assert!(!root.join("app").exists());
    assert!(driver.installed().is_empty());

    let out = install(&driver, spec("1", &a, "")).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("sha256"), "{}", out.message);
}

async fn assert_refused(entries: &[Entry<'_>], what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("deep/root");
    let driver = LocalDriver::new(&root);
    let (a, sha) = build(tmp.path(), "evil.tar.gz", entries);
    let out = install(&driver, spec("6.6.6", &a, &sha)).await;
    assert_eq!(out.status, StepStatus::Failed, "{what}: {out:?}");
    assert!(out.message.contains("refusing"), "{what}: {}", out.message);
    // Nothing installed, temp dir removed, nothing written outside.
    assert_eq!(names(&root.join("app/releases")), Vec::<String>::new(), "{what}");
    assert!(!root.join("app/current").exists());
    assert_eq!(names(tmp.path()), vec!["deep", "evil.tar.gz"], "{what}");
    assert_eq!(names(&tmp.path().join("deep")), vec!["root"], "{what}");
}

#[tokio::test]
async fn escaping_entries_are_refused() {
    assert_refused(&[Entry::File("ok", "1"), Entry::RawFile(b"../../../evil", "x")], "dot-dot").await;
    assert_refused(&[Entry::RawFile(b"a/../../evil", "x")], "inner dot-dot").await;
    let abs = std::env::temp_dir().join(format!("convoy-abs-evil-{}", std::process::id()));
    let abs_name = abs.display().to_string();
    assert_refused(&[Entry::RawFile(abs_name.as_bytes(), "x")], "absolute").await;
    assert!(!abs.exists(), "absolute entry written");
    assert_refused(&[Entry::Symlink("up", b"../../..")], "symlink out").await;
    assert_refused(&[Entry::Symlink("etc", b"/etc")], "absolute symlink").await;
    assert_refused(&[Entry::Symlink("d", b"sub"), Entry::File("d/x", "1")], "through a symlink").await;
}

fn rollback(to: Option<&str>) -> StepKind {
    StepKind::ArchiveRollback(convoy_common::model::ArchiveRollbackSpec {
        component: "app".into(),
        to_version: to.map(str::to_string),
        install_root: None,
    })
}

#[tokio::test]
async fn rollback_switches_current_back_and_a_first_install_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let driver = LocalDriver::new(&root);
    let (a1, s1) = build(tmp.path(), "app-1.tar.gz", &[Entry::File("bin/app", "v1")]);
    let (a2, s2) = build(tmp.path(), "app-2.tar.gz", &[Entry::File("bin/app", "v2")]);
    let app = root.join("app");

    assert_eq!(install(&driver, spec("1.0.0", &a1, &s1)).await.status, StepStatus::Succeeded);
    assert_eq!(install(&driver, spec("2.0.0", &a2, &s2)).await.status, StepStatus::Succeeded);

    // Back to the named version.
    let out = install(&driver, rollback(Some("1.0.0"))).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.installed, Some(("app".into(), "1.0.0".into())));
    assert_eq!(fs::read_to_string(app.join("current/bin/app")).unwrap(), "v1");
    assert_eq!(fs::read_link(app.join("previous")).unwrap(), PathBuf::from("releases/2.0.0"));

    // Without a version (or with one never installed), `previous` decides.
    let out = install(&driver, rollback(Some("0.9.0"))).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(fs::read_to_string(app.join("current/bin/app")).unwrap(), "v2");

    // The undo of a first install leaves nothing current.
    let fresh = LocalDriver::new(tmp.path().join("fresh"));
    assert_eq!(install(&fresh, spec("1.0.0", &a1, &s1)).await.status, StepStatus::Succeeded);
    let out = install(&fresh, rollback(None)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(out.installed, None);
    assert!(fs::symlink_metadata(tmp.path().join("fresh/app/current")).is_err(), "current removed");
    assert!(fresh.installed().is_empty());
}

#[tokio::test]
async fn an_archive_unpacking_past_the_limit_is_refused_naming_it_and_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // 1 MiB of zeros compresses to about a kilobyte: the limit is on what it unpacks to.
    let big = "\0".repeat(1 << 20);
    let (a, s) = build(tmp.path(), "bomb.tar.gz", &[Entry::File("a", &big), Entry::File("b", &big)]);
    assert!(fs::metadata(&a).unwrap().len() < 64 * 1024);
    let limited = LocalDriver::new(&root).with_max_unpacked_bytes(1 << 20);
    let out = install(&limited, spec("1", &a, &s)).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("bomb.tar.gz") && out.message.contains("1048576"), "{}", out.message);
    assert!(out.message.contains("--max-unpacked-bytes"), "{}", out.message);
    assert!(!root.join("app/releases/1").exists() && !root.join("app/current").exists());
    // Under the default limit the same archive installs.
    let out = install(&LocalDriver::new(&root), spec("1", &a, &s)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
}

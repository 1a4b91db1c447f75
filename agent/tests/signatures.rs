//! Signed artifacts on the agent: a step that needs a signature installs
//! only with a valid one from a trusted key. Unsigned, signed by an unknown
//! key, and tampered after signing are each refused, saying which, and
//! nothing is installed.

use std::path::Path;
use std::time::Duration;

use convoy_agent::driver::{LocalDriver, step};
use convoy_agent::trust::Trust;
use convoy_common::model::{ArchiveSpec, Signing, StepKind, StepOutcome, StepStatus};
use convoy_common::signature::SecretKey;
use sha2::{Digest, Sha256};

/// A one-file tar.gz; returns its path and sha256.
fn archive(dir: &Path, content: &str) -> (String, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(content.len() as u64);
    b.append_data(&mut h, "bin/app", content.as_bytes()).unwrap();
    let bytes = b.into_inner().unwrap().finish().unwrap();
    let path = dir.join(format!("app-{}.tar.gz", hex::encode(&Sha256::digest(content.as_bytes())[..4])));
    std::fs::write(&path, &bytes).unwrap();
    (path.display().to_string(), hex::encode(Sha256::digest(&bytes)))
}

fn kind(source: &str, sha256: &str, signing: Signing) -> StepKind {
    StepKind::Archive(ArchiveSpec {
        component: "app".into(),
        version: "2.0.0".into(),
        source: source.into(),
        sha256: sha256.into(),
        install_root: None,
        signing,
    })
}

async fn run(driver: &LocalDriver, kind: StepKind) -> StepOutcome {
    driver.run_step(&step("install", Duration::from_secs(30), kind)).await
}

fn required(signature: Option<String>) -> Signing {
    Signing { required: true, signature }
}

#[tokio::test]
async fn refusals_name_the_case_and_install_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let owner = SecretKey::from_seed([1; 32]);
    let stranger = SecretKey::from_seed([2; 32]);
    let driver = LocalDriver::new(&root).with_trust(Trust::new(vec![owner.public()], false));
    let (good, good_sha) = archive(tmp.path(), "v2");
    let (evil, evil_sha) = archive(tmp.path(), "v2 with a backdoor");
    let signed = owner.sign(&good_sha).unwrap().to_text();

    let cases = [
        ("unsigned", kind(&good, &good_sha, required(None)), "unsigned"),
        (
            "unknown key",
            kind(&good, &good_sha, required(Some(stranger.sign(&good_sha).unwrap().to_text()))),
            "signed by an unknown key",
        ),
        // The file was changed after signing: the coordinator serves (and the
        // step names) the new content's digest, the signature is over the old.
        ("tampered after signing", kind(&evil, &evil_sha, required(Some(signed.clone()))), "tampered after signing"),
        // The signature file edited to name the new content.
        (
            "tampered signature",
            kind(&evil, &evil_sha, required(Some(signed.replace(&good_sha, &evil_sha)))),
            "does not verify",
        ),
    ];
    for (name, kind, says) in cases {
        let out = run(&driver, kind).await;
        assert_eq!(out.status, StepStatus::Failed, "{name}: {out:?}");
        assert!(out.message.contains(says), "{name}: {}", out.message);
        assert!(out.message.contains("nothing installed"), "{name}: {}", out.message);
        assert!(!root.join("app").exists(), "{name}: something was installed");
    }

    // Signed by the trusted key: installed.
    let out = run(&driver, kind(&good, &good_sha, required(Some(signed)))).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(std::fs::read_to_string(root.join("app/current/bin/app")).unwrap(), "v2");
}

#[tokio::test]
async fn signatures_are_checked_when_the_plan_or_the_agent_requires_them() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = SecretKey::from_seed([1; 32]);
    let (file, sha) = archive(tmp.path(), "v2");

    // Not required by the step nor the agent: an unsigned archive installs.
    let relaxed = LocalDriver::new(tmp.path().join("a")).with_trust(Trust::new(vec![owner.public()], false));
    assert_eq!(run(&relaxed, kind(&file, &sha, Signing::default())).await.status, StepStatus::Succeeded);

    // `--require-signatures`: the same step is refused.
    let strict = LocalDriver::new(tmp.path().join("b")).with_trust(Trust::new(vec![owner.public()], true));
    let out = run(&strict, kind(&file, &sha, Signing::default())).await;
    assert!(out.message.contains("unsigned"), "{out:?}");
    assert!(!tmp.path().join("b/app").exists());

    // An agent with no trusted keys refuses a required signature, saying so.
    let keyless = LocalDriver::new(tmp.path().join("c"));
    let signed = Signing { required: true, signature: Some(owner.sign(&sha).unwrap().to_text()) };
    let out = run(&keyless, kind(&file, &sha, signed)).await;
    assert!(out.message.contains("unknown key") && out.message.contains("none configured"), "{out:?}");
}

//! Bad input to the CLI: one clear line naming the problem, exit code 2;
//! a data directory held by a running coordinator is named as in use.

use std::process::{Command, Output};

const CONVOY: &str = env!("CARGO_BIN_EXE_convoy");

fn convoy(args: &[&str]) -> Output {
    Command::new(CONVOY).args(args).env_remove("CONVOY_COORDINATOR").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unreadable_or_non_utf8_plans_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yaml");
    std::fs::write(&inv, "- { id: h1, labels: { role: web } }\n").unwrap();
    let inv = inv.to_str().unwrap();
    let missing = dir.path().join("missing.yaml");
    let not_utf8 = dir.path().join("latin1.yaml");
    std::fs::write(&not_utf8, b"name: caf\xe9\n").unwrap();
    for (file, says) in [(&missing, "no such file"), (&not_utf8, "not UTF-8"), (&dir.path().to_path_buf(), "directory")]
    {
        let out = convoy(&["plan", file.to_str().unwrap(), "--inventory", inv]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says) && err.contains(file.to_str().unwrap()), "{err}");
    }
    // `apply` reads the file before it needs a coordinator.
    let out = convoy(&["apply", missing.to_str().unwrap(), "--coordinator", "https://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("no such file").count(), 1, "{}", stderr(&out));

    // A byte-order mark is fine.
    let bom = dir.path().join("bom.yaml");
    std::fs::write(
        &bom,
        "\u{feff}name: p\nversion: \"1\"\ngroups:\n  - name: g\n    select: { role: web }\n    steps: [{ exec: { command: \"true\" } }]\n",
    )
    .unwrap();
    let out = convoy(&["plan", bom.to_str().unwrap(), "--inventory", inv]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn init_on_a_data_directory_in_use_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = convoy(&["__coordinator", "init", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tokens_before = std::fs::read(data.join("operators.json")).unwrap();
    // Held as a running coordinator holds it.
    let held = convoy_coordinator::server::open_store(&data).unwrap();
    let out = convoy(&["__coordinator", "init", "--data-dir", data.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    assert_eq!(std::fs::read(data.join("operators.json")).unwrap(), tokens_before, "nothing changed");
    drop(held);
}

//! `run_as:` end to end, in process (coordinator and an agent with the real
//! local driver over real gRPC): a plan's exec step and exec check run as
//! `nobody` (the file the step writes is nobody's and says its uid and
//! home; the check requires `id -un` to print `nobody`), and a step naming
//! an unknown user fails its host with a message naming the user. Switching
//! users needs root (CI runs as root); elsewhere the test prints SKIPPED.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use anyhow::Context;

use convoy_common::invariants;
use convoy_fleet::inprocess::{Cluster, fast_runtime};

fn plan(dir: &std::path::Path, user: &str) -> String {
    format!(
        r#"
name: as-nobody
version: "2.0.0"
vars:
  db_user: {user}
groups:
  - name: db
    select: {{ role: db }}
    steps:
      - name: whoami
        exec:
          command: sh
          args: ["-c", "id -u > {d}/who && echo $HOME >> {d}/who"]
          run_as: "{{{{vars.db_user}}}}"
        timeout: 30s
    checks:
      - name: as-nobody
        exec: {{ command: id, args: ["-un"], run_as: {{ user: {user}, group: nogroup }} }}
        stdout_equals: nobody
"#,
        d = dir.display(),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_and_checks_run_as_the_user_the_plan_names() -> anyhow::Result<()> {
    if !is_root() {
        println!("SKIPPED steps_and_checks_run_as_the_user_the_plan_names: needs root to switch users");
        return Ok(());
    }
    convoy_agent::run_as::set_helper(env!("CARGO_BIN_EXE_convoy-run-as-helper"));
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_local_agent("db-1", &[("role", "db")])?;
    c.wait_agents(1, Duration::from_secs(30)).await.context("agents")?;
    let dir = c.dir.path().join("out");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;

    let id = c.submit(&plan(&dir, "nobody")).await.context("submit")?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await.context("wait")?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    let who = dir.join("who");
    assert_eq!(std::fs::read_to_string(&who)?, "65534\n/nonexistent\n");
    assert_eq!(std::fs::metadata(&who)?.uid(), 65534, "the file is nobody's");

    // An unknown user fails the host, naming the user; nothing ran.
    std::fs::remove_file(&who)?;
    let failed = c.submit(&plan(&dir, "convoy-no-such-user")).await?;
    let status = c.wait_finished(&failed, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    let db = status.hosts.iter().find(|h| h.host_id == "db-1").expect("db-1");
    assert!(db.message.contains("unknown user 'convoy-no-such-user'"), "{db:?}");
    assert!(!who.exists(), "the step must not run as anyone else");

    // (Reading the event log stops the coordinator.)
    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    c.shutdown().await;
    Ok(())
}

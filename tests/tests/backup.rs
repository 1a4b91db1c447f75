//! Backups end to end, in process (coordinator and agents with the real
//! local driver over real gRPC): a database host takes a backup (a real
//! command writing a real file, named on its output), the coordinator
//! records where and how large, the migration of the group that waits for
//! it runs, and `GetRollout` lists the backup — also after a coordinator
//! restart, rebuilt from the stored events. An empty backup fails, and the
//! migration never runs.

use std::path::Path;
use std::time::Duration;

use convoy_common::invariants;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;

/// The plan, with its backups under `backups` and the migration touching `marker`.
fn plan(backups: &Path, marker: &Path, bytes: usize) -> String {
    format!(
        r#"
name: db-migration
version: "2.0.0"
require_backup: true
groups:
  - name: db
    select: {{ role: db }}
    steps:
      - name: dump
        backup:
          command: sh
          args: ["-c", "mkdir -p {b}/{{{{host}}}} && head -c {bytes} /dev/zero > {b}/{{{{host}}}}/db.dump && echo dumped && echo {b}/{{{{host}}}}/db.dump"]
        timeout: 30s
  - name: app
    select: {{ role: app }}
    after: [db]
    steps:
      - name: schema
        exec: {{ command: touch, args: ["{m}"] }}
        migration: true
"#,
        b = backups.display(),
        m = marker.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_backup_is_recorded_and_listed_by_get_rollout() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_local_agent("db-1", &[("role", "db")])?;
    c.add_local_agent("app-1", &[("role", "app")])?;
    c.wait_agents(2, Duration::from_secs(30)).await?;
    let backups = c.dir.path().join("backups");
    let marker = c.dir.path().join("migrated");

    let id = c.submit(&plan(&backups, &marker, 3000)).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    assert!(marker.exists(), "the migration ran after the backup");

    let file = backups.join("db-1").join("db.dump");
    assert_eq!(std::fs::metadata(&file)?.len(), 3000);
    assert_eq!(status.backups.len(), 1, "{:?}", status.backups);
    let b = &status.backups[0];
    assert_eq!((b.host_id.as_str(), b.group.as_str(), b.step.as_str()), ("db-1", "db", "dump"));
    assert_eq!((b.location.as_str(), b.size_bytes), (file.display().to_string().as_str(), 3000));
    assert!(b.taken_unix_ms >= status.created_unix_ms && b.taken_unix_ms > 0, "{b:?}");
    let db = status.hosts.iter().find(|h| h.host_id == "db-1").expect("db-1");
    assert!(db.message.contains("2.9 KiB"), "the step's message says how large: {db:?}");

    // The record comes from the stored events: a restarted coordinator has it.
    c.stop_coordinator().await?;
    c.start_coordinator(fast_runtime()).await?;
    let mut op = c.operator().await?;
    let again =
        op.get_rollout(pb::GetRolloutRequest { rollout_id: id.clone(), ..Default::default() }).await?.into_inner();
    assert_eq!(again.backups, status.backups);

    let (spec, log) = c.event_log(&id).await?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_backup_fails_and_the_migration_never_runs() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_local_agent("db-1", &[("role", "db")])?;
    c.add_local_agent("app-1", &[("role", "app")])?;
    c.wait_agents(2, Duration::from_secs(30)).await?;
    let backups = c.dir.path().join("backups");
    let marker = c.dir.path().join("migrated");

    let id = c.submit(&plan(&backups, &marker, 0)).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    assert!(status.backups.is_empty(), "{:?}", status.backups);
    let db = status.hosts.iter().find(|h| h.host_id == "db-1").expect("db-1");
    assert_eq!(db.state, "failed");
    let file = backups.join("db-1").join("db.dump").display().to_string();
    assert!(db.message.contains(&file) && db.message.contains("empty (0 bytes)"), "{db:?}");
    let app = status.hosts.iter().find(|h| h.host_id == "app-1").expect("app-1");
    assert_eq!(app.state, "skipped", "{app:?}");
    assert!(!marker.exists(), "the migration must not run without a backup");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_migration_has_no_backup_before_it_is_refused() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_local_agent("db-1", &[("role", "db")])?;
    c.add_local_agent("app-1", &[("role", "app")])?;
    c.wait_agents(2, Duration::from_secs(30)).await?;
    let yaml = plan(&c.dir.path().join("backups"), &c.dir.path().join("migrated"), 10).replace("    after: [db]\n", "");
    let err = c.submit(&yaml).await.expect_err("the plan must be refused");
    let text = format!("{err:#}");
    assert!(text.contains("test.yaml:") && text.contains("groups[1].steps[0].migration"), "{text}");
    assert!(text.contains("host app-1"), "{text}");
    c.shutdown().await;
    Ok(())
}

//! Backups in the engine: a successful `backup` step's record is kept (and
//! rebuilt by a replay of the stored events), a backup step reporting none
//! or an empty one fails its host, and with `require_backup` a migration
//! step is not dispatched until a backup covering it has succeeded.

mod engine_support;

use convoy_common::engine::{Engine, HostState, RolloutState};
use convoy_common::invariants::LogEntry;
use convoy_common::model::{BackupRecord, BackupSpec, ExecSpec, RolloutSpec, StepKind, StepOutcome, StepSpec};
use engine_support::*;

fn backup_step(name: &str) -> StepSpec {
    StepSpec {
        name: name.to_string(),
        timeout: STEP_TIMEOUT,
        kind: StepKind::Backup(BackupSpec {
            command: ExecSpec { command: "pg_dumpall".to_string(), ..ExecSpec::default() },
            path: Some("/var/backups/db.dump".to_string()),
        }),
        rerun_safe: false,
    }
}

fn took(location: &str, size_bytes: u64) -> StepOutcome {
    StepOutcome { backup: Some(BackupRecord { location: location.to_string(), size_bytes }), ..StepOutcome::ok() }
}

/// Group `db` (one host: a backup) and group `app` (one host: `stop`, then
/// the migration `migrate`), `app` after `db` when `ordered`; the rollout
/// requires backups.
fn migration_spec(ordered: bool) -> RolloutSpec {
    let app = if ordered { g("app", 1, 1).after(&[0]) } else { g("app", 1, 1) };
    let mut s = spec(&[g("db", 1, 1), app], 2);
    s.require_backup = true;
    s.hosts[0].steps = vec![backup_step("dump")];
    s.hosts[0].undo.clear();
    s.hosts[1].steps[0].name = "stop".to_string();
    s.hosts[1].steps[1].name = "migrate".to_string();
    s.hosts[1].migrations = vec![1];
    s
}

fn replay(spec: RolloutSpec, log: &[LogEntry]) -> Engine {
    let mut engine = Engine::new("r1", spec);
    for (n, entry) in log.iter().enumerate() {
        let actions = engine.handle(entry.now, entry.event.clone());
        assert_eq!(actions, entry.actions, "entry {n} ({:?}) replays to different actions", entry.event);
    }
    engine
}

#[test]
fn a_backup_is_recorded_and_a_replay_rebuilds_it() {
    let mut run = Run::new(migration_spec(true));
    assert_eq!(dispatched(&run.start()), hosts(&["db-0"]));
    run.advance(2_000);
    let at = run.now();
    let next = run.report("db-0", took("/var/backups/db.dump", 3 << 20));
    assert_eq!(dispatched(&next), hosts(&["app-0"]), "the backup's group is done: app starts");

    let view = run.engine.view();
    assert_eq!(view.backups.len(), 1, "{view:?}");
    let b = &view.backups[0];
    assert_eq!((b.host.as_str(), b.key.as_str(), b.group.as_str(), b.step.as_str()), ("db-0", "db-0", "db", "dump"));
    assert_eq!((b.location.as_str(), b.size_bytes, b.at), ("/var/backups/db.dump", 3 << 20, at));

    // The migration runs: the backup of the group it waits for covers it.
    run.advance(1_000).ok("app-0");
    let last = run.advance(1_000).ok("app-0");
    assert_eq!(finished(&last), Some(RolloutState::Succeeded), "{:?}", run.engine.view());
    run.assert_final_invariants();

    // Only the stored events are needed to know which backups were taken.
    let stored = serde_json::to_string(&run.log).unwrap();
    let log: Vec<LogEntry> = serde_json::from_str(&stored).unwrap();
    let engine = replay(run.engine.spec().clone(), &log);
    assert_eq!(engine.view().backups, run.engine.view().backups);
    assert_eq!(engine.view(), run.engine.view());
}

#[test]
fn a_migration_without_a_backup_is_not_dispatched() {
    // The backup step is an ordinary exec: nothing covers the migration.
    let mut s = migration_spec(true);
    s.hosts[0].steps = vec![step("not-a-backup")];
    let mut run = Run::new(s);
    run.start();
    run.ok("db-0");
    let actions = run.ok("app-0");
    assert!(dispatched(&actions).is_empty(), "the migration must not be sent: {actions:?}");
    match run.state_of("app-0") {
        HostState::Failed { step: Some(1), reason } => {
            assert!(
                reason.contains("migrate") && reason.contains("migration") && reason.contains("backup"),
                "{reason}"
            );
        }
        other => panic!("app-0 should have failed at the migration: {other:?}"),
    }
    assert_eq!(done(&actions), [("app-0".to_string(), "failed")]);
    assert_eq!(finished(&actions), Some(RolloutState::Failed));
    run.assert_final_invariants();
}

#[test]
fn a_backup_in_a_group_that_does_not_come_first_does_not_count() {
    // `app` does not wait for `db`: db's backup, even if it has already
    // succeeded, does not cover app's migration.
    let mut run = Run::new(migration_spec(false));
    let started = run.start();
    assert_eq!(dispatched(&started), hosts(&["db-0", "app-0"]));
    run.report("db-0", took("/var/backups/db.dump", 10));
    let actions = run.ok("app-0");
    assert!(dispatched(&actions).is_empty(), "{actions:?}");
    assert!(matches!(run.state_of("app-0"), HostState::Failed { step: Some(1), .. }), "{:?}", run.state_of("app-0"));
}

#[test]
fn an_earlier_backup_of_the_same_host_covers_its_migration() {
    let mut s = migration_spec(false);
    s.hosts[1].steps[0] = backup_step("dump-app");
    let mut run = Run::new(s);
    run.start();
    run.report("db-0", took("/var/backups/db.dump", 10));
    let next = run.report("app-0", took("/srv/app/backup", 1));
    assert_eq!(dispatched(&next), [("app-0".to_string(), 1)]);
    let last = run.ok("app-0");
    assert_eq!(finished(&last), Some(RolloutState::Succeeded));
    let steps: Vec<(String, String)> =
        run.engine.view().backups.iter().map(|b| (b.host.clone(), b.step.clone())).collect();
    assert_eq!(steps, [("db-0".into(), "dump".into()), ("app-0".into(), "dump-app".into())]);
}

#[test]
fn without_require_backup_migrations_run_freely() {
    let mut s = migration_spec(false);
    s.require_backup = false;
    s.hosts[0].steps = vec![step("not-a-backup")];
    let mut run = Run::new(s);
    run.start();
    run.ok("db-0");
    let next = run.ok("app-0");
    assert_eq!(dispatched(&next), [("app-0".to_string(), 1)]);
}

#[test]
fn a_backup_step_reporting_no_backup_or_an_empty_one_fails_its_host() {
    for (outcome, expect) in [(StepOutcome::ok(), "reported no backup"), (took("/var/backups/db.dump", 0), "empty")] {
        let mut run = Run::new(migration_spec(true));
        run.start();
        let actions = run.report("db-0", outcome);
        match run.state_of("db-0") {
            HostState::Failed { step: Some(0), reason } => assert!(reason.contains(expect), "{reason}"),
            other => panic!("db-0 should have failed: {other:?}"),
        }
        assert!(run.engine.view().backups.is_empty());
        assert_eq!(finished(&actions), Some(RolloutState::Failed));
    }
}

#[test]
fn a_backup_record_from_another_kind_of_step_is_ignored() {
    let mut run = Run::new(spec(&[g("a", 1, 1)], 1));
    run.start();
    run.report("a-0", took("/tmp/x", 5));
    assert!(run.engine.view().backups.is_empty());
    assert_eq!(run.state_of("a-0"), HostState::Succeeded);
}

//! `backup` steps, `migration: true` and `require_backup` as the plan
//! parses, validates and expands them: a migration needs a backup before it
//! on its host, or in a group (or hook) its group runs after; a release
//! catalog's `migrate` phase counts as migrations.

mod support;

use std::collections::BTreeMap;

use convoy_common::catalog::parse_catalog;
use convoy_common::model::{BackupSpec, ExecSpec, InventoryHost, RolloutSpec, StepKind};
use convoy_common::plan::{PlanError, expand, parse_plan, parse_plan_with_catalogs, summary_json};
use support::check_error;

const FILE: &str = "plan.yaml";

fn host(id: &str, role: &str) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: BTreeMap::from([("role".to_string(), role.to_string())]),
        installed: BTreeMap::from([("app".to_string(), "1.0.0".to_string())]),
        facts: BTreeMap::new(),
    }
}

fn inventory() -> Vec<InventoryHost> {
    vec![host("db-1", "db"), host("app-1", "app"), host("app-2", "app"), host("ops-1", "ops")]
}

fn expand_src(src: &str) -> Result<RolloutSpec, PlanError> {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    expand(&plan, &inventory())
}

fn expand_ok(src: &str) -> RolloutSpec {
    expand_src(src).unwrap_or_else(|e| panic!("expand failed: {e}"))
}

fn expand_err(src: &str) -> PlanError {
    match expand_src(src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

fn parse_err(src: &str) -> PlanError {
    match parse_plan(FILE, src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

// `migration: true` is on line 18 (17 once the `after: [db]` line is removed).
const PLAN: &str = r#"name: migrate
version: "2.0.0"
require_backup: true
groups:
  - name: db
    select: { role: db }
    steps:
      - name: dump
        backup: { command: pg_dumpall, args: ["--file=/var/backups/{{host}}-{{version}}.sql"], path: "/var/backups/{{host}}-{{version}}.sql" }
        timeout: 10m
  - name: app
    select: { role: app }
    after: [db]
    steps:
      - exec: { command: systemctl, args: [stop, app] }
      - name: schema
        exec: { command: app-migrate, args: [up] }
        migration: true
      - exec: { command: systemctl, args: [start, app] }
"#;

#[test]
fn a_backup_in_a_group_the_migration_waits_for_satisfies_it() {
    let spec = expand_ok(PLAN);
    assert!(spec.require_backup);
    assert_eq!(summary_json(&spec)["require_backup"], true);
    let db = spec.hosts.iter().find(|h| h.host == "db-1").unwrap();
    assert_eq!(db.steps[0].name, "dump");
    assert_eq!(db.steps[0].timeout.as_secs(), 600);
    assert_eq!(
        db.steps[0].kind,
        StepKind::Backup(BackupSpec {
            command: ExecSpec {
                command: "pg_dumpall".into(),
                args: vec!["--file=/var/backups/db-1-2.0.0.sql".into()],
                ..ExecSpec::default()
            },
            path: Some("/var/backups/db-1-2.0.0.sql".into()),
        }),
        "templates are filled per host"
    );
    assert!(db.migrations.is_empty());
    assert!(db.undo.is_empty(), "a backup has no undo");
    for id in ["app-1", "app-2"] {
        let app = spec.hosts.iter().find(|h| h.host == id).unwrap();
        assert_eq!(app.migrations, [1], "{id}");
    }
}

#[test]
fn a_migration_with_no_backup_before_it_names_line_field_and_host() {
    let e = expand_err(&PLAN.replace("    after: [db]\n", ""));
    check_error(&e, FILE, 17, "groups[1].steps[1].migration", "no backup runs before it on host app-1");
    assert!(e.message.contains("'schema'") && e.message.contains("require_backup"), "{e}");
    // The line is the `migration: true` line, whatever precedes it.
    assert_eq!(PLAN.replace("    after: [db]\n", "").lines().nth(16), Some("        migration: true"));
}

#[test]
fn a_backup_must_come_before_the_migration_on_the_same_host() {
    let own = PLAN.replace("    after: [db]\n", "");
    let first = own.replace(
        "      - exec: { command: systemctl, args: [stop, app] }\n",
        "      - exec: { command: systemctl, args: [stop, app] }\n      - backup: { command: dump-app, path: /srv/app.bak }\n",
    );
    let spec = expand_ok(&first);
    let app = spec.hosts.iter().find(|h| h.host == "app-1").unwrap();
    assert_eq!(app.steps[1].name, "backup-2");
    assert_eq!(app.migrations, [2]);

    // After the migration is too late.
    let last = own.replace(
        "      - exec: { command: systemctl, args: [start, app] }\n",
        "      - backup: { command: dump-app, path: /srv/app.bak }\n",
    );
    let e = expand_err(&last);
    check_error(&e, FILE, 17, "groups[1].steps[1].migration", "host app-1");
}

#[test]
fn a_backup_in_the_plan_wide_before_hook_or_further_up_satisfies_it() {
    let hooked = PLAN.replace("    after: [db]\n", "").replace(
        "groups:\n",
        "hooks:\n  before:\n    on: ops-1\n    steps:\n      - backup: { command: snapshot-all }\ngroups:\n",
    );
    let spec = expand_ok(&hooked);
    assert_eq!(spec.groups[0].name, "before");
    let ops = spec.hosts.iter().find(|h| h.key() == "ops-1@before").unwrap();
    assert_eq!(ops.steps[0].name, "backup-1");
    assert!(matches!(&ops.steps[0].kind, StepKind::Backup(b) if b.path.is_none()));

    // Transitively: app -> middle -> db(backup).
    let chain = PLAN.replace("    after: [db]\n", "    after: [middle]\n").replace(
        "  - name: app\n",
        "  - name: middle\n    select: { role: ops }\n    after: [db]\n    steps: [ { exec: { command: \"true\" } } ]\n  - name: app\n",
    );
    expand_ok(&chain);
}

#[test]
fn without_require_backup_migrations_are_only_marked() {
    let spec = expand_ok(&PLAN.replace("    after: [db]\n", "").replace("require_backup: true\n", ""));
    assert!(!spec.require_backup);
    let app = spec.hosts.iter().find(|h| h.host == "app-1").unwrap();
    assert_eq!(app.migrations, [1]);
}

#[test]
fn backup_steps_are_checked_when_parsed() {
    let bad = |from: &str, to: &str| parse_err(&PLAN.replace(from, to));
    let e = bad("backup: { command: pg_dumpall,", "backup: { commnd: pg_dumpall,");
    assert!(e.message.contains("unknown field `commnd`"), "{e}");
    let e = bad("backup: { command: pg_dumpall, ", "backup: { ");
    check_error(&e, FILE, 9, "groups[0].steps[0].backup.command", "missing required field 'command'");
    let e = bad(r#"path: "/var/backups/{{host}}-{{version}}.sql""#, r#"path: " ""#);
    check_error(&e, FILE, 9, "groups[0].steps[0].backup.path", "must not be empty");
    let e = bad(r#"path: "/var/backups/{{host}}-{{version}}.sql""#, r#"path: "/b/{{hots}}""#);
    check_error(&e, FILE, 9, "groups[0].steps[0].backup.path", "unknown template variable '{{hots}}'");
    let e = bad("        timeout: 10m\n", "        timeout: 10m\n        exec: { command: x }\n");
    assert!(e.message.contains("more than one kind"), "{e}");
    let e = bad("        timeout: 10m\n", "        timeout: 10m\n        capture: { name: x, regex: '.' }\n");
    check_error(&e, FILE, 11, "groups[0].steps[0].capture", "only exec steps can capture");
    let e = bad("require_backup: true", "require_backup: sometimes");
    assert_eq!((e.line, e.field.as_str()), (Some(3), "require_backup"), "{e}");
}

const CATALOG: &str = r#"product: app
component: app
releases:
  - version: 1.0.0
  - version: 2.0.0
    steps:
      upgrade:
        - name: install
          exec: { command: install-app, args: ["{{version}}"] }
      migrate:
        - name: schema
          exec: { command: app-migrate }
"#;

const CATALOG_PLAN: &str = r#"name: via-catalog
version: "2.0.0"
require_backup: true
groups:
  - name: app
    select: { role: app }
    release: { catalog: app }
"#;

fn expand_with_catalog(catalog: &str, plan: &str) -> Result<RolloutSpec, PlanError> {
    let c = parse_catalog("app.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    let plan = parse_plan_with_catalogs(FILE, plan, &BTreeMap::from([("app".to_string(), c)]))
        .unwrap_or_else(|e| panic!("{e}"));
    expand(&plan, &inventory())
}

#[test]
fn catalog_migrate_steps_are_migrations() {
    let e = expand_with_catalog(CATALOG, CATALOG_PLAN).unwrap_err();
    check_error(&e, "app.yaml", 11, "releases[1].steps.migrate[0]", "no backup runs before it on host app-1");
    assert!(e.message.contains("'2.0.0/schema'"), "{e}");

    // A backup in the release's `pre` phase comes first.
    let with_pre = CATALOG.replace(
        "      upgrade:\n",
        "      pre:\n        - name: dump\n          backup: { command: dump-app, path: \"/srv/app-{{version}}.bak\" }\n      upgrade:\n",
    );
    let spec = expand_with_catalog(&with_pre, CATALOG_PLAN).unwrap_or_else(|e| panic!("{e}"));
    let app = spec.hosts.iter().find(|h| h.host == "app-1").unwrap();
    let names: Vec<&str> = app.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["2.0.0/dump", "2.0.0/install", "2.0.0/schema"]);
    assert_eq!(app.migrations, [2]);
    assert!(matches!(&app.steps[0].kind, StepKind::Backup(b) if b.path.as_deref() == Some("/srv/app-2.0.0.bak")));

    // Without require_backup the plan expands; the migration is still marked.
    let spec = expand_with_catalog(CATALOG, &CATALOG_PLAN.replace("require_backup: true\n", ""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.hosts[0].migrations, [1]);
}

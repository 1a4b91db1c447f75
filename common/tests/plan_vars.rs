//! Plan `vars:` and `env:` (plan and group level): `{{vars.NAME}}` in steps,
//! checks, undos and hooks, group overrides, env merged into every exec-like
//! spec with the step's own env winning, bad names and unknown vars refused
//! with their line and field; YAML anchors and merge keys in a plan.

mod support;

use std::collections::BTreeMap;

use convoy_common::limits::PlanLimits;
use convoy_common::model::{ExecSpec, HostPlan, InventoryHost, RolloutSpec, StepKind, StepSpec};
use convoy_common::plan::{PlanError, expand, parse_plan, parse_plan_with_limits};
use support::{check_error, inventory_host};

const FILE: &str = "plan.yaml";

fn inventory() -> Vec<InventoryHost> {
    vec![
        inventory_host("db-1", &[("role", "db"), ("port", "5432")], &[]),
        inventory_host("web-1", &[("role", "web"), ("port", "8080")], &[]),
    ]
}

fn expand_ok(src: &str) -> RolloutSpec {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    expand(&plan, &inventory()).unwrap_or_else(|e| panic!("expand failed: {e}"))
}

fn parse_err(src: &str) -> PlanError {
    match parse_plan(FILE, src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

fn host<'a>(spec: &'a RolloutSpec, id: &str) -> &'a HostPlan {
    spec.hosts.iter().find(|h| h.host == id).unwrap_or_else(|| panic!("no host {id}"))
}

fn step<'a>(h: &'a HostPlan, name: &str) -> &'a StepSpec {
    h.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}"))
}

fn exec(s: &StepSpec) -> &ExecSpec {
    match &s.kind {
        StepKind::Exec(e) => e,
        StepKind::ExecCheck(c) => &c.exec,
        StepKind::Backup(b) => &b.command,
        other => panic!("not exec-like: {other:?}"),
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const PLAN: &str = r#"name: vars
version: "2.0.0"
vars:
  max_conn: max_connections=150
  dsn: "host={{host}} port={{label.port}}"
env:
  PGHOST: localhost
  PGOPTIONS: "-c {{vars.max_conn}}"
groups:
  - name: db
    select: { role: db }
    vars:
      max_conn: max_connections=300
    env:
      PGHOST: db.local
    steps:
      - name: tune
        exec:
          command: psql
          args: ["-c", "ALTER SYSTEM SET {{vars.max_conn}}", "{{vars.dsn}}"]
          env: { PGHOST: own }
        rollback: { command: psql, args: ["-c", "RESET {{vars.max_conn}}"] }
      - name: dump
        backup: { command: pg_dumpall, path: "/b/{{host}}.sql" }
    checks:
      - name: conn
        exec: { command: check, args: ["{{vars.max_conn}}"] }
  - name: web
    select: { role: web }
    after: [db]
    steps:
      - name: tune
        exec: { command: set, args: ["{{vars.max_conn}}", "{{vars.dsn}}"] }
    checks:
      - name: up
        http: { url: "http://{{host}}:{{label.port}}/{{vars.max_conn}}" }
"#;

#[test]
fn vars_fill_steps_checks_and_undos_with_group_overrides() {
    let spec = expand_ok(PLAN);
    let db = host(&spec, "db-1");
    let tune = exec(step(db, "tune"));
    assert_eq!(tune.args, ["-c", "ALTER SYSTEM SET max_connections=300", "host=db-1 port=5432"]);
    assert_eq!(exec(step(db, "conn")).args, ["max_connections=300"]);
    let undo = db.undo[0].as_ref().expect("explicit rollback");
    assert_eq!(exec(undo).args, ["-c", "RESET max_connections=300"]);

    let web = host(&spec, "web-1");
    assert_eq!(exec(step(web, "tune")).args, ["max_connections=150", "host=web-1 port=8080"]);
    match &step(web, "up").kind {
        StepKind::HttpCheck(h) => assert_eq!(h.url, "http://web-1:8080/max_connections=150"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_reaches_steps_checks_backups_and_undos_and_the_step_wins() {
    let spec = expand_ok(PLAN);
    let db = host(&spec, "db-1");
    // The step's own PGHOST wins over the group's, which wins over the plan's;
    // the plan's env value uses the group's var.
    let group_env = env(&[("PGHOST", "db.local"), ("PGOPTIONS", "-c max_connections=300")]);
    assert_eq!(exec(step(db, "tune")).env, env(&[("PGHOST", "own"), ("PGOPTIONS", "-c max_connections=300")]));
    assert_eq!(exec(step(db, "dump")).env, group_env);
    assert_eq!(exec(step(db, "conn")).env, group_env);
    assert_eq!(exec(db.undo[0].as_ref().unwrap()).env, group_env);

    let web = host(&spec, "web-1");
    assert_eq!(exec(step(web, "tune")).env, env(&[("PGHOST", "localhost"), ("PGOPTIONS", "-c max_connections=150")]));
}

#[test]
fn defaults_and_hooks_use_the_scope_they_run_in() {
    let src = r#"name: p
version: "1"
vars: { who: plan }
env: { WHO: "{{vars.who}}" }
hooks:
  before:
    on: db-1
    steps: [{ name: pre, exec: { command: "echo", args: ["{{vars.who}}"] } }]
defaults:
  steps: [{ name: s, exec: { command: "echo", args: ["{{vars.who}}"] } }]
groups:
  - name: db
    select: { role: db }
    vars: { who: db }
    hooks:
      after:
        on: db-1
        steps: [{ name: post, exec: { command: "echo", args: ["{{vars.who}}"] } }]
  - name: web
    select: { role: web }
"#;
    let spec = expand_ok(src);
    let in_group = |group: &str, step_name: &str| {
        let g = spec.groups.iter().position(|g| g.name == group).unwrap();
        let h = spec.hosts.iter().find(|h| h.group == g).unwrap();
        exec(step(h, step_name)).clone()
    };
    assert_eq!(in_group("db", "s").args, ["db"]);
    assert_eq!(in_group("db", "s").env, env(&[("WHO", "db")]));
    assert_eq!(in_group("web", "s").args, ["plan"]);
    assert_eq!(in_group("before", "pre").args, ["plan"]);
    assert_eq!(in_group("db.after", "post").args, ["db"]);
    assert_eq!(in_group("db.after", "post").env, env(&[("WHO", "db")]));
}

#[test]
fn an_unknown_var_names_its_line_and_field() {
    let src = PLAN.replace("\"{{vars.max_conn}}\", \"{{vars.dsn}}\"]", "\"{{vars.nope}}\"]");
    let e = parse_err(&src);
    check_error(&e, FILE, 33, "groups[1].steps[0].exec.args[0]", "unknown variable 'vars.nope'");
    assert!(e.message.contains("group 'web'"), "{e}");

    // In the plan's env, found with the group that uses it.
    let src = PLAN.replace("-c {{vars.max_conn}}", "-c {{vars.missing}}");
    check_error(&parse_err(&src), FILE, 8, "env.PGOPTIONS", "unknown variable 'vars.missing'");

    // With no vars at all.
    let src = "name: p\nversion: \"1\"\ngroups:\n  - name: g\n    hosts: [h]\n    steps:\n      - exec: { command: \"{{vars.x}}\" }\n";
    check_error(&parse_err(src), FILE, 7, "groups[0].steps[0].exec.command", "unknown variable 'vars.x'");
}

#[test]
fn bad_names_and_values_are_refused() {
    let base =
        "name: p\nversion: \"1\"\nBLOCK\ngroups:\n  - name: g\n    hosts: [h]\n    steps: [{ exec: { command: x } }]\n";
    let cases: &[(&str, &str, &str)] = &[
        ("vars:\n  \"a b\": x", "vars.a b", "invalid var name 'a b'"),
        ("vars:\n  \"a.b\": x", "vars.a.b", "invalid var name"),
        ("vars:\n  a: \"{{vars.b}}\"\n  b: y", "vars.a", "may not use another var"),
        ("vars:\n  a: \"{{nope}}\"", "vars.a", "unknown template variable"),
        ("env:\n  \"A=B\": x", "env", "invalid env name"),
        ("env:\n  \"\": x", "env", "invalid env name"),
        ("env:\n  A: \"{{oops\"", "env.A", "unterminated"),
    ];
    for (block, field, message) in cases {
        let src = base.replace("BLOCK", block);
        let e = parse_err(&src);
        assert_eq!(e.field, *field, "{e}");
        assert!(e.message.contains(message), "{e} should contain {message:?}");
    }
    // Unknown keys inside the group are still refused.
    let src = base.replace("BLOCK\n", "").replace("    hosts: [h]\n", "    hosts: [h]\n    varz: {}\n");
    assert!(parse_err(&src).message.contains("unknown field"));
}

#[test]
fn vars_are_bounded() {
    let limits = PlanLimits { max_vars: 2, max_var_bytes: 8, ..PlanLimits::default() };
    let base =
        "name: p\nversion: \"1\"\nBLOCK\ngroups:\n  - name: g\n    hosts: [h]\n    steps: [{ exec: { command: x } }]\n";
    let parse = |block: &str| parse_plan_with_limits(FILE, &base.replace("BLOCK", block), &BTreeMap::new(), &limits);
    assert!(parse("vars: { a: \"12345678\", b: y }").is_ok());
    let e = parse("vars: { a: x, b: y, c: z }").unwrap_err();
    check_error(&e, FILE, 3, "vars", "3 entries, more than the limit of 2");
    let e = parse("env: { A: \"123456789\" }").unwrap_err();
    check_error(&e, FILE, 3, "env.A", "9 bytes, more than the limit of 8 bytes");
}

/// YAML anchors, aliases and merge keys (`<<: *conn`) work in a plan:
/// serde_norway resolves them before the plan format sees the document.
#[test]
fn anchors_and_merge_keys_work() {
    let src = r#"name: anchors
version: "2.0.0"
x-conn: &conn
  PGHOST: db.local
  PGPORT: "5432"
groups:
  - name: db
    select: { role: db }
    steps:
      - name: a
        exec:
          command: psql
          env:
            <<: *conn
            PGPORT: "6432"
      - name: b
        exec: { command: psql, env: *conn }
"#;
    // A top-level key that is not part of the format is refused, anchor
    // holder or not; anchors must live inside a field the format knows.
    let e = parse_err(src);
    assert!(e.message.contains("unknown field"), "{e}");

    let src = src.replace("x-conn: &conn", "vars: &conn");
    let spec = expand_ok(&src);
    let db = host(&spec, "db-1");
    assert_eq!(exec(step(db, "a")).env, env(&[("PGHOST", "db.local"), ("PGPORT", "6432")]));
    assert_eq!(exec(step(db, "b")).env, env(&[("PGHOST", "db.local"), ("PGPORT", "5432")]));

    // An error in a plan with merge keys still names the field and its line.
    let typo =
        src.replace("    select: { role: db }\n", "    select: { role: db }\n    strategy: { max_paralel: 1 }\n");
    check_error(&parse_err(&typo), FILE, 9, "groups[0].strategy.max_paralel", "unknown field");

    // The second reading goes through YAML values: an unquoted number-like
    // string loses its spelling there (documented: quote versions).
    let unquoted = src.replace("version: \"2.0.0\"", "version: 2.10");
    let plan = parse_plan(FILE, &unquoted).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.target_version(), "2.1");
    let plan = parse_plan(FILE, &src.replace("version: \"2.0.0\"", "version: \"2.10\"")).unwrap();
    assert_eq!(plan.target_version(), "2.10");

    // Whole steps through an alias.
    let src = r#"name: anchors
version: "2.0.0"
groups:
  - name: db
    select: { role: db }
    steps:
      - &restart
        name: restart
        exec: { command: systemctl, args: [restart, app] }
  - name: web
    select: { role: web }
    steps:
      - *restart
"#;
    let spec = expand_ok(src);
    assert_eq!(exec(step(host(&spec, "web-1"), "restart")).args, ["restart", "app"]);
}

#[test]
fn catalogs_do_not_see_plan_vars() {
    use convoy_common::catalog::parse_catalog;
    use convoy_common::plan::parse_plan_with_catalogs;
    let catalog = "product: app\ncomponent: app\nreleases:\n  - version: \"2.0.0\"\n    steps:\n      post:\n        - exec: { command: \"{{vars.x}}\" }\n";
    let catalog = parse_catalog("app.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    let plan = "name: p\nversion: \"2.0.0\"\nvars: { x: y }\ngroups:\n  - name: g\n    hosts: [h]\n    release: { catalog: app }\n";
    let e = parse_plan_with_catalogs(FILE, plan, &BTreeMap::from([("app".to_string(), catalog)])).unwrap_err();
    assert_eq!(e.file, "app.yaml", "{e}");
    assert!(e.message.contains("release catalogs do not see plan vars"), "{e}");
}

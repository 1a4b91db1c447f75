//! `run_as:` on commands as the plan parses, validates and expands it: the
//! two spellings (a user, or `{ user, group }`), numeric ids, templates
//! (`{{vars.X}}`, `{{label.X}}`) checked once rendered per host, every
//! command that takes it (exec, exec check, leader check, metric command,
//! backup, `rollback:`), the refusals with their line and field, and the
//! summary `convoy plan` prints.

mod support;

use convoy_common::estimate::{Measured, summary};
use convoy_common::model::{ExecSpec, HostPlan, InventoryHost, MetricSource, RolloutSpec, RunAs, StepKind};
use convoy_common::plan::{PlanError, expand, expand_detailed, parse_plan};
use support::{check_error, inventory_host};

const FILE: &str = "plan.yaml";

fn inventory() -> Vec<InventoryHost> {
    vec![
        inventory_host("db-1", &[("role", "db"), ("owner", "postgres"), ("cluster", "pg")], &[]),
        inventory_host("db-2", &[("role", "db"), ("owner", "bad owner"), ("cluster", "pg")], &[]),
    ]
}

fn expand_src(src: &str, hosts: &[InventoryHost]) -> Result<RolloutSpec, PlanError> {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    expand(&plan, hosts)
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

fn ra(user: &str, group: Option<&str>) -> Option<RunAs> {
    Some(RunAs { user: user.into(), group: group.map(str::to_string) })
}

fn exec_of(kind: &StepKind) -> &ExecSpec {
    match kind {
        StepKind::Exec(e) => e,
        StepKind::ExecCheck(c) => &c.exec,
        StepKind::Backup(b) => &b.command,
        StepKind::MetricCheck(m) => match &m.source {
            MetricSource::Command(e) => e,
            MetricSource::Http { .. } => panic!("no command"),
        },
        other => panic!("not a command: {other:?}"),
    }
}

const PLAN: &str = r#"name: pg
version: "16.4"
vars:
  db_user: postgres
groups:
  - name: db
    select: { role: db }
    strategy:
      type: cluster
      leader:
        exec: { command: psql, args: ["-tAc", "select not pg_is_in_recovery()"], run_as: "{{vars.db_user}}" }
        stdout_equals: t
        follower_when: { stdout_equals: f }
    steps:
      - name: dump
        backup: { command: pg_dumpall, args: ["--file=/var/backups/pg.sql"], path: /var/backups/pg.sql, run_as: postgres }
      - name: reload
        exec:
          command: pg_ctl
          args: [reload]
          run_as: { user: postgres, group: ssl-cert }
        rollback: { command: pg_ctl, args: [reload], run_as: 105 }
      - name: plain
        exec: { command: "true" }
    checks:
      - name: ready
        exec: { command: pg_isready, run_as: { user: "{{vars.db_user}}" } }
      - name: lag
        metric: { command: { command: lag, run_as: "65534" }, below: 100 }
"#;

#[test]
fn every_command_carries_its_run_as() {
    let spec = expand_src(PLAN, &inventory()[..1]).unwrap_or_else(|e| panic!("{e}"));
    let h = host(&spec, "db-1");
    let by_name = |n: &str| &h.steps.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n}")).kind;
    assert_eq!(exec_of(by_name("dump")).run_as, ra("postgres", None));
    assert_eq!(exec_of(by_name("reload")).run_as, ra("postgres", Some("ssl-cert")));
    assert_eq!(exec_of(by_name("plain")).run_as, None);
    assert_eq!(exec_of(by_name("ready")).run_as, ra("postgres", None), "vars are substituted");
    assert_eq!(exec_of(by_name("lag")).run_as, ra("65534", None));
    let leader = h.leader_check.as_ref().expect("a leader check");
    assert_eq!(exec_of(&leader.kind).run_as, ra("postgres", None));
    let undo = h.undo.iter().flatten().find(|s| s.name == "rollback-reload").expect("the undo of reload");
    assert_eq!(exec_of(&undo.kind).run_as, ra("105", None), "a YAML integer is a numeric id");
}

#[test]
fn the_plan_summary_shows_who_each_step_runs_as() {
    let plan = parse_plan(FILE, PLAN).unwrap();
    let x = expand_detailed(&plan, &inventory()[..1]).unwrap();
    let s = summary(&x, &Measured::new()).to_json();
    let steps = &s["groups"][0]["paths"][0]["steps"];
    let who: Vec<(String, Option<String>)> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|st| (st["name"].as_str().unwrap().to_string(), st["run_as"].as_str().map(str::to_string)))
        .collect();
    let get = |n: &str| who.iter().find(|(name, _)| name == n).unwrap_or_else(|| panic!("{n} in {who:?}")).1.clone();
    assert_eq!(get("reload").as_deref(), Some("postgres:ssl-cert"));
    assert_eq!(get("dump").as_deref(), Some("postgres"));
    assert_eq!(get("plain"), None);
}

#[test]
fn a_label_template_is_rendered_per_host_and_checked() {
    let src = r#"name: x
version: "1"
groups:
  - name: db
    select: { role: db }
    steps:
      - name: s
        exec: { command: "true", run_as: "{{label.owner}}" }
"#;
    let spec = expand_src(src, &inventory()[..1]).unwrap();
    assert_eq!(exec_of(&host(&spec, "db-1").steps[0].kind).run_as, ra("postgres", None));
    let e = expand_src(src, &inventory()).unwrap_err();
    check_error(&e, FILE, 8, "groups[0].steps[0].exec.run_as.user", "invalid user name \"bad owner\"");
    assert!(e.message.contains("for host db-2"), "{e}");
}

#[test]
fn bad_run_as_is_refused_with_line_and_field() {
    let step = |run_as: &str| {
        format!(
            "name: x\nversion: \"1\"\ngroups:\n  - name: g\n    hosts: [a]\n    steps:\n      - exec:\n          command: \"true\"\n          run_as: {run_as}\n"
        )
    };
    let field = "groups[0].steps[0].exec.run_as";
    check_error(&parse_err(&step("\"root postgres\"")), FILE, 9, field, "' ' is not allowed");
    check_error(&parse_err(&step("\"-u\"")), FILE, 9, field, "must not start with '-'");
    check_error(&parse_err(&step(&"a".repeat(33))), FILE, 9, field, "longer than 32 bytes");
    check_error(&parse_err(&step("4294967295")), FILE, 9, field, "out of range");
    check_error(&parse_err(&step("[postgres]")), FILE, 9, field, "expected a user");
    check_error(&parse_err(&step("{ group: ssl-cert }")), FILE, 9, field, "missing required field 'user'");
    check_error(&parse_err(&step("{ user: postgres, uid: 5 }")), FILE, 9, field, "unknown field `uid`");
    check_error(
        &parse_err(&step("{ user: postgres, group: \"a;b\" }")),
        FILE,
        9,
        &format!("{field}.group"),
        "invalid group name",
    );
    check_error(&parse_err(&step("\"{{vars.nope}}\"")), FILE, 9, &format!("{field}.user"), "vars.nope");
}

#[test]
fn a_service_command_refuses_run_as() {
    let src = r#"name: x
version: "1"
groups:
  - name: g
    hosts: [a]
    steps:
      - service:
          name: app
          action: start
          manager: supervised
          command: { command: /opt/app/bin/app, run_as: app }
"#;
    check_error(&parse_err(src), FILE, 11, "groups[0].steps[0].service.command.run_as", "not supported on a service");
}

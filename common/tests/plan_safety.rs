//! The plan syntax for safe rollouts: canaries, `on_failure`, rollback
//! steps, the rollout-wide budget and check health timing.

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_common::model::{ArchiveRollbackSpec, CanarySpec, InventoryHost, OnFailure, Promote, RolloutSpec, StepKind};
use convoy_common::plan::{PlanError, expand, parse_plan, summary_json};

fn host(id: &str, role: &str, tier: &str, installed: Option<&str>) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: BTreeMap::from([("role".to_string(), role.to_string()), ("tier".to_string(), tier.to_string())]),
        installed: installed.map(|v| BTreeMap::from([("app".to_string(), v.to_string())])).unwrap_or_default(),
        facts: BTreeMap::new(),
    }
}

fn inventory() -> Vec<InventoryHost> {
    let mut hosts: Vec<InventoryHost> = (0..10)
        .map(|k| host(&format!("web-{k}"), "web", if k == 7 { "canary" } else { "main" }, Some("1.0")))
        .collect();
    hosts.push(host("db-0", "db", "main", None));
    hosts.push(host("db-1", "db", "main", Some("0.9")));
    hosts
}

const PLAN: &str = r#"name: safe
version: "2.0"
component: app
max_failures: "10%"
on_failure: rollback_group
defaults:
  rollback_steps:
    - exec: { command: systemctl, args: [restart, app] }
groups:
  - name: db
    select: { role: db }
    on_failure: halt
    canary: { count: 1, promote: manual }
    steps:
      - name: backup
        exec: { command: pg_dump, args: ["{{host}}"] }
        rollback: { command: pg_restore, args: ["{{host}}", "{{label.tier}}"] }
      - name: install
        archive: { component: app, version: "{{version}}", source: /srv/app.tgz, sha256: "0000000000000000000000000000000000000000000000000000000000000000", install_root: /opt }
      - name: note
        file: { path: /etc/app, content: x }
  - name: web
    select: { role: web }
    after: [db]
    strategy: { max_parallel: 3 }
    canary:
      select: { tier: canary }
      promote: { after: 5m }
    steps:
      - name: install
        archive: { component: app, version: "{{version}}", source: /srv/app.tgz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
    checks:
      - name: health
        http: { url: "http://{{host}}/health" }
        min_healthy_time: 10s
        healthy_deadline: 1m
    rollback_steps:
      - name: flush
        exec: { command: flush }
      - exec: { command: notify }
"#;

fn expanded(src: &str) -> RolloutSpec {
    let plan = parse_plan("p.yaml", src).unwrap_or_else(|e| panic!("{e}"));
    expand(&plan, &inventory()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(src: &str) -> PlanError {
    parse_plan("p.yaml", src).expect_err("the plan should not parse")
}

#[test]
fn canaries_on_failure_and_budgets_expand() {
    let spec = expanded(PLAN);
    assert_eq!(spec.max_failures, Some(1), "10% of 12 hosts");
    assert_eq!(spec.on_failure, OnFailure::RollbackGroup);
    let db = &spec.groups[0];
    assert_eq!(db.on_failure, OnFailure::Halt, "the group overrides the plan");
    assert_eq!(db.canary, Some(CanarySpec { hosts: 1, promote: Promote::Manual }));
    let web = &spec.groups[1];
    assert_eq!(web.on_failure, OnFailure::RollbackGroup, "the plan's mode is the default");
    assert_eq!(web.canary, Some(CanarySpec { hosts: 1, promote: Promote::After(Duration::from_secs(300)) }));
    // The selected canary goes first; the others keep host-id order.
    let order: Vec<&str> = web.hosts.iter().map(|&h| spec.hosts[h].host.as_str()).collect();
    assert_eq!(order[..3], ["web-7", "web-0", "web-1"]);
    assert_eq!(order.len(), 10);
}

#[test]
fn every_step_gets_its_undo_and_groups_their_rollback_steps() {
    let spec = expanded(PLAN);
    let db1 = spec.hosts.iter().find(|h| h.host == "db-1").unwrap();
    assert_eq!(db1.undo.len(), 3);
    let backup_undo = db1.undo[0].as_ref().unwrap();
    assert_eq!(backup_undo.name, "rollback-backup");
    match &backup_undo.kind {
        StepKind::Exec(e) => {
            assert_eq!((e.command.as_str(), e.args.clone()), ("pg_restore", vec!["db-1".into(), "main".into()]))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db1.undo[1].as_ref().unwrap().kind,
        StepKind::ArchiveRollback(ArchiveRollbackSpec {
            component: "app".into(),
            to_version: Some("0.9".into()),
            install_root: Some("/opt".into())
        }),
        "an archive goes back to the version the host had"
    );
    assert_eq!(db1.undo[2], None, "a file step has no undo");
    let names: Vec<&str> = db1.rollback_steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["rollback-exec-1"], "defaults.rollback_steps, named by kind and position");
    // Undos of the steps that succeeded, last first, then the rollback steps.
    let plan: Vec<String> = db1.rollback_plan(2).into_iter().map(|s| s.name).collect();
    assert_eq!(plan, ["rollback-install", "rollback-backup", "rollback-exec-1"]);
    let plan: Vec<String> = db1.rollback_plan(1).into_iter().map(|s| s.name).collect();
    assert_eq!(plan, ["rollback-backup", "rollback-exec-1"]);

    let web = spec.hosts.iter().find(|h| h.host == "web-3").unwrap();
    let names: Vec<&str> = web.rollback_steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["flush", "rollback-exec-2"], "a group's own list replaces the default");
    assert_eq!(web.undo.len(), 2, "install and the health check");
    assert!(
        matches!(&web.undo[0].as_ref().unwrap().kind, StepKind::ArchiveRollback(a) if a.to_version.as_deref() == Some("1.0"))
    );
    assert_eq!(web.undo[1], None, "checks have no undo");
}

#[test]
fn a_fresh_install_rolls_back_without_a_known_version() {
    let spec = expanded(PLAN);
    let db0 = spec.hosts.iter().find(|h| h.host == "db-0").unwrap();
    assert!(matches!(&db0.undo[1].as_ref().unwrap().kind, StepKind::ArchiveRollback(a) if a.to_version.is_none()));
}

#[test]
fn rollback_templates_are_rendered_per_host_and_checked() {
    let plan = parse_plan("p.yaml", &PLAN.replace("{{label.tier}}", "{{installed.app}}")).unwrap();
    let spec = expand(&plan, &inventory());
    // db-0 has no installed app: its rollback command cannot be rendered.
    let e = spec.unwrap_err();
    assert_eq!(e.field, "groups[0].steps[0].rollback.args[1]");
    assert!(e.message.contains("host db-0 has no installed component 'app'"), "{e}");
    let e = parse_err(&PLAN.replace("pg_restore", "\"{{nope}}\""));
    assert_eq!(e.field, "groups[0].steps[0].rollback.command");
    assert!(e.message.contains("unknown template variable"), "{e}");
}

#[test]
fn check_health_timing() {
    let spec = expanded(PLAN);
    let web = spec.hosts.iter().find(|h| h.host == "web-0").unwrap();
    match &web.steps[1].kind {
        StepKind::HttpCheck(h) => {
            assert_eq!(h.policy.min_healthy, Duration::from_secs(10));
            assert_eq!(h.policy.deadline, Duration::from_secs(60), "healthy_deadline is the deadline");
            assert_eq!(web.steps[1].timeout, Duration::from_secs(65));
        }
        other => panic!("{other:?}"),
    }
    let e = parse_err(&PLAN.replace("min_healthy_time: 10s", "min_healthy_time: 2m"));
    assert_eq!(e.field, "groups[1].checks[0].min_healthy_time");
    assert!(e.message.contains("2m is not shorter than the check's deadline (1m)"), "{e}");
    let e = parse_err(&PLAN.replace("healthy_deadline: 1m", "healthy_deadline: 1m\n        deadline: 1m"));
    assert_eq!(e.field, "groups[1].checks[0].healthy_deadline");
    assert!(e.message.contains("not both"), "{e}");
    let e = parse_err(&PLAN.replace("min_healthy_time: 10s", "min_healthy_time: soon"));
    assert!(e.message.contains("invalid duration 'soon'"), "{e}");
}

#[test]
fn canary_forms_and_their_errors() {
    let with = |canary: &str| PLAN.replace("canary: { count: 1, promote: manual }", canary);
    let spec = expanded(&with("canary: { percent: 50% }"));
    assert_eq!(spec.groups[0].canary, Some(CanarySpec { hosts: 1, promote: Promote::Manual }), "50% of 2");
    let spec = expanded(&with("canary: { percent: \"1\" }"));
    assert_eq!(spec.groups[0].canary.unwrap().hosts, 1, "at least one host");
    let spec = expanded(&with("canary: { count: 5 }"));
    assert_eq!(spec.groups[0].canary.unwrap().hosts, 2, "at most the whole group");
    let spec = expanded(&with("canary: { count: 1, promote: { after: 90 } }"));
    assert_eq!(spec.groups[0].canary.unwrap().promote, Promote::After(Duration::from_secs(90)));

    let cases = [
        ("canary: { count: 0 }", "groups[0].canary.count", "must be at least 1"),
        ("canary: { percent: 200% }", "groups[0].canary.percent", "between 1% and 100%"),
        ("canary: { count: 1, percent: 5% }", "groups[0].canary.percent", "more than one kind"),
        ("canary: { promote: manual }", "groups[0].canary", "canary has no kind"),
        ("canary: { count: 1, promote: auto }", "groups[0].canary.promote", "expected 'manual' or a mapping"),
        ("canary: { count: 1, promote: { after: soon } }", "groups[0].canary.promote.after", "invalid duration"),
        ("canary: { count: 1, promote: { when: 5m } }", "groups[0].canary.promote", "unknown field `when`"),
        ("canary: { count: 1, promote: {} }", "groups[0].canary.promote", "missing required field 'after'"),
        ("canary: { select: {} }", "groups[0].canary.select", "at least one label"),
        ("canary: { count: 1, size: 2 }", "groups[0].canary.size", "unknown field `size`"),
    ];
    for (text, field, message) in cases {
        let e = parse_err(&with(text));
        assert_eq!(e.field, field, "{text}: {e}");
        assert!(e.message.contains(message), "{text}: {e}");
        assert_eq!(e.line, Some(13), "{text}: {e}");
    }
    let plan = parse_plan("p.yaml", &with("canary: { select: { tier: gold } }")).unwrap();
    let e = expand(&plan, &inventory()).unwrap_err();
    assert_eq!(e.field, "groups[0].canary.select");
    assert!(e.message.contains("canary selector tier=gold matches no host of group 'db'"), "{e}");
}

#[test]
fn on_failure_budget_and_rollback_step_errors() {
    let e = parse_err(&PLAN.replace("on_failure: rollback_group", "on_failure: rollback"));
    assert_eq!((e.line, e.field.as_str()), (Some(5), "on_failure"));
    assert!(e.message.contains("unknown variant `rollback`"), "{e}");
    let e = parse_err(&PLAN.replace("max_failures: \"10%\"", "max_failures: lots"));
    assert_eq!((e.line, e.field.as_str()), (Some(4), "max_failures"));
    let e = parse_err(&PLAN.replace(
        "      - exec: { command: notify }",
        "      - exec: { command: notify }\n        rollback: { command: x }",
    ));
    assert_eq!(e.field, "groups[1].rollback_steps[1].rollback");
    assert!(e.message.contains("cannot have a rollback of its own"), "{e}");
    let e = parse_err(&PLAN.replace("name: flush", "name: rollback-install"));
    assert_eq!(e.field, "groups[1].rollback_steps[0].name");
    assert!(e.message.contains("duplicate rollback step name 'rollback-install'"), "{e}");
    let e = parse_err(&PLAN.replace("        rollback: { command: pg_restore", "        rollback: { cmd: pg_restore"));
    assert!(e.message.contains("unknown field `cmd`"), "{e}");
    let plan = parse_plan("p.yaml", &PLAN.replace("max_failures: \"10%\"\n", "")).unwrap();
    assert_eq!(expand(&plan, &inventory()).unwrap().max_failures, None, "no rollout budget unless asked");
}

#[test]
fn the_summary_shows_the_new_settings() {
    let spec = expanded(PLAN);
    let json = summary_json(&spec);
    assert_eq!(json["max_failures"], 1);
    assert_eq!(json["on_failure"], "rollback_group");
    assert_eq!(json["groups"][0]["on_failure"], "halt");
    assert_eq!(json["groups"][0]["canary"]["hosts"], serde_json::json!(["db-0"]));
    assert_eq!(json["groups"][0]["canary"]["promote"], "manual");
    assert_eq!(json["groups"][1]["canary"]["promote"], "after 5m");
    assert_eq!(json["groups"][1]["rollback_steps"], serde_json::json!(["flush", "rollback-exec-2"]));
    // An old stored spec (no new fields) still reads.
    let mut old = serde_json::to_value(&spec).unwrap();
    for g in old["groups"].as_array_mut().unwrap() {
        g.as_object_mut().unwrap().retain(|k, _| k != "canary" && k != "on_failure");
    }
    old.as_object_mut().unwrap().retain(|k, _| k != "max_failures" && k != "on_failure");
    let back: RolloutSpec = serde_json::from_value(old).unwrap();
    assert_eq!(back.groups[1].canary, None);
    assert_eq!(back.on_failure, OnFailure::Halt);
}

//! `{{cluster.…}}`, `{{install_root}}` and `{{current.COMPONENT}}` as plans
//! write them: the static values filled in per host at expansion, the
//! run-time ones kept for the engine, and the errors (each naming its field).

mod support;

use convoy_common::model::{InventoryHost, RolloutSpec, StepKind, StepSpec};
use convoy_common::plan::{INSTALL_ROOT_FACT, PlanError, expand, parse_plan};

const FILE: &str = "pg.yaml";

fn host(id: &str, cluster: &str, port: &str) -> InventoryHost {
    let mut h = support::inventory_host(id, &[("role", "pg"), ("cluster", cluster), ("port", port)], &[]);
    h.facts.insert(INSTALL_ROOT_FACT.to_string(), format!("/srv/{id}/install/"));
    h
}

fn inventory() -> Vec<InventoryHost> {
    vec![
        host("pg-2", "main", "5433"),
        host("pg-1", "main", "5432"),
        host("pg-3", "main", "5434"),
        support::inventory_host("web-1", &[("role", "web")], &[]),
    ]
}

const PLAN: &str = r#"name: pg
version: "16.4"
groups:
  - name: db
    select: { role: pg }
    strategy:
      type: cluster
      by: cluster
      leader:
        exec: { command: is-primary, args: ["{{host}}"] }
        follower_when: { exit_code: 1 }
      switchover:
        - name: promote
          exec:
            command: switchover
            args: ["--to", "{{cluster.target}}:{{cluster.target.label.port}}", "--upgraded", "{{cluster.upgraded}}"]
    steps:
      - name: upgrade
        exec:
          command: "{{current.pg}}/bin/upgrade"
          args: ["{{cluster.name}}", "{{cluster.members}}", "{{cluster.others}}", "{{cluster.size}}",
                 "{{cluster.member.pg-1.label.port}}", "{{install_root}}"]
"#;

fn expand_ok(src: &str) -> RolloutSpec {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    expand(&plan, &inventory()).unwrap_or_else(|e| panic!("expand failed: {e}"))
}

fn err(src: &str, inventory: &[InventoryHost]) -> PlanError {
    match parse_plan(FILE, src).and_then(|p| expand(&p, inventory)) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

fn exec_of(step: &StepSpec) -> (&str, Vec<&str>) {
    match &step.kind {
        StepKind::Exec(e) => (e.command.as_str(), e.args.iter().map(String::as_str).collect()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn static_cluster_values_and_paths_are_filled_in_per_host() {
    let spec = expand_ok(PLAN);
    let pg2 = spec.hosts.iter().find(|h| h.host == "pg-2").unwrap();
    let (command, args) = exec_of(&pg2.steps[0]);
    assert_eq!(command, "/srv/pg-2/install/pg/current/bin/upgrade");
    assert_eq!(args, ["main", "pg-1,pg-2,pg-3", "pg-1,pg-3", "3", "5432", "/srv/pg-2/install/"]);
}

#[test]
fn run_time_cluster_values_are_kept_for_the_engine_with_every_label() {
    let spec = expand_ok(PLAN);
    let pg1 = spec.hosts.iter().find(|h| h.host == "pg-1").unwrap();
    let (_, args) = exec_of(&pg1.switchover[0]);
    assert_eq!(
        args,
        ["--to", "{{cluster.target}}:{{cluster.target.label.port}}", "--upgraded", "{{cluster.upgraded}}"]
    );
    // The engine reads the target's labels from the spec.
    let main = &spec.groups[0].cluster().unwrap().clusters[0];
    assert_eq!(main.name, "main");
    assert_eq!(main.labels.len(), main.hosts.len());
    assert_eq!(main.labels[0].get("port").map(String::as_str), Some("5432"));
}

#[test]
fn cluster_values_outside_a_cluster_group_are_refused() {
    let src = r#"name: web
version: "2"
groups:
  - name: web
    select: { role: web }
    steps:
      - exec: { command: "echo", args: ["{{cluster.members}}"] }
"#;
    let e = err(src, &inventory());
    support::check_error(&e, FILE, 7, "groups[0].steps[0].exec.args[0]", "only known in a group with type: cluster");
}

#[test]
fn a_target_label_some_member_lacks_is_refused_naming_it() {
    let mut inv = inventory();
    inv.iter_mut().find(|h| h.id == "pg-3").unwrap().labels.remove("port");
    let e = err(PLAN, &inv);
    assert!(e.message.contains("member pg-3 of cluster main has no label 'port'"), "{e}");
    assert!(e.field.starts_with("groups[0].strategy.switchover[0]"), "{e}");
}

#[test]
fn unknown_members_unknown_forms_and_missing_install_roots_are_refused() {
    let e = err(&PLAN.replace("member.pg-1.label", "member.pg-9.label"), &inventory());
    assert!(e.message.contains("pg-9 is not a member of cluster main"), "{e}");
    let e = err(&PLAN.replace("{{cluster.size}}", "{{cluster.leader}}"), &inventory());
    assert!(e.message.contains("unknown template variable '{{cluster.leader}}'"), "{e}");
    let mut inv = inventory();
    inv.iter_mut().find(|h| h.id == "pg-3").unwrap().facts.clear();
    let e = err(PLAN, &inv);
    assert!(e.message.contains("host pg-3 does not report its install root"), "{e}");
    let e = err(&PLAN.replace("{{current.pg}}", "{{current.../etc}}"), &inventory());
    assert!(e.message.contains("{{current.../etc}}"), "{e}");
}

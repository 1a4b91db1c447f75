//! Host facts in plans: `{{fact.NAME}}` templates, and catalog conditions on
//! facts (`when: { facts: ... }`) through plan expansion.

mod support;

use std::collections::BTreeMap;

use convoy_common::catalog::parse_catalog;
use convoy_common::model::{InventoryHost, StepKind};
use convoy_common::plan::{expand, parse_plan, parse_plan_with_catalogs};
use support::check_error;

fn host(id: &str, facts: &[(&str, &str)]) -> InventoryHost {
    InventoryHost {
        id: id.into(),
        labels: [("role".to_string(), "app".to_string())].into(),
        installed: [("app".to_string(), "1.0".to_string())].into(),
        facts: facts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

const PLAN: &str = r#"name: facts
version: "2.0"
groups:
  - name: app
    select: { role: app }
    steps:
      - name: install
        exec: { command: "install-{{ fact.os }}", args: ["--arch={{fact.arch}}"] }
"#;

#[test]
fn fact_templates_are_filled_per_host() {
    let plan = parse_plan("plan.yaml", PLAN).unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(
        &plan,
        &[
            host("a-1", &[("os", "rocky8"), ("arch", "x86_64")]),
            host("a-2", &[("os", "debian12"), ("arch", "aarch64")]),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let exec = |i: usize| match &spec.hosts[i].steps[0].kind {
        StepKind::Exec(e) => (e.command.clone(), e.args.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(exec(0), ("install-rocky8".to_string(), vec!["--arch=x86_64".to_string()]));
    assert_eq!(exec(1), ("install-debian12".to_string(), vec!["--arch=aarch64".to_string()]));
}

#[test]
fn a_missing_fact_names_the_host_and_the_field() {
    let plan = parse_plan("plan.yaml", PLAN).unwrap_or_else(|e| panic!("{e}"));
    let e = expand(&plan, &[host("a-1", &[("os", "rocky8"), ("arch", "x86_64")]), host("a-2", &[("os", "rocky8")])])
        .unwrap_err();
    check_error(&e, "plan.yaml", 8, "groups[0].steps[0].exec.args[0]", "host a-2 has no fact 'arch' (group 'app')");
}

#[test]
fn fact_is_a_known_template_variable() {
    let e = parse_plan("plan.yaml", &PLAN.replace("fact.arch", "fact.")).unwrap_err();
    check_error(&e, "plan.yaml", 8, "groups[0].steps[0].exec.args[0]", "unknown template variable '{{fact.}}'");
    assert!(e.message.contains("fact.NAME"), "{e}");
}

#[test]
fn catalog_conditions_read_the_inventory_facts() {
    let catalog = r#"product: app
component: app
releases:
  - version: "1.0"
  - version: "2.0"
    steps:
      upgrade:
        - { name: el8, when: { facts: { os: [rhel8, rocky8] } }, exec: { command: dnf-update } }
        - { name: deb, when: { facts: { os: debian12 } }, exec: { command: apt-upgrade } }
        - { name: any, exec: { command: "echo {{fact.os}}" } }
"#;
    let c = parse_catalog("app.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    let plan =
        "name: p\nversion: \"2.0\"\ngroups:\n  - name: app\n    select: { role: app }\n    release: { catalog: app }\n";
    let plan = parse_plan_with_catalogs("plan.yaml", plan, &BTreeMap::from([("app".to_string(), c)]))
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(
        &plan,
        &[host("r", &[("os", "rocky8")]), host("d", &[("os", "debian12")]), host("x", &[("os", "sles")])],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names = |id: &str| -> Vec<String> {
        spec.hosts.iter().find(|h| h.host == id).unwrap().steps.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names("r"), ["2.0/el8", "2.0/any"]);
    assert_eq!(names("d"), ["2.0/deb", "2.0/any"]);
    assert_eq!(names("x"), ["2.0/any"]);
    let StepKind::Exec(e) = &spec.hosts.iter().find(|h| h.host == "x").unwrap().steps[0].kind else { panic!() };
    assert_eq!(e.command, "echo sles");
}

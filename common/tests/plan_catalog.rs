//! Plans using release catalogs: each host of a `release: { catalog: ... }`
//! group runs its own multi-hop path (the Canopsis example catalog), then the
//! group's steps; errors for hosts without a path and unknown catalogs.

use std::collections::BTreeMap;

use convoy_common::catalog::{Catalog, parse_catalog};
use convoy_common::model::{InventoryHost, RolloutSpec, StepKind};
use convoy_common::plan::{PlanError, expand, parse_plan, parse_plan_with_catalogs, summary_json};

const CANOPSIS: &str = include_str!("../../examples/catalogs/canopsis.yaml");

const PLAN: &str = r#"name: canopsis-upgrade
version: 3.40.0
component: canopsis
groups:
  - name: canopsis
    select: { role: canopsis }
    release: { catalog: canopsis }
    checks:
      - name: backlog-drained
        file: { path: "{{label.service_root}}/canopsis/backlog", contains: "0" }
"#;

fn catalogs() -> BTreeMap<String, Catalog> {
    let c = parse_catalog("canopsis.yaml", CANOPSIS).unwrap_or_else(|e| panic!("{e}"));
    BTreeMap::from([("canopsis".to_string(), c)])
}

fn host(id: &str, edition: &str, installed: &[(&str, &str)]) -> InventoryHost {
    let labels = [("role", "canopsis"), ("edition", edition), ("service_root", "/srv/demo")];
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    InventoryHost { id: id.to_string(), labels: map(&labels), installed: map(installed), facts: Default::default() }
}

fn expand_with(plan: &str, inventory: &[InventoryHost]) -> Result<RolloutSpec, PlanError> {
    let plan = parse_plan_with_catalogs("plan.yaml", plan, &catalogs()).unwrap_or_else(|e| panic!("{e}"));
    expand(&plan, inventory)
}

fn step_names(spec: &RolloutSpec, id: &str) -> Vec<String> {
    let h = spec.hosts.iter().find(|h| h.host == id).unwrap_or_else(|| panic!("no host {id}"));
    h.steps.iter().map(|s| s.name.clone()).collect()
}

fn inventory() -> Vec<InventoryHost> {
    vec![
        host("c1", "community", &[("canopsis", "3.38.0")]),
        host("p1", "pro", &[("canopsis", "3.39.1"), ("canopsis-remediation", "1.0")]),
        host("p2", "pro", &[("canopsis", "3.38.0"), ("canopsis-remediation", "1.0")]),
        host("p3", "pro", &[("canopsis", "3.38.0")]),
    ]
}

#[test]
fn each_host_runs_its_own_path_then_the_group_steps() {
    let spec = expand_with(PLAN, &inventory()).unwrap_or_else(|e| panic!("{e}"));
    let hop = |v: &str, edition: &str, remediation: bool| -> Vec<String> {
        let mut s = Vec::new();
        if v == "3.39.0" {
            s.push("review-canopsis-toml".to_string());
        }
        if v == "3.40.0" && edition == "pro" {
            s.push("move-webhook-setting".to_string());
        }
        s.push("package-update".to_string());
        s.push(format!("reconfigure-{edition}"));
        if v == "3.39.1" && remediation {
            s.push("migrate-remediation".to_string());
        }
        if v == "3.40.0" {
            s.push("daemon-reload".to_string());
        }
        s.push(format!("restart-engines-{edition}"));
        s.push("engines-up".to_string());
        s.into_iter().map(|n| format!("{v}/{n}")).collect()
    };
    let path = |from: &[&str], edition: &str, remediation: bool| -> Vec<String> {
        let mut s: Vec<String> = from.iter().flat_map(|v| hop(v, edition, remediation)).collect();
        s.push("backlog-drained".to_string());
        s
    };
    assert_eq!(step_names(&spec, "c1"), path(&["3.39.0", "3.39.1", "3.40.0"], "community", false));
    assert_eq!(step_names(&spec, "p1"), path(&["3.40.0"], "pro", true));
    assert_eq!(step_names(&spec, "p2"), path(&["3.39.0", "3.39.1", "3.40.0"], "pro", true));
    assert_eq!(step_names(&spec, "p3"), path(&["3.39.0", "3.39.1", "3.40.0"], "pro", false));

    // `{{version}}` is the hop's version; other templates are the host's.
    let c1 = spec.hosts.iter().find(|h| h.host == "c1").unwrap();
    let update = c1.steps.iter().find(|s| s.name == "3.39.1/package-update").unwrap();
    let StepKind::Exec(e) = &update.kind else { panic!("{update:?}") };
    assert!(e.args[1].contains("-> 3.39.1"), "{:?}", e.args);
    assert_eq!(e.env.get("R").map(String::as_str), Some("/srv/demo/canopsis"));
    assert_eq!(update.timeout.as_secs(), 600);
    let gate = c1.steps.iter().find(|s| s.name == "3.39.0/engines-up").unwrap();
    assert_eq!(gate.kind.kind_name(), "file_check");

    // Undo and captures stay aligned with the steps (exec steps: no undo).
    for h in &spec.hosts {
        assert!(h.undo.is_empty() || h.undo.len() == h.steps.len());
        assert!(h.captures.is_empty() || h.captures.len() == h.steps.len());
    }

    let json = summary_json(&spec);
    let hs = &json["groups"][0]["host_steps"];
    assert_eq!(hs["p1"].as_array().map(Vec::len), Some(step_names(&spec, "p1").len()));
    assert_eq!(hs["c1"][0], "3.39.0/review-canopsis-toml");
}

#[test]
fn archive_catalog_steps_get_an_implicit_undo() {
    let catalog = r#"product: demo
component: demo
releases:
  - version: "1.0"
  - version: "2.0"
    steps:
      pre:
        - name: note
          exec: { command: "true" }
      upgrade:
        - name: install
          archive:
            component: demo
            version: "{{version}}"
            source: "https://example.invalid/demo-{{version}}.tar.gz"
            sha256: "0000000000000000000000000000000000000000000000000000000000000000"
"#;
    let c = parse_catalog("demo.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    let cats = BTreeMap::from([("demo".to_string(), c)]);
    let plan = "name: p\nversion: \"2.0\"\ngroups:\n  - name: g\n    select: { role: x }\n    release: { catalog: demo }\n    steps:\n      - name: own\n        exec: { command: \"true\" }\n";
    let plan = parse_plan_with_catalogs("plan.yaml", plan, &cats).unwrap_or_else(|e| panic!("{e}"));
    let mut h = host("h1", "community", &[("demo", "1.0")]);
    h.labels.insert("role".into(), "x".into());
    let spec = expand(&plan, &[h]).unwrap_or_else(|e| panic!("{e}"));
    let hp = &spec.hosts[0];
    let names: Vec<&str> = hp.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["2.0/note", "2.0/install", "own"]);
    assert_eq!(hp.undo.len(), 3);
    assert!(hp.undo[0].is_none() && hp.undo[2].is_none());
    let undo = hp.undo[1].as_ref().unwrap();
    assert_eq!(undo.name, "rollback-2.0/install");
    let StepKind::ArchiveRollback(r) = &undo.kind else { panic!("{undo:?}") };
    assert_eq!(r.to_version.as_deref(), Some("1.0"));
}

#[test]
fn a_host_below_the_oldest_release_has_no_path() {
    let mut inv = inventory();
    inv.push(host("old-1", "community", &[("canopsis", "3.37.0")]));
    let e = expand_with(PLAN, &inv).unwrap_err();
    assert_eq!(e.file, "plan.yaml");
    assert_eq!(e.field, "groups[0].release");
    assert_eq!(e.line, Some(7));
    assert!(e.message.contains("host old-1"), "{e}");
    assert!(e.message.contains("3.37.0") && e.message.contains("3.40.0"), "{e}");
    assert!(e.message.contains("below the oldest release 3.38.0"), "{e}");
}

#[test]
fn a_host_without_the_component_has_no_path() {
    let mut inv = inventory();
    inv.push(host("bare", "pro", &[]));
    let e = expand_with(PLAN, &inv).unwrap_err();
    assert!(e.message.contains("host bare") && e.message.contains("not installed"), "{e}");
}

#[test]
fn an_unknown_catalog_is_an_error_with_its_line() {
    let plan = PLAN.replace("catalog: canopsis", "catalog: canopsys");
    let e = parse_plan_with_catalogs("plan.yaml", &plan, &catalogs()).unwrap_err();
    assert_eq!(e.field, "groups[0].release.catalog");
    assert_eq!(e.line, Some(7));
    assert!(e.message.contains("unknown catalog 'canopsys'") && e.message.contains("canopsis"), "{e}");
    // Without catalogs at all (plain parse_plan), too.
    let e = parse_plan("plan.yaml", PLAN).unwrap_err();
    assert_eq!((e.field.as_str(), e.line), ("groups[0].release.catalog", Some(7)));
}

#[test]
fn the_target_must_be_a_release_of_the_catalog() {
    let plan = PLAN.replace("version: 3.40.0", "version: 3.41.0");
    let e = parse_plan_with_catalogs("plan.yaml", &plan, &catalogs()).unwrap_err();
    assert_eq!(e.field, "groups[0].release.catalog");
    assert!(e.message.contains("3.41.0 is not a release"), "{e}");
}

#[test]
fn a_bad_catalog_step_is_reported_in_the_catalog() {
    let catalog = "product: demo\ncomponent: demo\nreleases:\n  - version: \"1.0\"\n  - version: \"2.0\"\n    steps:\n      upgrade:\n        - name: install\n          exec: { command: \"true\" }\n          timeout: soon\n";
    let c = parse_catalog("demo.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    let cats = BTreeMap::from([("demo".to_string(), c)]);
    let plan =
        "name: p\nversion: \"2.0\"\ngroups:\n  - name: g\n    select: { role: x }\n    release: { catalog: demo }\n";
    let e = parse_plan_with_catalogs("plan.yaml", plan, &cats).unwrap_err();
    assert_eq!(e.file, "demo.yaml");
    assert_eq!(e.field, "releases[1].steps.upgrade[0].timeout");
    assert_eq!(e.line, Some(10));
}

//! What `convoy plan` shows: each host's release path and the steps of every
//! hop, hosts with the same path and steps grouped, and estimated durations
//! from declared (`estimate:`), measured or default step times, following
//! the strategy and the DAG.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_common::catalog::parse_catalog;
use convoy_common::estimate::{Measured, MeasuredStep, summary_json};
use convoy_common::model::InventoryHost;
use convoy_common::plan::{expand_detailed, parse_plan, parse_plan_with_catalogs};
use serde_json::{Value, json};
use support::check_error;

fn host(id: &str, role: &str, version: &str) -> InventoryHost {
    InventoryHost {
        id: id.into(),
        labels: [("role".to_string(), role.to_string())].into(),
        installed: [("app".to_string(), version.to_string())].into(),
        ..Default::default()
    }
}

const CATALOG: &str = r#"product: app
component: app
releases:
  - version: "1.0"
  - version: "1.1"
    skippable: true
    steps:
      upgrade:
        - { name: install, estimate: 2m, exec: { command: install, args: ["{{version}}"] } }
  - version: "2.0"
    steps:
      pre:
        - { name: dump, exec: { command: dump } }
      upgrade:
        - { name: install, estimate: 2m, exec: { command: install, args: ["{{version}}"] } }
      checks:
        - { name: up, estimate: 30s, tcp: { address: "127.0.0.1:80" } }
"#;

/// db (catalog, 1 at a time, 10s soak) -> [api (2 at a time) | cache] -> web.
const PLAN: &str = r#"name: est
version: "2.0"
groups:
  - name: db
    select: { role: db }
    release: { catalog: app }
    strategy: { max_parallel: 1, soak: 10s }
    steps:
      - { name: vacuum, exec: { command: vacuum } }
  - name: api
    select: { role: api }
    after: [db]
    strategy: { max_parallel: 2 }
    steps:
      - { name: deploy, estimate: 1m, exec: { command: deploy } }
      - { name: restart, exec: { command: restart } }
    checks:
      - { name: health, estimate: 15s, http: { url: "http://127.0.0.1/health" } }
  - name: cache
    select: { role: cache }
    after: [db]
    steps:
      - { name: flush, estimate: 5s, exec: { command: flush } }
  - name: web
    select: { role: web }
    after: [api, cache]
    steps:
      - { name: deploy, estimate: 20s, exec: { command: deploy } }
"#;

fn inventory(apis: usize) -> Vec<InventoryHost> {
    let mut v = vec![host("db-1", "db", "1.0"), host("db-2", "db", "1.0"), host("db-3", "db", "1.1")];
    v.extend((1..=apis).map(|i| host(&format!("api-{i:03}"), "api", "1.0")));
    v.push(host("cache-1", "cache", "1.0"));
    v.push(host("web-1", "web", "1.0"));
    v
}

fn summary(apis: usize, measured: &Measured) -> Value {
    let c = parse_catalog("app.yaml", CATALOG).unwrap_or_else(|e| panic!("{e}"));
    let plan = parse_plan_with_catalogs("plan.yaml", PLAN, &BTreeMap::from([("app".to_string(), c)]))
        .unwrap_or_else(|e| panic!("{e}"));
    let x = expand_detailed(&plan, &inventory(apis)).unwrap_or_else(|e| panic!("{e}"));
    summary_json(&x, measured)
}

fn group<'v>(s: &'v Value, name: &str) -> &'v Value {
    s["groups"].as_array().unwrap().iter().find(|g| g["name"] == name).unwrap_or_else(|| panic!("no group {name}"))
}

fn names(steps: &Value) -> Vec<&str> {
    steps.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect()
}

#[test]
fn hosts_with_the_same_path_share_one_entry_with_each_hops_steps() {
    let s = summary(2, &Measured::new());
    let paths = group(&s, "db")["paths"].as_array().unwrap().clone();
    assert_eq!(paths.len(), 2, "{paths:#?}");
    // db-1 and db-2 start at 1.0: 1.1 is skippable, so one hop to 2.0.
    assert_eq!(paths[0]["hosts"], json!(["db-1", "db-2"]));
    assert_eq!(paths[0]["path"], json!(["1.0", "2.0"]));
    let hop = &paths[0]["hops"][0];
    assert_eq!((hop["from"].as_str(), hop["to"].as_str()), (Some("1.0"), Some("2.0")));
    assert_eq!(hop["skipped"], json!(["1.1"]));
    assert_eq!(names(&hop["steps"]), ["2.0/dump", "2.0/install", "2.0/up"]);
    assert_eq!(names(&paths[0]["steps"]), ["vacuum"], "the group's own steps come after the path");
    assert_eq!(paths[1]["hosts"], json!(["db-3"]));
    assert_eq!(paths[1]["path"], json!(["1.1", "2.0"]));
    assert_eq!(paths[1]["hops"][0]["skipped"], json!([]));

    // Groups without a catalog: no path, the steps.
    let api = &group(&s, "api")["paths"][0];
    assert_eq!(api["path"], Value::Null);
    assert_eq!(names(&api["steps"]), ["deploy", "restart", "health"]);
}

#[test]
fn two_hundred_identical_hosts_are_one_entry() {
    let s = summary(200, &Measured::new());
    let paths = group(&s, "api")["paths"].as_array().unwrap().clone();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0]["hosts"].as_array().map(Vec::len), Some(200));
    assert_eq!(paths[0]["hosts"][199], "api-200");
}

#[test]
fn step_estimates_are_declared_measured_or_default() {
    let measured: Measured =
        [(("api".to_string(), "restart".to_string()), MeasuredStep { median: Duration::from_secs(14), runs: 12 })]
            .into();
    let s = summary(2, &measured);
    let api = &group(&s, "api")["paths"][0]["steps"];
    assert_eq!(api[0]["source"], "declared");
    assert_eq!(api[0]["estimate_ms"], 60_000);
    assert_eq!(api[0]["estimate"], "1m");
    assert_eq!(api[1]["source"], "measured");
    assert_eq!(api[1]["runs"], 12);
    assert_eq!(api[1]["estimate_ms"], 14_000);
    assert_eq!(api[2]["source"], "declared", "a check's estimate");
    let db = &group(&s, "db")["paths"][0]["hops"][0]["steps"];
    assert_eq!(db[0]["source"], "default");
    assert_eq!(db[0]["estimate_ms"], 10_000, "exec's default");
    assert_eq!(db[1]["source"], "declared", "a catalog step's estimate");
    assert_eq!(db[1]["estimate_ms"], 120_000);
    // Measured times are per group: web's `deploy` is not api's.
    let measured: Measured =
        [(("api".to_string(), "deploy".to_string()), MeasuredStep { median: Duration::from_secs(1), runs: 3 })].into();
    let s = summary(2, &measured);
    assert_eq!(group(&s, "web")["paths"][0]["steps"][0]["source"], "declared");
    assert_eq!(group(&s, "api")["paths"][0]["steps"][0]["source"], "declared", "declared beats measured");
    // Each group's step once: db 2 + 2, api 2 + 1, cache 1, web 1.
    assert_eq!(s["estimate"]["steps"], json!({ "declared": 6, "measured": 0, "default": 3 }));
}

#[test]
fn the_rollout_estimate_follows_strategy_and_dag() {
    let s = summary(4, &Measured::new());
    // db: per host 1.0 -> 2.0: dump 10s + install 2m + up 30s + vacuum 10s = 2m 50s,
    // db-3 (from 1.1) the same; 3 hosts one at a time, each soaking 10s: 3 x 3m.
    assert_eq!(group(&s, "db")["paths"][0]["estimate_ms"], 170_000);
    let db = &group(&s, "db")["estimate"];
    assert_eq!(db["duration_ms"], 540_000);
    assert_eq!(db["start_ms"], 0);
    // api: 1m + 10s + 15s = 85s per host, 4 hosts 2 at a time: 170s, after db.
    let api = &group(&s, "api")["estimate"];
    assert_eq!((api["start_ms"].as_u64(), api["duration_ms"].as_u64()), (Some(540_000), Some(170_000)));
    // cache runs beside api (5s); web waits for the longer branch.
    assert_eq!(group(&s, "cache")["estimate"]["finish_ms"], 545_000);
    let web = &group(&s, "web")["estimate"];
    assert_eq!(web["start_ms"], 710_000);
    assert_eq!(s["estimate"]["total_ms"], 730_000);
    assert_eq!(s["estimate"]["total"], "12m 10s");
    assert_eq!(s["estimate"]["manual_approvals"], json!([]));
    // More api hosts, longer rollout.
    assert_eq!(summary(6, &Measured::new())["estimate"]["total_ms"], 730_000 + 85_000);
}

#[test]
fn a_bad_estimate_is_an_error_with_its_line() {
    let plan = "name: p\nversion: \"2\"\ngroups:\n  - name: g\n    select: { role: x }\n    steps:\n      - name: s\n        exec: { command: x }\n        estimate: soon\n";
    let e = parse_plan("plan.yaml", plan).unwrap_err();
    check_error(&e, "plan.yaml", 9, "groups[0].steps[0].estimate", "soon");
    let e = parse_plan("plan.yaml", &plan.replace("soon", "0s")).unwrap_err();
    check_error(&e, "plan.yaml", 9, "groups[0].steps[0].estimate", "greater than zero");
    let catalog = CATALOG.replace("estimate: 30s", "estimate: soon");
    let c = parse_catalog("app.yaml", &catalog).unwrap_or_else(|e| panic!("{e}"));
    let e = parse_plan_with_catalogs("plan.yaml", PLAN, &BTreeMap::from([("app".to_string(), c)])).unwrap_err();
    check_error(&e, "app.yaml", 17, "releases[2].steps.checks[0].estimate", "soon");
}

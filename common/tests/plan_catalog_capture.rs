//! Captured values in release catalogs: a catalog step captures, later steps
//! of the host's path (and the group's own steps) use `{{captured.NAME}}`;
//! a use before its capture is refused with the catalog's file and line, at
//! parse time in catalog order and at expansion per host (a `when:` or the
//! host's starting version can leave the capturing step out).

mod support;

use std::collections::BTreeMap;

use convoy_common::catalog::{Catalog, parse_catalog};
use convoy_common::engine::{Action, Engine, Event};
use convoy_common::model::{InventoryHost, StepKind, StepOutcome, UnixMillis};
use convoy_common::plan::{PlanError, expand, parse_plan_with_catalogs};
use support::check_error;

/// Replicas recorded before the 2.0 upgrade, restored after 3.0's.
const CATALOG: &str = r#"product: app
component: app
releases:
  - version: "1.0"
  - version: "2.0"
    steps:
      pre:
        - name: record
          exec: { command: kubectl, args: [get, deploy/app, -o, json] }
          capture: { name: replicas, json: spec.replicas }
        - name: scale-down
          exec: { command: kubectl, args: [scale, deploy/app, "--replicas=0"] }
      upgrade:
        - name: install
          exec: { command: install-app, args: ["{{version}}"] }
  - version: "3.0"
    steps:
      upgrade:
        - name: install
          exec: { command: install-app, args: ["{{version}}"] }
      post:
        - name: scale-up
          exec: { command: kubectl, args: [scale, deploy/app, "--replicas={{captured.replicas}}"] }
          rollback: { command: echo, args: ["was {{captured.replicas}}"] }
"#;

const PLAN: &str = r#"name: app-upgrade
version: "3.0"
component: app
groups:
  - name: app
    select: { role: app }
    release: { catalog: app }
    steps:
      - name: report
        exec: { command: echo, args: ["restored {{captured.replicas}}"] }
"#;

fn catalogs(text: &str) -> BTreeMap<String, Catalog> {
    let c = parse_catalog("app-catalog.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    BTreeMap::from([("app".to_string(), c)])
}

fn host(id: &str, version: &str, labels: &[(&str, &str)]) -> InventoryHost {
    let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("role".into(), "app".into());
    InventoryHost {
        id: id.into(),
        labels: l,
        installed: [("app".to_string(), version.to_string())].into(),
        ..Default::default()
    }
}

fn parse(plan: &str, catalog: &str) -> Result<convoy_common::plan::Plan, PlanError> {
    parse_plan_with_catalogs("plan.yaml", plan, &catalogs(catalog))
}

#[test]
fn a_later_hop_and_the_group_use_what_an_earlier_hop_captured() {
    let plan = parse(PLAN, CATALOG).unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(&plan, &[host("a-1", "1.0", &[])]).unwrap_or_else(|e| panic!("{e}"));
    let h = &spec.hosts[0];
    let names: Vec<&str> = h.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["2.0/record", "2.0/scale-down", "2.0/install", "3.0/install", "3.0/scale-up", "report"]);
    // The capture is attached to its step, aligned with the steps.
    assert_eq!(h.captures.len(), h.steps.len());
    assert_eq!(h.capture(0).map(|c| c.name.as_str()), Some("replicas"));
    assert!(h.captures[1..].iter().all(Option::is_none));
    let StepKind::Exec(e) = &h.steps[4].kind else { panic!() };
    assert_eq!(e.args[2], "--replicas={{captured.replicas}}", "left for the engine");

    // The engine fills it from what the 2.0 hop printed.
    let mut engine = Engine::new("r1", spec.clone());
    let mut queue = engine.handle(UnixMillis(1), Event::Started);
    let mut sent = Vec::new();
    while let Some(a) = queue.pop() {
        if let Action::Dispatch { execution_id, step, .. } = a {
            let stdout = if step.name == "2.0/record" { r#"{"spec": {"replicas": 3}}"# } else { "" };
            sent.push(step);
            let outcome = StepOutcome { stdout_tail: stdout.into(), ..StepOutcome::ok() };
            queue.extend(engine.handle(UnixMillis(2), Event::StepFinished { execution_id, outcome }));
        }
    }
    let args = |name: &str| match &sent.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}")).kind {
        StepKind::Exec(e) => e.args.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(args("3.0/scale-up")[2], "--replicas=3");
    assert_eq!(args("report")[0], "restored 3");
}

#[test]
fn a_use_before_any_capture_in_catalog_order_names_the_catalog_line() {
    // 2.0 uses what only 3.0 captures.
    let catalog = CATALOG.replace("--replicas=0\"]", "--replicas={{captured.old}}\"]").replace(
        "args: [\"{{version}}\"] }\n      post:",
        "args: [\"{{version}}\"] }\n          capture: { name: old, regex: '\\d+' }\n      post:",
    );
    let e = parse(PLAN, &catalog).unwrap_err();
    check_error(
        &e,
        "app-catalog.yaml",
        12,
        "releases[1].steps.pre[1].exec.args[2]",
        "'{{captured.old}}' is used before it is captured",
    );
    assert!(e.message.contains("catalog 'app'"), "{e}");
}

#[test]
fn a_capture_left_out_by_a_condition_is_refused_for_that_host() {
    let catalog = CATALOG.replace(
        "capture: { name: replicas, json: spec.replicas }",
        "capture: { name: replicas, json: spec.replicas }\n          when: { edition: pro }",
    );
    let plan = parse(PLAN, &catalog).unwrap_or_else(|e| panic!("the plan itself is fine: {e}"));
    // A pro host records the value; a community host never does.
    expand(&plan, &[host("p-1", "1.0", &[("edition", "pro")])]).unwrap_or_else(|e| panic!("{e}"));
    let e =
        expand(&plan, &[host("p-1", "1.0", &[("edition", "pro")]), host("c-1", "1.0", &[("edition", "community")])])
            .unwrap_err();
    check_error(
        &e,
        "app-catalog.yaml",
        24,
        "releases[2].steps.post[0].exec.args[2]",
        "used before it is captured on host c-1",
    );
    assert!(e.message.contains("group 'app'"), "{e}");
}

#[test]
fn a_host_starting_above_the_capturing_release_is_refused() {
    let plan = parse(PLAN, CATALOG).unwrap_or_else(|e| panic!("{e}"));
    let e = expand(&plan, &[host("a-1", "1.0", &[]), host("a-2", "2.0", &[])]).unwrap_err();
    check_error(&e, "app-catalog.yaml", 23, "releases[2].steps.post[0].exec.args[2]", "on host a-2");
}

#[test]
fn a_hook_before_the_group_may_capture_what_catalog_steps_use() {
    let catalog = CATALOG
        .replace("capture: { name: replicas, json: spec.replicas }", "capture: { name: count, json: spec.replicas }");
    let plan = format!(
        "{}hooks:\n  before:\n    on: ops-1\n    steps:\n      - name: record\n        exec: {{ command: get }}\n        capture: {{ name: replicas, regex: '\\d+' }}\n",
        PLAN
    );
    let parsed = parse(&plan, &catalog).unwrap_or_else(|e| panic!("{e}"));
    let mut ops = host("ops-1", "1.0", &[]);
    ops.labels.insert("role".into(), "ops".into());
    // Even a host starting at 2.0 (no `record` on its path) has the hook's value.
    expand(&parsed, &[host("a-2", "2.0", &[]), ops]).unwrap_or_else(|e| panic!("{e}"));
    // Without the hook the same catalog use is refused at parse time.
    let e = parse(PLAN, &catalog).unwrap_err();
    check_error(&e, "app-catalog.yaml", 23, "releases[2].steps.post[0].exec.args[2]", "captured.replicas");
}

#[test]
fn capture_names_may_not_clash_with_hooks_or_the_group() {
    let hooked = format!(
        "{}hooks:\n  before:\n    on: ops-1\n    steps:\n      - name: record\n        exec: {{ command: get }}\n        capture: {{ name: replicas, regex: '\\d+' }}\n",
        PLAN
    );
    let e = parse(&hooked, CATALOG).unwrap_err();
    check_error(
        &e,
        "app-catalog.yaml",
        10,
        "releases[1].steps.pre[0].capture.name",
        "also captured by the hook step hooks.before.steps[0]",
    );

    let twice = PLAN.replace(
        "      - name: report\n",
        "      - name: again\n        exec: { command: get }\n        capture: { name: replicas, regex: '\\d+' }\n      - name: report\n",
    );
    let e = parse(&twice, CATALOG).unwrap_err();
    check_error(
        &e,
        "plan.yaml",
        11,
        "groups[0].steps[0].capture.name",
        "already captured by the release path of this group (app-catalog.yaml:10",
    );
}

#[test]
fn several_releases_may_capture_one_name() {
    // Each hop records the replicas again; the latest value wins in the engine.
    let catalog = CATALOG.replace(
        "      upgrade:\n        - name: install\n          exec: { command: install-app, args: [\"{{version}}\"] }\n      post:",
        "      pre:\n        - name: record\n          exec: { command: get }\n          capture: { name: replicas, regex: '\\d+' }\n      upgrade:\n        - name: install\n          exec: { command: install-app, args: [\"{{version}}\"] }\n      post:",
    );
    let plan = parse(PLAN, &catalog).unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(&plan, &[host("a-1", "1.0", &[]), host("a-2", "2.0", &[])]).unwrap_or_else(|e| panic!("{e}"));
    let a2 = spec.hosts.iter().find(|h| h.host == "a-2").unwrap();
    assert_eq!(a2.steps[0].name, "3.0/record");
    assert_eq!(a2.capture(0).map(|c| c.name.as_str()), Some("replicas"));
}

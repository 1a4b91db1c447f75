//! `installs:` — what a step leaves installed when its driver cannot say
//! (an `exec` of a product's own upgrade tool) — and the release each
//! catalog hop leaves a host on: both end up as the host's version in the
//! engine's view, which is what the final report shows.

mod support;

use std::collections::BTreeMap;

use convoy_common::catalog::parse_catalog;
use convoy_common::engine::{Engine, Event};
use convoy_common::model::{InventoryHost, RolloutSpec, StepOutcome, UnixMillis};
use convoy_common::plan::{expand, parse_plan, parse_plan_with_catalogs};
use support::check_error;

const CANOPSIS: &str = include_str!("../../examples/catalogs/canopsis.yaml");

fn host(id: &str, installed: &[(&str, &str)]) -> InventoryHost {
    support::inventory_host(id, &[("role", "app"), ("edition", "community"), ("service_root", "/srv")], installed)
}

const PLAN: &str = r#"name: tool-upgrade
version: "6.0.0"
component: monq
groups:
  - name: app
    select: { role: app }
    steps:
      - name: release-update
        exec: { command: monqctl, args: [release, update, "{{version}}"] }
        installs: "{{version}}"
      - name: smoke
        exec: { command: "true" }
"#;

/// Run every host of `spec` to the end with plain successes (no driver
/// reports a version) and return each host's version in the view.
fn run_to_end(spec: RolloutSpec) -> BTreeMap<String, Option<String>> {
    let mut engine = Engine::new("r1", spec);
    let mut now = 1_000;
    let mut pending = Vec::new();
    let absorb = |actions: Vec<convoy_common::engine::Action>,
                  pending: &mut Vec<convoy_common::engine::ExecutionId>| {
        for a in actions {
            if let convoy_common::engine::Action::Dispatch { execution_id, .. } = a {
                pending.push(execution_id);
            }
        }
    };
    absorb(engine.handle(UnixMillis(now), Event::Started), &mut pending);
    while let Some(id) = pending.pop() {
        now += 10;
        let actions =
            engine.handle(UnixMillis(now), Event::StepFinished { execution_id: id, outcome: StepOutcome::ok() });
        absorb(actions, &mut pending);
    }
    assert!(engine.is_finished(), "{}", engine.message());
    engine.view().hosts.into_iter().map(|h| (h.host, h.version)).collect()
}

#[test]
fn an_exec_step_declares_the_version_it_installs() {
    let plan = parse_plan("plan.yaml", PLAN).unwrap();
    let spec = expand(&plan, &[host("a-1", &[("monq", "5.2.0")])]).unwrap();
    assert_eq!(spec.hosts[0].installs(0), Some(("monq".to_string(), "6.0.0".to_string())));
    assert_eq!(spec.hosts[0].installs(1), None);
    let versions = run_to_end(spec);
    assert_eq!(versions["a-1"].as_deref(), Some("6.0.0"), "reported from the declaration");
}

#[test]
fn installs_needs_a_component_and_a_plain_template() {
    let no_component = PLAN.replace("component: monq\n", "");
    let e = parse_plan("plan.yaml", &no_component).and_then(|p| expand(&p, &[host("a-1", &[])])).unwrap_err();
    check_error(&e, "plan.yaml", 9, "groups[0].steps[0].installs", "needs the plan's `component`");

    let captured = PLAN.replace(r#"installs: "{{version}}""#, r#"installs: "{{captured.v}}""#);
    let e = parse_plan("plan.yaml", &captured).unwrap_err();
    check_error(&e, "plan.yaml", 10, "groups[0].steps[0].installs", "captured values cannot name what a step installs");

    let empty = PLAN.replace(r#"installs: "{{version}}""#, r#"installs: """#);
    let e = parse_plan("plan.yaml", &empty).unwrap_err();
    check_error(&e, "plan.yaml", 10, "groups[0].steps[0].installs", "must name a version");
}

#[test]
fn each_catalog_hop_leaves_the_host_on_its_release() {
    let plan = r#"name: canopsis-upgrade
version: 3.40.0
component: canopsis
groups:
  - name: canopsis
    select: { role: app }
    release: { catalog: canopsis }
"#;
    let catalogs = BTreeMap::from([("canopsis".to_string(), parse_catalog("canopsis.yaml", CANOPSIS).unwrap())]);
    let plan = parse_plan_with_catalogs("plan.yaml", plan, &catalogs).unwrap();
    let spec = expand(&plan, &[host("c-1", &[("canopsis", "3.38.0")])]).unwrap();
    let h = &spec.hosts[0];
    let marked: Vec<(String, String)> =
        h.steps.iter().enumerate().filter_map(|(k, s)| h.installs(k).map(|(_, v)| (s.name.clone(), v))).collect();
    // One mark per hop, on the hop's last step.
    assert_eq!(marked.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(), ["3.39.0", "3.39.1", "3.40.0"]);
    for (name, v) in &marked {
        assert!(name.starts_with(&format!("{v}/")), "{name} should be a step of hop {v}");
    }
    assert_eq!(marked.last().map(|(n, _)| n.clone()), h.steps.last().map(|s| s.name.clone()));
    assert_eq!(run_to_end(spec)["c-1"].as_deref(), Some("3.40.0"));
}

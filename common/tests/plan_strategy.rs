//! Strategies as plans write them: ramped batches (`max_parallel` as a list)
//! and `pre_checks:`, with their errors naming line and field.

mod support;

use convoy_common::host_order::HostOrder;
use convoy_common::model::{InventoryHost, RolloutSpec, StepKind, Strategy};
use convoy_common::plan::{batches, expand, parse_plan};

const FILE: &str = "plan.yaml";

fn hosts(n: usize) -> Vec<InventoryHost> {
    (0..n).map(|k| support::inventory_host(&format!("web-{k}"), &[("role", "web")], &[])).collect()
}

fn plan(strategy: &str, extra: &str) -> String {
    format!(
        "name: ramp\nversion: \"2\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n    strategy: {strategy}\n{extra}    steps:\n      - name: install\n        exec: {{ command: \"true\" }}\n"
    )
}

fn expand_ok(src: &str, n: usize) -> RolloutSpec {
    let p = parse_plan(FILE, src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    expand(&p, &hosts(n)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_max_parallel_list_ramps_the_window_and_previews_as_batches() {
    let spec = expand_ok(&plan("{ type: rolling, max_parallel: [1, 2, \"50%\"] }", ""), 10);
    let Strategy::Rolling { window, .. } = &spec.groups[0].strategy else { panic!("{:?}", spec.groups[0].strategy) };
    assert_eq!(window.stages, [1, 2, 5], "50% of 10 hosts");
    let sizes: Vec<usize> = batches(&spec, 0).iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 2, 5, 2], "each stage, then the steady window");
    // A single value is the plain window it always was.
    let spec = expand_ok(&plan("{ max_parallel: 3 }", ""), 10);
    assert_eq!(spec.groups[0].strategy, Strategy::rolling(3));
    // Sizes are clamped to the group, as a single value is.
    let spec = expand_ok(&plan("{ max_parallel: [1, 100] }", ""), 4);
    let Strategy::Rolling { window, .. } = &spec.groups[0].strategy else { panic!() };
    assert_eq!(window.stages, [1, 4]);
}

#[test]
fn order_balanced_is_a_rolling_groups_choice_and_listed_its_default() {
    let spec = expand_ok(&plan("{ max_parallel: [1, 3], order: balanced }", ""), 10);
    let Strategy::Rolling { order, .. } = &spec.groups[0].strategy else { panic!("{:?}", spec.groups[0].strategy) };
    assert_eq!(*order, HostOrder::Balanced);
    // Expansion keeps the listed order: the coordinator balances with its history.
    assert_eq!(spec.groups[0].hosts, (0..10).collect::<Vec<_>>());
    let spec = expand_ok(&plan("{ max_parallel: 3 }", ""), 10);
    assert_eq!(spec.groups[0].strategy, Strategy::rolling(3));
    // Stored specs written before `order` existed read as listed.
    let old = r#"{"rolling":{"window":{"stages":[3]}}}"#;
    assert_eq!(serde_json::from_str::<Strategy>(old).unwrap(), Strategy::rolling(3));
    assert_eq!(serde_json::to_string(&Strategy::rolling(3)).unwrap(), old, "listed is left out when stored");

    let err = |strategy: &str| parse_plan(FILE, &plan(strategy, "")).expect_err(strategy);
    support::check_error(&err("{ order: fastest }"), FILE, 6, "groups[0].strategy.order", "unknown order `fastest`");
    support::check_error(
        &err("{ type: parallel, order: balanced }"),
        FILE,
        6,
        "groups[0].strategy.order",
        "only allowed with type: rolling",
    );
}

#[test]
fn bad_ramps_name_the_stage() {
    let err = |strategy: &str| parse_plan(FILE, &plan(strategy, "")).expect_err(strategy);
    support::check_error(&err("{ max_parallel: [1, 0] }"), FILE, 6, "groups[0].strategy.max_parallel[1]", "at least 1");
    support::check_error(
        &err("{ max_parallel: [1, \"x\"] }"),
        FILE,
        6,
        "groups[0].strategy.max_parallel[1]",
        "expected an integer",
    );
    support::check_error(&err("{ max_parallel: [] }"), FILE, 6, "groups[0].strategy.max_parallel", "empty list");
    support::check_error(
        &err(
            "{ type: cluster, leader: { exec: { command: \"true\" }, follower_when: { exit_code: 1 } }, max_parallel: [1, 2] }",
        ),
        FILE,
        6,
        "groups[0].strategy.max_parallel",
        "not allowed with type: cluster",
    );
    let long = format!("{{ max_parallel: [{}] }}", vec!["1"; 101].join(", "));
    support::check_error(&err(&long), FILE, 6, "groups[0].strategy.max_parallel", "more than 100");
    support::check_error(
        &err("{ max_parallel: { a: 1 } }"),
        FILE,
        6,
        "groups[0].strategy.max_parallel",
        "ramped batches",
    );
}

#[test]
fn pre_checks_come_first_and_are_counted() {
    let extra = "    pre_checks:\n      - name: replicas-in-sync\n        exec: { command: sh, args: [-c, \"exit 0\"] }\n        retries: 30\n        interval: 10s\n";
    let spec = expand_ok(&plan("{ max_parallel: 1 }", extra), 2);
    let h = &spec.hosts[0];
    assert_eq!(h.pre_checks, 1);
    let names: Vec<&str> = h.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["replicas-in-sync", "install"]);
    assert!(matches!(h.steps[0].kind, StepKind::ExecCheck(_)), "{:?}", h.steps[0].kind);
    assert!(h.rollback_plan(0).is_empty() && h.touched(1) && !h.touched(0));
}

#[test]
fn pre_checks_are_checks() {
    let extra = "    pre_checks:\n      - name: not-a-check\n        archive: { component: x, version: \"1\", source: /x.tgz, sha256: abc }\n";
    let e = parse_plan(FILE, &plan("{ max_parallel: 1 }", extra)).expect_err("an archive is not a check");
    assert!(e.to_string().contains("groups[0].pre_checks[0]"), "{e}");
}

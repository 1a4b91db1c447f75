//! Hooks (plan- and group-level `before`/`after`, expanded into one-host
//! groups wired into the DAG) and captured values (`capture:` and
//! `{{captured.NAME}}`), as the plan parses, validates and expands them.

use convoy_common::model::{CaptureFrom, InventoryHost, RolloutSpec, StepKind};
use convoy_common::plan::{PlanError, expand, parse_plan, summary_json};

const FILE: &str = "plan.yaml";

fn host(id: &str, labels: &[(&str, &str)]) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        installed: Default::default(),
        facts: Default::default(),
    }
}

fn inventory() -> Vec<InventoryHost> {
    vec![
        host("db-1", &[("role", "db")]),
        host("kube-2", &[("role", "kube")]),
        host("kube-1", &[("role", "kube")]),
        host("api-1", &[("role", "api")]),
        host("api-2", &[("role", "api")]),
        host("web-1", &[("role", "web")]),
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

#[track_caller]
fn check(e: &PlanError, line: usize, field: &str, message: &str) {
    let shown = e.to_string();
    assert_eq!((e.line, e.field.as_str()), (Some(line), field), "{shown}");
    assert!(e.message.contains(message), "{shown:?} should contain {message:?}");
}

/// Group names in rollout order with the names each waits for.
fn dag(spec: &RolloutSpec) -> Vec<(String, Vec<String>)> {
    spec.groups
        .iter()
        .map(|g| (g.name.clone(), g.after.iter().map(|&a| spec.groups[a].name.clone()).collect()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const HOOKS: &str = r#"name: hooked
version: "2"
hooks:
  before:
    on: { select: { role: kube } }
    steps:
      - name: record
        exec: { command: kubectl, args: [get, deploy/api, -o, json] }
        capture: { name: replicas, json: spec.replicas }
      - exec: { command: kubectl, args: [scale, deploy/api, "--replicas=0"] }
  after:
    on: kube-1
    steps:
      - name: restore
        exec: { command: kubectl, args: [scale, deploy/api, "--replicas={{captured.replicas}}"] }
groups:
  - name: db
    select: { role: db }
    steps:
      - exec: { command: upgrade-db }
  - name: api
    select: { role: api }
    after: [db]
    hooks:
      before:
        on: db-1
        steps:
          - name: maintenance-on
            exec: { command: curl, args: ["-X", "POST", "http://lb/maintenance/on?by={{host}}&group={{group}}"] }
      after:
        on: { select: { role: web } }
        steps:
          - exec: { command: curl, args: ["http://hooks/api-done?replicas={{ captured.replicas }}"] }
    steps:
      - exec: { command: upgrade-api }
  - name: web
    select: { role: web }
    after: [api]
    steps:
      - exec: { command: upgrade-web }
  - name: side
    select: { role: kube }
    steps:
      - exec: { command: upgrade-kube }
"#;

#[test]
fn hooks_become_one_host_groups_wired_into_the_dag() {
    let spec = expand_ok(HOOKS);
    assert_eq!(
        dag(&spec),
        vec![
            ("before".to_string(), names(&[])),
            ("db".to_string(), names(&["before"])),
            ("api.before".to_string(), names(&["db"])),
            ("api".to_string(), names(&["api.before"])),
            ("api.after".to_string(), names(&["api"])),
            // `web` waited for `api`; it now waits for api's after hook.
            ("web".to_string(), names(&["api.after"])),
            ("side".to_string(), names(&["before"])),
            // The plan's after hook follows every leaf.
            ("after".to_string(), names(&["web", "side"])),
        ]
    );
    for name in ["before", "api.before", "api.after", "after"] {
        let g = spec.groups.iter().find(|g| g.name == name).unwrap();
        assert!(g.hook, "{name}");
        assert_eq!(g.hosts.len(), 1, "{name}");
        assert_eq!((g.steady_window(), g.max_failures), (1, 0), "{name}");
    }
    // Normal groups' entries keep the host id as their key.
    assert!(spec.groups.iter().filter(|g| !g.hook).flat_map(|g| &g.hosts).all(|&h| spec.hosts[h].key.is_none()));

    let entry = |group: &str| {
        let g = spec.groups.iter().find(|g| g.name == group).unwrap();
        &spec.hosts[g.hosts[0]]
    };
    // `select` picks the first matching host by id; hook entries have their own key.
    assert_eq!((entry("before").host.as_str(), entry("before").key()), ("kube-1", "kube-1@before"));
    assert_eq!(entry("after").key(), "kube-1@after");
    assert_eq!(entry("api.before").key(), "db-1@api.before");
    assert_eq!(entry("api.after").host, "web-1");
    // The same agents are also in their normal groups, under their own ids.
    assert_eq!(entry("db").key(), "db-1");
    assert_eq!(entry("side").key(), "kube-1");
    let keys: std::collections::BTreeSet<&str> = spec.hosts.iter().map(|h| h.key()).collect();
    assert_eq!(keys.len(), spec.hosts.len(), "entry keys are unique");

    // Templates inside hooks are filled for the hook's host and group.
    let StepKind::Exec(e) = &entry("api.before").steps[0].kind else { panic!() };
    assert_eq!(e.args[2], "http://lb/maintenance/on?by=db-1&group=api.before");
    // Captured values stay templated for the engine.
    let StepKind::Exec(e) = &entry("after").steps[0].kind else { panic!() };
    assert_eq!(e.args[2], "--replicas={{captured.replicas}}");
    let StepKind::Exec(e) = &entry("api.after").steps[0].kind else { panic!() };
    assert_eq!(e.args[0], "http://hooks/api-done?replicas={{captured.replicas}}");
    let c = entry("before").capture(0).expect("capture on the first step");
    assert_eq!((c.name.as_str(), &c.from), ("replicas", &CaptureFrom::Json("spec.replicas".into())));
    assert!(entry("before").capture(1).is_none());
    assert!(entry("db").captures.is_empty());

    let summary = summary_json(&spec);
    assert_eq!(summary["groups"][0]["hook"], true);
    assert_eq!(summary["groups"][1]["hook"], false);
}

#[test]
fn a_plan_with_only_plan_hooks_and_one_group() {
    let spec = expand_ok(
        "name: p\nversion: '1'\nhooks:\n  before: { on: db-1, steps: [ { exec: { command: a } } ] }\n  after: { on: db-1, checks: [ { tcp: { address: 'x:1' } } ] }\ngroups:\n  - name: g\n    select: { role: api }\n    steps: [ { exec: { command: b } } ]\n",
    );
    assert_eq!(
        dag(&spec),
        vec![("before".into(), names(&[])), ("g".into(), names(&["before"])), ("after".into(), names(&["g"]))]
    );
    let after = &spec.hosts[spec.groups[2].hosts[0]];
    assert_eq!(after.steps[0].name, "tcp-1");
    assert!(matches!(after.steps[0].kind, StepKind::TcpCheck(_)));
}

#[test]
fn group_captures_are_per_host_and_checked_in_order() {
    let spec = expand_ok(
        r#"name: p
version: "1"
groups:
  - name: api
    select: { role: api }
    steps:
      - name: read
        exec: { command: cat, args: [/etc/replicas] }
        capture: { name: count, regex: 'replicas=(\d+)' }
      - exec: { command: scale, args: ["{{captured.count}}", "{{host}}"] }
        rollback: { command: scale, args: ["{{captured.count}}"] }
    rollback_steps:
      - exec: { command: echo, args: ["{{captured.count}}"] }
"#,
    );
    let h = &spec.hosts[0];
    assert_eq!(h.capture(0).map(|c| c.from.clone()), Some(CaptureFrom::Regex(r"replicas=(\d+)".into())));
    let StepKind::Exec(e) = &h.steps[1].kind else { panic!() };
    assert_eq!(e.args, ["{{captured.count}}", "api-1"]);
    let StepKind::Exec(e) = &h.undo[1].as_ref().unwrap().kind else { panic!() };
    assert_eq!(e.args, ["{{captured.count}}"]);
}

#[test]
fn hook_errors_name_the_line_and_field() {
    let base = "name: p\nversion: '1'\ngroups:\n  - name: g\n    select: { role: api }\n    steps: [ { exec: { command: b } } ]\n";
    // A hook without `on`.
    let e = parse_err(&format!("{base}hooks:\n  before:\n    steps: [ {{ exec: {{ command: a }} }} ]\n"));
    check(&e, 8, "hooks.before.on", "missing required field 'on'");
    // A hook without steps.
    let e = parse_err(&format!("{base}hooks:\n  after:\n    on: db-1\n"));
    check(&e, 8, "hooks.after", "a hook needs at least one step or check");
    // A bad `on`.
    let e =
        parse_err(&format!("{base}hooks:\n  after:\n    on: [a, b]\n    steps: [ {{ exec: {{ command: a }} }} ]\n"));
    check(&e, 9, "hooks.after.on", "expected a host id or { select");
    let e = parse_err(&format!(
        "{base}hooks:\n  after:\n    on: {{ labels: {{ a: b }} }}\n    steps: [ {{ exec: {{ command: a }} }} ]\n"
    ));
    check(&e, 9, "hooks.after.on", "unknown field `labels`");
    // Unknown hook position.
    let e = parse_err(&format!("{base}hooks:\n  during: {{ on: db-1, steps: [] }}\n"));
    assert!(e.message.contains("unknown field `during`"), "{e}");
    // A hook group whose name is taken.
    let e = parse_err(
        "name: p\nversion: '1'\ngroups:\n  - name: g\n    select: { role: api }\n    hooks:\n      after:\n        on: db-1\n        steps: [ { exec: { command: a } } ]\n    steps: [ { exec: { command: b } } ]\n  - name: g.after\n    select: { role: db }\n    steps: [ { exec: { command: b } } ]\n",
    );
    check(&e, 7, "groups[0].hooks.after", "this hook runs as group 'g.after', which is already the name of groups[1]");

    // Unknown host or a selector matching nothing: expansion errors.
    let plan = parse_plan(
        FILE,
        &format!("{base}hooks:\n  before:\n    on: ghost\n    steps: [ {{ exec: {{ command: a }} }} ]\n"),
    )
    .unwrap();
    let e = expand(&plan, &inventory()).unwrap_err();
    check(&e, 9, "hooks.before.on", "unknown host 'ghost'");
    let plan = parse_plan(
        FILE,
        &format!("{base}hooks:\n  before:\n    on:\n      select: {{ role: nope }}\n    steps: [ {{ exec: {{ command: a }} }} ]\n"),
    )
    .unwrap();
    let e = expand(&plan, &inventory()).unwrap_err();
    check(&e, 10, "hooks.before.on.select", "selector role=nope matches no host");
}

#[test]
fn capture_errors_name_the_line_and_field() {
    let group = |steps: &str| {
        format!("name: p\nversion: '1'\ngroups:\n  - name: g\n    select: {{ role: api }}\n    steps:\n{steps}")
    };
    // A reference to nothing captured.
    let e = parse_err(&group(
        "      - exec: { command: a }\n      - exec:\n          command: scale\n          args: [\"{{captured.n}}\"]\n",
    ));
    check(
        &e,
        10,
        "groups[0].steps[1].exec.args[0]",
        "'{{captured.n}}' is not captured by an earlier step of group 'g'",
    );
    // A reference to a capture of a later step.
    let e = parse_err(&group(
        "      - exec: { command: scale, args: [\"{{captured.n}}\"] }\n      - exec: { command: a }\n        capture: { name: n, regex: x }\n",
    ));
    check(&e, 7, "groups[0].steps[0].exec.args[0]", "is not captured by an earlier step");
    // Captures only on exec steps, with a name and exactly one of regex/json.
    let e = parse_err(&group("      - file: { path: /x, content: y }\n        capture: { name: n, regex: x }\n"));
    check(&e, 8, "groups[0].steps[0].capture", "only exec steps can capture");
    let e = parse_err(&group("      - exec: { command: a }\n        capture: { regex: x }\n"));
    check(&e, 8, "groups[0].steps[0].capture.name", "missing required field 'name'");
    let e = parse_err(&group("      - exec: { command: a }\n        capture: { name: a.b, regex: x }\n"));
    check(&e, 8, "groups[0].steps[0].capture.name", "invalid capture name 'a.b'");
    let e = parse_err(&group("      - exec: { command: a }\n        capture: { name: n }\n"));
    check(&e, 8, "groups[0].steps[0].capture", "needs 'regex' or 'json'");
    let e = parse_err(&group("      - exec: { command: a }\n        capture: { name: n, regex: x, json: y }\n"));
    check(&e, 8, "groups[0].steps[0].capture.json", "not both");
    let e = parse_err(&group(
        "      - exec: { command: a }\n        capture:\n          name: n\n          regex: '(unclosed'\n",
    ));
    check(&e, 10, "groups[0].steps[0].capture.regex", "invalid regex: unclosed group");
    assert!(!e.message.contains('\n'), "{e}");
    let e = parse_err(&group("      - exec: { command: a }\n        capture: { name: n, json: 'a..b' }\n"));
    check(&e, 8, "groups[0].steps[0].capture.json", "invalid JSON path");
    // The same name twice in a group.
    let e = parse_err(&group(
        "      - exec: { command: a }\n        capture: { name: n, regex: x }\n      - exec: { command: b }\n        capture: { name: n, regex: y }\n",
    ));
    check(&e, 10, "groups[0].steps[1].capture.name", "capture 'n' is already captured by groups[0].steps[0]");
    // Not in a step name.
    let e = parse_err(&group(
        "      - exec: { command: a }\n        capture: { name: n, regex: x }\n      - name: \"scale-{{captured.n}}\"\n        exec: { command: b }\n",
    ));
    check(&e, 9, "groups[0].steps[1].name", "a step name cannot use a captured value");
    // An undo may read its own step's capture, not a later one's.
    let e = parse_err(&group(
        "      - exec: { command: a }\n        rollback: { command: u, args: [\"{{captured.m}}\"] }\n      - exec: { command: b }\n        capture: { name: m, regex: x }\n",
    ));
    check(&e, 8, "groups[0].steps[0].rollback.args[0]", "is not captured by an earlier step");
}

#[test]
fn hook_capture_scope_follows_the_dag() {
    let hooked = |extra: &str| {
        format!(
            "name: p\nversion: '1'\ngroups:\n  - name: a\n    select: {{ role: api }}\n    hooks:\n      after:\n        on: db-1\n        steps:\n          - exec: {{ command: get }}\n            capture: {{ name: n, regex: x }}\n    steps: [ {{ exec: {{ command: a }} }} ]\n{extra}"
        )
    };
    // A group after `a` (so after a's after hook) may use the hook's value.
    let ok = hooked(
        "  - name: b\n    select: { role: web }\n    after: [a]\n    steps:\n      - exec: { command: use, args: [\"{{captured.n}}\"] }\n",
    );
    expand_ok(&ok);
    // A parallel group may not: the hook may not have run yet.
    let e = parse_err(&hooked(
        "  - name: b\n    select: { role: web }\n    steps:\n      - exec: { command: use, args: [\"{{captured.n}}\"] }\n",
    ));
    check(&e, 16, "groups[1].steps[0].exec.args[0]", "nor by a hook that runs before it");
    // Hook captures are rollout-wide: no group step may reuse the name.
    let e = parse_err(&hooked(
        "  - name: b\n    select: { role: web }\n    steps:\n      - exec: { command: get }\n        capture: { name: n, regex: y }\n",
    ));
    check(&e, 17, "groups[1].steps[0].capture.name", "also captured by the hook step groups[0].hooks.after.steps[0]");
}

//! A full, valid plan parsed and expanded against a small inventory, plus the
//! views built on the result (batches, DOT graph, JSON summary).

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_common::model::{InventoryHost, RolloutSpec, StepKind};
use convoy_common::plan::{batches, expand, parse_plan, summary_json, to_dot};

const PLAN: &str = r#"# Telemetry stack: schema first, then collectors and notifiers in parallel, then the API.
name: telemetry-upgrade
version: "2.0.0"
component: demo-service
host_lost_timeout: 90s

defaults:
  strategy: { max_parallel: "25%", max_failures: 0, soak: 0s }
  steps:
    - name: install
      archive:
        component: demo-service
        version: "{{version}}"
        source: /srv/artifacts/demo-{{version}}.tar.gz
        sha256: ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789
  checks:
    - tcp: { address: "127.0.0.1:{{label.port}}" }

groups:
  - name: api
    select: { role: api }
    after: [collectors, notifiers]
    strategy:
      max_parallel: "50%"
      max_failures: "10%"
      soak: 2s
    steps:
      - name: drain
        timeout: 30s
        exec: { command: sh, args: ["-c", "echo draining {{host}} in {{group}}"], env: { FROM: "{{installed.demo-service}}" }, workdir: /tmp }
      - file: { path: "/tmp/{{host}}.txt", content: "{{ version }}" }
    checks:
      - name: health
        http: { url: "http://127.0.0.1:{{label.port}}/health", body_contains: "{{version}}" }
        retries: 10
        interval: 250ms
        deadline: 1m
      - exec: { command: test, args: ["-f", "/opt/demo/current"] }
      - file: { path: /tmp/x, contains: "2.0.0" }

  - name: database
    hosts: [db-2, db-1]
    strategy: { type: rolling, max_parallel: 1 }

  - name: collectors
    select: { role: collector }
    after: [database]

  - name: notifiers
    select: { role: notifier, zone: eu }
    after: [database]
    strategy: { type: parallel, max_failures: 1 }
"#;

fn host(id: &str, labels: &[(&str, &str)], installed: Option<&str>) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        installed: installed.map(|v| ("demo-service".to_string(), v.to_string())).into_iter().collect(),
        facts: Default::default(),
    }
}

fn inventory() -> Vec<InventoryHost> {
    vec![
        host("api-3", &[("role", "api"), ("port", "8083")], Some("1.0.0")),
        host("api-1", &[("role", "api"), ("port", "8081")], Some("1.0.0")),
        host("api-2", &[("role", "api"), ("port", "8082")], Some("1.1.0")),
        host("db-1", &[("role", "db"), ("port", "5432")], Some("1.0.0")),
        host("db-2", &[("role", "db"), ("port", "5432")], None),
        host("col-b", &[("role", "collector"), ("port", "9000")], Some("1.0.0")),
        host("col-a", &[("role", "collector"), ("port", "9000")], Some("1.0.0")),
        host("col-c", &[("role", "collector"), ("port", "9000")], Some("1.0.0")),
        host("col-d", &[("role", "collector"), ("port", "9000")], Some("1.0.0")),
        host("col-e", &[("role", "collector"), ("port", "9000")], Some("1.0.0")),
        host("n-1", &[("role", "notifier"), ("zone", "eu"), ("port", "7000")], Some("1.0.0")),
        host("n-2", &[("role", "notifier"), ("zone", "eu"), ("port", "7000")], Some("1.0.0")),
        host("n-3", &[("role", "notifier"), ("zone", "us"), ("port", "7000")], Some("1.0.0")),
        host("unrelated", &[("role", "web")], None),
    ]
}

fn spec() -> RolloutSpec {
    let plan = parse_plan("plan.yaml", PLAN).unwrap_or_else(|e| panic!("{e}"));
    expand(&plan, &inventory()).unwrap_or_else(|e| panic!("{e}"))
}

fn group_hosts(spec: &RolloutSpec, g: usize) -> Vec<&str> {
    spec.groups[g].hosts.iter().map(|&h| spec.hosts[h].host.as_str()).collect()
}

#[test]
fn plan_level_fields() {
    let plan = parse_plan("plan.yaml", PLAN).unwrap();
    assert_eq!(plan.plan_name(), "telemetry-upgrade");
    assert_eq!(plan.target_version(), "2.0.0");
    assert_eq!(plan.group_names(), ["database", "collectors", "notifiers", "api"]);
    let spec = spec();
    assert_eq!(spec.plan_name, "telemetry-upgrade");
    assert_eq!(spec.target_version, "2.0.0");
    assert_eq!(spec.component.as_deref(), Some("demo-service"));
    assert_eq!(spec.host_lost_timeout, Duration::from_secs(90));
}

#[test]
fn groups_are_in_topological_order_with_after_as_indices() {
    let spec = spec();
    let names: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["database", "collectors", "notifiers", "api"]);
    assert_eq!(spec.groups[0].after, Vec::<usize>::new());
    assert_eq!(spec.groups[1].after, [0]);
    assert_eq!(spec.groups[2].after, [0]);
    assert_eq!(spec.groups[3].after, [1, 2]);
}

#[test]
fn hosts_are_ordered_group_by_group() {
    let spec = spec();
    // Explicit lists keep the written order; selectors sort by id.
    assert_eq!(group_hosts(&spec, 0), ["db-2", "db-1"]);
    assert_eq!(group_hosts(&spec, 1), ["col-a", "col-b", "col-c", "col-d", "col-e"]);
    assert_eq!(group_hosts(&spec, 2), ["n-1", "n-2"]);
    assert_eq!(group_hosts(&spec, 3), ["api-1", "api-2", "api-3"]);
    let all: Vec<&str> = spec.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(all.len(), 12);
    assert!(!all.contains(&"unrelated") && !all.contains(&"n-3"));
    for (i, g) in spec.groups.iter().enumerate() {
        for &h in &g.hosts {
            assert_eq!(spec.hosts[h].group, i);
        }
    }
    let flat: Vec<usize> = spec.groups.iter().flat_map(|g| g.hosts.clone()).collect();
    assert_eq!(flat, (0..12).collect::<Vec<_>>());
}

#[test]
fn initial_versions_come_from_the_component() {
    let spec = spec();
    let v = |id: &str| spec.hosts.iter().find(|h| h.host == id).unwrap().initial_version.clone();
    assert_eq!(v("api-2").as_deref(), Some("1.1.0"));
    assert_eq!(v("db-1").as_deref(), Some("1.0.0"));
    assert_eq!(v("db-2"), None);
}

#[test]
fn percentages_are_resolved_per_group() {
    let spec = spec();
    let s = |g: usize| &spec.groups[g];
    // database: explicit 1, default failures 0, no soak.
    assert_eq!((s(0).steady_window(), s(0).max_failures, s(0).soak), (1, 0, Duration::ZERO));
    // collectors inherit 25% of 5 = 1.25 -> 1.
    assert_eq!((s(1).steady_window(), s(1).max_failures), (1, 0));
    // notifiers: parallel means all of them.
    assert_eq!((s(2).steady_window(), s(2).max_failures), (2, 1));
    // api: 50% of 3 = 1.5 -> 1; 10% of 3 = 0.3 -> 0; soak 2s.
    assert_eq!((s(3).steady_window(), s(3).max_failures, s(3).soak), (1, 0, Duration::from_secs(2)));
}

#[test]
fn steps_and_checks_are_templated_per_host() {
    let spec = spec();
    let api2 = spec.hosts.iter().find(|h| h.host == "api-2").unwrap();
    let names: Vec<&str> = api2.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["drain", "file-2", "health", "exec_check-4", "file_check-5"]);

    let StepKind::Exec(e) = &api2.steps[0].kind else { panic!("{:?}", api2.steps[0]) };
    assert_eq!(e.command, "sh");
    assert_eq!(e.args, ["-c", "echo draining api-2 in api"]);
    assert_eq!(e.env, BTreeMap::from([("FROM".to_string(), "1.1.0".to_string())]));
    assert_eq!(e.workdir.as_deref(), Some("/tmp"));
    assert_eq!(api2.steps[0].timeout, Duration::from_secs(30));

    let StepKind::File(f) = &api2.steps[1].kind else { panic!() };
    assert_eq!((f.path.as_str(), f.content.as_str()), ("/tmp/api-2.txt", "2.0.0"));
    assert_eq!(api2.steps[1].timeout, Duration::from_secs(300));

    let StepKind::HttpCheck(h) = &api2.steps[2].kind else { panic!() };
    assert_eq!(h.url, "http://127.0.0.1:8082/health");
    assert_eq!(h.expect_status, 200);
    assert_eq!(h.body_contains.as_deref(), Some("2.0.0"));
    assert_eq!(
        (h.policy.retries, h.policy.interval, h.policy.deadline),
        (10, Duration::from_millis(250), Duration::from_secs(60))
    );
    assert_eq!(api2.steps[2].timeout, Duration::from_secs(65));

    let StepKind::ExecCheck(c) = &api2.steps[3].kind else { panic!() };
    assert_eq!(c.exec.command, "test");
    assert_eq!((c.policy.retries, c.policy.deadline), (0, Duration::from_secs(30)));
    assert_eq!(api2.steps[3].timeout, Duration::from_secs(35));

    let StepKind::FileCheck(fc) = &api2.steps[4].kind else { panic!() };
    assert_eq!((fc.path.as_str(), fc.contains.as_deref()), ("/tmp/x", Some("2.0.0")));
}

#[test]
fn groups_without_steps_inherit_the_defaults() {
    let spec = spec();
    let col = spec.hosts.iter().find(|h| h.host == "col-c").unwrap();
    let names: Vec<&str> = col.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["install", "tcp-2"]);
    let StepKind::Archive(a) = &col.steps[0].kind else { panic!() };
    assert_eq!(a.component, "demo-service");
    assert_eq!(a.version, "2.0.0");
    assert_eq!(a.source, "/srv/artifacts/demo-2.0.0.tar.gz");
    assert_eq!(a.sha256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
    assert_eq!(a.install_root, None);
    let StepKind::TcpCheck(t) = &col.steps[1].kind else { panic!() };
    assert_eq!(t.address, "127.0.0.1:9000");
    assert_eq!(col.steps[1].timeout, Duration::from_secs(35));
}

#[test]
fn batches_chunk_hosts_by_max_parallel() {
    let spec = spec();
    assert_eq!(batches(&spec, 0), [vec!["db-2"], vec!["db-1"]]);
    assert_eq!(batches(&spec, 2), [vec!["n-1", "n-2"]]);
    assert_eq!(batches(&spec, 3).len(), 3);
    assert!(batches(&spec, 99).is_empty());
}

#[test]
fn dot_graph_has_labelled_nodes_and_after_edges() {
    let dot = to_dot(&spec());
    assert!(dot.starts_with("digraph \"telemetry-upgrade\" {"), "{dot}");
    assert!(
        dot.contains("\"database\" [label=\"database\\n2 hosts\\nrolling: max_parallel=1 max_failures=0 soak=0s\"];"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"notifiers\" [label=\"notifiers\\n2 hosts\\nparallel: max_parallel=2 max_failures=1 soak=0s\"];"
        ),
        "{dot}"
    );
    assert!(dot.contains("soak=2s"), "{dot}");
    for edge in [
        "\"database\" -> \"collectors\";",
        "\"database\" -> \"notifiers\";",
        "\"collectors\" -> \"api\";",
        "\"notifiers\" -> \"api\";",
    ] {
        assert!(dot.contains(edge), "missing {edge} in {dot}");
    }
    assert_eq!(dot.matches(" -> ").count(), 4);
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn json_summary_lists_groups_in_order() {
    let json = summary_json(&spec());
    assert_eq!(json["plan"], "telemetry-upgrade");
    assert_eq!(json["target_version"], "2.0.0");
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    let api = &groups[3];
    assert_eq!(api["name"], "api");
    assert_eq!(api["after"], serde_json::json!(["collectors", "notifiers"]));
    assert_eq!(api["strategy"]["max_parallel"], 1);
    assert_eq!(api["strategy"]["soak"], "2s");
    assert_eq!(api["hosts"], serde_json::json!(["api-1", "api-2", "api-3"]));
    assert_eq!(api["batches"], serde_json::json!([["api-1"], ["api-2"], ["api-3"]]));
    assert_eq!(api["steps"][2]["name"], "health");
    assert_eq!(api["steps"][2]["kind"], "http");
    assert_eq!(groups[2]["strategy"]["type"], "parallel");
}

#[test]
fn expansion_is_deterministic_whatever_the_inventory_order() {
    let plan = parse_plan("plan.yaml", PLAN).unwrap();
    let mut reversed = inventory();
    reversed.reverse();
    assert_eq!(expand(&plan, &reversed).unwrap(), spec());
}

#[test]
fn minimal_plan_uses_every_default() {
    let src = "name: m\nversion: 1.2\ngroups:\n  - name: all\n    select: {}\n    steps:\n      - exec: { command: \"true\" }\n";
    let plan = parse_plan("m.yaml", src).unwrap();
    let spec = expand(&plan, &inventory()).unwrap();
    assert_eq!(spec.target_version, "1.2");
    assert_eq!(spec.component, None);
    assert_eq!(spec.host_lost_timeout, Duration::from_secs(60));
    assert_eq!(spec.hosts.len(), inventory().len());
    assert!(spec.hosts.iter().all(|h| h.initial_version.is_none()));
    let g = &spec.groups[0];
    assert_eq!((g.steady_window(), g.max_failures, g.soak), (1, 0, Duration::ZERO));
    assert_eq!(spec.hosts[0].steps[0].name, "exec-1");
    assert_eq!(spec.hosts[0].steps[0].timeout, Duration::from_secs(300));
}

#[test]
fn selector_key_host_matches_the_host_id() {
    let src = "name: m\nversion: '1'\ngroups:\n  - name: one\n    select: { host: db-1 }\n    checks:\n      - tcp: { address: \"{{host}}:{{label.port}}\" }\n";
    let spec = expand(&parse_plan("m.yaml", src).unwrap(), &inventory()).unwrap();
    assert_eq!(spec.hosts.len(), 1);
    let StepKind::TcpCheck(t) = &spec.hosts[0].steps[0].kind else { panic!() };
    assert_eq!(t.address, "db-1:5432");
}

/// The sample plans shipped in `examples/` must stay valid. The demo fills in
/// the `@SHA256_...@` placeholders with the checksums of archives it builds.
#[test]
fn example_plans_parse_and_expand() {
    let sha = "0".repeat(64);
    let fleet: Vec<InventoryHost> = ["db", "collector", "notification", "polling", "api"]
        .iter()
        .map(|role| {
            let labels = [
                ("role", *role),
                ("fleet", "demo"),
                ("port", "1"),
                ("service_root", "/s"),
                ("artifacts", "/a"),
                ("convoy", "/c"),
            ];
            host(&format!("{role}-1"), &labels, None)
        })
        .collect();
    for (name, src) in [
        ("telemetry-upgrade.yaml", include_str!("../../examples/demo/telemetry-upgrade.yaml")),
        ("install-v1.yaml", include_str!("../../examples/demo/install-v1.yaml")),
    ] {
        let src = src.replace("@SHA256_1.0.0@", &sha).replace("@SHA256_2.0.0@", &sha);
        let plan = parse_plan(name, &src).unwrap_or_else(|e| panic!("{e}"));
        let spec = expand(&plan, &fleet).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.hosts.len(), 5, "{name}");
    }
}

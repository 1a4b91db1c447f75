//! `strategy: { type: cluster }` as plans write it: clusters from a label,
//! the leader check and switchover rendered per host, `same_version`, and
//! the errors (each naming its line and field).

mod support;

use std::time::Duration;

use convoy_common::model::{InventoryHost, LeaderAnswer, RoleMatch, RolloutSpec, StepKind, StepOutcome, StepStatus};
use convoy_common::plan::{PlanError, expand, parse_plan, summary_json};
use support::check_error;

const FILE: &str = "cluster.yaml";

fn host(id: &str, labels: &[(&str, &str)]) -> InventoryHost {
    support::inventory_host(id, labels, &[])
}

/// Two mediation-controller clusters of three, listed out of order.
fn inventory() -> Vec<InventoryHost> {
    let mut hosts = Vec::new();
    for (id, cluster) in [("mc-5", "mc2"), ("mc-1", "mc1"), ("mc-4", "mc2"), ("mc-2", "mc1"), ("mc-6", "mc2")] {
        hosts.push(host(id, &[("role", "mc"), ("cluster", cluster)]));
    }
    hosts.push(host("mc-3", &[("role", "mc"), ("cluster", "mc1")]));
    hosts.push(host("gw-1", &[("role", "gw")]));
    hosts
}

const PLAN: &str = r#"name: mediation
version: "5.2.0"
groups:
  - name: controllers
    select: { role: mc }
    strategy:
      type: cluster
      by: cluster
      max_parallel: 1
      leader:
        exec: { command: /opt/mc/bin/is-master, args: ["{{host}}"] }
        follower_when: { exit_code: 1 }
        deadline: 5s
      switchover:
        - name: hand-over
          exec: { command: /opt/mc/bin/switchover, args: ["--from", "{{host}}"] }
    steps:
      - name: upgrade
        exec: { command: /opt/mc/bin/upgrade, args: ["{{version}}"] }
  - name: gateways
    select: { role: gw }
    after: [controllers]
    steps:
      - exec: { command: "true" }
"#;

fn expand_ok(src: &str) -> RolloutSpec {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    expand(&plan, &inventory()).unwrap_or_else(|e| panic!("expand failed: {e}"))
}

fn err(src: &str) -> PlanError {
    match parse_plan(FILE, src).and_then(|p| expand(&p, &inventory())) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

#[test]
fn hosts_are_split_into_clusters_by_the_label() {
    let spec = expand_ok(PLAN);
    let g = &spec.groups[0];
    let c = g.cluster().expect("a cluster group");
    assert_eq!(c.label, "cluster");
    assert!(!c.same_version);
    let clusters: Vec<(String, Vec<String>)> = c
        .clusters
        .iter()
        .map(|m| (m.name.clone(), m.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect()))
        .collect();
    assert_eq!(
        clusters,
        vec![
            ("mc1".to_string(), vec!["mc-1".to_string(), "mc-2".into(), "mc-3".into()]),
            ("mc2".to_string(), vec!["mc-4".to_string(), "mc-5".into(), "mc-6".into()]),
        ]
    );
    // The group's host list is the clusters, in order.
    let all: Vec<usize> = c.clusters.iter().flat_map(|m| m.hosts.clone()).collect();
    assert_eq!(g.hosts, all);
    assert!(spec.groups[1].cluster().is_none());
}

#[test]
fn the_leader_check_and_switchover_are_rendered_per_host() {
    let spec = expand_ok(PLAN);
    let mc4 = spec.hosts.iter().find(|h| h.host == "mc-4").unwrap();
    let check = mc4.leader_check.as_ref().expect("a leader check");
    match &check.kind {
        StepKind::ExecCheck(e) => {
            assert_eq!(e.exec.command, "/opt/mc/bin/is-master");
            assert_eq!(e.exec.args, ["mc-4"]);
            assert_eq!(e.policy.retries, 0, "asked once each time");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mc4.switchover.len(), 1);
    assert_eq!(mc4.switchover[0].name, "hand-over");
    match &mc4.switchover[0].kind {
        StepKind::Exec(e) => assert_eq!(e.args, ["--from", "mc-4"]),
        other => panic!("{other:?}"),
    }
    let gw = spec.hosts.iter().find(|h| h.host == "gw-1").unwrap();
    assert!(gw.leader_check.is_none() && gw.switchover.is_empty());
}

#[test]
fn an_http_leader_check_is_accepted() {
    let src = PLAN
        .replace(
            r#"exec: { command: /opt/mc/bin/is-master, args: ["{{host}}"] }"#,
            r#"http: { url: "http://{{host}}:8080/role", status: 200, body_contains: master }"#,
        )
        .replace("follower_when: { exit_code: 1 }", "follower_when: { output_contains: slave }");
    let spec = expand_ok(&src);
    let h = &spec.hosts[spec.groups[0].hosts[0]];
    match &h.leader_check.as_ref().unwrap().kind {
        StepKind::HttpCheck(h) => assert_eq!(h.url, "http://mc-1:8080/role"),
        other => panic!("{other:?}"),
    }
    let answers = h.leader_answers.as_ref().expect("answers");
    assert_eq!(answers.follower.output_contains.as_deref(), Some("slave"));
    assert_eq!(answers.leader, RoleMatch::default(), "the leader's answer is the check passing");
}

#[test]
fn the_leader_check_has_three_answers() {
    let spec = expand_ok(PLAN);
    let mc1 = spec.hosts.iter().find(|h| h.host == "mc-1").unwrap();
    let a = mc1.leader_answers.as_ref().expect("the plan says how answers read");
    assert_eq!(a.follower, RoleMatch { exit_code: Some(1), ..RoleMatch::default() });
    assert_eq!(a.leader, RoleMatch::default());
    assert_eq!(a.deadline, Duration::from_secs(5));
    assert_eq!(a.interval, Duration::from_secs(1), "default interval between asks");
    // Exit 0 leads, exit 1 follows, anything else cannot tell.
    let exit = |code: Option<i32>| {
        let status = if code == Some(0) { StepStatus::Succeeded } else { StepStatus::Failed };
        StepOutcome { status, exit_code: code, ..StepOutcome::failed("") }
    };
    assert_eq!(LeaderAnswer::of(Some(a), &exit(Some(0))), LeaderAnswer::Leader);
    assert_eq!(LeaderAnswer::of(Some(a), &exit(Some(1))), LeaderAnswer::Follower);
    assert_eq!(LeaderAnswer::of(Some(a), &exit(Some(2))), LeaderAnswer::Unknown);
    assert_eq!(LeaderAnswer::of(Some(a), &exit(None)), LeaderAnswer::Unknown, "command not found");
    let timed_out = StepOutcome { status: StepStatus::TimedOut, ..exit(Some(1)) };
    assert_eq!(LeaderAnswer::of(Some(a), &timed_out), LeaderAnswer::Unknown);

    let by_output = PLAN.replace(
        "follower_when: { exit_code: 1 }",
        "leader_when: { output_contains: master }\n        follower_when: { output_contains: slave }",
    );
    let spec = expand_ok(&by_output);
    let a = spec.hosts[0].leader_answers.clone().unwrap();
    let said = |text: &str| StepOutcome { stdout_tail: text.into(), ..StepOutcome::ok() };
    assert_eq!(LeaderAnswer::of(Some(&a), &said("role: master")), LeaderAnswer::Leader);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("role: slave")), LeaderAnswer::Follower);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("Could not connect")), LeaderAnswer::Unknown);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("master slave")), LeaderAnswer::Unknown, "both: cannot tell");
}

#[test]
fn leader_check_answer_errors_name_their_line_and_field() {
    let missing = PLAN.replace("        follower_when: { exit_code: 1 }\n", "");
    check_error(
        &err(&missing),
        FILE,
        10,
        "groups[0].strategy.leader.follower_when",
        "A failing check no longer means 'follower'",
    );

    let same = PLAN.replace("follower_when: { exit_code: 1 }", "follower_when: { exit_code: 0 }");
    check_error(&err(&same), FILE, 12, "groups[0].strategy.leader.follower_when", "can be the same");

    let status_on_exec = PLAN.replace("follower_when: { exit_code: 1 }", "follower_when: { status: 503 }");
    check_error(&err(&status_on_exec), FILE, 12, "groups[0].strategy.leader.follower_when.status", "use 'exit_code'");

    let http = PLAN.replace(
        r#"exec: { command: /opt/mc/bin/is-master, args: ["{{host}}"] }"#,
        r#"http: { url: "http://{{host}}:8080/role" }"#,
    );
    check_error(&err(&http), FILE, 12, "groups[0].strategy.leader.follower_when.exit_code", "use 'status'");

    let empty = PLAN.replace("follower_when: { exit_code: 1 }", "follower_when: {}");
    check_error(
        &err(&empty),
        FILE,
        12,
        "groups[0].strategy.leader.follower_when",
        "give 'exit_code', 'output_contains' or both",
    );

    let tcp = PLAN.replace(
        r#"exec: { command: /opt/mc/bin/is-master, args: ["{{host}}"] }"#,
        r#"tcp: { address: "{{host}}:5432" }"#,
    );
    check_error(&err(&tcp), FILE, 11, "groups[0].strategy.leader.tcp", "use 'exec'");

    let elsewhere = PLAN.replace(
        "      - exec: { command: \"true\" }\n",
        "      - exec: { command: \"true\" }\n    checks:\n      - exec: { command: \"true\" }\n        follower_when: { exit_code: 1 }\n",
    );
    check_error(
        &err(&elsewhere),
        FILE,
        27,
        "groups[1].checks[0].follower_when",
        "only allowed in a cluster strategy's 'leader' check",
    );
}

const SWITCHOVER_CAPTURE: &str = r#"      switchover:
        - name: pick
          exec: { command: /opt/mc/bin/pick-candidate }
          capture: { name: candidate, regex: 'candidate=(\S+)' }
        - name: hand-over
          exec: { command: /opt/mc/bin/switchover, args: ["--to", "{{captured.candidate}}"] }
"#;

fn with_switchover_capture() -> String {
    PLAN.replace(
        "      switchover:\n        - name: hand-over\n          exec: { command: /opt/mc/bin/switchover, args: [\"--from\", \"{{host}}\"] }\n",
        SWITCHOVER_CAPTURE,
    )
}

#[test]
fn a_switchover_step_may_use_what_an_earlier_one_captured() {
    let src = with_switchover_capture();
    let spec = expand_ok(&src);
    let mc1 = spec.hosts.iter().find(|h| h.host == "mc-1").unwrap();
    assert_eq!(mc1.switchover.len(), 2);
    assert_eq!(mc1.switchover_capture(0).map(|c| c.name.as_str()), Some("candidate"));
    assert!(mc1.switchover_capture(1).is_none());
    match &mc1.switchover[1].kind {
        StepKind::Exec(e) => assert_eq!(e.args, ["--to", "{{captured.candidate}}"], "filled in at run time"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn switchover_captures_are_refused_where_they_cannot_be_available() {
    // A group step runs on followers too, which never switch over.
    let src = with_switchover_capture().replace(
        "exec: { command: /opt/mc/bin/upgrade, args: [\"{{version}}\"] }",
        "exec: { command: /opt/mc/bin/upgrade, args: [\"{{captured.candidate}}\"] }",
    );
    check_error(&err(&src), FILE, 22, "groups[0].steps[0].exec.args[0]", "runs on the leader only");

    // Used before it is captured.
    let src = with_switchover_capture().replace(
        "exec: { command: /opt/mc/bin/pick-candidate }",
        "exec: { command: /opt/mc/bin/pick-candidate, args: [\"{{captured.candidate}}\"] }",
    );
    check_error(
        &err(&src),
        FILE,
        16,
        "groups[0].strategy.switchover[0].exec.args[0]",
        "nor by an earlier switchover step",
    );

    // The leader check is asked before the first step: a step's value is not there yet.
    let src = PLAN
        .replace(
            r#"exec: { command: /opt/mc/bin/is-master, args: ["{{host}}"] }"#,
            r#"exec: { command: /opt/mc/bin/is-master, args: ["{{captured.build}}"] }"#,
        )
        .replace(
            "exec: { command: /opt/mc/bin/upgrade, args: [\"{{version}}\"] }",
            "exec: { command: /opt/mc/bin/upgrade }\n        capture: { name: build, regex: 'b=(\\d+)' }",
        );
    check_error(&err(&src), FILE, 11, "groups[0].strategy.leader.exec.args[0]", "may not have run yet");
}

#[test]
fn same_version_needs_no_leader_check() {
    let src = r#"name: mediation
version: "5.2.0"
groups:
  - name: controllers
    select: { role: mc }
    strategy: { type: cluster, same_version: true }
    steps:
      - name: stop
        exec: { command: "true" }
      - name: upgrade
        exec: { command: "true" }
      - name: start
        exec: { command: "true" }
  - name: gateways
    select: { role: gw }
    steps:
      - exec: { command: "true" }
"#;
    let spec = expand_ok(src);
    let c = spec.groups[0].cluster().unwrap();
    assert!(c.same_version);
    assert_eq!(c.clusters.len(), 2);
    assert!(spec.hosts.iter().all(|h| h.leader_check.is_none()));
}

#[test]
fn cluster_errors_name_their_line_and_field() {
    let no_leader = PLAN.replace(
        "      leader:\n        exec: { command: /opt/mc/bin/is-master, args: [\"{{host}}\"] }\n        follower_when: { exit_code: 1 }\n        deadline: 5s\n",
        "",
    );
    check_error(&err(&no_leader), FILE, 6, "groups[0].strategy.leader", "needs a 'leader' check");

    let retries = PLAN.replace("        deadline: 5s\n", "        retries: 3\n");
    check_error(
        &err(&retries),
        FILE,
        10,
        "groups[0].strategy.leader",
        "'retries' and 'min_healthy_time' are not allowed",
    );

    let by_on_rolling = PLAN.replace("      type: cluster\n", "      type: rolling\n");
    check_error(&err(&by_on_rolling), FILE, 8, "groups[0].strategy.by", "only allowed with type: cluster");

    let leader_and_same = PLAN.replace("      max_parallel: 1\n", "      same_version: true\n");
    check_error(&err(&leader_and_same), FILE, 10, "groups[0].strategy.leader", "not allowed with same_version: true");

    let canary = PLAN
        .replace("    steps:\n      - name: upgrade", "    canary: { count: 1 }\n    steps:\n      - name: upgrade");
    check_error(&err(&canary), FILE, 17, "groups[0].canary", "not allowed with type: cluster");

    let other_label = PLAN.replace("      by: cluster\n", "      by: ring\n");
    check_error(
        &err(&other_label),
        FILE,
        8,
        "groups[0].strategy.by",
        "host mc-1 of group 'controllers' has no label 'ring'",
    );
}

#[test]
fn the_summary_shows_clusters_side_by_side() {
    let spec = expand_ok(PLAN);
    let json = summary_json(&spec);
    let g = &json["groups"][0];
    assert_eq!(g["strategy"]["type"], "cluster");
    assert_eq!(g["clusters"]["by"], "cluster");
    assert_eq!(g["clusters"]["members"]["mc2"], serde_json::json!(["mc-4", "mc-5", "mc-6"]));
    assert_eq!(g["clusters"]["leader_check"], "leader-check");
    assert_eq!(g["clusters"]["switchover"], serde_json::json!(["hand-over"]));
    assert_eq!(
        g["batches"],
        serde_json::json!([["mc-1", "mc-4"], ["mc-2", "mc-5"], ["mc-3", "mc-6"]]),
        "one member of each cluster at a time"
    );
    let same = PLAN
        .replace("      leader:\n        exec: { command: /opt/mc/bin/is-master, args: [\"{{host}}\"] }\n        follower_when: { exit_code: 1 }\n        deadline: 5s\n", "")
        .replace("      switchover:\n        - name: hand-over\n          exec: { command: /opt/mc/bin/switchover, args: [\"--from\", \"{{host}}\"] }\n", "")
        .replace("      max_parallel: 1\n", "      same_version: true\n");
    let json = summary_json(&expand_ok(&same));
    assert_eq!(json["groups"][0]["batches"].as_array().map(Vec::len), Some(1), "all members together");
    assert_eq!(json["groups"][0]["clusters"]["same_version"], true);
}

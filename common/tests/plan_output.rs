//! Checks on a command's output as plans write them: an exec check's
//! `stdout_equals` / `stdout_contains` / `stdout_matches`, and a leader
//! check answered by its output (PostgreSQL's `pg_is_in_recovery()`); the
//! errors name their line and field.

mod support;

use convoy_common::model::{
    InventoryHost, LeaderAnswer, OutputExpect, RoleMatch, RolloutSpec, StepKind, StepOutcome, StepStatus,
};
use convoy_common::plan::{PlanError, expand, parse_plan};
use support::check_error;

const FILE: &str = "output.yaml";

fn inventory() -> Vec<InventoryHost> {
    ["pg-1", "pg-2", "app-1"]
        .iter()
        .map(|id| {
            let role = if id.starts_with("pg") { "pg" } else { "app" };
            support::inventory_host(id, &[("role", role), ("cluster", "main")], &[])
        })
        .collect()
}

const PLAN: &str = r#"name: output
version: "16.4"
groups:
  - name: databases
    select: { role: pg }
    strategy:
      type: cluster
      by: cluster
      leader:
        exec: { command: psql, args: ["-tAc", "select pg_is_in_recovery()"] }
        leader_when: { stdout_equals: "f" }
        follower_when: { stdout_equals: "t" }
    steps:
      - exec: { command: /usr/local/bin/upgrade-pg, args: ["{{version}}"] }
  - name: apps
    select: { role: app }
    after: [databases]
    steps:
      - exec: { command: "true" }
    checks:
      - name: connected
        exec: { command: psql, args: ["-tAc", "select 1"] }
        stdout_equals: "1"
        stdout_contains: "{{version}}"
        stdout_matches: '^\d+$'
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
fn an_exec_check_carries_its_output_conditions_rendered() {
    let spec = expand_ok(PLAN);
    let app = spec.hosts.iter().find(|h| h.host == "app-1").unwrap();
    let check = app.steps.iter().find(|s| s.name == "connected").expect("the check");
    match &check.kind {
        StepKind::ExecCheck(c) => assert_eq!(
            c.output,
            OutputExpect { equals: Some("1".into()), contains: Some("16.4".into()), matches: Some(r"^\d+$".into()) },
            "texts are templated, the regex is kept as written"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_leader_check_answers_by_its_output() {
    let spec = expand_ok(PLAN);
    let a = spec.hosts[0].leader_answers.clone().expect("answers");
    assert_eq!(a.leader, RoleMatch { stdout_equals: Some("f".into()), ..RoleMatch::default() });
    assert_eq!(a.follower, RoleMatch { stdout_equals: Some("t".into()), ..RoleMatch::default() });
    let said = |text: &str, status: StepStatus| StepOutcome { stdout_tail: text.into(), status, ..StepOutcome::ok() };
    assert_eq!(LeaderAnswer::of(Some(&a), &said("f\n", StepStatus::Succeeded)), LeaderAnswer::Leader);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("t\n", StepStatus::Succeeded)), LeaderAnswer::Follower);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("", StepStatus::Failed)), LeaderAnswer::Unknown, "psql failed");
    assert_eq!(LeaderAnswer::of(Some(&a), &said("ft", StepStatus::Succeeded)), LeaderAnswer::Unknown);

    // By regex, with the leader's answer the check passing.
    let by_regex = PLAN
        .replace("        leader_when: { stdout_equals: \"f\" }\n", "")
        .replace(
            "follower_when: { stdout_equals: \"t\" }",
            "follower_when: { exit_code: 0, stdout_matches: '^(t|true)$' }",
        )
        .replace(
            "args: [\"-tAc\", \"select pg_is_in_recovery()\"] }\n",
            "args: [\"-tAc\", \"select pg_is_in_recovery()\"] }\n        stdout_matches: '^(f|false)$'\n",
        );
    let spec = expand_ok(&by_regex);
    let a = spec.hosts[0].leader_answers.clone().expect("answers");
    // The agent fails the check itself when its own condition does not hold:
    // an answer naming no exit code needs the check to pass, so the
    // follower's names exit 0.
    assert_eq!(LeaderAnswer::of(Some(&a), &said("false", StepStatus::Succeeded)), LeaderAnswer::Leader);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("true\n", StepStatus::Failed)), LeaderAnswer::Follower);
    assert_eq!(LeaderAnswer::of(Some(&a), &said("maybe", StepStatus::Failed)), LeaderAnswer::Unknown);
}

#[test]
fn output_errors_name_their_line_and_field() {
    let bad_regex = PLAN.replace(r"stdout_matches: '^\d+$'", "stdout_matches: '^(\\d+$'");
    check_error(&err(&bad_regex), FILE, 25, "groups[1].checks[0].stdout_matches", "invalid regex");

    let huge = PLAN.replace(r"stdout_matches: '^\d+$'", &format!("stdout_matches: '{}'", "a".repeat(2000)));
    check_error(&err(&huge), FILE, 25, "groups[1].checks[0].stdout_matches", "more than the limit");

    let empty = PLAN.replace("stdout_contains: \"{{version}}\"", "stdout_contains: \"\"");
    check_error(&err(&empty), FILE, 24, "groups[1].checks[0].stdout_contains", "must not be empty");

    let on_tcp =
        PLAN.replace("exec: { command: psql, args: [\"-tAc\", \"select 1\"] }", "tcp: { address: \"{{host}}:5432\" }");
    check_error(&err(&on_tcp), FILE, 23, "groups[1].checks[0].stdout_equals", "only an 'exec' check");

    let leader_regex =
        PLAN.replace("follower_when: { stdout_equals: \"t\" }", "follower_when: { stdout_matches: '[' }");
    check_error(
        &err(&leader_regex),
        FILE,
        12,
        "groups[0].strategy.leader.follower_when.stdout_matches",
        "invalid regex",
    );

    let same = PLAN.replace("follower_when: { stdout_equals: \"t\" }", "follower_when: { stdout_equals: \"f\\n\" }");
    check_error(&err(&same), FILE, 11, "groups[0].strategy.leader.leader_when", "can be the same");

    let http = PLAN.replace(
        "exec: { command: psql, args: [\"-tAc\", \"select pg_is_in_recovery()\"] }",
        "http: { url: \"http://{{host}}:8008/role\" }",
    );
    check_error(&err(&http), FILE, 12, "groups[0].strategy.leader.follower_when.stdout_equals", "no stdout");
}

//! Every class of plan error names the file, the line and the field. Each test
//! checks the exact line, the field path and the key part of the message.

mod support;

use convoy_common::model::InventoryHost;
use convoy_common::plan::{PlanError, expand, parse_plan};

const FILE: &str = "plan.yaml";

fn parse_err(src: &str) -> PlanError {
    match parse_plan(FILE, src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

fn expand_err(src: &str) -> PlanError {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    match expand(&plan, &inventory()) {
        Ok(_) => panic!("expected an expand error for:\n{src}"),
        Err(e) => e,
    }
}

#[track_caller]
fn check(e: &PlanError, line: usize, field: &str, message: &str) {
    support::check_error(e, FILE, line, field, message);
}

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
        host("api-1", &[("role", "api")]),
        host("api-2", &[("role", "api"), ("port", "80")]),
    ]
}

/// A valid plan with two groups; tests append or replace lines.
const HEAD: &str = "\
name: p
version: \"2.0.0\"
groups:
  - name: database
    select: { role: db }
    steps:
      - exec: { command: \"true\" }
";

/// `HEAD` plus `group`, with a default check after it so that groups under
/// test need no steps of their own (and line numbers stay easy to count).
fn with_group(group: &str) -> String {
    format!("{HEAD}{group}defaults:\n  checks: [{{ tcp: {{ address: x }} }}]\n")
}

#[test]
fn yaml_syntax_error_reports_serde_line() {
    let e = parse_err("name: p\nversion: 1\ngroups:\n  - name: a\n   bad indentation: [\n");
    assert_eq!(e.file, FILE);
    assert_eq!(e.field, "(yaml)");
    assert!(matches!(e.line, Some(4..=6)), "{e}");
    assert!(!e.message.contains(" at line "), "{e}");
}

#[test]
fn unknown_top_level_field() {
    let e = parse_err(&format!("{HEAD}max_paralel: 3\n"));
    check(&e, 8, "max_paralel", "unknown field `max_paralel`");
}

#[test]
fn unknown_nested_field() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    strategy:\n      max_paralel: 2\n    steps:\n      - exec: { command: x }\n",
    ));
    check(&e, 11, "groups[1].strategy.max_paralel", "unknown field `max_paralel`");
}

#[test]
fn unknown_field_in_a_check() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    checks:\n      - tcp: { address: x }\n        retires: 3\n",
    ));
    check(&e, 12, "groups[1].checks[0].retires", "unknown field `retires`");
}

#[test]
fn missing_plan_name() {
    let e = parse_err("version: \"1\"\ngroups:\n  - name: a\n    select: {}\n    steps: [{ exec: { command: x } }]\n");
    check(&e, 1, "name", "missing required field 'name'");
}

#[test]
fn missing_version() {
    let e = parse_err("name: p\ngroups:\n  - name: a\n    select: {}\n    steps: [{ exec: { command: x } }]\n");
    check(&e, 1, "version", "missing required field 'version'");
}

#[test]
fn empty_version() {
    let e = parse_err("name: p\nversion: \"\"\ngroups: []\n");
    check(&e, 2, "version", "must not be empty");
}

#[test]
fn missing_groups() {
    let e = parse_err("name: p\nversion: \"1\"\n");
    check(&e, 1, "groups", "missing required field 'groups'");
}

#[test]
fn empty_groups() {
    let e = parse_err("name: p\nversion: \"1\"\ngroups: []\n");
    check(&e, 3, "groups", "at least one group");
}

#[test]
fn missing_group_name() {
    let e = parse_err(&with_group("  - select: { role: api }\n    steps:\n      - exec: { command: x }\n"));
    check(&e, 8, "groups[1].name", "missing required field 'name'");
}

#[test]
fn invalid_group_name() {
    let e = parse_err(&with_group("  - name: my api\n    select: { role: api }\n"));
    check(&e, 8, "groups[1].name", "invalid group name 'my api'");
}

#[test]
fn duplicate_group_name_points_at_the_second() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n  - name: database\n    select: { role: x }\n",
    ));
    check(&e, 10, "groups[2].name", "duplicate group name 'database' (already used by groups[0])");
}

#[test]
fn unknown_after_group() {
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    after: [database, cache]\n"));
    check(&e, 10, "groups[1].after", "unknown group 'cache'");
}

#[test]
fn cycle_names_the_whole_loop() {
    let src = "\
name: p
version: \"1\"
defaults:
  steps: [{ exec: { command: x } }]
groups:
  - name: a
    select: { role: a }
    after: [c]
  - name: b
    select: { role: b }
    after: [a]
  - name: c
    select: { role: c }
    after: [b]
  - name: d
    select: { role: d }
";
    let e = parse_err(src);
    check(&e, 8, "groups[0].after", "cycle: a -> b -> c -> a");
}

#[test]
fn self_dependency_is_a_cycle() {
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    after:\n      - api\n"));
    check(&e, 10, "groups[1].after", "cycle: api -> api");
}

#[test]
fn bad_percentages() {
    let cases = [
        ("max_parallel: \"150%\"", "max_parallel", "invalid percentage '150%': must be between 1% and 100%"),
        ("max_parallel: \"abc%\"", "max_parallel", "invalid value 'abc%'"),
        ("max_parallel: \"-5%\"", "max_parallel", "invalid value '-5%'"),
        ("max_parallel: \"0%\"", "max_parallel", "must be between 1% and 100%"),
        ("max_parallel: 0", "max_parallel", "must be at least 1"),
        ("max_failures: 101%", "max_failures", "must be between 0% and 100%"),
        ("max_failures: -1", "max_failures", "invalid value '-1'"),
    ];
    for (line, field, message) in cases {
        let e = parse_err(&with_group(&format!(
            "  - name: api\n    select: {{ role: api }}\n    strategy:\n      soak: 1s\n      {line}\n"
        )));
        check(&e, 12, &format!("groups[1].strategy.{field}"), message);
    }
}

#[test]
fn percentage_in_defaults() {
    let e = parse_err(&format!("defaults:\n  strategy: {{ max_parallel: \"150%\" }}\n{HEAD}"));
    check(&e, 2, "defaults.strategy.max_parallel", "between 1% and 100%");
}

#[test]
fn max_parallel_with_parallel_type() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    strategy:\n      type: parallel\n      max_parallel: 2\n",
    ));
    check(&e, 12, "groups[1].strategy.max_parallel", "not allowed with type: parallel");
}

#[test]
fn unknown_strategy_type() {
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    strategy:\n      type: canary\n"));
    check(&e, 11, "groups[1].strategy.type", "unknown variant `canary`");
}

#[test]
fn bad_durations_name_their_field() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    strategy: { soak: 2 minutes }\n    steps:\n      - exec: { command: x }\n",
    ));
    check(&e, 10, "groups[1].strategy.soak", "invalid duration '2 minutes'");

    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - exec: { command: x }\n        timeout: 5x\n",
    ));
    check(&e, 12, "groups[1].steps[0].timeout", "invalid duration '5x'");

    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    checks:\n      - tcp: { address: x }\n        deadline: 0s\n",
    ));
    check(&e, 12, "groups[1].checks[0].deadline", "must be greater than zero");

    let e = parse_err(&format!("host_lost_timeout: soon\n{HEAD}"));
    check(&e, 1, "host_lost_timeout", "invalid duration 'soon'");
}

#[test]
fn step_without_a_kind() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - name: nothing\n        timeout: 5s\n",
    ));
    check(&e, 11, "groups[1].steps[0]", "step has no kind: give exactly one of exec, archive, file");
}

#[test]
fn step_with_two_kinds() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - exec: { command: x }\n        file: { path: /x, content: y }\n",
    ));
    check(&e, 12, "groups[1].steps[0].file", "more than one kind ('exec' and 'file')");
}

#[test]
fn check_with_two_kinds_and_without() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    checks:\n      - http: { url: x }\n        tcp: { address: y }\n",
    ));
    check(&e, 12, "groups[1].checks[0].tcp", "check has more than one kind ('http' and 'tcp')");
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    checks:\n      - retries: 3\n"));
    check(&e, 11, "groups[1].checks[0]", "check has no kind: give exactly one of http, tcp, exec, file");
}

#[test]
fn missing_fields_inside_a_step() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - exec:\n          args: [a]\n",
    ));
    check(&e, 11, "groups[1].steps[0].exec.command", "missing required field 'command'");
}

#[test]
fn bad_sha256() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - archive:\n          component: demo\n          version: \"{{version}}\"\n          source: /x.tar.gz\n          sha256: abc123\n",
    ));
    check(&e, 15, "groups[1].steps[0].archive.sha256", "sha256 must be 64 hexadecimal characters");
}

#[test]
fn sha256_is_checked_after_templating() {
    let e = expand_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - archive: { component: d, version: \"1\", source: /x, sha256: \"{{label.role}}\" }\n",
    ));
    check(&e, 11, "groups[1].steps[0].archive.sha256", "for host api-1 (group 'api')");
}

#[test]
fn duplicate_step_names() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - name: go\n        exec: { command: x }\n    checks:\n      - name: go\n        tcp: { address: y }\n",
    ));
    check(&e, 14, "groups[1].checks[0].name", "duplicate step name 'go'");
}

#[test]
fn select_and_hosts_are_exclusive_and_one_is_required() {
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    hosts: [api-1]\n"));
    check(&e, 10, "groups[1].hosts", "either 'select' or 'hosts', not both");
    let e = parse_err(&with_group("  - name: api\n    after: [database]\n"));
    check(&e, 8, "groups[1].name", "a group needs 'select'");
    let e = parse_err(&with_group("  - name: api\n    hosts: [api-1, api-1]\n"));
    check(&e, 9, "groups[1].hosts[1]", "host 'api-1' is listed twice");
}

#[test]
fn group_with_nothing_to_do() {
    let e = parse_err("name: p\nversion: '1'\ngroups:\n  - name: idle\n    select: { role: db }\n");
    check(&e, 4, "groups[0].name", "group 'idle' has no steps or checks");
}

#[test]
fn unknown_template_variable_is_caught_at_parse() {
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    checks:\n      - http:\n          url: \"http://{{hostname}}/\"\n",
    ));
    check(&e, 12, "groups[1].checks[0].http.url", "unknown template variable '{{hostname}}'");
    let e = parse_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - exec: { command: echo, args: [ok, \"{{host\"] }\n",
    ));
    check(&e, 11, "groups[1].steps[0].exec.args[1]", "unterminated '{{'");
}

#[test]
fn missing_label_names_host_group_and_field() {
    let src = with_group(
        "  - name: api\n    select: { role: api }\n    checks:\n      - name: health\n        http:\n          url: \"http://127.0.0.1:{{label.port}}/health\"\n",
    );
    let e = expand_err(&src);
    check(&e, 13, "groups[1].checks[0].http.url", "host api-1 has no label 'port' (group 'api')");
}

#[test]
fn missing_installed_component() {
    let e = expand_err(&with_group(
        "  - name: api\n    select: { role: api }\n    steps:\n      - file: { path: /x, content: \"{{installed.demo}}\" }\n",
    ));
    check(&e, 11, "groups[1].steps[0].file.content", "host api-1 has no installed component 'demo'");
}

#[test]
fn template_errors_in_inherited_defaults_point_at_the_defaults() {
    let src = "\
name: p
version: '1'
defaults:
  checks:
    - tcp:
        address: \"{{label.port}}\"
groups:
  - name: api
    select: { role: api }
";
    let e = expand_err(src);
    check(&e, 6, "defaults.checks[0].tcp.address", "host api-1 has no label 'port' (group 'api')");
}

#[test]
fn selector_matching_no_host() {
    let e = expand_err(&with_group("  - name: cache\n    select:\n      role: cache\n      zone: eu\n"));
    check(&e, 9, "groups[1].select", "selector role=cache,zone=eu matches no host");
}

#[test]
fn host_in_two_groups() {
    let e = expand_err(&with_group("  - name: everyone\n    select: {}\n"));
    check(&e, 9, "groups[1].select", "host db-1 is in both group 'database' and group 'everyone'");
    let e = expand_err(&with_group("  - name: again\n    hosts:\n      - api-1\n      - db-1\n"));
    check(&e, 9, "groups[1].hosts", "host db-1 is in both group 'database' and group 'again'");
}

#[test]
fn unknown_explicit_host() {
    let e = expand_err(&with_group("  - name: api\n    hosts:\n      - api-1\n      - api-9\n"));
    check(&e, 11, "groups[1].hosts[1]", "unknown host 'api-9'");
}

#[test]
fn display_format() {
    let e = parse_err(&with_group("  - name: api\n    select: { role: api }\n    after: [nope]\n"));
    assert_eq!(e.to_string(), "plan.yaml:10: groups[1].after: unknown group 'nope'");
}

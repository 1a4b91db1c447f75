//! Catalog errors name the file, the line and the field, like plan errors.

mod support;

use convoy_common::catalog::{Phase, parse_catalog};
use convoy_common::plan::PlanError;

const FILE: &str = "catalog.yaml";

fn err(src: &str) -> PlanError {
    match parse_catalog(FILE, src) {
        Ok(c) => panic!("expected an error, got {} releases for:\n{src}", c.releases.len()),
        Err(e) => e,
    }
}

#[track_caller]
fn check(e: &PlanError, line: usize, field: &str, message: &str) {
    support::check_error(e, FILE, line, field, message);
}

const HEAD: &str = "\
product: canopsis
component: canopsis
releases:
  - version: 3.38.0
  - version: 3.39.0
";

#[test]
fn a_minimal_catalog_parses() {
    let c = parse_catalog(FILE, HEAD).unwrap();
    assert_eq!(c.releases.len(), 2);
    assert_eq!((c.releases[0].line, c.releases[1].line), (4, 5));
    assert!(c.releases.iter().all(|r| !r.skippable && r.steps.is_empty()));
    assert!(c.downgrades.is_empty());
}

#[test]
fn steps_keep_their_field_line_phase_and_default_name() {
    let src = format!(
        "{HEAD}    steps:
      post:
        - exec: {{ command: restart }}
        - name: check
          exec: {{ command: check }}
      pre:
        - exec: {{ command: broadcast }}
"
    );
    let c = parse_catalog(FILE, &src).unwrap();
    let steps = &c.releases[1].steps;
    let got: Vec<(Phase, &str, &str, usize)> =
        steps.iter().map(|s| (s.phase, s.name.as_str(), s.field.as_str(), s.line)).collect();
    assert_eq!(
        got,
        [
            (Phase::Pre, "pre-1", "releases[1].steps.pre[0]", 12),
            (Phase::Post, "post-1", "releases[1].steps.post[0]", 8),
            (Phase::Post, "check", "releases[1].steps.post[1]", 9),
        ]
    );
}

#[test]
fn yaml_and_unknown_field_errors() {
    check(&err(&format!("{HEAD}    requierd: true\n")), 6, "releases[1].requierd", "unknown field `requierd`");
    check(
        &err(&format!("{HEAD}    steps:\n      migrations: []\n")),
        7,
        "releases[1].steps.migrations",
        "unknown field",
    );
    check(
        &err(&format!("{HEAD}    steps:\n      pre: {{ a: 1 }}\n")),
        7,
        "releases[1].steps.pre",
        "expected a sequence",
    );
    check(&err("product: p\ncomponent: p\nreleases: [\n"), 4, "(yaml)", "");
    check(&err("product: p\nversion: 1\n"), 2, "version", "unknown field `version`");
}

#[test]
fn required_fields() {
    check(&err("component: c\nreleases:\n  - version: '1'\n"), 1, "product", "missing required field");
    check(&err("product: p\nreleases:\n  - version: '1'\n"), 1, "component", "missing required field");
    check(&err("product: p\ncomponent: ''\nreleases:\n  - version: '1'\n"), 2, "component", "must not be empty");
    check(&err("product: p\ncomponent: c\n"), 1, "releases", "missing required field");
    check(&err("product: p\ncomponent: c\nreleases: []\n"), 3, "releases", "at least one release");
    check(&err(&format!("{HEAD}  - notes: no version\n")), 6, "releases[2].version", "missing required field");
}

#[test]
fn bad_duplicate_and_unordered_versions() {
    check(&err(&format!("{HEAD}  - version: 3.40 beta\n")), 6, "releases[2].version", "invalid version '3.40 beta'");
    check(&err(&format!("{HEAD}  - version: abc\n")), 6, "releases[2].version", "must start with a digit");
    check(&err(&format!("{HEAD}  - version: 3.39.0\n")), 6, "releases[2].version", "duplicate release 3.39.0");
    // Equal by ordering is a duplicate too.
    check(&err(&format!("{HEAD}  - version: 3.39.00\n")), 6, "releases[2].version", "duplicate release 3.39.00");
    check(
        &err(&format!("{HEAD}  - version: 3.38.5\n")),
        6,
        "releases[2].version",
        "releases must be listed in ascending order: 3.38.5 comes after 3.39.0 (releases[1])",
    );
}

#[test]
fn required_and_skippable_conflict() {
    let src = format!("{HEAD}  - version: 3.40.0\n    required: true\n    skippable: true\n");
    check(&err(&src), 8, "releases[2].skippable", "a required release cannot be skippable");
}

#[test]
fn step_shape_errors() {
    check(
        &err(&format!("{HEAD}    steps:\n      pre:\n        - just a string\n")),
        8,
        "releases[1].steps.pre[0]",
        "a step must be a mapping",
    );
    check(
        &err(&format!("{HEAD}    steps:\n      pre:\n        - name: ''\n          exec: {{ command: x }}\n")),
        8,
        "releases[1].steps.pre[0].name",
        "must be a non-empty string",
    );
    let dup = format!(
        "{HEAD}    steps:\n      pre:\n        - name: a\n          exec: {{ command: x }}\n      post:\n        - name: a\n          exec: {{ command: y }}\n"
    );
    check(
        &err(&dup),
        11,
        "releases[1].steps.post[0].name",
        "duplicate step name 'a' in this release (also releases[1].steps.pre[0])",
    );
    // A default name collides with an explicit one as well.
    let dup = format!(
        "{HEAD}    steps:\n      pre:\n        - exec: {{ command: x }}\n        - name: pre-1\n          exec: {{ command: y }}\n"
    );
    check(&err(&dup), 9, "releases[1].steps.pre[1].name", "duplicate step name 'pre-1'");
}

#[test]
fn condition_errors() {
    check(&err(&format!("{HEAD}    when: pro\n")), 6, "releases[1].when", "expected a mapping");
    check(
        &err(&format!(
            "{HEAD}    steps:\n      pre:\n        - exec: {{ command: x }}\n          when:\n            edition: []\n"
        )),
        10,
        "releases[1].steps.pre[0].when.edition",
        "an empty list matches nothing",
    );
    check(
        &err(&format!(
            "{HEAD}    steps:\n      pre:\n        - exec: {{ command: x }}\n          when:\n            labels: pro\n"
        )),
        10,
        "releases[1].steps.pre[0].when.labels",
        "expected a mapping of KEY: VALUE",
    );
    check(
        &err(&format!(
            "{HEAD}    steps:\n      pre:\n        - exec: {{ command: x }}\n          when:\n            installed: {{ a: b }}\n"
        )),
        10,
        "releases[1].steps.pre[0].when.installed",
        "expected a value or a list of values",
    );
}

#[test]
fn downgrade_edge_errors() {
    let with = |edge: &str| format!("{HEAD}downgrades:\n  - {edge}\n");
    check(
        &err(&with("{ from: 3.39.0, to: 3.37.0 }")),
        7,
        "downgrades[0].to",
        "unknown release 3.37.0: not in releases",
    );
    check(&err(&with("{ from: 3.41.0, to: 3.38.0 }")), 7, "downgrades[0].from", "unknown release 3.41.0");
    check(
        &err(&with("{ from: 3.38.0, to: 3.39.0 }")),
        7,
        "downgrades[0].to",
        "a downgrade must go down: 3.39.0 is not below 3.38.0",
    );
    check(&err(&with("{ from: 3.39.0, to: 3.39.0 }")), 7, "downgrades[0].to", "must go down");
    check(&err(&with("{ from: 3.39.0, to: bad! }")), 7, "downgrades[0].to", "invalid version 'bad!'");
    check(&err(&with("{ to: 3.38.0 }")), 7, "downgrades[0].from", "missing required field");
    let twice = format!("{HEAD}downgrades:\n  - {{ from: 3.39.0, to: 3.38.0 }}\n  - {{ from: 3.39.0, to: 3.38.0 }}\n");
    check(&err(&twice), 8, "downgrades[1]", "duplicate downgrade 3.39.0 -> 3.38.0 (also downgrades[0])");
    let block = format!(
        "{HEAD}downgrades:\n  - from: 3.39.0\n    to: 3.38.0\n    steps:\n      pre:\n        - exec: {{ command: x }}\n          when: {{ installed: [] }}\n"
    );
    check(&err(&block), 12, "downgrades[0].steps.pre[0].when.installed", "an empty list matches nothing");
}

#[test]
fn the_canopsis_example_parses() {
    let c = parse_catalog("canopsis.yaml", include_str!("../../examples/catalogs/canopsis.yaml")).unwrap();
    let versions: Vec<String> = c.releases.iter().map(|r| r.version.to_string()).collect();
    assert_eq!(versions, ["3.38.0", "3.39.0", "3.39.1", "3.40.0"]);
    assert!(c.releases.iter().all(|r| !r.skippable));
    // Steps reused through YAML aliases are separate steps of each release.
    for r in &c.releases[1..] {
        assert!(r.steps.iter().any(|s| s.name == "package-update" && s.phase == Phase::Upgrade), "{}", r.version);
        assert!(r.steps.iter().any(|s| s.name == "engines-up" && s.phase == Phase::Checks), "{}", r.version);
    }
}

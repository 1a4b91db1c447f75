//! Randomised plans: a valid plan with random YAML values put in any field,
//! lines dropped or repeated, random numbers and durations, deep nesting and
//! arbitrary text. Whatever comes in, parsing, validation, expansion and the
//! estimate never panic, and every error names the file and a line.
//!
//! 256 cases per property by default; `PROPTEST_CASES=100000 cargo nextest
//! run -p convoy-common --test plan_random` runs them longer.

mod support;

use std::collections::BTreeMap;

use convoy_common::catalog::parse_catalog;
use convoy_common::estimate::{self, Measured};
use convoy_common::plan::{PlanError, expand_detailed, parse_plan, parse_plan_with_catalogs};
use proptest::prelude::*;
use proptest::test_runner::Config;

const FILE: &str = "plan.yaml";

/// A plan touching most of the format: hooks, canaries, strategies, every
/// step and check kind with their numbers and durations.
const BASE: &str = r#"name: p
version: "2.0.0"
component: app
host_lost_timeout: 60s
max_failures: 10%
on_failure: halt
hooks:
  before:
    on: h1
    steps:
      - exec: { command: "echo leader" }
        capture: { name: leader, regex: "(.*)" }
defaults:
  strategy: { max_parallel: 2, soak: 1s }
  checks:
    - tcp: { address: "{{host}}:80" }
      deadline: 30s
groups:
  - name: web
    select: { role: web }
    strategy:
      max_parallel: 50%
      max_failures: 1
      soak: 2s
    canary:
      count: 1
      promote:
        after: 1m
    steps:
      - exec:
          command: "deploy {{version}} {{captured.leader}}"
          args: ["a", "b"]
          env: { A: "1" }
        timeout: 10s
        estimate: 5s
        rollback: { command: "undo" }
      - archive:
          component: app
          version: "{{version}}"
          source: app.tgz
          sha256: 0000000000000000000000000000000000000000000000000000000000000000
      - file: { path: /tmp/x, content: "y" }
      - service: { name: app, action: restart }
    checks:
      - http: { url: "http://{{host}}/health", status: 200 }
        deadline: 60s
        interval: 1s
        min_healthy_time: 1s
        retries: 3
        estimate: 2s
      - metric: { url: "http://{{host}}/m", prometheus: up, below: 2 }
  - name: db
    hosts: [h3]
    after: [web]
    strategy: { type: parallel, max_failures: 0 }
    steps:
      - apt: { package: app, version: "{{version}}" }
"#;

fn inventory() -> Vec<convoy_common::model::InventoryHost> {
    vec![
        support::inventory_host("h1", &[("role", "web")], &[("app", "1.0.0")]),
        support::inventory_host("h2", &[("role", "web")], &[("app", "1.0.0")]),
        support::inventory_host("h3", &[("role", "db")], &[]),
    ]
}

/// 256 cases unless `PROPTEST_CASES` says otherwise; no regression files.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// An error names the file and a line within the text.
fn located(e: &PlanError, file: &str, source: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    let line = e.line.ok_or_else(|| TestCaseError::fail(format!("no line: {shown}")))?;
    prop_assert_eq!(&e.file, file, "{}", shown);
    // The YAML parser may point just past the last line (end of input).
    prop_assert!(line >= 1 && line <= source.lines().count() + 1, "line {} out of range: {}", line, shown);
    prop_assert!(shown.starts_with(&format!("{file}:{line}: ")), "{}", shown);
    Ok(())
}

/// Parse, expand and estimate `source` as `convoy plan` does; any error
/// must be located.
fn run(source: &str) -> Result<(), TestCaseError> {
    match parse_plan(FILE, source) {
        Err(e) => located(&e, FILE, source),
        Ok(plan) => match expand_detailed(&plan, &inventory()) {
            Err(e) => located(&e, FILE, source),
            Ok(x) => {
                let summary = estimate::summary_json(&x, &Measured::new());
                prop_assert!(summary["estimate"]["total_ms"].is_u64());
                Ok(())
            }
        },
    }
}

/// A random YAML scalar or small collection, biased toward what breaks
/// parsers and arithmetic.
fn yaml_value() -> impl Strategy<Value = String> {
    let numbers = prop_oneof![
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("4294967295".to_string()),
        Just("1e400".to_string()),
        Just(".nan".to_string()),
        Just("100000000000%".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (any::<u64>(), prop::sample::select(vec!["ms", "s", "m", "h", "h30m", "d", "%"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
    ];
    let words = prop_oneof![
        Just("\"\"".to_string()),
        Just("\"..\"".to_string()),
        Just("\"../../etc\"".to_string()),
        Just("a/b".to_string()),
        Just("\"{{captured.nope}}\"".to_string()),
        Just("\"{{version\"".to_string()),
        Just("~".to_string()),
        Just("true".to_string()),
        Just("manual".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("!!binary aGk=".to_string()),
        "[a-z0-9._/{}%-]{0,12}",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    let collections = prop_oneof![
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, [2, [3]]]".to_string()),
        Just("{ a: { b: { c: 1 } } }".to_string()),
        (1usize..200).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        (1usize..200).prop_map(|d| format!("{}{}", "{a: ".repeat(d), "}".repeat(d))),
    ];
    prop_oneof![4 => numbers, 3 => words, 1 => collections]
}

/// One edit of a plan's lines.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value after the line's first `: ` (or the whole item).
    Value(usize, String),
    /// Drop the line.
    Drop(usize),
    /// Write the line twice.
    Repeat(usize),
    /// Insert a random key at the line's indentation.
    Key(usize, String, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), yaml_value()).prop_map(|(i, v)| Edit::Value(i.index(1 << 20), v)),
        1 => any::<prop::sample::Index>().prop_map(|i| Edit::Drop(i.index(1 << 20))),
        1 => any::<prop::sample::Index>().prop_map(|i| Edit::Repeat(i.index(1 << 20))),
        2 => (any::<prop::sample::Index>(), "[a-z_]{1,16}", yaml_value())
            .prop_map(|(i, k, v)| Edit::Key(i.index(1 << 20), k, v)),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Value(i, v) => {
                let line = &mut lines[i % n];
                *line = match line.split_once(": ") {
                    Some((k, _)) => format!("{k}: {v}"),
                    None => format!("{line} {v}"),
                };
            }
            Edit::Drop(i) if lines.len() > 1 => {
                lines.remove(i % n);
            }
            Edit::Drop(_) => {}
            Edit::Repeat(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Edit::Key(i, k, v) => {
                let at = i % n;
                let indent = lines[at].len() - lines[at].trim_start_matches([' ', '-']).len();
                lines.insert(at, format!("{}{k}: {v}", " ".repeat(indent)));
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_base_plan_expands() {
    let plan = parse_plan(FILE, BASE).unwrap_or_else(|e| panic!("{e}"));
    expand_detailed(&plan, &inventory()).unwrap_or_else(|e| panic!("{e}"));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_plans_never_panic_and_errors_are_located(edits in prop::collection::vec(edit(), 1..6)) {
        run(&apply(BASE, &edits))?;
    }

    #[test]
    fn random_numbers_in_every_numeric_field(value in yaml_value(), which in any::<prop::sample::Index>()) {
        let fields = ["max_failures", "max_parallel", "soak", "after", "timeout", "estimate", "deadline",
            "interval", "min_healthy_time", "retries", "host_lost_timeout", "status", "below", "count"];
        let field = fields[which.index(fields.len())];
        // Every occurrence of the field, block or flow style.
        let source = BASE
            .lines()
            .map(|l| match l.split_once(&format!("{field}: ")) {
                Some((head, rest)) => {
                    let end = rest.find([',', '}']).unwrap_or(rest.len());
                    format!("{head}{field}: {value}{}", &rest[end..])
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        run(&source)?;
    }

    #[test]
    fn deep_nesting_is_refused_or_parsed(depth in 1usize..3000, kind in 0usize..4) {
        let nested = match kind {
            0 => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
            2 => format!("\n    {}x", "- ".repeat(depth)),
            _ => (0..depth).map(|d| format!("\n{}k{d}:", " ".repeat(d + 4))).collect::<String>() + " 1",
        };
        run(&BASE.replace("    steps:\n      - apt:", &format!("    hosts_extra: {nested}\n    steps:\n      - apt:")))?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        run(&text)?;
        run(&format!("{BASE}{text}"))?;
    }

    #[test]
    fn mutated_catalog_steps_are_located_in_the_catalog(edits in prop::collection::vec(edit(), 1..4)) {
        let catalog = apply(CATALOG, &edits);
        let parsed = match parse_catalog("c.yaml", &catalog) {
            Err(e) => return located(&e, "c.yaml", &catalog),
            Ok(c) => c,
        };
        let catalogs = BTreeMap::from([("app".to_string(), parsed)]);
        let plan = "name: p\nversion: 2.0.0\ngroups:\n  - name: a\n    select: { role: web }\n    release: { catalog: app }\n";
        match parse_plan_with_catalogs(FILE, plan, &catalogs) {
            Err(e) if e.file == "c.yaml" => located(&e, "c.yaml", &catalog)?,
            Err(e) => located(&e, FILE, plan)?,
            Ok(p) => match expand_detailed(&p, &inventory()) {
                Err(e) if e.file == "c.yaml" => located(&e, "c.yaml", &catalog)?,
                Err(e) => located(&e, FILE, plan)?,
                Ok(x) => {
                    estimate::summary_json(&x, &Measured::new());
                }
            },
        }
    }
}

const CATALOG: &str = r#"product: app
component: app
releases:
  - version: 1.0.0
  - version: 2.0.0
    steps:
      pre:
        - exec: { command: "stop" }
          timeout: 30s
      upgrade:
        - name: install
          archive:
            component: app
            version: "2.0.0"
            source: app.tgz
            sha256: 0000000000000000000000000000000000000000000000000000000000000000
      checks:
        - tcp: { address: "{{host}}:80" }
          deadline: 1m
          retries: 5
"#;

//! Hostile plans: numbers and durations far out of range, deep nesting, huge
//! files, many groups, paths in archive names, a byte-order mark, catalog
//! typos. Each must end in a located error (or a clamped, working rollout),
//! never a panic, an allocation sized by the plan's numbers, or a stall.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_common::catalog::{Catalog, parse_catalog};
use convoy_common::estimate::{self, Measured};
use convoy_common::limits::{self, MAX_DURATION, PlanLimits};
use convoy_common::model::{InventoryHost, StepKind};
use convoy_common::plan::{
    PlanError, expand, expand_detailed, parse_plan, parse_plan_with_catalogs, parse_plan_with_limits,
};

/// The process's peak resident memory (Linux `VmHWM`), in bytes. nextest
/// runs each test in its own process, so this is the test's own peak.
fn peak_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

const FILE: &str = "plan.yaml";

/// Every duration field of a plan, each on its own line (see `FIELDS`).
const BASE: &str = r#"name: p
version: "2.0.0"
host_lost_timeout: 60s
groups:
  - name: web
    hosts: [h1, h2]
    strategy:
      max_parallel: 1
      soak: 1s
    canary:
      count: 1
      promote:
        after: 1s
    steps:
      - exec: { command: "true" }
        timeout: 10s
        estimate: 5s
    checks:
      - tcp: { address: "x:1" }
        deadline: 60s
        interval: 1s
        min_healthy_time: 1s
        estimate: 2s
        retries: 3
"#;

/// (text in `BASE`, its key, line, field path).
const FIELDS: &[(&str, &str, usize, &str)] = &[
    ("host_lost_timeout: 60s", "host_lost_timeout", 3, "host_lost_timeout"),
    ("soak: 1s", "soak", 9, "groups[0].strategy.soak"),
    ("after: 1s", "after", 13, "groups[0].canary.promote.after"),
    ("timeout: 10s", "timeout", 16, "groups[0].steps[0].timeout"),
    ("estimate: 5s", "estimate", 17, "groups[0].steps[0].estimate"),
    ("deadline: 60s", "deadline", 20, "groups[0].checks[0].deadline"),
    ("interval: 1s", "interval", 21, "groups[0].checks[0].interval"),
    ("min_healthy_time: 1s", "min_healthy_time", 22, "groups[0].checks[0].min_healthy_time"),
    ("estimate: 2s", "estimate", 23, "groups[0].checks[0].estimate"),
];

fn host(id: &str) -> InventoryHost {
    support::inventory_host(id, &[], &[])
}

fn parse_err(src: &str) -> PlanError {
    match parse_plan(FILE, src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

/// Parse, expand against `hosts`, and estimate, as `convoy plan` does.
fn plan_and_estimate(src: &str, hosts: &[InventoryHost]) -> serde_json::Value {
    let plan = parse_plan(FILE, src).unwrap_or_else(|e| panic!("{e}"));
    let x = expand_detailed(&plan, hosts).unwrap_or_else(|e| panic!("{e}"));
    estimate::summary_json(&x, &Measured::new())
}

#[test]
fn base_plan_is_valid() {
    plan_and_estimate(BASE, &[host("h1"), host("h2")]);
}

#[test]
fn every_duration_over_the_maximum_is_refused_at_its_line() {
    for &(text, key, line, field) in FIELDS {
        for huge in ["18446744073709551615", "18446744073709551615ms", "720h1s", "43201m"] {
            let src = BASE.replace(text, &format!("{key}: {huge}"));
            let e = parse_err(&src);
            support::check_error(&e, FILE, line, field, "");
            assert!(
                e.message.contains("longer than the maximum of 720h") || e.message.contains("invalid duration"),
                "{e}"
            );
        }
    }
}

#[test]
fn every_duration_at_the_maximum_plans_and_estimates() {
    // The check's deadline at the maximum panicked `convoy plan` (deadline
    // plus the timeout margin); min_healthy_time must stay below it.
    let mut src = BASE.to_string();
    for &(text, key, _, _) in FIELDS {
        let value = if key == "min_healthy_time" { "719h" } else { "720h" };
        src = src.replace(text, &format!("{key}: {value}"));
    }
    let summary = plan_and_estimate(&src, &[host("h1"), host("h2")]);
    let total = summary["estimate"]["total_ms"].as_u64().expect("a total");
    assert!(total >= MAX_DURATION.as_millis() as u64, "{summary}");
}

#[test]
fn huge_max_parallel_is_clamped_to_the_group_not_allocated() {
    // 100,000,000,000 slots of an estimate window was 1.6 TB.
    for n in ["100000000000", "200000000", "18446744073709551615"] {
        let src = BASE.replace("max_parallel: 1", &format!("max_parallel: {n}"));
        let plan = parse_plan(FILE, &src).unwrap_or_else(|e| panic!("{e}"));
        let spec = expand(&plan, &[host("h1"), host("h2")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.groups[0].steady_window(), 2, "{n}");
        plan_and_estimate(&src, &[host("h1"), host("h2")]);
    }
    let e = parse_err(&BASE.replace("max_parallel: 1", "max_parallel: 184467440737095516160"));
    support::check_error(&e, FILE, 8, "groups[0].strategy.max_parallel", "too large");
}

#[test]
fn retries_are_bounded() {
    let e = parse_err(&BASE.replace("retries: 3", "retries: 4294967295"));
    support::check_error(&e, FILE, 24, "groups[0].checks[0].retries", "more than the limit of 1000");
    let e = parse_err(&BASE.replace("retries: 3", "retries: 18446744073709551616"));
    assert_eq!(e.line, Some(24), "{e}");
    assert!(parse_plan(FILE, &BASE.replace("retries: 3", "retries: 1000")).is_ok());
}

#[test]
fn archive_names_with_paths_are_refused_at_plan_time() {
    let step = |component: &str, version: &str| {
        BASE.replace(
            "      - exec: { command: \"true\" }\n",
            &format!(
                "      - archive:\n          component: {component}\n          version: {version}\n          source: x.tgz\n          sha256: {}\n",
                "a".repeat(64)
            ),
        )
    };
    for (component, version, line, field) in [
        ("\"..\"", "\"1.0\"", 16, "component"),
        ("app", "\"../../etc\"", 17, "version"),
        ("a/b", "\"1.0\"", 16, "component"),
        ("app", "\"\"", 17, "version"),
    ] {
        let e = parse_err(&step(component, version));
        support::check_error(&e, FILE, line, &format!("groups[0].steps[0].archive.{field}"), "");
    }
    // A templated name is checked once rendered, per host.
    let src = step("app", "\"{{label.v}}\"");
    let plan = parse_plan(FILE, &src).unwrap_or_else(|e| panic!("{e}"));
    let bad = support::inventory_host("h1", &[("v", "..")], &[]);
    let e = expand(&plan, &[bad, support::inventory_host("h2", &[("v", "1.2")], &[])]).unwrap_err();
    support::check_error(&e, FILE, 17, "groups[0].steps[0].archive.version", "for host h1");
    let good = |id: &str| support::inventory_host(id, &[("v", "1.2")], &[]);
    let spec = expand(&plan, &[good("h1"), good("h2")]).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&spec.hosts[0].steps[0].kind, StepKind::Archive(a) if a.version == "1.2"));
}

#[test]
fn a_byte_order_mark_is_accepted_and_lines_still_count() {
    let with_bom = format!("\u{feff}{BASE}");
    plan_and_estimate(&with_bom, &[host("h1"), host("h2")]);
    let e = parse_err(&with_bom.replace("soak: 1s", "soak: forever"));
    support::check_error(&e, FILE, 9, "groups[0].strategy.soak", "invalid duration");
    let text = limits::decode(FILE, with_bom.as_bytes(), &PlanLimits::default()).expect("UTF-8");
    assert!(text.starts_with("name: p"));
}

#[test]
fn a_plan_that_is_not_utf8_is_a_located_error() {
    let mut bytes = BASE.as_bytes().to_vec();
    let at = BASE.find("web").expect("in base");
    bytes[at] = 0xff;
    let e = limits::decode(FILE, &bytes, &PlanLimits::default()).unwrap_err();
    support::check_error(&e, FILE, 5, "(encoding)", "not UTF-8");
}

#[test]
fn a_50_mb_plan_is_refused_by_size_before_parsing() {
    // Deeply nested too: the size is what must be reported, unparsed.
    let big = "[".repeat(50 * 1024 * 1024);
    let e = parse_err(&big);
    support::check_error(&e, FILE, 1, "(size)", "more than the limit of 4194304 bytes");
    let e = limits::decode(FILE, big.as_bytes(), &PlanLimits::default()).unwrap_err();
    assert_eq!(e.field, "(size)");
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let flow = format!("name: p\nversion: 1\ngroups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = parse_err(&flow);
    support::check_error(&e, FILE, 3, "(yaml)", "nested more than 64 levels");
    let dashes = format!("name: p\nversion: 1\ngroups:\n  {}x\n", "- ".repeat(100_000));
    let e = parse_err(&dashes);
    support::check_error(&e, FILE, 4, "(yaml)", "nested more than 64 levels");
    let mut block = String::from("name: p\nversion: 1\n");
    for depth in 0..100 {
        block.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
    }
    let e = parse_err(&block);
    support::check_error(&e, FILE, 67, "(yaml)", "nested more than 64 levels");
}

#[test]
fn group_step_and_host_counts_are_limited() {
    let limits = PlanLimits { max_groups: 1, max_steps: 1, max_hosts: 1, ..PlanLimits::default() };
    let catalogs = BTreeMap::new();
    let two_groups =
        BASE.replace("groups:\n", "groups:\n  - name: db\n    hosts: [h3]\n    steps: [{ exec: { command: x } }]\n");
    let e = parse_plan_with_limits(FILE, &two_groups, &catalogs, &limits).unwrap_err();
    support::check_error(&e, FILE, 4, "groups", "2 groups, more than the limit of 1");
    let e = parse_plan_with_limits(FILE, BASE, &catalogs, &limits).unwrap_err();
    support::check_error(&e, FILE, 14, "groups[0].steps", "2 steps and checks, more than the limit of 1");
    let limits = PlanLimits { max_hosts: 1, ..PlanLimits::default() };
    let e = parse_plan_with_limits(FILE, BASE, &catalogs, &limits).unwrap_err();
    support::check_error(&e, FILE, 6, "groups[0].hosts", "2 hosts, more than the limit of 1");
    let selected = BASE.replace("hosts: [h1, h2]", "select: { role: web }");
    let plan = parse_plan_with_limits(FILE, &selected, &catalogs, &limits).unwrap_or_else(|e| panic!("{e}"));
    let web = |id: &str| support::inventory_host(id, &[("role", "web")], &[]);
    let e = expand(&plan, &[web("h1"), web("h2")]).unwrap_err();
    support::check_error(&e, FILE, 6, "groups[0].select", "more than the limit of 1 hosts");
}

/// A plan of `n` groups in one chain, each with one host.
fn chain_plan(n: usize) -> (String, Vec<InventoryHost>) {
    let mut src =
        String::from("name: many\nversion: \"2\"\ndefaults:\n  steps: [{ exec: { command: \"true\" } }]\ngroups:\n");
    for i in 0..n {
        if i == 0 {
            src.push_str(&format!("  - {{ name: g{i}, hosts: [h{i}] }}\n"));
        } else {
            src.push_str(&format!("  - {{ name: g{i}, hosts: [h{i}], after: [g{}] }}\n", i - 1));
        }
    }
    (src, (0..n).map(|i| host(&format!("h{i}"))).collect())
}

#[test]
fn a_hundred_thousand_groups_take_memory_linear_in_the_plan() {
    let (src, hosts) = chain_plan(100_000);
    // The default byte limit (4 MiB, the coordinator's message size) is a
    // little short of this chain; a coordinator may raise it.
    let limits = PlanLimits { max_bytes: 8 * 1024 * 1024, ..PlanLimits::default() };
    let plan = parse_plan_with_limits(FILE, &src, &BTreeMap::new(), &limits).unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(&plan, &hosts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.groups.len(), 100_000);
    // One second per host: the chain takes 100,000 s, each group starting
    // when the one before it ends (no recursion 100,000 deep).
    let rollout = estimate::rollout_estimate(&spec, &vec![Duration::from_secs(1); spec.hosts.len()]);
    assert_eq!(rollout.total, Duration::from_secs(100_000));
    assert_eq!(rollout.groups[99_999].start, Duration::from_secs(99_999));
    // A table of every group's ancestors alone was 10^10 bytes (8 GB seen
    // at 100,000 groups); everything here is a few kilobytes per group.
    if let Some(peak) = peak_rss() {
        eprintln!("peak RSS {peak} bytes for {} bytes of plan", src.len());
        assert!(peak < 1 << 30, "{peak} bytes at peak for 100,000 groups");
    }
}

#[test]
fn hook_captures_are_still_checked_through_a_long_chain() {
    let (mut src, hosts) = chain_plan(2_000);
    src = src.replace(
        "groups:\n",
        "hooks:\n  before:\n    on: h0\n    steps: [{ exec: { command: \"x\" }, capture: { name: leader, regex: \"(.*)\" } }]\ngroups:\n",
    );
    let last = "  - { name: g1999, hosts: [h1999], after: [g1998] }\n";
    let reading = "  - { name: g1999, hosts: [h1999], after: [g1998], steps: [{ exec: { command: \"{{captured.leader}}\" } }] }\n";
    let ok = src.replace(last, reading);
    let plan = parse_plan(FILE, &ok).unwrap_or_else(|e| panic!("{e}"));
    expand(&plan, &hosts).unwrap_or_else(|e| panic!("{e}"));
    let e = parse_err(&ok.replace("{{captured.leader}}", "{{captured.other}}"));
    assert!(e.message.contains("is not captured by an earlier step"), "{e}");
}

const CATALOG: &str = r#"product: app
component: app
releases:
  - version: 1.0.0
  - version: 2.0.0
    steps:
      upgrade:
        - name: install
          exec:
            command: "true"
          timout: 10s
"#;

#[test]
fn a_misspelt_catalog_step_field_is_named_at_its_line() {
    let catalog: Catalog = parse_catalog("catalogs/x.yaml", CATALOG).unwrap_or_else(|e| panic!("{e}"));
    let catalogs = BTreeMap::from([("app".to_string(), catalog)]);
    let plan = "name: p\nversion: 2.0.0\ngroups:\n  - name: a\n    hosts: [h1]\n    release: { catalog: app }\n";
    let e = parse_plan_with_catalogs(FILE, plan, &catalogs).unwrap_err();
    support::check_error(&e, "catalogs/x.yaml", 11, "releases[1].steps.upgrade[0].timout", "unknown field `timout`");
    let nested =
        CATALOG.replace("            command: \"true\"\n          timout: 10s\n", "            comand: \"true\"\n");
    let catalog = parse_catalog("catalogs/x.yaml", &nested).unwrap_or_else(|e| panic!("{e}"));
    let catalogs = BTreeMap::from([("app".to_string(), catalog)]);
    let e = parse_plan_with_catalogs(FILE, plan, &catalogs).unwrap_err();
    support::check_error(
        &e,
        "catalogs/x.yaml",
        10,
        "releases[1].steps.upgrade[0].exec.comand",
        "unknown field `comand`",
    );
}

#[test]
fn durations_in_catalog_steps_are_bounded_too() {
    let huge = CATALOG.replace("timout: 10s", "timeout: 18446744073709551615");
    let catalog = parse_catalog("catalogs/x.yaml", &huge).unwrap_or_else(|e| panic!("{e}"));
    let catalogs = BTreeMap::from([("app".to_string(), catalog)]);
    let plan = "name: p\nversion: 2.0.0\ngroups:\n  - name: a\n    hosts: [h1]\n    release: { catalog: app }\n";
    let e = parse_plan_with_catalogs(FILE, plan, &catalogs).unwrap_err();
    support::check_error(&e, "catalogs/x.yaml", 11, "releases[1].steps.upgrade[0].timeout", "longer than the maximum");
    assert_eq!(MAX_DURATION, Duration::from_secs(720 * 3600));
}

#[test]
fn a_large_catalog_locates_every_step_in_one_pass() {
    // 20,000 releases (1.5 MB): locating each step by rescanning the whole
    // text took over five minutes.
    let mut src = String::from("product: app\ncomponent: app\nreleases:\n");
    for i in 0..20_000 {
        src.push_str(&format!("  - version: 1.0.{i}\n    steps:\n      upgrade: [{{ exec: {{ command: x }} }}]\n"));
    }
    let catalog = parse_catalog("c.yaml", &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(catalog.releases.len(), 20_000);
    let last = &catalog.releases[19_999];
    assert_eq!(last.line, 3 + 3 * 19_999 + 1);
    assert_eq!(last.steps[0].line, last.line + 2);
}

#[test]
fn catalog_steps_per_release_are_limited() {
    let mut src =
        String::from("product: app\ncomponent: app\nreleases:\n  - version: 1.0.0\n    steps:\n      upgrade:\n");
    for _ in 0..1001 {
        src.push_str("        - exec: { command: x }\n");
    }
    let e = parse_catalog("c.yaml", &src).unwrap_err();
    support::check_error(&e, "c.yaml", 5, "releases[0].steps", "1001 steps, more than the limit of 1000");
}

#[test]
fn many_selector_groups_look_only_at_matching_hosts() {
    // Each selector used to scan the whole inventory: groups x hosts.
    let n = 20_000;
    let mut src = String::from("name: many\nversion: \"2\"\ndefaults:\n  steps: [{ exec: { command: x } }]\ngroups:\n");
    for i in 0..n {
        src.push_str(&format!("  - {{ name: g{i}, select: {{ role: web, n: \"{i}\" }} }}\n"));
    }
    src.push_str("  - { name: one, select: { host: extra } }\n");
    let mut hosts: Vec<InventoryHost> = (0..n)
        .map(|i| support::inventory_host(&format!("h{i}"), &[("role", "web"), ("n", &i.to_string())], &[]))
        .collect();
    hosts.push(host("extra"));
    let plan = parse_plan(FILE, &src).unwrap_or_else(|e| panic!("{e}"));
    let spec = expand(&plan, &hosts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.groups.len(), n + 1);
    let last = &spec.groups[n - 1];
    assert_eq!(spec.hosts[last.hosts[0]].host, format!("h{}", n - 1));
    assert_eq!(spec.hosts[spec.groups[n].hosts[0]].host, "extra");
}

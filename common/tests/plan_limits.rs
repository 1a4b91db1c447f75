//! Hostile plans: huge numbers and durations in every field, deep nesting,
//! oversized documents, too many groups. Each gets a clear error naming the
//! file, line and field (or the document), never a panic, and memory stays
//! linear in the plan's size.

mod support;

use std::time::Duration;

use convoy_common::catalog::parse_catalog;
use convoy_common::estimate::{Measured, summary_json};
use convoy_common::limits;
use convoy_common::plan::{expand_detailed, parse_plan};
use support::{check_error, inventory_host};

fn plan_with(field_line: &str) -> String {
    format!(
        "name: p\nversion: \"2\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n{field_line}\n    steps:\n      - exec: {{ command: \"true\" }}\n"
    )
}

#[test]
fn huge_numbers_and_durations_are_refused_with_their_location() {
    let max = "18446744073709551615";
    let cases = [
        (format!("    strategy: {{ type: rolling, soak: {max} }}"), "groups[0].strategy.soak", "limit"),
        ("    strategy: { type: rolling, soak: 31d }".to_string(), "groups[0].strategy.soak", "invalid duration"),
        ("    strategy: { type: rolling, soak: 721h }".to_string(), "groups[0].strategy.soak", "longer than the limit"),
        (
            "    strategy: { type: rolling, max_parallel: 100000000000 }".to_string(),
            "groups[0].strategy.max_parallel",
            "limit",
        ),
        (
            format!("    strategy: {{ type: rolling, max_parallel: {max}0 }}"),
            "groups[0].strategy.max_parallel",
            "too large",
        ),
        (
            "    strategy: { type: rolling, max_failures: 200000000 }".to_string(),
            "groups[0].strategy.max_failures",
            "limit",
        ),
        (format!("    canary: {{ count: 1, promote: {{ after: {max} }} }}"), "groups[0].canary.promote.after", ""),
    ];
    for (line, field, message) in cases {
        let e = parse_plan("p.yaml", &plan_with(&line)).expect_err(&line);
        check_error(&e, "p.yaml", 6, field, message);
    }
    // Step and check fields.
    let step = |extra: &str| {
        format!(
            "name: p\nversion: \"2\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n    steps:\n      - exec: {{ command: \"true\" }}\n{extra}\n"
        )
    };
    for (extra, field) in [
        (format!("        timeout: {max}"), "groups[0].steps[0].timeout"),
        (format!("        estimate: {max}"), "groups[0].steps[0].estimate"),
    ] {
        let e = parse_plan("p.yaml", &step(&extra)).expect_err(&extra);
        check_error(&e, "p.yaml", 8, field, "");
    }
    let check = |extra: &str| {
        format!(
            "name: p\nversion: \"2\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n    checks:\n      - tcp: {{ address: \"127.0.0.1:1\" }}\n{extra}\n"
        )
    };
    for (extra, field, message) in [
        (format!("        deadline: {max}"), "groups[0].checks[0].deadline", ""),
        (format!("        interval: {max}"), "groups[0].checks[0].interval", ""),
        ("        retries: 4000000000".to_string(), "groups[0].checks[0].retries", "limit"),
    ] {
        let e = parse_plan("p.yaml", &check(&extra)).expect_err(&extra);
        check_error(&e, "p.yaml", 8, field, message);
    }
}

#[test]
fn the_longest_allowed_durations_expand_and_estimate_without_overflow() {
    // Every duration at the limit: `convoy plan`'s expansion and estimate
    // (which add them up) must not panic.
    let src = "name: p\nversion: \"2\"\ngroups:\n  - name: web\n    select: { role: web }\n    strategy: { type: rolling, soak: 720h }\n    canary: { count: 1, promote: { after: 720h } }\n    steps:\n      - exec: { command: \"true\" }\n        timeout: 720h\n        estimate: 720h\n    checks:\n      - tcp: { address: \"127.0.0.1:1\" }\n        deadline: 720h\n        interval: 720h\n        retries: 100000\n";
    let plan = parse_plan("p.yaml", src).unwrap();
    let inv: Vec<_> = (0..50).map(|i| inventory_host(&format!("w{i}"), &[("role", "web")], &[])).collect();
    let x = expand_detailed(&plan, &inv).unwrap();
    let json = summary_json(&x, &Measured::default());
    assert!(json["estimate"]["total_ms"].as_u64().unwrap() >= 50 * 720 * 3600 * 1000, "{json}");
}

#[test]
fn deep_nesting_and_oversized_documents_are_refused_before_parsing() {
    // 100,000 levels of flow nesting in 200 KB.
    let deep = format!("name: p\nversion: \"2\"\ngroups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = parse_plan("deep.yaml", &deep).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("deep.yaml", Some(3)), "{e}");
    assert!(e.message.contains("nested"), "{e}");
    // The same in a catalog.
    let e = parse_catalog("c.yaml", &format!("product: x\nreleases: {}\n", "{a: ".repeat(50_000))).unwrap_err();
    assert!(e.message.contains("nested"), "{e}");
    // 50 MB.
    let big = format!("name: p\n# {}\n", "x".repeat(50 * 1024 * 1024));
    let e = parse_plan("big.yaml", &big).unwrap_err();
    assert!(e.message.contains("larger than the limit"), "{e}");
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let src = format!("\u{feff}{}", plan_with("    strategy: { type: rolling }"));
    let plan = parse_plan("bom.yaml", &src).unwrap();
    assert_eq!(plan.name, "p");
}

fn chain_of_groups(n: usize) -> String {
    let mut s = String::from("name: p\nversion: \"2\"\ngroups:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: g{i}\n    hosts: [h{i}]\n"));
        if i > 0 {
            s.push_str(&format!("    after: [g{}]\n", i - 1));
        }
        s.push_str("    steps: [{ exec: { command: \"true\" } }]\n");
    }
    s
}

#[test]
fn too_many_groups_are_refused_and_the_most_allowed_expand_in_a_long_chain() {
    let e = parse_plan("many.yaml", &chain_of_groups(limits::MAX_GROUPS + 1)).unwrap_err();
    check_error(&e, "many.yaml", 3, "groups", "more than the limit");

    // A chain of the most groups allowed, each after the previous one: the
    // capture and ancestor bookkeeping must be linear (the quadratic table
    // of before needed 1.8 GB at 40,000 groups) and recursion-free (a
    // recursive walk overflows the stack on a chain this long).
    let n = limits::MAX_GROUPS;
    let plan = parse_plan("chain.yaml", &chain_of_groups(n)).unwrap();
    let inv: Vec<_> = (0..n).map(|i| inventory_host(&format!("h{i}"), &[], &[])).collect();
    let x = expand_detailed(&plan, &inv).unwrap();
    assert_eq!(x.spec.groups.len(), n);
    assert_eq!(x.spec.groups[n - 1].after, vec![n - 2]);
}

#[test]
fn a_window_wider_than_its_group_is_the_group() {
    let plan = parse_plan(
        "p.yaml",
        &plan_with("    strategy: { type: rolling, max_parallel: 1000000, max_failures: 1000000 }"),
    )
    .unwrap();
    let inv: Vec<_> = (0..2).map(|i| inventory_host(&format!("w{i}"), &[("role", "web")], &[])).collect();
    let x = expand_detailed(&plan, &inv).unwrap();
    let s = &x.spec.groups[0].strategy;
    assert_eq!((s.max_parallel, s.max_failures), (2, 2));
    let _ = Duration::ZERO;
}

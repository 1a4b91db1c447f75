//! Unit tests of the plan's building blocks: field paths and the locator,
//! durations, amounts, strategies, templates and serde messages.

use std::time::Duration;

use super::duration::{format_duration, parse_duration};
use super::errors::{FieldPath, plain_type_names, strip_marks, yaml_error};
use super::locate;
use super::raw::RawPlan;
use super::strategies::{Amount, StrategyDef, parse_amount};
use super::template::{Var, parse_var, render};

fn path(s: &str) -> FieldPath {
    let mut p = FieldPath::default();
    for part in s.split('.') {
        let (key, indices) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        p = p.key(key);
        for idx in indices.split('[').filter(|x| !x.is_empty()) {
            p = p.idx(idx.trim_end_matches(']').parse().unwrap());
        }
    }
    p
}

const DOC: &str = "\
# a comment
name: demo
groups:
  - name: db          # line 4
    select: { role: db }
    steps:
      - exec: { command: sh }
      - name: write
        file:
          path: /tmp/x
          content: |
            - not: an item
            name: not a key
  # between groups
  -
    name: api         # line 16
    after: [db]
    checks:
    - http:
        url: http://x
      retries: 3
\"quoted\": 1
";

#[test]
fn field_path_display() {
    assert_eq!(path("groups[1].checks[0].http.url").to_string(), "groups[1].checks[0].http.url");
    assert_eq!(FieldPath::default().key("a").idx(2).idx(3).key("b").to_string(), "a[2][3].b");
}

#[test]
fn locator_finds_block_style_fields() {
    let at = |p: &str| locate::line_of(DOC, &path(p).0);
    assert_eq!(at("name"), 2);
    assert_eq!(at("groups"), 3);
    assert_eq!(at("groups[0]"), 4);
    assert_eq!(at("groups[0].name"), 4);
    assert_eq!(at("groups[0].select"), 5);
    assert_eq!(at("groups[0].steps[0].exec"), 7);
    assert_eq!(at("groups[0].steps[1].name"), 8);
    assert_eq!(at("groups[0].steps[1].file.path"), 10);
    assert_eq!(at("groups[0].steps[1].file.content"), 11);
    assert_eq!(at("groups[1]"), 15);
    assert_eq!(at("groups[1].name"), 16);
    assert_eq!(at("groups[1].after"), 17);
    assert_eq!(at("groups[1].checks[0].http.url"), 20);
    assert_eq!(at("groups[1].checks[0].retries"), 21);
    assert_eq!(at("quoted"), 22);
}

#[test]
fn locator_falls_back_to_the_deepest_match() {
    let at = |p: &str| locate::line_of(DOC, &path(p).0);
    // Flow style: the key holding the flow mapping.
    assert_eq!(at("groups[0].select.role"), 5);
    assert_eq!(at("groups[0].steps[0].exec.command"), 7);
    // Missing key: the enclosing item.
    assert_eq!(at("groups[1].soak"), 15);
    assert_eq!(at("groups[5].name"), 3);
    // Missing top-level key: the start of the document.
    assert_eq!(at("version"), 1);
    // Block-scalar bodies are not keys.
    assert_eq!(at("groups[0].name.not"), 4);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1m30s500ms"), Ok(Duration::from_millis(90_500)));
    assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    for bad in ["", "abc", "2x", "1.5s", "-1s", "s", "10 s", "99999999999999999999h"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert!(parse_duration("2x").unwrap_err().contains("invalid duration '2x'"));
}

#[test]
fn duration_formatting_round_trips() {
    for (d, s) in [(0, "0s"), (250, "250ms"), (2000, "2s"), (5_400_000, "1h30m"), (1500, "1s500ms")] {
        assert_eq!(format_duration(Duration::from_millis(d)), s);
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(d)));
    }
}

#[test]
fn amounts() {
    assert_eq!(parse_amount("2", 1), Ok(Amount::Count(2)));
    assert_eq!(parse_amount("25%", 1), Ok(Amount::Percent(25)));
    assert_eq!(parse_amount("100%", 1), Ok(Amount::Percent(100)));
    assert_eq!(parse_amount("0%", 0), Ok(Amount::Percent(0)));
    assert_eq!(parse_amount("0", 0), Ok(Amount::Count(0)));
    assert_eq!(parse_amount("0", 1), Err("must be at least 1".into()));
    assert!(parse_amount("0%", 1).unwrap_err().contains("between 1% and 100%"));
    assert!(parse_amount("150%", 0).unwrap_err().contains("between 0% and 100%"));
    for bad in ["abc%", "-5%", "-1", "2.5", "%", "x"] {
        assert!(parse_amount(bad, 0).unwrap_err().contains("expected an integer or a percentage"), "{bad}");
    }
}

#[test]
fn resolving_strategies() {
    let def = |mp, mf| StrategyDef { max_parallel: vec![mp], max_failures: mf, ..StrategyDef::default() };
    let s = def(Amount::Percent(25), Amount::Percent(10)).resolve(10);
    assert_eq!((s.max_parallel, s.max_failures), (2, 1));
    let s = def(Amount::Percent(25), Amount::Percent(10)).resolve(3);
    assert_eq!((s.max_parallel, s.max_failures), (1, 0));
    // A window wider than the group is clamped to it: nothing is sized
    // by the plan's number.
    let s = def(Amount::Count(4), Amount::Count(2)).resolve(3);
    assert_eq!((s.max_parallel, s.max_failures), (3, 2));
    let s = def(Amount::Count(100_000_000_000), Amount::Count(usize::MAX)).resolve(2);
    assert_eq!((s.max_parallel, s.max_failures), (2, 2));
    let s = StrategyDef { all_at_once: true, ..StrategyDef::default() }.resolve(7);
    assert_eq!(s.max_parallel, 7);
}

#[test]
fn templates_render_and_reject() {
    let lookup = |v: Var<'_>| match v {
        Var::Host => Ok("h1".to_string()),
        Var::Label("port") => Ok("80".to_string()),
        Var::Label(k) => Err(format!("no label '{k}'")),
        _ => Ok("x".to_string()),
    };
    assert_eq!(render("a{{host}}b{{ label.port }}c", lookup), Ok("ah1b80c".to_string()));
    assert_eq!(render("no templates", lookup), Ok("no templates".to_string()));
    assert_eq!(render("{{label.zone}}", lookup), Err("no label 'zone'".to_string()));
    assert!(render("{{hots}}", lookup).unwrap_err().contains("unknown template variable '{{hots}}'"));
    assert!(render("{{label.}}", lookup).unwrap_err().contains("unknown template variable"));
    assert!(render("{{host", lookup).unwrap_err().contains("unterminated"));
    assert_eq!(parse_var("installed.demo"), Ok(Var::Installed("demo")));
}

#[test]
fn serde_messages_are_split_into_field_and_message() {
    assert_eq!(strip_marks("x at line 3 column 5, while y at line 1 column 1"), "x, while y");
    assert_eq!(plain_type_names("expected struct RawStrategy here"), "expected a mapping here");
    let err = serde_norway::from_str::<RawPlan>("name: a\ndefaults:\n  strategy: fast\n").unwrap_err();
    let e = yaml_error("p.yaml", &err);
    assert_eq!((e.line, e.field.as_str()), (Some(3), "defaults.strategy"));
    assert_eq!(e.message, "invalid type: string \"fast\", expected a mapping");
    let err = serde_norway::from_str::<RawPlan>("name: a\nbogus: 1\n").unwrap_err();
    let e = yaml_error("p.yaml", &err);
    assert_eq!((e.line, e.field.as_str()), (Some(2), "bogus"));
    assert!(e.message.starts_with("unknown field `bogus`"), "{}", e.message);
}

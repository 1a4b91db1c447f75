//! `windows:` in plans: parsing, per-host time zones from labels, group
//! overrides, estimates carried into the spec, and errors naming the field.

use std::time::Duration;

use convoy_common::model::InventoryHost;
use convoy_common::plan::{expand, parse_plan};

fn host(id: &str, role: &str, tz: &str) -> InventoryHost {
    InventoryHost {
        id: id.into(),
        labels: [("role".to_string(), role.to_string()), ("tz".to_string(), tz.to_string())].into(),
        ..InventoryHost::default()
    }
}

const PLAN: &str = r#"name: nightly
version: "2.0"
windows:
  timezone: "{{label.tz}}"
  cutoff: 15m
  open:
    - days: [mon, tue, wed, thu, fri]
      start: "22:00"
      duration: 6h
    - cron: "0 2 * * sat,sun"
      duration: 4h
  blackouts:
    - { from: 2026-12-20, to: 2027-01-03, reason: year-end freeze }
groups:
  - name: web
    select: { role: web }
    steps:
      - { name: install, exec: { command: "true" }, estimate: 10m }
  - name: db
    select: { role: db }
    windows: { anytime: true }
    steps:
      - { name: install, exec: { command: "true" } }
"#;

#[test]
fn windows_expand_per_host_with_their_own_zones_and_estimates() {
    let plan = parse_plan("p.yaml", PLAN).unwrap();
    let inventory =
        [host("paris", "web", "Europe/Paris"), host("ny", "web", "America/New_York"), host("db1", "db", "x")];
    let spec = expand(&plan, &inventory).unwrap();
    let w = spec.windows.as_ref().expect("windows");
    let web = spec.groups.iter().position(|g| g.name == "web").unwrap();
    let db = spec.groups.iter().position(|g| g.name == "db").unwrap();
    let gw = w.group(web).expect("web has windows");
    assert_eq!(gw.open.len(), 2);
    assert_eq!(gw.cutoff, Duration::from_secs(15 * 60));
    assert_eq!(gw.blackouts.len(), 1);
    assert_eq!(gw.open[0].describe(), "mon,tue,wed,thu,fri 22:00 for 6h");
    assert!(w.group(db).is_none(), "anytime");
    for &i in &spec.groups[web].hosts {
        let zone = w.hosts[i].zone.name();
        assert_eq!(zone, if spec.hosts[i].host == "paris" { "Europe/Paris" } else { "America/New_York" });
        assert_eq!(w.hosts[i].estimate, Duration::from_secs(600), "the declared estimate");
    }
}

fn err(src: &str) -> String {
    parse_plan("p.yaml", src).unwrap_err().to_string()
}

#[test]
fn bad_windows_are_refused_naming_the_field() {
    let bad = PLAN.replace("start: \"22:00\"", "start: \"25:00\"");
    assert!(err(&bad).contains("windows.open[0].start"), "{}", err(&bad));
    let bad = PLAN.replace("0 2 * * sat,sun", "0 0 2 * * *");
    assert!(err(&bad).contains("windows.open[1].cron") && err(&bad).contains("5 fields"), "{}", err(&bad));
    let bad = PLAN.replace("\"{{label.tz}}\"", "Mars/Olympus");
    assert!(err(&bad).contains("windows.timezone") && err(&bad).contains("unknown time zone"), "{}", err(&bad));
    let bad = PLAN.replace("duration: 6h", "duration: 8d");
    assert!(err(&bad).contains("windows.open[0].duration"), "{}", err(&bad));
    let bad = PLAN.replace("to: 2027-01-03", "to: 2026-12-01");
    assert!(err(&bad).contains("windows.blackouts[0].to"), "{}", err(&bad));
    let bad = PLAN.replace("[mon, tue", "[monday-ish, tue");
    assert!(err(&bad).contains("windows.open[0].days[0]"), "{}", err(&bad));
}

#[test]
fn a_host_zone_label_that_is_not_a_zone_is_an_expansion_error_naming_the_host() {
    let plan = parse_plan("p.yaml", PLAN).unwrap();
    let e = expand(&plan, &[host("web1", "web", "Nowhere/Else"), host("db1", "db", "UTC")]).unwrap_err().to_string();
    assert!(e.contains("host web1") && e.contains("unknown time zone"), "{e}");
}

//! `convoy plan`'s calendar estimate: which window each batch of a windowed
//! group lands in, a batch that no longer fits tonight going to tomorrow's
//! window, groups without windows taking their duration estimate, and the
//! end date.

use convoy_common::calendar_estimate::calendar;
use convoy_common::estimate::{Measured, host_durations};
use convoy_common::model::{InventoryHost, UnixMillis};
use convoy_common::plan::{expand_detailed, parse_plan};

fn host(id: &str, role: &str) -> InventoryHost {
    InventoryHost { id: id.into(), labels: [("role".to_string(), role.to_string())].into(), ..InventoryHost::default() }
}

const PLAN: &str = r#"name: nightly
version: "2.0"
windows:
  timezone: UTC
  cutoff: 15m
  open:
    - start: "22:00"
      duration: 1h
groups:
  - name: db
    select: { role: db }
    windows: { anytime: true }
    steps:
      - { name: install, exec: { command: "true" }, estimate: 30m }
  - name: web
    select: { role: web }
    after: [db]
    strategy: { type: rolling, max_parallel: 1 }
    steps:
      - { name: install, exec: { command: "true" }, estimate: 20m }
"#;

/// 2026-01-07 21:00 UTC.
const NINE_PM: u64 = 1_767_819_600_000;

#[test]
fn batches_land_in_the_windows_they_fit_and_the_end_date_follows() {
    let plan = parse_plan("p.yaml", PLAN).unwrap();
    let inventory = [host("db-1", "db"), host("web-1", "web"), host("web-2", "web"), host("web-3", "web")];
    let x = expand_detailed(&plan, &inventory).unwrap();
    let c = calendar(&x.spec, &host_durations(&x, &Measured::new()), UnixMillis(NINE_PM)).expect("windows");
    assert_eq!(c.start, "2026-01-07 21:00 UTC");
    assert_eq!(c.groups.len(), 1, "only the windowed group: {c:?}");
    let web = &c.groups[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.windows, ["mon,tue,wed,thu,fri,sat,sun 22:00 for 1h"]);
    assert_eq!(web.timezone, "UTC");
    let spans: Vec<(Vec<String>, String, String)> =
        web.batches.iter().map(|b| (b.hosts.clone(), b.start.clone().unwrap(), b.end.clone().unwrap())).collect();
    // db ends at 21:30; the window opens at 22:00; 20m + 15m cutoff fits
    // twice before 23:00, the third host waits for the next night.
    assert_eq!(
        spans,
        [
            (vec!["web-1".to_string()], "2026-01-07 22:00 UTC".to_string(), "2026-01-07 22:20 UTC".to_string()),
            (vec!["web-2".to_string()], "2026-01-07 22:20 UTC".to_string(), "2026-01-07 22:40 UTC".to_string()),
            (vec!["web-3".to_string()], "2026-01-08 22:00 UTC".to_string(), "2026-01-08 22:20 UTC".to_string()),
        ]
    );
    assert_eq!(c.end.as_deref(), Some("2026-01-08 22:20 UTC"));

    // A host whose estimate plus cutoff fits no window: no end date.
    let long = PLAN.replace("estimate: 20m", "estimate: 50m");
    let x = expand_detailed(&parse_plan("p.yaml", &long).unwrap(), &inventory).unwrap();
    let c = calendar(&x.spec, &host_durations(&x, &Measured::new()), UnixMillis(NINE_PM)).unwrap();
    assert!(c.groups[0].batches.iter().all(|b| b.start.is_none()), "{c:?}");
    assert_eq!(c.end, None);

    // No windows, no calendar.
    let none = PLAN
        .replace("windows: { anytime: true }", "")
        .replace("windows:\n  timezone: UTC\n  cutoff: 15m\n  open:\n    - start: \"22:00\"\n      duration: 1h\n", "");
    let x = expand_detailed(&parse_plan("p.yaml", &none).unwrap(), &inventory).unwrap();
    assert_eq!(calendar(&x.spec, &host_durations(&x, &Measured::new()), UnixMillis(NINE_PM)), None);
}

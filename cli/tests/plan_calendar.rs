//! `convoy plan` on a plan with maintenance windows shows each windowed
//! group's windows, the window each batch is expected to land in, and the
//! expected end date (text and JSON).

use std::process::Command;

const PLAN: &str = r#"name: nightly
version: "2.0"
windows:
  timezone: UTC
  open:
    - start: "22:00"
      duration: 1h
groups:
  - name: web
    select: { role: web }
    strategy: { type: rolling, max_parallel: 1 }
    steps:
      - { name: install, exec: { command: "true" }, estimate: 20m }
"#;

#[test]
fn plan_shows_the_calendar_estimate_of_a_windowed_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, inv) = (dir.path().join("plan.yaml"), dir.path().join("inv.yaml"));
    std::fs::write(&plan, PLAN).unwrap();
    std::fs::write(&inv, "- { id: h1, labels: { role: web } }\n- { id: h2, labels: { role: web } }\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_convoy"))
            .arg("plan")
            .arg(&plan)
            .arg("--inventory")
            .arg(&inv)
            .args(extra)
            .env_remove("CONVOY_COORDINATOR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&[]);
    assert!(text.contains("calendar (if started now, "), "{text}");
    assert!(text.contains("  web: windows mon,tue,wed,thu,fri,sat,sun 22:00 for 1h (UTC)"), "{text}");
    for (k, h) in [(1, "h1"), (2, "h2")] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("batch {k}: {h} -> window at ")))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(" 22:") && line.contains(", done by "), "{line}");
    }
    let end = text.lines().find(|l| l.trim_start().starts_with("expected end: ")).unwrap_or_else(|| panic!("{text}"));
    // Whenever it runs, the last host ends inside a 22:00-23:00 window.
    assert!(end.contains(" 22:") && end.ends_with(" UTC"), "{end}");

    let json: serde_json::Value = serde_json::from_str(&run(&["--output", "json"])).unwrap();
    let batches = json["calendar"]["groups"][0]["batches"].as_array().unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(batches.len(), 2);
    assert!(json["calendar"]["end_ms"].as_u64().unwrap() > json["calendar"]["start_ms"].as_u64().unwrap());
}

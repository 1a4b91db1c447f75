//! Maintenance windows in the engine, over a fake clock: waiting for an
//! opening, windows across midnight and the week, daylight saving in
//! Europe/Paris and America/New_York, hosts in flight when a window closes,
//! estimates that do not fit, per-host zones, blackouts, a replay while
//! waiting and the operator's override.

mod engine_support;

use std::time::Duration;

use chrono::{NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use convoy_common::engine::{Action, Engine, Event, GroupState, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::invariants;
use convoy_common::model::{RolloutSpec, UnixMillis};
use convoy_common::schedule::{Blackout, GroupWindows, HostWindow, Recurrence, RolloutWindows, WindowRule, parse_tz};
use engine_support::*;

use Weekday::*;

const ALL: [Weekday; 7] = [Mon, Tue, Wed, Thu, Fri, Sat, Sun];

fn at(s: &str) -> u64 {
    let t = Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap());
    u64::try_from(t.timestamp_millis()).unwrap()
}

fn rule(days: &[Weekday], start: &str, hours: u64) -> WindowRule {
    WindowRule {
        recurrence: Recurrence::Weekly {
            days: days.to_vec(),
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
        },
        duration: Duration::from_secs(hours * 3600),
    }
}

/// `spec` with windows on every group; host entry `i` in `zones[i]`
/// (or the last zone given) with estimate `estimate_min` minutes.
fn windowed(
    mut spec: RolloutSpec,
    open: Vec<WindowRule>,
    blackouts: Vec<Blackout>,
    cutoff_min: u64,
    zones: &[&str],
    estimate_min: u64,
) -> RolloutSpec {
    let group =
        GroupWindows { open, blackouts, cutoff: Duration::from_secs(cutoff_min * 60), timezone: zones.join(",") };
    let hosts = (0..spec.hosts.len())
        .map(|i| HostWindow {
            zone: parse_tz(zones[i.min(zones.len() - 1)]).unwrap(),
            estimate: Duration::from_secs(estimate_min * 60),
        })
        .collect();
    spec.windows = Some(RolloutWindows { groups: vec![Some(group); spec.groups.len()], hosts });
    spec
}

fn run_at(spec: RolloutSpec, start: &str) -> Run {
    let mut run = Run::new(spec);
    run.now = at(start);
    run
}

/// The `WindowOpens` timers asked for.
fn window_timers(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Schedule { at, timer: Timer::WindowOpens { .. } } => Some(at.0),
            _ => None,
        })
        .collect()
}

fn fire_window(run: &mut Run, group: &str, when: u64) -> Vec<Action> {
    run.now = when;
    run.timer(Timer::WindowOpens { group: group.to_string() })
}

fn nightly(hosts: usize, max_parallel: usize, estimate_min: u64) -> RolloutSpec {
    windowed(
        spec(&[g("web", hosts, max_parallel)], 1),
        vec![rule(&ALL, "22:00", 6)],
        vec![],
        15,
        &["UTC"],
        estimate_min,
    )
}

#[test]
fn a_group_outside_its_window_waits_then_runs_when_it_opens() {
    let mut run = run_at(nightly(2, 1, 10), "2026-01-07 12:00");
    let actions = run.start();
    assert!(dispatched(&actions).is_empty(), "nothing starts outside the window");
    assert_eq!(window_timers(&actions), vec![at("2026-01-07 22:00")]);
    let view = run.engine.view();
    assert_eq!(view.groups[0].state_str(), "waiting_window");
    assert_eq!(view.groups[0].window.as_ref().unwrap().waiting_until, Some(UnixMillis(at("2026-01-07 22:00"))));
    assert_eq!(run.engine.state(), RolloutState::Running, "waiting is not finishing");

    // An early or stale timer changes nothing.
    assert!(fire_window(&mut run, "web", at("2026-01-07 21:00")).is_empty());
    let actions = fire_window(&mut run, "web", at("2026-01-07 22:00"));
    assert_eq!(dispatched(&actions), vec![("web-0".to_string(), 0)]);
    let view = run.engine.view_at(run.now());
    assert_eq!(view.groups[0].state_str(), "running");
    assert_eq!(view.groups[0].window.as_ref().unwrap().closes_at, Some(UnixMillis(at("2026-01-08 04:00"))));
    run.assert_invariants();
}

#[test]
fn a_window_across_midnight_keeps_starting_hosts_after_midnight() {
    let mut run = run_at(nightly(3, 1, 10), "2026-01-07 23:50");
    run.start();
    run.now = at("2026-01-08 00:30");
    let actions = run.ok("web-0");
    assert_eq!(dispatched(&actions), vec![("web-1".to_string(), 0)], "open after midnight");
    // 03:40: 10 min + 15 min cutoff no longer fits before 04:00.
    run.now = at("2026-01-08 03:40");
    let actions = run.ok("web-1");
    assert!(dispatched(&actions).is_empty());
    assert_eq!(window_timers(&actions), vec![at("2026-01-08 22:00")], "carries on the next night");
    run.assert_invariants();
}

#[test]
fn a_window_across_the_week_boundary_is_open_on_monday_morning() {
    let spec = windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&[Sun], "23:00", 4)], vec![], 0, &["UTC"], 30);
    // 2026-01-12 is a Monday.
    let mut run = run_at(spec.clone(), "2026-01-12 01:00");
    assert_eq!(dispatched(&run.start()).len(), 1);
    let mut run = run_at(spec, "2026-01-12 03:00");
    let actions = run.start();
    assert_eq!(window_timers(&actions), vec![at("2026-01-18 23:00")], "30 min no longer fits: next Sunday");
}

#[test]
fn hosts_in_flight_finish_after_the_window_closes_and_no_new_one_starts() {
    let mut run = run_at(nightly(4, 2, 10), "2026-01-08 03:30");
    let actions = run.start();
    assert_eq!(dispatched(&actions).len(), 2);
    // The window closed at 04:00; the hosts report at 04:30.
    run.now = at("2026-01-08 04:30");
    let a = run.ok("web-0");
    let b = run.ok("web-1");
    assert_eq!(run.state_of("web-0"), HostState::Succeeded);
    assert_eq!(run.state_of("web-1"), HostState::Succeeded);
    assert!(dispatched(&a).is_empty() && dispatched(&b).is_empty());
    assert_eq!(run.state_of("web-2"), HostState::Pending);
    assert_eq!(window_timers(&a), vec![at("2026-01-08 22:00")]);
    assert!(window_timers(&b).is_empty(), "the same wait is not asked for twice");
    run.assert_invariants();
}

#[test]
fn a_host_whose_estimate_does_not_fit_waits_for_a_window_where_it_does() {
    // Mon-Fri 22:00 for 6h, plus a Saturday 2h window too short for 2h + 15 min.
    let open = vec![rule(&[Mon, Tue, Wed, Thu, Fri], "22:00", 6), rule(&[Sat], "10:00", 2)];
    let spec = windowed(spec(&[g("web", 1, 1)], 1), open, vec![], 15, &["UTC"], 120);
    // Friday 2026-01-09 02:30: the window closes at 04:00, 2h15 does not fit.
    let mut run = run_at(spec, "2026-01-09 02:30");
    let actions = run.start();
    assert!(dispatched(&actions).is_empty());
    assert_eq!(window_timers(&actions), vec![at("2026-01-09 22:00")]);
    // Saturday's short window is skipped: from Friday 04:00 the next fit is Monday.
    let mut run2 = run_at(
        windowed(spec_sat_only(), vec![rule(&[Sat], "10:00", 2), rule(&[Mon], "22:00", 6)], vec![], 15, &["UTC"], 120),
        "2026-01-09 05:00",
    );
    assert_eq!(window_timers(&run2.start()), vec![at("2026-01-12 22:00")]);
}

fn spec_sat_only() -> RolloutSpec {
    spec(&[g("web", 1, 1)], 1)
}

#[test]
fn a_host_that_fits_no_window_fails_without_a_step_sent() {
    let mut run = run_at(nightly(1, 1, 600), "2026-01-07 12:00");
    let actions = run.start();
    assert!(dispatched(&actions).is_empty());
    match run.state_of("web-0") {
        HostState::Failed { step: None, reason } => assert!(reason.contains("no maintenance window"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(run.engine.state(), RolloutState::Failed);
}

#[test]
fn each_host_upgrades_in_its_own_night() {
    // web-0 in New York, web-1 in Tokyo; nightly 01:00 for 3h local.
    let spec = windowed(
        spec(&[g("web", 2, 2)], 1),
        vec![rule(&ALL, "01:00", 3)],
        vec![],
        0,
        &["America/New_York", "Asia/Tokyo"],
        30,
    );
    // 16:30 UTC is 01:30 in Tokyo and 12:30 in New York.
    let mut run = run_at(spec, "2026-06-10 16:30");
    let actions = run.start();
    assert_eq!(dispatched(&actions), vec![("web-1".to_string(), 0)], "Tokyo's night; New York waits");
    assert_eq!(window_timers(&actions), vec![at("2026-06-11 05:00")], "01:00 EDT");
    run.now = at("2026-06-10 17:00");
    run.ok("web-1");
    let actions = fire_window(&mut run, "web", at("2026-06-11 05:00"));
    assert_eq!(dispatched(&actions), vec![("web-0".to_string(), 0)]);
    run.ok("web-0");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn paris_spring_forward_start_in_the_gap_opens_at_three() {
    let spec = windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&[Sun], "02:30", 2)], vec![], 0, &["Europe/Paris"], 30);
    let mut run = run_at(spec, "2026-03-28 12:00");
    assert_eq!(window_timers(&run.start()), vec![at("2026-03-29 01:00")], "03:00 CEST");
}

#[test]
fn paris_autumn_fold_start_opens_at_the_first_occurrence() {
    let spec = windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&[Sun], "02:30", 1)], vec![], 0, &["Europe/Paris"], 30);
    let mut run = run_at(spec.clone(), "2026-10-24 12:00");
    assert_eq!(window_timers(&run.start()), vec![at("2026-10-25 00:30")], "02:30 CEST");
    // At the second 02:30 (CET, 01:30 UTC) the window of the first one has closed.
    let mut run = run_at(spec, "2026-10-25 01:40");
    assert_eq!(window_timers(&run.start()), vec![at("2026-11-01 01:30")]);
}

#[test]
fn new_york_spring_and_autumn() {
    let spring =
        windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&[Sun], "02:15", 1)], vec![], 0, &["America/New_York"], 10);
    let mut run = run_at(spring, "2026-03-07 12:00");
    assert_eq!(window_timers(&run.start()), vec![at("2026-03-08 07:00")], "03:00 EDT");
    let autumn =
        windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&[Sun], "01:30", 1)], vec![], 0, &["America/New_York"], 10);
    let mut run = run_at(autumn, "2026-10-31 12:00");
    assert_eq!(window_timers(&run.start()), vec![at("2026-11-01 05:30")], "the first 01:30, EDT");
}

#[test]
fn a_blackout_overrides_the_windows() {
    let freeze = Blackout {
        from: NaiveDateTime::parse_from_str("2026-12-20 00:00", "%Y-%m-%d %H:%M").unwrap(),
        to: NaiveDateTime::parse_from_str("2027-01-04 00:00", "%Y-%m-%d %H:%M").unwrap(),
    };
    let spec = windowed(spec(&[g("web", 1, 1)], 1), vec![rule(&ALL, "22:00", 6)], vec![freeze], 15, &["UTC"], 10);
    let mut run = run_at(spec, "2026-12-21 23:00");
    let actions = run.start();
    assert!(dispatched(&actions).is_empty());
    assert_eq!(window_timers(&actions), vec![at("2027-01-04 00:00")]);
}

#[test]
fn a_replay_while_waiting_rebuilds_the_wait_and_rearms_its_timer() {
    let mut run = run_at(nightly(3, 1, 10), "2026-01-08 03:30");
    run.start();
    run.now = at("2026-01-08 03:50");
    run.ok("web-0"); // waits for 22:00
    let stored = serde_json::to_string(&run.log).unwrap();
    let log: Vec<convoy_common::invariants::LogEntry> = serde_json::from_str(&stored).unwrap();
    let mut engine = Engine::new("r1", run.engine.spec().clone());
    for entry in &log {
        assert_eq!(engine.handle(entry.now, entry.event.clone()), entry.actions);
    }
    assert_eq!(engine.view(), run.engine.view());
    assert_eq!(engine.window_wait(0), Some(UnixMillis(at("2026-01-08 22:00"))));
    let resume = engine.resume_actions(UnixMillis(at("2026-01-08 09:00")));
    assert_eq!(window_timers(&resume), vec![at("2026-01-08 22:00")]);
    // The restarted coordinator fires it and the rollout carries on.
    let actions = engine.handle(
        UnixMillis(at("2026-01-08 22:00")),
        Event::TimerFired { timer: Timer::WindowOpens { group: "web".into() } },
    );
    assert_eq!(dispatched(&actions), vec![("web-1".to_string(), 0)]);
}

#[test]
fn the_operator_can_lift_the_windows() {
    let mut run = run_at(nightly(2, 2, 10), "2026-01-07 12:00");
    run.start();
    let actions = run.op(OperatorCommand::IgnoreWindows, "alice");
    assert_eq!(dispatched(&actions).len(), 2);
    assert_eq!(run.engine.windows_overridden_by(), Some("alice"));
    assert!(run.engine.message().contains("lifted by alice"));
    let view = run.engine.view();
    assert_eq!(view.groups[0].window.as_ref().unwrap().overridden_by.as_deref(), Some("alice"));
    assert_eq!(view.groups[0].state, GroupState::Running);
    run.assert_invariants();
}

#[test]
fn canaries_wait_for_the_window_too() {
    let spec =
        windowed(spec(&[g("web", 3, 1).canary_after(1, 0)], 1), vec![rule(&ALL, "22:00", 6)], vec![], 0, &["UTC"], 10);
    let mut run = run_at(spec, "2026-01-07 12:00");
    let actions = run.start();
    assert!(dispatched(&actions).is_empty());
    let actions = fire_window(&mut run, "web", at("2026-01-07 22:00"));
    assert_eq!(dispatched(&actions), vec![("web-0".to_string(), 0)], "the canary first");
}

#[test]
fn the_checker_catches_a_host_started_outside_its_window_unless_lifted_before() {
    let mut run = run_at(nightly(2, 1, 10), "2026-01-07 12:00");
    run.start();
    fire_window(&mut run, "web", at("2026-01-07 22:00"));
    run.assert_invariants();
    let n = run.log.iter().position(|e| matches!(e.event, Event::TimerFired { .. })).unwrap();
    let check = |log: &[invariants::LogEntry]| invariants::check(run.engine.spec(), log);

    // The same dispatch an hour early: outside the window.
    let mut early = run.log.clone();
    early[n].now = UnixMillis(at("2026-01-07 21:00"));
    let v = check(&early).unwrap_err();
    assert!(
        v.iter().any(|m| m.contains("host web-0 of group web") && m.contains("outside its maintenance windows")),
        "{v:?}"
    );

    // Inside the window, but 10 min estimate + 15 min cutoff do not fit
    // before it closes at 04:00.
    let mut late = run.log.clone();
    late[n].now = UnixMillis(at("2026-01-08 03:50"));
    let v = check(&late).unwrap_err();
    assert!(v.iter().any(|m| m.contains("web-0") && m.contains("does not fit before its window closes")), "{v:?}");

    // An override recorded before the early dispatch makes it legitimate;
    // one recorded after it does not.
    let lift = |now: &str| invariants::LogEntry {
        now: UnixMillis(at(now)),
        event: Event::Operator { command: OperatorCommand::IgnoreWindows, by: "alice".into() },
        actions: vec![],
    };
    let mut lifted = early.clone();
    lifted.insert(n, lift("2026-01-07 20:59"));
    assert_eq!(check(&lifted), Ok(()));
    let mut too_late = early.clone();
    too_late.insert(n + 1, lift("2026-01-07 21:01"));
    assert!(check(&too_late).is_err());
}

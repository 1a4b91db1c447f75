//! Replaying a stored log rebuilds the same engine, and `resume_actions`
//! re-arms exactly what was in flight.

mod engine_support;

use std::collections::BTreeSet;
use std::time::Duration;

use convoy_common::engine::{Action, Engine, Event, HostState, OperatorCommand, Timer};
use convoy_common::invariants::LogEntry;
use convoy_common::model::{StepOutcome, UnixMillis};
use engine_support::*;

/// A rollout left mid-way: one host running with its agent lost, one
/// soaking, one failed within budget, one group waiting.
fn mid_way() -> Run {
    let groups = [g("a", 4, 3).budget(1).soak(60), g("b", 2, 1).after(&[0])];
    let mut run = Run::new(spec(&groups, 2));
    run.start();
    run.advance(1_000).ok("a-0");
    run.advance(1_000).ok("a-0"); // soaking
    run.advance(1_000).fail("a-1"); // a-3 starts
    run.advance(1_000).ev(Event::AgentLost { host: "a-2".into() });
    run.advance(1_000).op(OperatorCommand::Approve, "zoe");
    run.advance(500).ok("a-3");
    run
}

fn replay(spec: convoy_common::model::RolloutSpec, log: &[LogEntry]) -> Engine {
    let mut engine = Engine::new("r1", spec);
    for (n, entry) in log.iter().enumerate() {
        let actions = engine.handle(entry.now, entry.event.clone());
        assert_eq!(actions, entry.actions, "entry {n} ({:?}) replays to different actions", entry.event);
    }
    engine
}

#[test]
fn replay_rebuilds_the_same_view() {
    let run = mid_way();
    let stored = serde_json::to_string(&run.log).unwrap();
    let log: Vec<LogEntry> = serde_json::from_str(&stored).unwrap();
    assert_eq!(log, run.log, "the log survives storage");
    let engine = replay(run.engine.spec().clone(), &log);
    assert_eq!(engine.view(), run.engine.view());
    assert_eq!(engine.resume_actions(run.now()), run.engine.resume_actions(run.now()));
}

#[test]
fn resume_actions_resend_in_flight_work_and_rearm_timers() {
    let run = mid_way();
    let engine = replay(run.engine.spec().clone(), &run.log);
    let actions = engine.resume_actions(run.now());

    let mut running = Vec::new();
    let mut expected_timers = BTreeSet::new();
    for h in ["a-0", "a-1", "a-2", "a-3", "b-0", "b-1"] {
        match engine.host_state(h).unwrap() {
            HostState::Running { execution_id, .. } => {
                running.push((h.to_string(), execution_id.clone()));
                expected_timers.insert(Timer::StepDeadline { execution_id: execution_id.clone() });
            }
            HostState::Soaking { .. } => {
                expected_timers.insert(Timer::SoakOver { host: h.to_string() });
            }
            HostState::Pending
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RollingBack { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. }
            | HostState::Probing { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. } => {}
        }
    }
    expected_timers.insert(Timer::LostDeadline { host: "a-2".into() });
    assert_eq!(running.len(), 2, "a-2 and a-3 are running");
    assert_eq!(resent(&actions), running);
    assert!(dispatched(&actions).is_empty(), "nothing new is started by a resume");
    let timers: BTreeSet<Timer> = scheduled(&actions).into_iter().map(|(_, t)| t).collect();
    assert_eq!(timers, expected_timers);

    // Each timer is re-armed at the time first asked for.
    let first_asked: Vec<(UnixMillis, Timer)> = run.log.iter().flat_map(|e| scheduled(&e.actions)).collect();
    for (at, timer) in scheduled(&actions) {
        let original = first_asked.iter().rev().find(|(_, t)| *t == timer).map(|(at, _)| *at);
        assert_eq!(original, Some(at), "{timer:?}");
    }
}

#[test]
fn replayed_engine_carries_on_like_the_original() {
    let mut run = mid_way();
    let mut copy = replay(run.engine.spec().clone(), &run.log);
    let soak_end = match run.state_of("a-0") {
        HostState::Soaking { until } => until,
        other => panic!("a-0 should soak, is {other:?}"),
    };
    let id = run.exec_of("a-2");
    let script = [
        (run.now + 10, Event::AgentConnected { host: "a-2".into() }),
        (run.now + 20, Event::StepFinished { execution_id: id, outcome: StepOutcome::ok() }),
        (soak_end.0, Event::TimerFired { timer: Timer::SoakOver { host: "a-0".into() } }),
    ];
    for (now, event) in script {
        run.now = now;
        let original = run.ev(event.clone());
        assert_eq!(copy.handle(UnixMillis(now), event), original);
    }
    assert_eq!(copy.view(), run.engine.view());
    run.assert_invariants();
}

#[test]
fn a_resend_after_restart_is_answered_once() {
    // The agent answers the re-sent id with its stored outcome; if the first
    // answer also arrives, the second is a stale duplicate.
    let mut run = Run::new(spec(&[g("a", 1, 1)], 1));
    run.start();
    let engine = replay(run.engine.spec().clone(), &run.log);
    let resume = engine.resume_actions(run.now());
    let id = run.exec_of("a-0");
    assert_eq!(resent(&resume), vec![("a-0".to_string(), id.clone())]);
    assert!(scheduled(&resume).contains(&(
        run.now().plus(STEP_TIMEOUT + Duration::from_secs(30)),
        Timer::StepDeadline { execution_id: id.clone() }
    )));
    let first = run.ev(Event::StepFinished { execution_id: id.clone(), outcome: ok_installed() });
    assert_eq!(done(&first).len(), 1);
    let second = run.ev(Event::StepFinished { execution_id: id, outcome: ok_installed() });
    assert!(second.is_empty());
    assert!(matches!(first.last(), Some(Action::Finished { .. })));
    run.assert_final_invariants();
}

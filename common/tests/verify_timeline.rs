//! `convoy verify` and `convoy events` on hand-made logs: a log that breaks
//! an invariant is named; a coordinator's claim the log does not back is
//! refused; the timeline shows each run and operator command.

mod engine_support;

use convoy_common::engine::{Action, Event, ExecutionId, HostState, OperatorCommand, RolloutState};
use convoy_common::invariants::LogEntry;
use convoy_common::model::{StepOutcome, UnixMillis};
use convoy_common::timeline::{self, RunRole};
use convoy_common::verify::{replay, verify};
use engine_support::*;

fn xid(s: &str) -> ExecutionId {
    s.parse().unwrap()
}

fn send(host: &str, id: &str) -> Action {
    Action::Dispatch { host: host.into(), execution_id: xid(id), step_index: 0, step: step("step0"), resend: false }
}

#[test]
fn a_log_over_the_window_is_named_and_a_replayed_one_passes() {
    let s = spec(&[g("a", 2, 1)], 1);
    // Two hosts in flight in a group of max_parallel 1.
    let bad = vec![LogEntry {
        now: UnixMillis(1),
        event: Event::Started,
        actions: vec![send("a-0", "x/a-0/0/1"), send("a-1", "x/a-1/0/1")],
    }];
    let e = verify(&s, &bad, Some(RolloutState::Running)).unwrap_err();
    assert!(e.first.contains("a-1") && e.first.contains("in flight"), "{e}");

    // What the engine does with the same start keeps the invariants.
    let log = replay("x", &s, [(UnixMillis(1), Event::Started)]);
    let v = verify(&s, &log, Some(RolloutState::Running)).unwrap();
    assert_eq!((v.executions, v.final_checks), (1, false));
}

#[test]
fn a_claimed_end_the_log_does_not_reach_is_a_violation() {
    let s = spec(&[g("a", 1, 1)], 1);
    let log = replay("x", &s, [(UnixMillis(1), Event::Started)]);
    let e = verify(&s, &log, Some(RolloutState::Succeeded)).unwrap_err();
    assert!(e.first.contains("reports the rollout succeeded but its stored log replays to not ended"), "{e}");
}

#[test]
fn the_timeline_has_each_run_and_who_paused() {
    let s = spec(&[g("a", 1, 1)], 1);
    let log = replay("x", &s, [(UnixMillis(10), Event::Started)]);
    let id = log[0]
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Dispatch { execution_id, .. } => Some(execution_id.clone()),
            _ => None,
        })
        .unwrap();
    let events = [
        (UnixMillis(10), Event::Started),
        (UnixMillis(12), Event::Operator { command: OperatorCommand::Pause, by: "ann".into() }),
        (UnixMillis(15), Event::StepFinished { execution_id: id, outcome: StepOutcome::failed("exit 1") }),
    ];
    let log = replay("x", &s, events);
    let t = timeline::build(&s, &log);
    assert_eq!(t.started, Some(UnixMillis(10)));
    assert_eq!(t.operator.len(), 1);
    assert_eq!((t.operator[0].command.as_str(), t.operator[0].by.as_str()), ("pause", "ann"));
    let h = &t.hosts[0];
    assert_eq!(h.runs.len(), 1);
    let r = &h.runs[0];
    assert_eq!((r.role, r.started, r.ended), (RunRole::Step, UnixMillis(10), Some(UnixMillis(15))));
    assert_eq!((r.outcome.as_deref(), r.message.as_str()), (Some("failed"), "exit 1"));
    assert_eq!(
        h.ends.first().map(|e| e.1.as_str()),
        Some(HostState::Failed { step: None, reason: String::new() }.as_str())
    );
}

//! The invariant checker catches each kind of violation it promises to.

mod engine_support;

use convoy_common::engine::{Action, Event, ExecutionId, HostState, RolloutState};
use convoy_common::invariants::{LogEntry, check, check_final};
use convoy_common::model::{RolloutSpec, StepOutcome, Strategy, UnixMillis, Window};
use engine_support::*;

/// An execution id: the text itself when it is one, else a short label
/// (`"1"`) made into one that starts with it (`1/h/0/1`), so violations
/// still name it.
fn xid(id: &str) -> ExecutionId {
    id.parse().unwrap_or_else(|_| format!("{id}/h/0/1").parse().unwrap())
}

fn send(host: &str, id: &str, step_index: usize, resend: bool) -> Action {
    Action::Dispatch {
        host: host.into(),
        execution_id: xid(id),
        step_index,
        step: step(&format!("step{step_index}")),
        resend,
    }
}

fn host_done(host: &str, state: HostState) -> Action {
    Action::HostDone { host: host.into(), state }
}

fn entry(event: Event, actions: Vec<Action>) -> LogEntry {
    LogEntry { now: UnixMillis(0), event, actions }
}

fn finished_ok(id: &str) -> Event {
    Event::StepFinished { execution_id: xid(id), outcome: ok_installed() }
}

fn violations(spec: &RolloutSpec, log: &[LogEntry]) -> Vec<String> {
    check(spec, log).expect_err("a violation should be found")
}

fn assert_one_mentions(found: &[String], words: &[&str]) {
    assert!(found.iter().any(|v| words.iter().all(|w| v.contains(w))), "no violation mentions {words:?}: {found:#?}");
}

#[test]
fn a_correct_log_passes() {
    let s = spec(&[g("a", 1, 1), g("b", 1, 1).after(&[0])], 1);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "x/a-0/0/1", 0, false)]),
        entry(
            finished_ok("x/a-0/0/1"),
            vec![host_done("a-0", HostState::Succeeded), send("b-0", "x/b-0/0/1", 0, false)],
        ),
        entry(Event::AgentConnected { host: "b-0".into() }, vec![send("b-0", "x/b-0/0/1", 0, true)]),
        entry(
            finished_ok("x/b-0/0/1"),
            vec![host_done("b-0", HostState::Succeeded), Action::Finished { state: RolloutState::Succeeded }],
        ),
    ];
    assert_eq!(check_final(&s, &log), Ok(()));
}

#[test]
fn too_many_hosts_in_flight() {
    let s = spec(&[g("a", 3, 2)], 1);
    let log = vec![entry(
        Event::Started,
        vec![send("a-0", "1", 0, false), send("a-1", "2", 0, false), send("a-2", "3", 0, false)],
    )];
    assert_one_mentions(&violations(&s, &log), &["a-2", "group a", "max_parallel 2"]);
    // A soaking host (no HostDone yet) still holds its slot.
    let s = spec(&[g("a", 2, 1).soak(60)], 1);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(finished_ok("1"), vec![send("a-1", "2", 0, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["a-1", "max_parallel 1"]);
}

#[test]
fn a_ramp_stage_started_before_the_one_before_it_ended() {
    // Stages [1, 2]: a-1 opens the second stage while a-0 is in flight.
    let mut s = spec(&[g("a", 3, 2)], 1);
    s.groups[0].strategy = Strategy::Rolling { window: Window { stages: vec![1, 2] }, order: Default::default() };
    let log = vec![entry(Event::Started, vec![send("a-0", "1", 0, false), send("a-1", "2", 0, false)])];
    assert_one_mentions(&violations(&s, &log), &["a-1", "position 1", "ramp stage"]);
}

#[test]
fn host_started_before_its_dependencies() {
    let s = spec(&[g("a", 2, 2), g("b", 1, 1).after(&[0])], 1);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false), send("a-1", "2", 0, false)]),
        entry(finished_ok("1"), vec![host_done("a-0", HostState::Succeeded), send("b-0", "3", 0, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["b-0", "group a", "a-1"]);
    // Done, but over budget.
    let failed = HostState::Failed { step: Some(0), reason: "x".into() };
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false), send("a-1", "2", 0, false)]),
        entry(finished_ok("1"), vec![host_done("a-0", failed)]),
        entry(finished_ok("2"), vec![host_done("a-1", HostState::Succeeded), send("b-0", "3", 0, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["b-0", "group a", "did not succeed"]);
}

#[test]
fn execution_dispatched_twice() {
    let s = spec(&[g("a", 1, 1)], 1);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(Event::AgentConnected { host: "a-0".into() }, vec![send("a-0", "1", 0, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["execution 1", "a-0", "second time"]);
    let log = vec![entry(Event::Started, vec![send("a-0", "9", 0, true)])];
    assert_one_mentions(&violations(&s, &log), &["execution 9", "never dispatched"]);
}

#[test]
fn dispatch_after_finished() {
    let s = spec(&[g("a", 2, 1)], 1);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(
            finished_ok("1"),
            vec![
                host_done("a-0", HostState::Succeeded),
                host_done("a-1", HostState::Skipped),
                Action::Finished { state: RolloutState::Aborted },
            ],
        ),
        entry(Event::Started, vec![send("a-1", "2", 0, false)]),
    ];
    let found = violations(&s, &log);
    assert_one_mentions(&found, &["execution 2", "a-1", "after the rollout finished"]);
    assert_one_mentions(&found, &["a-1", "after it ended skipped"]);
}

#[test]
fn steps_out_of_order_or_unanswered() {
    let s = spec(&[g("a", 1, 1)], 3);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(Event::AgentLost { host: "a-0".into() }, vec![send("a-0", "2", 1, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["a-0", "step 1", "without a successful result for 1"]);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(finished_ok("1"), vec![send("a-0", "2", 2, false)]),
    ];
    assert_one_mentions(&violations(&s, &log), &["a-0", "jumped from step 0 to step 2"]);
    let failed = Event::StepFinished { execution_id: xid("1"), outcome: StepOutcome::failed("no") };
    let log =
        vec![entry(Event::Started, vec![send("a-0", "1", 0, false)]), entry(failed, vec![send("a-0", "2", 1, false)])];
    assert_one_mentions(&violations(&s, &log), &["without a successful result"]);
}

#[test]
fn finishing_with_hosts_in_flight_or_twice() {
    let s = spec(&[g("a", 1, 1)], 1);
    let log = vec![entry(
        Event::Started,
        vec![
            send("a-0", "1", 0, false),
            Action::Finished { state: RolloutState::Failed },
            Action::Finished { state: RolloutState::Failed },
        ],
    )];
    let found = violations(&s, &log);
    assert_one_mentions(&found, &["finished failed with hosts still in flight: a-0"]);
    assert_one_mentions(&found, &["already finished"]);
}

#[test]
fn bad_host_done() {
    let s = spec(&[g("a", 2, 2)], 2);
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false), host_done("a-1", HostState::Pending)]),
        entry(finished_ok("1"), vec![host_done("a-0", HostState::Succeeded), host_done("a-0", HostState::Skipped)]),
    ];
    let found = violations(&s, &log);
    assert_one_mentions(&found, &["a-1", "non-terminal state pending"]);
    assert_one_mentions(&found, &["a-0", "succeeded without its last step"]);
    assert_one_mentions(&found, &["a-0", "already ended succeeded"]);
}

#[test]
fn succeeded_rollout_needs_every_host_and_the_budget() {
    let s = spec(&[g("a", 2, 2)], 1);
    let failed = HostState::Failed { step: Some(0), reason: "x".into() };
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(finished_ok("1"), vec![host_done("a-0", failed), Action::Finished { state: RolloutState::Succeeded }]),
    ];
    let found = violations(&s, &log);
    assert_one_mentions(&found, &["succeeded but host a-1", "never finished"]);
    assert_one_mentions(&found, &["succeeded but group a had 1 failed hosts"]);
}

#[test]
fn final_checks_need_an_end_and_versions() {
    let mut s = spec(&[g("a", 2, 1)], 1);
    s.hosts[0].initial_version = None;
    s.hosts[1].initial_version = None;
    let log = vec![
        entry(Event::Started, vec![send("a-0", "1", 0, false)]),
        entry(
            Event::StepFinished { execution_id: xid("1"), outcome: StepOutcome::ok() },
            vec![host_done("a-0", HostState::Succeeded)],
        ),
    ];
    assert_eq!(check(&s, &log), Ok(()), "fine so far");
    let found = check_final(&s, &log).unwrap_err();
    assert_one_mentions(&found, &["never finished"]);
    assert_one_mentions(&found, &["a-1", "never reached a terminal state"]);
    assert_one_mentions(&found, &["a-0", "no version of app recorded"]);
    // A step that installed the component records it.
    let mut log = log;
    log[1].event = finished_ok("1");
    let found = check_final(&s, &log).unwrap_err();
    assert!(!found.iter().any(|v| v.contains("no version")), "{found:#?}");
}

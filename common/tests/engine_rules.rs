//! The engine's rules, state by state and event by event.

mod engine_support;

use std::time::Duration;

use convoy_common::engine::{Action, Event, GroupState, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::model::{StepOutcome, StepStatus};
use engine_support::*;

#[test]
fn started_starts_root_groups_and_fills_each_window() {
    // (hosts, max_parallel, expected dispatches at start)
    let table = [(3, 1, 1), (3, 2, 2), (3, 3, 3), (3, 10, 3), (1, 1, 1), (0, 2, 1)];
    for (n, mp, expected) in table {
        let mut run = Run::new(spec(&[g("a", n, mp), g("b", 2, 1).after(&[0])], 2));
        assert_eq!(run.engine.state(), RolloutState::Pending);
        let actions = run.start();
        let d = dispatched(&actions);
        assert_eq!(d.len(), expected, "hosts {n} window {mp}");
        if n > 0 {
            let want: Vec<(String, usize)> = (0..expected).map(|k| (format!("a-{k}"), 0)).collect();
            assert_eq!(d, want, "hosts start in group order");
            assert_eq!(run.engine.state(), RolloutState::Running);
            assert_eq!(run.engine.group_state(1), Some(GroupState::Waiting));
            assert_eq!(run.engine.in_flight(0), expected);
        } else {
            // An empty group is done at once, so its dependent starts.
            assert_eq!(run.engine.group_state(0), Some(GroupState::Succeeded));
            assert_eq!(run.engine.group_state(1), Some(GroupState::Running));
            assert_eq!(dispatched(&actions), hosts(&["b-0"]));
        }
        run.assert_invariants();
    }
}

#[test]
fn dispatch_carries_execution_id_and_step_deadline() {
    let mut run = Run::new(spec(&[g("a", 1, 1)], 2));
    let actions = run.start();
    let now = run.now();
    assert_eq!(
        actions,
        vec![
            Action::Dispatch {
                host: "a-0".into(),
                execution_id: "r1/a-0/0/1".parse().unwrap(),
                step_index: 0,
                step: step("step0"),
                resend: false,
            },
            Action::Schedule {
                at: now.plus(STEP_TIMEOUT + Duration::from_secs(30)),
                timer: Timer::StepDeadline { execution_id: "r1/a-0/0/1".parse().unwrap() },
            },
        ]
    );
    assert_eq!(run.engine.execution_host(&"r1/a-0/0/1".parse().unwrap()).map(String::as_str), Some("a-0"));
    assert_eq!(run.engine.execution_host(&"r1/a-0/1/1".parse().unwrap()), None);
    let view = run.engine.view();
    assert_eq!(view.hosts[0].current_step.as_deref(), Some("step0"));
}

#[test]
fn success_moves_to_next_step_then_records_version() {
    let mut run = Run::new(spec(&[g("a", 1, 1)], 3));
    run.start();
    assert_eq!(run.engine.host_version("a-0"), Some("1.0"));
    let a = run.report("a-0", StepOutcome::ok());
    assert_eq!(dispatched(&a), vec![("a-0".to_string(), 1)]);
    assert_eq!(run.exec_of("a-0"), "r1/a-0/1/1");
    // Another component's install does not change the reported version.
    run.report("a-0", StepOutcome { installed: Some(("other".into(), "9".into())), ..StepOutcome::ok() });
    assert_eq!(run.engine.host_version("a-0"), Some("1.0"));
    let a = run.ok("a-0");
    assert_eq!(run.engine.host_version("a-0"), Some("2.0"));
    assert_eq!(done(&a), vec![("a-0".to_string(), "succeeded")]);
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    assert_eq!(run.engine.view().hosts[0].version.as_deref(), Some("2.0"));
    run.assert_final_invariants();
}

#[test]
fn without_a_component_any_install_is_the_version() {
    let mut s = spec(&[g("a", 1, 1)], 1);
    s.component = None;
    let mut run = Run::new(s);
    run.start();
    run.report("a-0", StepOutcome { installed: Some(("whatever".into(), "7".into())), ..StepOutcome::ok() });
    assert_eq!(run.engine.host_version("a-0"), Some("7"));
}

#[test]
fn sliding_window_never_exceeds_max_parallel() {
    for (n, mp) in [(5, 1), (5, 2), (5, 5), (7, 3)] {
        let mut run = Run::new(spec(&[g("a", n, mp)], 1));
        run.start();
        let mut started = mp.min(n);
        for k in 0..n {
            assert!(run.engine.in_flight(0) <= mp);
            let a = run.ok(&format!("a-{k}"));
            let d = dispatched(&a);
            if started < n {
                assert_eq!(d, vec![(format!("a-{started}"), 0)], "hosts {n} window {mp} after a-{k}");
                started += 1;
            } else {
                assert!(d.is_empty());
            }
        }
        assert_eq!(run.engine.state(), RolloutState::Succeeded);
        run.assert_final_invariants();
    }
}

#[test]
fn parallel_branches_start_together_and_join() {
    // db -> (collectors, notifiers) -> api
    let groups =
        [g("db", 1, 1), g("col", 2, 2).after(&[0]), g("notif", 1, 1).after(&[0]), g("api", 1, 1).after(&[1, 2])];
    let mut run = Run::new(spec(&groups, 1));
    assert_eq!(dispatched(&run.start()), hosts(&["db-0"]));
    let a = run.ok("db-0");
    assert_eq!(dispatched(&a), hosts(&["col-0", "col-1", "notif-0"]));
    assert_eq!(run.engine.group_state(0), Some(GroupState::Succeeded));
    assert!(dispatched(&run.ok("notif-0")).is_empty(), "api waits for collectors too");
    assert!(dispatched(&run.ok("col-0")).is_empty());
    assert_eq!(run.engine.group_state(3), Some(GroupState::Waiting));
    assert_eq!(dispatched(&run.ok("col-1")), hosts(&["api-0"]));
    let a = run.ok("api-0");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn soak_keeps_the_slot_until_its_timer() {
    let mut run = Run::new(spec(&[g("a", 2, 1).soak(300)], 1));
    run.start();
    let a = run.ok("a-0");
    let until = run.now().plus(Duration::from_secs(300));
    assert_eq!(run.state_of("a-0"), HostState::Soaking { until });
    assert_eq!(scheduled(&a), vec![(until, Timer::SoakOver { host: "a-0".into() })]);
    assert!(dispatched(&a).is_empty(), "the soaking host keeps its slot");
    assert!(done(&a).is_empty());
    assert_eq!(run.engine.view().groups[0].running, 1);
    // A soak timer for a host that is not soaking is stale.
    assert!(run.timer(Timer::SoakOver { host: "a-1".into() }).is_empty());
    run.advance(300_000);
    let a = run.timer(Timer::SoakOver { host: "a-0".into() });
    assert_eq!(done(&a), vec![("a-0".to_string(), "succeeded")]);
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    // Firing twice changes nothing.
    assert!(run.timer(Timer::SoakOver { host: "a-0".into() }).is_empty());
    run.ok("a-1");
    let a = run.advance(300_000).timer(Timer::SoakOver { host: "a-1".into() });
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn failure_within_budget_continues() {
    let mut run = Run::new(spec(&[g("a", 3, 1).budget(1), g("b", 1, 1).after(&[0])], 1));
    run.start();
    let a = run.fail("a-0");
    assert_eq!(done(&a), vec![("a-0".to_string(), "failed")]);
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    assert_eq!(run.engine.state(), RolloutState::Running);
    run.ok("a-1");
    let a = run.ok("a-2");
    assert_eq!(run.engine.group_state(0), Some(GroupState::Succeeded));
    assert_eq!(dispatched(&a), hosts(&["b-0"]));
    let a = run.ok("b-0");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    let view = run.engine.view();
    assert_eq!((view.groups[0].done, view.groups[0].failed, view.groups[0].total), (2, 1, 3));
    assert_eq!(view.hosts[0].message, "exit 1");
    run.assert_final_invariants();
}

#[test]
fn failure_beyond_budget_halts_after_in_flight_work() {
    let groups = [g("a", 4, 2), g("b", 2, 1).after(&[0]), g("c", 1, 1)];
    let mut run = Run::new(spec(&groups, 2));
    assert_eq!(dispatched(&run.start()), hosts(&["a-0", "a-1", "c-0"]));
    let a = run.fail("a-0");
    assert!(dispatched(&a).is_empty(), "nothing new starts once halting");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    assert_eq!(run.engine.group_state(0), Some(GroupState::Failed));
    assert!(run.engine.message().contains("group a"), "{}", run.engine.message());
    // In-flight hosts run their remaining steps.
    let a = run.ok("a-1");
    assert_eq!(dispatched(&a), vec![("a-1".to_string(), 1)]);
    run.ok("a-1");
    assert_eq!(run.engine.state(), RolloutState::Halting, "c-0 is still in flight");
    let a = run.complete("c-0");
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert_eq!(
        done(&a),
        vec![
            ("c-0".to_string(), "succeeded"),
            ("a-2".to_string(), "skipped"),
            ("a-3".to_string(), "skipped"),
            ("b-0".to_string(), "skipped"),
            ("b-1".to_string(), "skipped"),
        ]
    );
    assert_eq!(run.engine.group_state(0), Some(GroupState::Failed));
    assert_eq!(run.engine.group_state(1), Some(GroupState::Skipped));
    assert_eq!(run.engine.group_state(2), Some(GroupState::Succeeded));
    assert!(run.engine.message().starts_with("failed:"), "{}", run.engine.message());
    let view = run.engine.view();
    assert_eq!((view.groups[0].done, view.groups[0].failed, view.groups[0].pending), (1, 1, 2));
    assert!(run.engine.is_finished());
    run.assert_final_invariants();
}

#[test]
fn every_failed_status_fails_the_host_with_its_message() {
    let table = [
        (StepStatus::Failed, "exit 3", "exit 3"),
        (StepStatus::Unsupported, "unknown step kind", "unknown step kind"),
        (StepStatus::TimedOut, "killed after 60s", "killed after 60s"),
        (StepStatus::Failed, "", "step failed"),
        (StepStatus::Unsupported, "", "step kind not supported by the agent"),
    ];
    for (status, message, reason) in table {
        let mut run = Run::new(spec(&[g("a", 2, 1).budget(5)], 2));
        run.start();
        run.ok("a-0");
        let a = run.report("a-0", outcome(status, message));
        assert_eq!(run.state_of("a-0"), HostState::Failed { step: Some(1), reason: reason.to_string() }, "{status:?}");
        assert_eq!(dispatched(&a), hosts(&["a-1"]), "{status:?}: within budget, the next host starts");
    }
}

#[test]
fn duplicate_stale_and_unknown_results_are_ignored() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 2));
    run.start();
    let first = run.exec_of("a-0");
    run.ok("a-0");
    let before = run.engine.view();
    let dup = run.ev(Event::StepFinished { execution_id: first.clone(), outcome: StepOutcome::failed("late") });
    assert!(dup.is_empty());
    assert_eq!(run.engine.view(), before, "a stale result changes nothing");
    let unknown =
        run.ev(Event::StepFinished { execution_id: "r1/a-0/7/1".parse().unwrap(), outcome: StepOutcome::ok() });
    assert!(unknown.is_empty());
    let other = run.ev(Event::StepFinished { execution_id: "r2/a-0/1/1".parse().unwrap(), outcome: StepOutcome::ok() });
    assert!(other.is_empty());
    let second = run.exec_of("a-0");
    run.ok("a-0");
    let again = run.ev(Event::StepFinished { execution_id: second, outcome: StepOutcome::ok() });
    assert!(again.is_empty(), "a duplicate of the last step after the host is done");
    assert_eq!(run.state_of("a-0"), HostState::Succeeded);
    run.assert_invariants();
}

#[test]
fn step_deadline_fails_only_the_current_execution() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1)], 2));
    run.start();
    let first = run.exec_of("a-0");
    run.ok("a-0");
    assert!(run.timer(Timer::StepDeadline { execution_id: first }).is_empty(), "stale deadline");
    assert!(run.timer(Timer::StepDeadline { execution_id: "r1/nope/0/1".parse().unwrap() }).is_empty());
    let current = run.exec_of("a-0");
    let a = run.advance(90_000).timer(Timer::StepDeadline { execution_id: current.clone() });
    assert_eq!(run.state_of("a-0"), HostState::Failed { step: Some(1), reason: "no result within timeout".into() });
    assert_eq!(done(&a), vec![("a-0".to_string(), "failed")]);
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    // The result arriving afterwards is ignored.
    assert!(run.ev(Event::StepFinished { execution_id: current, outcome: StepOutcome::ok() }).is_empty());
    run.assert_invariants();
}

#[test]
fn lost_agent_fails_its_host_at_the_deadline() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1)], 1));
    run.start();
    let a = run.ev(Event::AgentLost { host: "a-0".into() });
    let deadline = run.now().plus(LOST_TIMEOUT);
    assert_eq!(scheduled(&a), vec![(deadline, Timer::LostDeadline { host: "a-0".into() })]);
    assert!(matches!(run.state_of("a-0"), HostState::Running { lost_since: Some(t), .. } if t == run.now()));
    // Losing it again does not move the deadline.
    assert!(run.advance(1_000).ev(Event::AgentLost { host: "a-0".into() }).is_empty());
    run.now = deadline.0;
    let a = run.timer(Timer::LostDeadline { host: "a-0".into() });
    assert_eq!(run.state_of("a-0"), HostState::Failed { step: Some(0), reason: "agent lost".into() });
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    run.assert_invariants();
}

#[test]
fn reconnect_resends_the_same_execution_and_disarms_the_deadline() {
    let mut run = Run::new(spec(&[g("a", 1, 1)], 1));
    run.start();
    let id = run.exec_of("a-0");
    run.ev(Event::AgentLost { host: "a-0".into() });
    let a = run.advance(5_000).ev(Event::AgentConnected { host: "a-0".into() });
    assert_eq!(resent(&a), vec![("a-0".to_string(), id.clone())]);
    assert!(dispatched(&a).is_empty());
    assert!(matches!(run.state_of("a-0"), HostState::Running { lost_since: None, .. }));
    // A second outage starts later; the first outage's timer is stale.
    run.advance(100_000);
    let a = run.ev(Event::AgentLost { host: "a-0".into() });
    let second_deadline = run.now().plus(LOST_TIMEOUT);
    assert_eq!(scheduled(&a), vec![(second_deadline, Timer::LostDeadline { host: "a-0".into() })]);
    run.advance(20_000); // the first outage's deadline
    assert!(run.timer(Timer::LostDeadline { host: "a-0".into() }).is_empty());
    assert!(matches!(run.state_of("a-0"), HostState::Running { .. }));
    // The agent's answer to the re-sent id completes the host.
    let a = run.ev(Event::StepFinished { execution_id: id, outcome: ok_installed() });
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn host_starting_while_its_agent_is_lost_gets_a_deadline() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    assert!(run.ev(Event::AgentLost { host: "a-1".into() }).is_empty(), "pending host: tracked only");
    run.start();
    run.advance(10_000);
    let a = run.ok("a-0");
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    let lost: Vec<_> = scheduled(&a).into_iter().filter(|(_, t)| matches!(t, Timer::LostDeadline { .. })).collect();
    assert_eq!(lost, vec![(run.now().plus(LOST_TIMEOUT), Timer::LostDeadline { host: "a-1".into() })]);
    assert!(matches!(run.state_of("a-1"), HostState::Running { lost_since: Some(_), .. }));
    // Once it connects, it gets its execution.
    let a = run.ev(Event::AgentConnected { host: "a-1".into() });
    assert_eq!(resent(&a).len(), 1);
}

#[test]
fn unknown_hosts_and_idle_hosts_produce_nothing() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    run.start();
    for event in [
        Event::AgentLost { host: "ghost".into() },
        Event::AgentConnected { host: "ghost".into() },
        Event::AgentConnected { host: "a-1".into() },
        Event::TimerFired { timer: Timer::LostDeadline { host: "ghost".into() } },
        Event::TimerFired { timer: Timer::LostDeadline { host: "a-0".into() } },
        Event::TimerFired { timer: Timer::SoakOver { host: "ghost".into() } },
        Event::Started,
    ] {
        let before = run.engine.view();
        assert!(run.ev(event.clone()).is_empty(), "{event:?}");
        assert_eq!(run.engine.view(), before, "{event:?}");
    }
}

#[test]
fn pause_stops_new_hosts_and_resume_refills() {
    let mut run = Run::new(spec(&[g("a", 4, 2)], 2));
    run.start();
    assert!(run.op(OperatorCommand::Pause, "alice").is_empty());
    assert_eq!(run.engine.state(), RolloutState::Paused);
    assert_eq!(run.engine.view().message, "paused by alice");
    // A started host still runs its remaining steps.
    let a = run.ok("a-0");
    assert_eq!(dispatched(&a), vec![("a-0".to_string(), 1)]);
    let a = run.ok("a-0");
    assert!(dispatched(&a).is_empty(), "no new host while paused");
    assert_eq!(run.engine.in_flight(0), 1);
    // Pausing again does not apply.
    assert!(run.op(OperatorCommand::Pause, "bob").is_empty());
    assert_eq!(run.engine.state(), RolloutState::Paused);
    assert!(run.engine.message().contains("ignored"));
    let a = run.op(OperatorCommand::Resume, "carol");
    assert_eq!(dispatched(&a), hosts(&["a-2"]));
    assert_eq!(run.engine.state(), RolloutState::Running);
    assert_eq!(run.engine.message(), "resumed by carol");
    assert!(run.op(OperatorCommand::Resume, "carol").is_empty());
    assert_eq!(run.engine.state(), RolloutState::Running);
    run.assert_invariants();
}

#[test]
fn paused_rollout_with_work_left_stays_paused_but_completes_when_nothing_is_left() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    run.start();
    run.op(OperatorCommand::Pause, "alice");
    let a = run.ok("a-0");
    assert_eq!(finished(&a), None);
    assert_eq!(run.engine.state(), RolloutState::Paused);
    assert_eq!(run.engine.in_flight_total(), 0);
    run.op(OperatorCommand::Resume, "alice");
    run.op(OperatorCommand::Pause, "alice");
    let a = run.ok("a-1");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded), "nothing is left to resume");
    run.assert_final_invariants();
}

#[test]
fn groups_unblocked_while_paused_wait_for_resume() {
    let mut run = Run::new(spec(&[g("a", 1, 1), g("b", 1, 1).after(&[0])], 1));
    run.start();
    run.op(OperatorCommand::Pause, "alice");
    let a = run.ok("a-0");
    assert!(dispatched(&a).is_empty());
    assert_eq!(run.engine.group_state(1), Some(GroupState::Running));
    assert_eq!(dispatched(&run.op(OperatorCommand::Resume, "alice")), hosts(&["b-0"]));
    run.assert_invariants();
}

#[test]
fn abort_lets_in_flight_work_finish_then_skips_the_rest() {
    let mut run = Run::new(spec(&[g("a", 3, 1), g("b", 1, 1).after(&[0])], 1));
    run.start();
    let a = run.op(OperatorCommand::Abort, "dave");
    assert!(a.is_empty());
    assert_eq!(run.engine.state(), RolloutState::Aborting);
    assert_eq!(run.engine.message(), "aborted by dave");
    assert!(run.op(OperatorCommand::Abort, "dave").is_empty(), "already aborting");
    assert!(run.op(OperatorCommand::Pause, "dave").is_empty());
    assert!(run.op(OperatorCommand::Resume, "dave").is_empty());
    assert_eq!(run.engine.state(), RolloutState::Aborting);
    let a = run.ok("a-0");
    assert_eq!(finished(&a), Some(RolloutState::Aborted));
    assert_eq!(
        done(&a),
        vec![
            ("a-0".to_string(), "succeeded"),
            ("a-1".to_string(), "skipped"),
            ("a-2".to_string(), "skipped"),
            ("b-0".to_string(), "skipped"),
        ]
    );
    assert_eq!(run.engine.message(), "aborted by dave");
    assert_eq!(run.engine.group_state(0), Some(GroupState::Skipped));
    assert_eq!(run.engine.view().hosts[1].message, "skipped: the rollout was aborted");
    run.assert_final_invariants();
}

#[test]
fn abort_with_nothing_in_flight_finishes_at_once() {
    // Before start.
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    let a = run.op(OperatorCommand::Abort, "erin");
    assert_eq!(finished(&a), Some(RolloutState::Aborted));
    assert_eq!(done(&a).len(), 2);
    assert!(run.start().is_empty());
    run.assert_final_invariants();
    // Paused with its only in-flight host done.
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    run.start();
    run.op(OperatorCommand::Pause, "erin");
    run.ok("a-0");
    let a = run.op(OperatorCommand::Abort, "erin");
    assert_eq!(finished(&a), Some(RolloutState::Aborted));
    assert_eq!(done(&a), vec![("a-1".to_string(), "skipped")]);
    run.assert_final_invariants();
}

#[test]
fn halting_or_aborting_ends_soaks_at_once() {
    let mut run = Run::new(spec(&[g("a", 3, 2).soak(600)], 1));
    run.start();
    run.ok("a-0");
    assert!(matches!(run.state_of("a-0"), HostState::Soaking { .. }));
    let a = run.fail("a-1");
    assert_eq!(
        done(&a),
        vec![("a-1".to_string(), "failed"), ("a-0".to_string(), "succeeded"), ("a-2".to_string(), "skipped")]
    );
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(run.timer(Timer::SoakOver { host: "a-0".into() }).is_empty());
    run.assert_final_invariants();

    let mut run = Run::new(spec(&[g("a", 2, 1).soak(600)], 1));
    run.start();
    run.ok("a-0");
    let a = run.op(OperatorCommand::Abort, "frank");
    assert_eq!(finished(&a), Some(RolloutState::Aborted));
    assert_eq!(run.state_of("a-0"), HostState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn failure_while_aborting_stays_aborting() {
    let mut run = Run::new(spec(&[g("a", 3, 2)], 1));
    run.start();
    run.op(OperatorCommand::Abort, "gina");
    run.fail("a-0");
    assert_eq!(run.engine.state(), RolloutState::Aborting);
    let a = run.ok("a-1");
    assert_eq!(finished(&a), Some(RolloutState::Aborted));
    run.assert_final_invariants();
}

#[test]
fn failure_while_paused_halts() {
    let mut run = Run::new(spec(&[g("a", 3, 2)], 1));
    run.start();
    run.op(OperatorCommand::Pause, "hal");
    run.fail("a-0");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    assert!(run.op(OperatorCommand::Resume, "hal").is_empty(), "resume does not undo a halt");
    assert_eq!(finished(&run.ok("a-1")), Some(RolloutState::Failed));
}

#[test]
fn approve_is_recorded_only() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    run.start();
    assert!(run.op(OperatorCommand::Approve, "ivy").is_empty());
    assert_eq!(run.engine.state(), RolloutState::Running);
    assert!(run.engine.message().contains("approved by ivy"));
}

#[test]
fn events_after_a_terminal_state_do_nothing() {
    let mut run = Run::new(spec(&[g("a", 1, 1)], 1));
    run.start();
    let id = run.exec_of("a-0");
    run.ok("a-0");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    let events = [
        Event::Started,
        Event::AgentConnected { host: "a-0".into() },
        Event::AgentLost { host: "a-0".into() },
        Event::StepFinished { execution_id: id.clone(), outcome: StepOutcome::failed("late") },
        Event::TimerFired { timer: Timer::StepDeadline { execution_id: id } },
        Event::TimerFired { timer: Timer::SoakOver { host: "a-0".into() } },
        Event::TimerFired { timer: Timer::LostDeadline { host: "a-0".into() } },
        Event::Operator { command: OperatorCommand::Pause, by: "x".into() },
        Event::Operator { command: OperatorCommand::Resume, by: "x".into() },
        Event::Operator { command: OperatorCommand::Abort, by: "x".into() },
        Event::Operator { command: OperatorCommand::Approve, by: "x".into() },
    ];
    let before = run.engine.view();
    for event in events {
        assert!(run.ev(event.clone()).is_empty(), "{event:?}");
        assert_eq!(run.engine.view(), before, "{event:?}");
    }
    assert!(run.engine.resume_actions(run.now()).is_empty());
    run.assert_final_invariants();
}

#[test]
fn hosts_without_steps_succeed_at_once() {
    let mut run = Run::new(spec(&[g("a", 3, 1), g("b", 1, 1).after(&[0])], 0));
    let a = run.start();
    assert!(dispatched(&a).is_empty());
    assert_eq!(done(&a).len(), 4);
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn empty_rollout_succeeds_on_start() {
    let mut run = Run::new(spec(&[], 1));
    assert_eq!(run.start(), vec![Action::Finished { state: RolloutState::Succeeded }]);
}

#[test]
fn unmeetable_dependencies_fail_instead_of_hanging() {
    let mut run = Run::new(spec(&[g("a", 1, 1).after(&[1]), g("b", 1, 1).after(&[0])], 1));
    let a = run.start();
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(run.engine.message().contains("a, b"), "{}", run.engine.message());
}

#[test]
fn view_counts_every_host_once() {
    let mut run = Run::new(spec(&[g("a", 5, 2).budget(3).soak(10)], 1));
    run.start();
    run.fail("a-0");
    run.ok("a-1");
    let v = run.engine.view();
    let gv = &v.groups[0];
    assert_eq!((gv.done, gv.running, gv.failed, gv.pending, gv.total), (0, 2, 1, 2, 5));
    assert_eq!(v.hosts[1].state.as_str(), "soaking");
    assert_eq!(v.hosts[1].current_step, None);
    assert_eq!(v.hosts[2].current_step.as_deref(), Some("step0"));
    assert_eq!(v.hosts[0].group, "a");
    assert_eq!(v.hosts[0].version.as_deref(), Some("1.0"));
    assert_eq!(v.hosts[1].version.as_deref(), Some("2.0"));
    assert_eq!(v.state, RolloutState::Running);
}

#[test]
fn execution_ids_are_never_reused() {
    let mut run = Run::new(spec(&[g("a", 3, 3)], 3));
    run.start();
    let mut seen = std::collections::HashSet::new();
    for log in &run.log {
        for a in &log.actions {
            if let Action::Dispatch { execution_id, .. } = a {
                assert!(seen.insert(execution_id.clone()));
            }
        }
    }
    for h in ["a-0", "a-1", "a-2"] {
        for a in run.complete(h) {
            if let Action::Dispatch { execution_id, .. } = a {
                assert!(seen.insert(execution_id.clone()), "{execution_id} reused");
            }
        }
    }
    assert_eq!(seen.len(), 9);
}

#[test]
fn hosts_finishing_while_stopping_skip_their_soak() {
    let mut run = Run::new(spec(&[g("a", 3, 2).soak(600)], 1));
    run.start();
    run.fail("a-0");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    let a = run.ok("a-1");
    assert!(scheduled(&a).is_empty(), "no soak once nothing will start");
    assert_eq!(run.state_of("a-1"), HostState::Succeeded);
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    run.assert_final_invariants();
}

/// What the runtime records for `convoy plan`'s estimates comes with the
/// actions: once per forward step that succeeded, never for a failure or a
/// result delivered twice.
#[test]
fn a_succeeded_forward_step_is_reported_once_with_its_duration() {
    let timed = |a: &[Action]| -> Vec<(String, String, u64)> {
        a.iter()
            .filter_map(|a| match a {
                Action::StepSucceeded { group, step, duration_ms, .. } => {
                    Some((group.clone(), step.clone(), *duration_ms))
                }
                _ => None,
            })
            .collect()
    };
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1)], 2));
    run.start();
    let first = run.exec_of("a-0");
    let a = run.report("a-0", StepOutcome { duration_ms: 1_234, ..StepOutcome::ok() });
    assert_eq!(timed(&a), vec![("a".to_string(), "step0".to_string(), 1_234)]);
    // The same result again (after a reconnection) is not counted again.
    let again = run.ev(Event::StepFinished { execution_id: first, outcome: StepOutcome::ok() });
    assert!(timed(&again).is_empty(), "{again:?}");
    // A failure is not a duration to learn from.
    let a = run.report("a-0", StepOutcome { duration_ms: 99, ..StepOutcome::failed("no") });
    assert!(timed(&a).is_empty(), "{a:?}");
    run.assert_invariants();
}

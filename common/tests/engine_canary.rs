//! Canary phases: manual approval, promotion after a soak, and a canary
//! failure stopping its group before any other host is touched.

mod engine_support;

use std::time::Duration;

use convoy_common::engine::{Action, Event, GroupState, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::invariants;
use convoy_common::model::OnFailure;
use engine_support::*;

#[test]
fn canaries_run_first_then_wait_for_approval() {
    let mut run = Run::new(spec(&[g("a", 5, 2).canary(1), g("b", 1, 1).after(&[0])], 2));
    let a = run.start();
    assert_eq!(dispatched(&a), hosts(&["a-0"]), "only the canary starts, whatever the window");
    assert_eq!(run.engine.group_state(0), Some(GroupState::Canary));
    assert_eq!(run.engine.view().groups[0].canaries, 1);

    let a = run.complete("a-0");
    assert_eq!(run.state_of("a-0"), HostState::Succeeded);
    assert!(dispatched(&a).iter().all(|(h, _)| h == "a-0"), "nothing else moves before approval: {a:?}");
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));
    assert_eq!(run.engine.view().groups[0].state.as_str(), "awaiting_approval");
    assert_eq!(run.engine.state(), RolloutState::Running, "waiting for approval keeps the rollout open");
    assert!(run.engine.message().contains("waiting for approval"), "{}", run.engine.message());

    // Events that are not an approval do not promote the group.
    assert!(run.op(OperatorCommand::Resume, "x").is_empty());
    run.advance(3_600_000);
    assert!(run.ev(Event::AgentConnected { host: "a-1".into() }).is_empty());
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));

    let a = run.op(OperatorCommand::Approve, "ivy");
    assert_eq!(dispatched(&a), hosts(&["a-1", "a-2"]), "the rest of the group fills the window");
    assert_eq!(run.engine.group_state(0), Some(GroupState::Running));
    assert!(run.engine.message().contains("approved by ivy: promoted a"), "{}", run.engine.message());
    run.assert_invariants();

    for h in ["a-1", "a-2", "a-3", "a-4"] {
        run.complete(h);
    }
    let a = run.complete("b-0");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn several_canaries_share_the_window() {
    let mut run = Run::new(spec(&[g("a", 6, 2).canary(3)], 1));
    assert_eq!(dispatched(&run.start()), hosts(&["a-0", "a-1"]));
    assert_eq!(dispatched(&run.ok("a-0")), hosts(&["a-2"]), "the third canary takes the free slot");
    assert!(dispatched(&run.ok("a-1")).is_empty(), "a-3 is not a canary");
    run.ok("a-2");
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));
    assert_eq!(dispatched(&run.op(OperatorCommand::Approve, "x")), hosts(&["a-3", "a-4"]));
    run.assert_invariants();
}

#[test]
fn canaries_promote_themselves_after_their_soak() {
    let mut run = Run::new(spec(&[g("a", 4, 3).canary_after(2, 300)], 1));
    assert_eq!(dispatched(&run.start()), hosts(&["a-0", "a-1"]));
    run.ok("a-0");
    run.advance(1000);
    let a = run.ok("a-1");
    let promote_at = run.now().plus(Duration::from_secs(300));
    assert_eq!(scheduled(&a), vec![(promote_at, Timer::PromoteCanaries { group: "a".into() })]);
    assert_eq!(run.engine.group_state(0), Some(GroupState::CanarySoak));
    assert_eq!(run.engine.view().groups[0].promote_at, Some(promote_at));

    // A replayed engine re-arms the promotion.
    let resumed = run.engine.resume_actions(run.now());
    assert_eq!(scheduled(&resumed), vec![(promote_at, Timer::PromoteCanaries { group: "a".into() })]);

    // Fired early (a timer of an earlier soak, say) it changes nothing.
    run.advance(100_000);
    assert!(run.timer(Timer::PromoteCanaries { group: "a".into() }).is_empty());
    assert!(run.timer(Timer::PromoteCanaries { group: "nope".into() }).is_empty());
    run.now = promote_at.0;
    let a = run.timer(Timer::PromoteCanaries { group: "a".into() });
    assert_eq!(dispatched(&a), hosts(&["a-2", "a-3"]));
    assert_eq!(run.engine.group_state(0), Some(GroupState::Running));
    assert_eq!(run.engine.view().groups[0].promote_at, None);
    // The same timer again is stale.
    assert!(run.timer(Timer::PromoteCanaries { group: "a".into() }).is_empty());
    run.complete("a-2");
    assert_eq!(finished(&run.complete("a-3")), Some(RolloutState::Succeeded));
    run.assert_final_invariants();
}

#[test]
fn approve_ends_a_canary_soak_early_and_zero_soak_promotes_at_once() {
    let mut run = Run::new(spec(&[g("a", 3, 1).canary_after(1, 600)], 1));
    run.start();
    run.ok("a-0");
    assert_eq!(run.engine.group_state(0), Some(GroupState::CanarySoak));
    assert_eq!(dispatched(&run.op(OperatorCommand::Approve, "x")), hosts(&["a-1"]));
    run.assert_invariants();

    let mut run = Run::new(spec(&[g("a", 3, 1).canary_after(1, 0)], 1));
    run.start();
    let a = run.ok("a-0");
    assert_eq!(dispatched(&a), hosts(&["a-1"]), "no soak: promoted with the canary's result");
    assert!(scheduled(&a).iter().all(|(_, t)| !matches!(t, Timer::PromoteCanaries { .. })));
    run.assert_invariants();
}

#[test]
fn a_canary_that_keeps_its_slot_for_soak_passes_only_after_it() {
    let mut run = Run::new(spec(&[g("a", 3, 1).canary(1).soak(60)], 1));
    run.start();
    run.ok("a-0");
    assert!(matches!(run.state_of("a-0"), HostState::Soaking { .. }));
    assert_eq!(run.engine.group_state(0), Some(GroupState::Canary), "still soaking: not passed yet");
    run.advance(60_000);
    run.timer(Timer::SoakOver { host: "a-0".into() });
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));
}

#[test]
fn a_canary_failure_stops_the_group_before_any_other_host() {
    // A budget of 3 would tolerate the failure of an ordinary host.
    let mut run = Run::new(spec(&[g("a", 4, 2).canary(1).budget(3), g("b", 2, 1).after(&[0])], 2));
    run.start();
    let a = run.fail("a-0");
    assert_eq!(run.engine.group_state(0), Some(GroupState::Failed));
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(run.engine.message().contains("canary a-0 of group a failed: exit 1"), "{}", run.engine.message());
    for h in ["a-1", "a-2", "a-3", "b-0", "b-1"] {
        assert_eq!(run.state_of(h), HostState::Skipped, "{h} was never touched");
    }
    let touched: Vec<String> = run.log.iter().flat_map(|e| dispatched(&e.actions)).map(|(h, _)| h).collect();
    assert_eq!(touched, vec!["a-0".to_string()]);
    run.assert_final_invariants();
}

#[test]
fn a_canary_failure_with_rollback_host_rolls_the_canary_back_and_nothing_else() {
    let mut run = Run::new(spec(&[g("a", 4, 1).canary(1).on_failure(OnFailure::RollbackHost)], 3));
    run.start();
    run.ok("a-0");
    let a = run.fail("a-0");
    assert_eq!(done(&a), vec![("a-0".to_string(), "failed")]);
    assert_eq!(rolled(&a), vec![("a-0".to_string(), 0)], "the canary's rollback starts at once");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    assert_eq!(run.exec_of("a-0"), "r1/a-0/rb0/1");
    let a = run.complete_rollback("a-0");
    assert_eq!(run.state_of("a-0"), HostState::RolledBack);
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(run.engine.message().contains("1 hosts rolled back"), "{}", run.engine.message());
    for h in ["a-1", "a-2", "a-3"] {
        assert_eq!(run.state_of(h), HostState::Skipped);
    }
    run.assert_final_invariants();
}

#[test]
fn approving_while_paused_promotes_but_starts_nothing_until_resume() {
    let mut run = Run::new(spec(&[g("a", 3, 1).canary(1)], 1));
    run.start();
    run.op(OperatorCommand::Pause, "x");
    run.ok("a-0");
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));
    assert!(dispatched(&run.op(OperatorCommand::Approve, "x")).is_empty());
    assert_eq!(run.engine.group_state(0), Some(GroupState::Running));
    assert_eq!(dispatched(&run.op(OperatorCommand::Resume, "x")), hosts(&["a-1"]));
    run.assert_invariants();
}

#[test]
fn groups_waiting_for_approval_are_skipped_when_the_rollout_stops() {
    let mut run = Run::new(spec(&[g("a", 3, 1).canary(1), g("c", 2, 2)], 1));
    run.start();
    run.ok("a-0");
    assert_eq!(run.engine.group_state(0), Some(GroupState::AwaitingApproval));
    run.op(OperatorCommand::Abort, "x");
    assert!(!run.engine.is_finished(), "c-0 and c-1 are still running");
    assert!(run.op(OperatorCommand::Approve, "x").is_empty(), "no approval once aborting");
    assert!(run.engine.message().contains("approve by x ignored"));
    run.ok("c-0");
    assert_eq!(finished(&run.ok("c-1")), Some(RolloutState::Aborted));
    assert_eq!(run.engine.group_state(0), Some(GroupState::Skipped));
    assert_eq!(run.state_of("a-1"), HostState::Skipped);
    run.assert_final_invariants();
}

#[test]
fn the_checker_catches_a_host_started_before_its_canaries_were_promoted() {
    let mut run = Run::new(spec(&[g("a", 3, 1).canary(1)], 1));
    run.start();
    run.ok("a-0");
    run.op(OperatorCommand::Approve, "x");
    run.assert_invariants();
    // Turn the approval into something else: a-1 then started unapproved.
    let mut log = run.log.clone();
    let n = log.iter().position(|e| matches!(e.event, Event::Operator { .. })).unwrap();
    log[n].event = Event::Operator { command: OperatorCommand::Resume, by: "x".into() };
    let v = invariants::check(run.engine.spec(), &log).unwrap_err();
    assert!(v.iter().any(|m| m.contains("a-1") && m.contains("without an approval")), "{v:?}");

    // With a soak, a promotion before its time is caught too.
    let mut run = Run::new(spec(&[g("a", 3, 1).canary_after(1, 300)], 1));
    run.start();
    run.ok("a-0");
    run.advance(10_000);
    let mut log = run.log.clone();
    log.push(invariants::LogEntry {
        now: run.now(),
        event: Event::TimerFired { timer: Timer::PromoteCanaries { group: "a".into() } },
        actions: vec![Action::Dispatch {
            host: "a-1".into(),
            execution_id: "r1/a-1/0/1".parse().unwrap(),
            step_index: 0,
            step: step("step0"),
            resend: false,
        }],
    });
    let v = invariants::check(run.engine.spec(), &log).unwrap_err();
    assert!(v.iter().any(|m| m.contains("before the 300000 ms soak")), "{v:?}");
}

//! Rollback: each `on_failure` mode, the operator's `Rollback`, the
//! rollout-wide failure budget, and what the invariant checker holds
//! rollbacks to. In the fixture every step but the last has an undo
//! (`step{s}` is undone by `undo{s}`).

mod engine_support;

use convoy_common::engine::{Action, Engine, Event, GroupState, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::invariants::{self, LogEntry};
use convoy_common::model::{OnFailure, StepOutcome};
use engine_support::*;

/// `(host, step name)` of every new rollback dispatch.
fn rolled_steps(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::DispatchRollback { host, step, resend: false, .. } = a {
                Some((host.clone(), step.name.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn all_rollbacks(run: &Run) -> Vec<(String, String)> {
    run.log.iter().flat_map(|e| rolled_steps(&e.actions)).collect()
}

#[test]
fn rollback_host_undoes_the_steps_that_succeeded_in_reverse_keeping_the_slot() {
    let mut run = Run::new(spec(&[g("a", 3, 1).budget(1).on_failure(OnFailure::RollbackHost)], 4));
    run.start();
    run.ok("a-0");
    run.ok("a-0");
    let a = run.fail("a-0"); // step2 fails: step0 and step1 succeeded
    assert_eq!(done(&a), vec![("a-0".to_string(), "failed")]);
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo1".to_string())]);
    assert!(dispatched(&a).is_empty(), "the rollback keeps a-0's slot: a-1 waits");
    assert_eq!(run.exec_of("a-0"), "r1/a-0/rb0/1");
    assert_eq!(run.engine.view().hosts[0].current_step.as_deref(), Some("undo1"));
    assert_eq!(run.engine.view().groups[0].running, 1);
    assert_eq!(run.engine.state(), RolloutState::Running, "within budget the rollout goes on");

    let a = run.ok("a-0");
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo0".to_string())]);
    assert_eq!(run.exec_of("a-0"), "r1/a-0/rb1/1");
    // The undo reports what it put back.
    let a = run.report("a-0", StepOutcome { installed: Some(("app".into(), "1.0".into())), ..StepOutcome::ok() });
    assert_eq!(done(&a), vec![("a-0".to_string(), "rolled_back")]);
    assert_eq!(dispatched(&a), hosts(&["a-1"]), "the slot is free again");
    assert_eq!(run.engine.host_version("a-0"), Some("1.0"));
    let view = run.engine.view();
    assert_eq!(view.hosts[0].message, "rolled back: exit 1");
    assert_eq!((view.groups[0].rolled_back, view.groups[0].failed, view.groups[0].running), (1, 0, 1));

    run.complete("a-1");
    let a = run.complete("a-2");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded), "one failure is within the budget");
    assert!(run.engine.message().contains("1 hosts rolled back"), "{}", run.engine.message());
    run.assert_final_invariants();
}

#[test]
fn a_host_that_failed_its_first_step_has_nothing_to_roll_back() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1).on_failure(OnFailure::RollbackHost)], 2));
    run.start();
    let a = run.fail("a-0");
    assert!(rolled(&a).is_empty());
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    assert!(matches!(run.state_of("a-0"), HostState::Failed { .. }));
    assert_eq!(run.engine.view().hosts[0].message, "exit 1; nothing to roll back");
    run.assert_invariants();
}

#[test]
fn a_failed_rollback_step_ends_the_host_rollback_failed() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1).on_failure(OnFailure::RollbackHost)], 3));
    run.start();
    run.ok("a-0");
    run.ok("a-0");
    run.fail("a-0");
    let a = run.report("a-0", StepOutcome::failed("cannot undo"));
    assert_eq!(done(&a), vec![("a-0".to_string(), "rollback_failed")]);
    assert_eq!(run.state_of("a-0"), HostState::RollbackFailed { step: Some(0), reason: "cannot undo".into() });
    assert_eq!(run.engine.view().hosts[0].message, "rollback failed at undo1: cannot undo");
    assert_eq!(dispatched(&a), hosts(&["a-1"]), "undo0 is not attempted after undo1 failed");
    run.assert_invariants();
}

#[test]
fn rollback_steps_time_out_and_lose_their_agent_like_any_step() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1).on_failure(OnFailure::RollbackHost)], 3));
    run.start();
    run.ok("a-0");
    run.ok("a-0");
    run.fail("a-0");
    let id = run.exec_of("a-0");
    // A reconnect re-sends the rollback execution under the same id.
    run.ev(Event::AgentLost { host: "a-0".into() });
    let a = run.ev(Event::AgentConnected { host: "a-0".into() });
    assert!(
        matches!(&a[..], [Action::DispatchRollback { execution_id, resend: true, .. }] if *execution_id == id),
        "{a:?}"
    );
    // The step deadline fails the rollback.
    run.advance(200_000);
    let a = run.timer(Timer::StepDeadline { execution_id: id });
    assert_eq!(done(&a), vec![("a-0".to_string(), "rollback_failed")]);
    run.assert_invariants();

    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1).on_failure(OnFailure::RollbackHost)], 3));
    run.start();
    run.ok("a-0");
    run.ev(Event::AgentLost { host: "a-0".into() });
    run.fail("a-0");
    // Its agent is gone: the rollback gets a lost deadline from its start.
    run.advance(LOST_TIMEOUT.as_millis() as u64);
    let a = run.timer(Timer::LostDeadline { host: "a-0".into() });
    assert_eq!(run.state_of("a-0"), HostState::RollbackFailed { step: Some(0), reason: "agent lost".into() });
    assert_eq!(dispatched(&a), hosts(&["a-1"]));
    run.assert_invariants();
}

#[test]
fn rollback_group_rolls_back_every_started_host_of_the_failed_group_only() {
    let groups = [g("a", 4, 2).on_failure(OnFailure::RollbackGroup), g("other", 2, 1)];
    let mut run = Run::new(spec(&groups, 2));
    run.start();
    run.complete("a-0"); // a-2 starts
    assert_eq!(run.state_of("a-0"), HostState::Succeeded);
    run.ok("a-1");
    let a = run.fail("a-1"); // over budget 0: the group fails
    assert_eq!(run.engine.state(), RolloutState::Halting);
    assert_eq!(run.engine.group_state(0), Some(GroupState::RollingBack));
    // a-1 rolls back at once; a-2 is still upgrading, so the queue waits for it.
    assert_eq!(rolled_steps(&a), vec![("a-1".to_string(), "undo0".to_string())]);
    run.complete_rollback("a-1");
    assert!(all_rollbacks(&run).iter().all(|(h, _)| h == "a-1"), "a-2 blocks the reverse walk");
    let a = run.complete("a-2");
    // a-2 succeeded, then rolls back; a-0 follows in the free slot.
    assert_eq!(
        rolled_steps(&a),
        vec![("a-2".to_string(), "undo0".to_string()), ("a-0".to_string(), "undo0".to_string())]
    );
    run.complete_rollback("a-2");
    run.complete_rollback("a-0");
    assert_eq!(run.engine.group_state(0), Some(GroupState::RolledBack));
    assert!(!run.engine.is_finished(), "the other group is still running");
    run.complete("other-0");
    assert_eq!(run.engine.state(), RolloutState::Failed, "the rollout failed; only group a was rolled back");
    assert_eq!(run.engine.group_state(1), Some(GroupState::Skipped), "other-1 never started");
    assert_eq!(run.state_of("a-3"), HostState::Skipped);
    assert_eq!(run.state_of("other-0"), HostState::Succeeded);
    assert_eq!(run.state_of("other-1"), HostState::Skipped);
    assert!(run.engine.message().contains("3 hosts rolled back"), "{}", run.engine.message());
    run.assert_final_invariants();
}

#[test]
fn rollback_all_goes_in_reverse_dag_order_within_each_window() {
    let groups = [g("db", 2, 1), g("app", 3, 2).after(&[0]).on_failure(OnFailure::RollbackAll)];
    let mut run = Run::new(spec(&groups, 2));
    run.start();
    run.complete("db-0");
    run.complete("db-1");
    run.complete("app-0"); // app-2 starts
    run.ok("app-1");
    let a = run.fail("app-1");
    assert_eq!(run.engine.state(), RolloutState::RollingBack);
    assert_eq!(rolled_steps(&a), vec![("app-1".to_string(), "undo0".to_string())]);
    run.complete_rollback("app-1");
    let a = run.complete("app-2");
    assert_eq!(
        rolled_steps(&a),
        vec![("app-2".to_string(), "undo0".to_string()), ("app-0".to_string(), "undo0".to_string())]
    );
    assert!(all_rollbacks(&run).iter().all(|(h, _)| h.starts_with("app")), "db waits for app");
    run.complete_rollback("app-2");
    let a = run.complete_rollback("app-0");
    assert_eq!(rolled_steps(&a), vec![("db-1".to_string(), "undo0".to_string())], "db: last first, one at a time");
    assert_eq!(run.engine.group_state(1), Some(GroupState::RolledBack));
    let a = run.complete_rollback("db-1");
    assert_eq!(rolled_steps(&a), vec![("db-0".to_string(), "undo0".to_string())]);
    let a = run.complete_rollback("db-0");
    assert_eq!(finished(&a), Some(RolloutState::RolledBack));
    assert_eq!(run.engine.group_state(0), Some(GroupState::RolledBack));
    assert!(run.engine.message().starts_with("rolled back: group app has 1 failed hosts"), "{}", run.engine.message());
    run.assert_final_invariants();
}

#[test]
fn a_failed_rollback_makes_a_whole_rollback_end_failed() {
    let mut run = Run::new(spec(&[g("a", 3, 2)], 2));
    run.start();
    run.complete("a-0"); // a-2 starts
    run.op(OperatorCommand::Rollback, "ops");
    run.complete("a-1");
    assert!(all_rollbacks(&run).is_empty(), "the walk starts at a-2, still upgrading");
    let a = run.complete("a-2");
    assert_eq!(
        rolled_steps(&a),
        vec![("a-2".to_string(), "undo0".to_string()), ("a-1".to_string(), "undo0".to_string())]
    );
    let a = run.report("a-2", StepOutcome::failed("stuck"));
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo0".to_string())], "one failure stops no other");
    run.complete_rollback("a-1");
    let a = run.complete_rollback("a-0");
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(run.engine.message().contains("rollback did not complete"), "{}", run.engine.message());
    assert_eq!(run.engine.group_state(0), Some(GroupState::RollbackFailed));
    run.assert_final_invariants();
}

#[test]
fn operator_rollback_undoes_everything_started_so_far() {
    let groups = [g("a", 3, 1).soak(30), g("b", 2, 1).after(&[0])];
    let mut run = Run::new(spec(&groups, 2));
    run.start();
    run.complete("a-0");
    run.advance(30_000);
    run.timer(Timer::SoakOver { host: "a-0".into() });
    run.ok("a-1"); // a-1 is on its last step
    let a = run.op(OperatorCommand::Rollback, "ops");
    assert_eq!(run.engine.state(), RolloutState::RollingBack);
    assert!(run.engine.message().contains("rollback requested by ops"));
    assert!(rolled(&a).is_empty(), "a-1 finishes its steps first");
    let a = run.ok("a-1");
    assert!(scheduled(&a).iter().all(|(_, t)| !matches!(t, Timer::SoakOver { .. })), "no soak while rolling back");
    assert_eq!(rolled_steps(&a), vec![("a-1".to_string(), "undo0".to_string())]);
    // Pause, resume, abort, approve and a second rollback are ignored.
    for cmd in [OperatorCommand::Pause, OperatorCommand::Abort, OperatorCommand::Rollback, OperatorCommand::Approve] {
        assert!(run.op(cmd, "x").is_empty());
        assert!(run.engine.message().contains("ignored: the rollout is rolling_back"), "{}", run.engine.message());
    }
    let a = run.complete_rollback("a-1");
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo0".to_string())], "max_parallel 1: one at a time");
    let a = run.complete_rollback("a-0");
    assert_eq!(finished(&a), Some(RolloutState::RolledBack));
    for h in ["a-2", "b-0", "b-1"] {
        assert_eq!(run.state_of(h), HostState::Skipped);
    }
    assert_eq!(run.engine.view().hosts[2].message, "skipped: the rollout was rolled back");
    run.assert_final_invariants();
}

#[test]
fn operator_rollback_before_anything_ran_ends_at_once() {
    let mut run = Run::new(spec(&[g("a", 2, 1)], 1));
    let a = run.op(OperatorCommand::Rollback, "ops");
    assert_eq!(finished(&a), Some(RolloutState::RolledBack));
    assert!(rolled(&a).is_empty());
    run.assert_final_invariants();
}

#[test]
fn rollback_after_a_halt_rolls_back_and_finished_rollouts_ignore_it() {
    let mut run = Run::new(spec(&[g("a", 3, 2)], 2));
    run.start();
    run.ok("a-0");
    run.fail("a-1");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    run.op(OperatorCommand::Rollback, "ops");
    assert_eq!(run.engine.state(), RolloutState::RollingBack);
    let a = run.ok("a-0");
    // a-0 succeeded, then rolls back; a-1 failed at its first step: nothing to undo.
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo0".to_string())]);
    assert_eq!(finished(&run.complete_rollback("a-0")), Some(RolloutState::RolledBack));
    assert!(run.op(OperatorCommand::Rollback, "ops").is_empty());
    assert_eq!(run.engine.state(), RolloutState::RolledBack);
    run.assert_final_invariants();
}

#[test]
fn the_rollout_budget_counts_failures_over_every_group() {
    let with_budget = |budget: usize, mode: OnFailure| {
        let mut s = spec(&[g("a", 3, 1).budget(3), g("b", 3, 1).budget(3)], 2);
        s.max_failures = Some(budget);
        s.on_failure = mode;
        Run::new(s)
    };
    // One failure in each group: 2 > 1, though each group is within its own budget.
    let mut run = with_budget(1, OnFailure::Halt);
    run.start();
    run.fail("a-0");
    assert_eq!(run.engine.state(), RolloutState::Running);
    assert_eq!(run.engine.failed_total(), 1);
    run.fail("b-0");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    let a = run.complete("a-1");
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert!(
        run.engine.message().contains("the rollout has 2 failed hosts, more than its budget of 1"),
        "{}",
        run.engine.message()
    );
    assert_eq!(run.engine.group_state(0), Some(GroupState::Skipped), "no group budget was exceeded");
    run.assert_final_invariants();

    // Failures are counted over the whole rollout, not per window.
    let mut run = with_budget(2, OnFailure::Halt);
    run.start();
    run.fail("a-0");
    run.complete("a-1");
    run.fail("a-2");
    run.complete("b-0");
    assert_eq!(run.engine.state(), RolloutState::Running);
    run.fail("b-1");
    assert_eq!(run.engine.state(), RolloutState::Failed, "the third failure, over two groups, halts");

    // The plan's on_failure decides: here the whole rollout rolls back.
    let mut run = with_budget(0, OnFailure::RollbackAll);
    run.start();
    run.complete("b-0");
    run.ok("a-0");
    run.fail("a-0");
    assert_eq!(run.engine.state(), RolloutState::RollingBack);
    let a = run.complete("b-1");
    assert_eq!(rolled_steps(&a), vec![("b-1".to_string(), "undo0".to_string())]);
    // a-0 failed after step0: its undo runs with the rollout's rollback.
    assert!(all_rollbacks(&run).contains(&("a-0".to_string(), "undo0".to_string())));
    run.complete_rollback("a-0");
    let a = run.complete_rollback("b-1");
    assert_eq!(rolled_steps(&a), vec![("b-0".to_string(), "undo0".to_string())]);
    assert_eq!(finished(&run.complete_rollback("b-0")), Some(RolloutState::RolledBack));
    run.assert_final_invariants();
}

#[test]
fn a_replayed_engine_resends_rollback_executions() {
    let mut run = Run::new(spec(&[g("a", 2, 1).budget(1).on_failure(OnFailure::RollbackHost)], 3));
    run.start();
    run.ok("a-0");
    run.fail("a-0");
    let id = run.exec_of("a-0");
    let mut copy = Engine::new("r1", run.engine.spec().clone());
    for e in &run.log {
        copy.handle(e.now, e.event.clone());
    }
    assert_eq!(copy.view(), run.engine.view());
    let resumed = copy.resume_actions(run.now());
    assert!(
        resumed
            .iter()
            .any(|a| matches!(a, Action::DispatchRollback { execution_id, resend: true, .. } if *execution_id == id)),
        "{resumed:?}"
    );
    assert!(scheduled(&resumed).iter().any(|(_, t)| *t == Timer::StepDeadline { execution_id: id.clone() }));
    assert_eq!(copy.execution_host(&id).map(String::as_str), Some("a-0"));
}

fn rollback_action(host: &str, id: &str, index: usize, s: usize) -> Action {
    Action::DispatchRollback {
        host: host.into(),
        execution_id: id.parse().unwrap(),
        rollback_index: index,
        step: undo(s),
        resend: false,
    }
}

#[test]
fn the_checker_holds_rollbacks_to_their_rules() {
    let mut run = Run::new(spec(&[g("a", 2, 1), g("b", 1, 1).after(&[0])], 3));
    run.start();
    run.ok("a-0");
    run.ok("a-0");
    run.assert_invariants();
    let now = run.now();
    let check = |extra: Vec<LogEntry>| {
        let mut log = run.log.clone();
        log.extend(extra);
        invariants::check(run.engine.spec(), &log).unwrap_err().join("\n")
    };
    let entry = |actions: Vec<Action>| LogEntry {
        now,
        event: Event::Operator { command: OperatorCommand::Rollback, by: "x".into() },
        actions,
    };

    // A host that never started.
    let v = check(vec![entry(vec![rollback_action("a-1", "r1/a-1/rb0/1", 0, 0)])]);
    assert!(v.contains("host a-1 (group a) started a rollback but was never upgraded"), "{v}");
    // A host still upgrading.
    let v = check(vec![entry(vec![rollback_action("a-0", "r1/a-0/rb0/1", 0, 1)])]);
    assert!(v.contains("started a rollback while its upgrade had not ended"), "{v}");
    // The wrong step: a-0's first undo must be undo1 (step1 succeeded last).
    let done = Action::HostDone { host: "a-0".into(), state: HostState::Failed { step: Some(2), reason: "x".into() } };
    let v = check(vec![entry(vec![done.clone(), rollback_action("a-0", "r1/a-0/rb0/1", 0, 0)])]);
    assert!(v.contains("carries a step that differs from rollback step 0"), "{v}");
    // Rolled back before the last rollback step.
    let v = check(vec![entry(vec![
        done.clone(),
        rollback_action("a-0", "r1/a-0/rb0/1", 0, 1),
        Action::HostDone { host: "a-0".into(), state: HostState::RolledBack },
    ])]);
    assert!(v.contains("was reported rolled back before its last rollback step ran"), "{v}");
    // A second rollback step without the first one's success.
    let v = check(vec![entry(vec![
        done.clone(),
        rollback_action("a-0", "r1/a-0/rb0/1", 0, 1),
        rollback_action("a-0", "r1/a-0/rb1/1", 1, 0),
    ])]);
    assert!(v.contains("was dispatched rollback step 1 without a successful result for r1/a-0/rb0/1"), "{v}");
    // Two rollbacks at once in a window of 1 (a-1 forced in flight too).
    let v = check(vec![entry(vec![
        done.clone(),
        Action::Dispatch {
            host: "a-1".into(),
            execution_id: "r1/a-1/0/1".parse().unwrap(),
            step_index: 0,
            step: step("step0"),
            resend: false,
        },
        rollback_action("a-0", "r1/a-0/rb0/1", 0, 1),
    ])]);
    assert!(v.contains("started its rollback while group a had 2 hosts in flight, more than max_parallel 1"), "{v}");
    // After the rollout finished.
    let v = check(vec![entry(vec![
        done,
        Action::Finished { state: RolloutState::Failed },
        rollback_action("a-0", "r1/a-0/rb0/1", 0, 1),
    ])]);
    assert!(v.contains("was dispatched to host a-0 after the rollout finished"), "{v}");
}

#[test]
fn the_checker_catches_a_dependency_rolled_back_before_its_dependents() {
    let mut run = Run::new(spec(&[g("a", 1, 1), g("b", 1, 1).after(&[0])], 2));
    run.start();
    run.complete("a-0");
    run.ok("b-0");
    run.op(OperatorCommand::Rollback, "ops");
    run.assert_invariants();
    // Pretend a-0 started rolling back while b-0 had not.
    let mut log = run.log.clone();
    log.push(LogEntry {
        now: run.now(),
        event: Event::AgentConnected { host: "a-0".into() },
        actions: vec![rollback_action("a-0", "r1/a-0/rb0/1", 0, 0)],
    });
    let v = invariants::check(run.engine.spec(), &log).unwrap_err().join("\n");
    assert!(v.contains("started rolling back before group b, which depends on it, finished its rollback"), "{v}");
    // The engine itself waits for b-0.
    let a = run.ok("b-0");
    assert_eq!(rolled_steps(&a), vec![("b-0".to_string(), "undo0".to_string())]);
    let a = run.complete_rollback("b-0");
    assert_eq!(rolled_steps(&a), vec![("a-0".to_string(), "undo0".to_string())]);
    run.complete_rollback("a-0");
    run.assert_final_invariants();
}

//! Strategies as the engine runs them: ramped batches (`max_parallel` as a
//! list) and pre-checks that gate a host before it is touched.

mod engine_support;

use convoy_common::engine::{Action, HostState, RolloutState};
use convoy_common::model::{OnFailure, StepOutcome, Strategy, Window};
use engine_support::*;

fn ramped(hosts: usize, stages: &[usize]) -> convoy_common::model::RolloutSpec {
    let mut s = spec(&[g("a", hosts, 1)], 1);
    s.groups[0].strategy = Strategy::Rolling { window: Window { stages: stages.to_vec() }, order: Default::default() };
    s
}

fn names(a: &[Action]) -> Vec<String> {
    dispatched(a).into_iter().map(|(h, _)| h).collect()
}

#[test]
fn a_ramp_runs_each_stage_as_a_batch_then_slides_with_the_last_size() {
    let mut run = Run::new(ramped(8, &[1, 2, 3]));
    assert_eq!(names(&run.start()), ["a-0"], "the first stage is one host");
    assert_eq!(names(&run.ok("a-0")), ["a-1", "a-2"], "the second stage starts once the first is done");
    assert!(names(&run.ok("a-1")).is_empty(), "the third stage waits for the whole second one");
    assert_eq!(names(&run.ok("a-2")), ["a-3", "a-4", "a-5"], "then three at a time");
    // From the last stage on the window slides: one done, one more starts.
    assert_eq!(names(&run.ok("a-3")), ["a-6"]);
    assert_eq!(names(&run.ok("a-4")), ["a-7"]);
    for h in ["a-5", "a-6", "a-7"] {
        run.ok(h);
    }
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn a_ramp_stage_waits_for_soaks_and_failures_of_the_stage_before() {
    let mut s = ramped(5, &[2, 3]);
    s.groups[0].max_failures = 1;
    s.groups[0].soak = std::time::Duration::from_secs(10);
    let mut run = Run::new(s);
    assert_eq!(names(&run.start()), ["a-0", "a-1"]);
    run.fail("a-0");
    // a-1 succeeded but soaks: the next stage waits for the soak to end.
    assert!(names(&run.ok("a-1")).is_empty());
    assert!(matches!(run.state_of("a-1"), HostState::Soaking { .. }));
    run.advance(10_000);
    let a = run.timer(convoy_common::engine::Timer::SoakOver { host: "a-1".into() });
    assert_eq!(names(&a), ["a-2", "a-3", "a-4"]);
    run.assert_invariants();
}

/// The fixture's first step is a pre-check: a host that never passes it
/// fails without any step run and has nothing to roll back, even under
/// `rollback_host` with rollback steps.
fn gated(on_failure: OnFailure) -> convoy_common::model::RolloutSpec {
    let mut s = spec(&[g("a", 2, 1).budget(1).on_failure(on_failure)], 3);
    for h in &mut s.hosts {
        h.pre_checks = 1;
        h.rollback_steps = vec![step("undrain")];
    }
    s
}

#[test]
fn a_host_whose_pre_checks_fail_is_not_touched_nor_rolled_back() {
    let mut run = Run::new(gated(OnFailure::RollbackHost));
    assert_eq!(dispatched(&run.start()), vec![("a-0".to_string(), 0)], "the pre-check goes first");
    let a = run.report("a-0", StepOutcome::failed("3 partitions under-replicated"));
    assert!(rolled(&a).is_empty(), "nothing to roll back: {a:?}");
    assert!(matches!(run.state_of("a-0"), HostState::Failed { .. }), "{:?}", run.state_of("a-0"));
    let view = run.engine.view();
    assert!(view.hosts[0].message.contains("under-replicated"), "{}", view.hosts[0].message);
    assert!(view.hosts[0].message.contains("nothing to roll back"), "{}", view.hosts[0].message);
    // The next host starts with its pre-check (the budget allows one failure).
    assert_eq!(dispatched(&a), vec![("a-1".to_string(), 0)]);
    run.assert_invariants();
}

#[test]
fn a_host_past_its_pre_checks_is_rolled_back_as_before() {
    let mut run = Run::new(gated(OnFailure::RollbackHost));
    run.start();
    run.ok("a-0");
    let a = run.report("a-0", StepOutcome::failed("install failed"));
    assert_eq!(rolled(&a), vec![("a-0".to_string(), 0)], "its group's rollback steps run: {a:?}");
    run.assert_invariants();
}

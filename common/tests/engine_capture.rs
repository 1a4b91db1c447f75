//! Captured values in the engine: extraction from a successful step's
//! stdout, failure when a capture does not match, substitution into later
//! steps (and rollbacks) at dispatch, replay, and hook entries that share an
//! agent with a normal group's entry.

mod engine_support;

use convoy_common::engine::{Action, Engine, Event, HostState, OperatorCommand, RolloutState};
use convoy_common::model::{
    CaptureFrom, CaptureSpec, ExecSpec, GroupSpec, HostPlan, OnFailure, StepKind, StepOutcome, StepSpec, Strategy,
};
use engine_support::*;

fn exec(name: &str, command: &str, args: &[&str]) -> StepSpec {
    StepSpec {
        name: name.to_string(),
        timeout: STEP_TIMEOUT,
        kind: StepKind::Exec(ExecSpec {
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..ExecSpec::default()
        }),
        rerun_safe: false,
    }
}

fn regex(name: &str, pattern: &str) -> Option<CaptureSpec> {
    Some(CaptureSpec { name: name.to_string(), from: CaptureFrom::Regex(pattern.to_string()) })
}

fn stdout(text: &str) -> StepOutcome {
    StepOutcome { stdout_tail: text.to_string(), ..StepOutcome::ok() }
}

/// The args of the exec step in the first (re-)dispatch of `actions`.
fn dispatched_args(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Dispatch { step, .. } | Action::DispatchRollback { step, .. } => match &step.kind {
                StepKind::Exec(e) => Some(e.args.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("an exec dispatch")
}

/// One group `a` with one host: record, scale to 0, upgrade, restore.
fn exastro() -> convoy_common::model::RolloutSpec {
    let mut s = spec(&[g("a", 1, 1)], 0);
    let h = &mut s.hosts[0];
    h.steps = vec![
        exec("record", "kubectl", &["get", "deploy/api"]),
        exec("scale-down", "kubectl", &["scale", "--replicas=0"]),
        exec("upgrade", "helm", &["upgrade"]),
        exec("restore", "kubectl", &["scale", "--replicas={{captured.replicas}}", "{{captured.replicas}}x"]),
    ];
    h.captures = vec![regex("replicas", r"replicas=(\d+)")];
    // Undoing the scale-down restores the recorded count too.
    h.undo = vec![None, Some(exec("undo-scale", "kubectl", &["scale", "--replicas={{ captured.replicas }}"]))];
    s
}

#[test]
fn a_capture_feeds_later_steps_and_shows_in_the_view() {
    let mut run = Run::new(exastro());
    run.start();
    let a = run.report("a-0", stdout("name=api\nreplicas=3\n"));
    assert_eq!(dispatched_args(&a), ["scale", "--replicas=0"]);
    let view = run.engine.view();
    assert_eq!(view.hosts[0].captured.get("replicas").map(String::as_str), Some("3"));
    assert_eq!(view.hosts[0].key, "a-0");
    run.ok("a-0");
    let a = run.ok("a-0");
    assert_eq!(dispatched_args(&a), ["scale", "--replicas=3", "3x"]);
    let a = run.ok("a-0");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    // The spec itself keeps the template.
    let StepKind::Exec(e) = &run.engine.spec().hosts[0].steps[3].kind else { panic!() };
    assert_eq!(e.args[1], "--replicas={{captured.replicas}}");
    run.assert_final_invariants();
}

#[test]
fn a_capture_that_does_not_match_fails_the_step() {
    let mut run = Run::new(exastro());
    run.start();
    let a = run.report("a-0", stdout("Error from server (NotFound): deployments.apps \"api\" not found\n"));
    assert_eq!(done(&a), vec![("a-0".to_string(), "failed")]);
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    let HostState::Failed { step, reason } = run.state_of("a-0") else { panic!() };
    assert_eq!(step, Some(0));
    assert!(reason.contains("capture 'replicas'") && reason.contains(r"replicas=(\d+)"), "{reason}");
    assert!(reason.contains("deployments.apps \"api\" not found"), "stdout tail is shown: {reason}");
    assert!(run.engine.view().hosts[0].captured.is_empty());
    run.assert_final_invariants();
}

#[test]
fn rollbacks_use_captured_values_and_a_missing_one_fails_the_rollback() {
    let mut s = exastro();
    s.groups[0].on_failure = OnFailure::RollbackHost;
    let mut run = Run::new(s.clone());
    run.start();
    run.report("a-0", stdout("replicas=5"));
    run.ok("a-0");
    // The upgrade fails: the scale-down is undone with the recorded count.
    let a = run.fail("a-0");
    assert_eq!(rolled(&a), vec![("a-0".to_string(), 0)]);
    assert_eq!(dispatched_args(&a), ["scale", "--replicas=5"]);
    run.complete_rollback("a-0");
    assert_eq!(run.state_of("a-0"), HostState::RolledBack);
    run.assert_final_invariants();

    // A rollback step whose value was never captured fails instead of
    // sending the template (only reachable with a hand-made spec).
    s.hosts[0].rollback_steps = vec![exec("announce", "echo", &["{{captured.other}}"])];
    let mut run = Run::new(s);
    run.start();
    let a = run.fail("a-0");
    assert!(rolled(&a).is_empty(), "nothing sent: {a:?}");
    let HostState::RollbackFailed { reason, .. } = run.state_of("a-0") else { panic!("{:?}", run.state_of("a-0")) };
    assert!(reason.contains("captured value 'other' is not available"), "{reason}");
    assert_eq!(run.engine.in_flight_total(), 0);
}

#[test]
fn replay_rebuilds_captured_values() {
    let mut run = Run::new(exastro());
    run.start();
    run.report("a-0", stdout("replicas=7"));
    run.ok("a-0");
    run.ok("a-0");
    // The coordinator dies with `restore` in flight; a new one replays the log.
    let mut copy = Engine::new("r1", run.engine.spec().clone());
    for e in &run.log {
        copy.handle(e.now, e.event.clone());
    }
    assert_eq!(copy.view(), run.engine.view());
    assert_eq!(copy.view().hosts[0].captured.get("replicas").map(String::as_str), Some("7"));
    let resumed = copy.resume_actions(run.now());
    assert!(matches!(&resumed[0], Action::Dispatch { resend: true, step_index: 3, .. }), "{resumed:?}");
    assert_eq!(dispatched_args(&resumed), ["scale", "--replicas=7", "7x"]);
    // A reconnect re-sends the same rendered step.
    let a = run.ev(Event::AgentConnected { host: "a-0".into() });
    assert_eq!(dispatched_args(&a), ["scale", "--replicas=7", "7x"]);
    run.assert_invariants();
}

/// A `before` hook on host `a-0`, which is also the only host of group `a`:
/// the hook records a value, the group uses it.
fn hooked() -> convoy_common::model::RolloutSpec {
    let mut s = spec(&[g("a", 1, 1)], 0);
    s.hosts[0].group = 1;
    s.hosts[0].steps = vec![exec("use", "scale", &["{{captured.n}}"])];
    s.hosts.push(HostPlan {
        host: "a-0".into(),
        key: Some("a-0@before".into()),
        group: 0,
        steps: vec![exec("record", "get", &[]), exec("announce", "say", &["n={{captured.n}}"])],
        captures: vec![regex("n", r"\d+")],
        ..HostPlan::default()
    });
    let a = s.groups.remove(0);
    s.groups = vec![
        GroupSpec {
            name: "before".into(),
            after: Vec::new(),
            strategy: Strategy::rolling(1),
            max_failures: 0,
            soak: std::time::Duration::ZERO,
            hosts: vec![1],
            canary: None,
            on_failure: OnFailure::Halt,
            hook: true,
        },
        GroupSpec { after: vec![0], ..a },
    ];
    s
}

#[test]
fn a_hook_entry_shares_its_agent_with_a_group_entry() {
    let mut run = Run::new(hooked());
    let a = run.start();
    // The hook runs first, sent to the agent, under its own key.
    let Action::Dispatch { host, execution_id, .. } = &a[0] else { panic!("{a:?}") };
    assert_eq!((host.as_str(), execution_id.to_string().as_str()), ("a-0", "r1/a-0@before/0/1"));
    assert_eq!(run.engine.execution_host(execution_id).map(String::as_str), Some("a-0"));
    assert_eq!(run.state_of("a-0"), HostState::Pending);

    // Losing the agent affects the running hook entry; reconnecting re-sends it.
    run.ev(Event::AgentLost { host: "a-0".into() });
    let a = run.ev(Event::AgentConnected { host: "a-0".into() });
    assert_eq!(resent(&a), vec![("a-0".to_string(), "r1/a-0@before/0/1".parse().unwrap())]);

    let a = run.report("a-0@before", stdout("found 12 replicas"));
    assert_eq!(dispatched_args(&a), ["n=12"]);
    let a = run.ok("a-0@before");
    assert_eq!(done(&a)[0], ("a-0@before".to_string(), "succeeded"));
    // The group's entry reads the hook's value.
    assert_eq!(dispatched(&a), vec![("a-0".to_string(), 0)]);
    assert_eq!(dispatched_args(&a), ["12"]);
    let a = run.ok("a-0");
    assert_eq!(finished(&a), Some(RolloutState::Succeeded));
    assert_eq!(run.engine.message(), "succeeded: 1 hosts upgraded", "hook runs are not counted");
    let view = run.engine.view();
    assert_eq!(view.hosts[1].key, "a-0@before");
    assert_eq!(view.hosts[1].host, "a-0");
    assert_eq!(view.hosts[1].group, "before");
    assert_eq!(view.hosts[1].captured.get("n").map(String::as_str), Some("12"));
    assert!(view.hosts[0].captured.is_empty(), "hook values are not copied into other entries");
    run.assert_final_invariants();
}

#[test]
fn a_failed_hook_halts_the_rollout() {
    let mut run = Run::new(hooked());
    run.start();
    let a = run.fail("a-0@before");
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert_eq!(run.state_of("a-0"), HostState::Skipped);
    assert!(run.engine.message().contains("group before"), "{}", run.engine.message());
    run.assert_final_invariants();
    // Operators still address the rollout as before.
    assert!(run.op(OperatorCommand::Resume, "op").is_empty());
}

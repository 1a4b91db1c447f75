//! The `cluster` strategy: followers first, the leader last, with the leader
//! asked before every step and changing at every point a failover can hit;
//! switchover; several clusters in parallel; `same_version` lock-step. Every
//! test also holds the log to the invariants (see `invariants.rs`).

mod engine_support;

use std::time::Duration;

use convoy_common::engine::{Action, ClusterPurpose, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::model::{
    CaptureFrom, CaptureSpec, ClusterMembers, ClusterSpec, ExecCheckSpec, ExecSpec, GroupSpec, HostPlan, LeaderAnswers,
    OnFailure, RoleMatch, RolloutSpec, StepKind, StepOutcome, StepSpec, StepStatus, Strategy,
};
use engine_support::*;

fn exec_check(name: &str, host: &str) -> StepSpec {
    StepSpec {
        name: name.to_string(),
        timeout: STEP_TIMEOUT,
        kind: StepKind::ExecCheck(ExecCheckSpec {
            exec: ExecSpec { command: "is-leader".into(), args: vec![host.into()], ..ExecSpec::default() },
            policy: Default::default(),
            output: Default::default(),
        }),
        rerun_safe: false,
    }
}

/// Exit 0: leader; exit 1: follower; anything else: unknown, asked again
/// every second for ten seconds.
fn answers() -> LeaderAnswers {
    LeaderAnswers {
        leader: RoleMatch::default(),
        follower: RoleMatch { exit_code: Some(1), ..RoleMatch::default() },
        interval: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
    }
}

fn follower_outcome() -> StepOutcome {
    StepOutcome { exit_code: Some(1), ..StepOutcome::failed("exit 1: not the leader") }
}

/// What a leader check that cannot reach the product says: exit 2.
fn unknown_outcome() -> StepOutcome {
    StepOutcome { exit_code: Some(2), ..StepOutcome::failed("exit 2: connection refused") }
}

/// One group `db` of clusters `mc1`, `mc2`… with `sizes[k]` members each
/// (`mc1-0`, `mc1-1`…), every host with `steps` steps and a leader check
/// (unless `same_version`), and a switchover step when asked.
fn cluster_spec(
    sizes: &[usize],
    max_parallel: usize,
    steps: usize,
    same_version: bool,
    switchover: bool,
) -> RolloutSpec {
    let mut hosts = Vec::new();
    let mut clusters = Vec::new();
    for (c, &n) in sizes.iter().enumerate() {
        let name = format!("mc{}", c + 1);
        let mut members = Vec::new();
        for k in 0..n {
            let host = format!("{name}-{k}");
            members.push(hosts.len());
            hosts.push(HostPlan {
                initial_version: Some("1.0".into()),
                steps: (0..steps).map(|s| step(&format!("step{s}"))).collect(),
                undo: (0..steps).map(|s| Some(undo(s))).collect(),
                leader_check: (!same_version).then(|| exec_check("leader-check", &host)),
                leader_answers: (!same_version).then(answers),
                switchover: if switchover { vec![step("hand-over")] } else { Vec::new() },
                host,
                ..HostPlan::default()
            });
        }
        clusters.push(ClusterMembers { name, hosts: members, labels: Vec::new() });
    }
    RolloutSpec {
        plan_name: "cluster".into(),
        target_version: "2.0".into(),
        component: Some("app".into()),
        groups: vec![GroupSpec {
            name: "db".into(),
            after: Vec::new(),
            strategy: Strategy::Cluster {
                max_parallel,
                cluster: ClusterSpec { label: "cluster".into(), clusters, same_version },
            },
            max_failures: 0,
            soak: std::time::Duration::ZERO,
            hosts: (0..hosts.len()).collect(),
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        }],
        hosts,
        host_lost_timeout: LOST_TIMEOUT,
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: None,
        windows: None,
    }
}

fn probing(run: &Run) -> Vec<String> {
    hosts_in(run, |s| matches!(s, HostState::Probing { .. }))
}

fn running(run: &Run) -> Vec<String> {
    hosts_in(run, |s| matches!(s, HostState::Running { .. }))
}

fn hosts_in(run: &Run, pred: impl Fn(&HostState) -> bool) -> Vec<String> {
    let spec = run.engine.spec();
    spec.hosts.iter().map(|h| h.host.clone()).filter(|h| pred(&run.state_of(h))).collect()
}

/// Answer `host`'s leader check: it passes when `host` is `leader`.
fn answer(run: &mut Run, host: &str, leader: &str) -> Vec<Action> {
    let outcome = if host == leader { StepOutcome::ok() } else { follower_outcome() };
    run.report(host, outcome)
}

/// Move the rollout on until nothing is outstanding: leader checks answered
/// from `leader(cluster_of_host)`, steps and switchovers succeed. Returns the
/// hosts in the order their upgrade succeeded.
fn drive(run: &mut Run, leader: &mut dyn FnMut(&str, &Run) -> String) -> Vec<String> {
    drive_answering(run, &mut |h, run| if leader(h, run) == h { StepOutcome::ok() } else { follower_outcome() })
}

/// [`drive`], with each leader check answered by `check(host)`.
fn drive_answering(run: &mut Run, check: &mut dyn FnMut(&str, &Run) -> StepOutcome) -> Vec<String> {
    let mut order = Vec::new();
    for _ in 0..1000 {
        let mut moved = false;
        for h in probing(run) {
            let outcome = check(&h, run);
            let a = run.report(&h, outcome);
            order.extend(done(&a).into_iter().filter(|(_, s)| *s == "succeeded").map(|(h, _)| h));
            moved = true;
        }
        let busy = hosts_in(run, |s| matches!(s, HostState::Running { .. } | HostState::SwitchingOver { .. }));
        for h in busy {
            let a = run.ok(&h);
            order.extend(done(&a).into_iter().filter(|(_, s)| *s == "succeeded").map(|(h, _)| h));
            moved = true;
        }
        if !moved {
            break;
        }
    }
    run.assert_invariants();
    order
}

/// Step dispatches of `actions`, as `(host, step)`.
fn steps_of(actions: &[Action]) -> Vec<(String, usize)> {
    dispatched(actions)
}

fn checks_of(actions: &[Action]) -> Vec<(String, ClusterPurpose)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DispatchCluster { host, purpose, resend: false, .. } => Some((host.clone(), *purpose)),
            _ => None,
        })
        .collect()
}

fn fixed(leader: &'static str) -> impl FnMut(&str, &Run) -> String {
    move |_, _| leader.to_string()
}

#[test]
fn followers_go_first_and_the_leader_last() {
    let mut run = Run::new(cluster_spec(&[3], 1, 2, false, false));
    let a = run.start();
    // Nothing runs before the first member's leader check answers.
    assert!(steps_of(&a).is_empty());
    assert_eq!(
        checks_of(&a),
        vec![("mc1-0".into(), ClusterPurpose::LeaderCheck { before: 0, after_switchover: false })]
    );
    let order = drive(&mut run, &mut fixed("mc1-0"));
    assert_eq!(order, ["mc1-1", "mc1-2", "mc1-0"]);
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn the_leader_check_is_asked_before_every_step() {
    let mut run = Run::new(cluster_spec(&[2], 1, 3, false, false));
    run.start();
    drive(&mut run, &mut fixed("mc1-1"));
    let checks = run
        .log
        .iter()
        .flat_map(|e| checks_of(&e.actions))
        .filter(|(h, _)| h == "mc1-0")
        .map(|(_, p)| p)
        .collect::<Vec<_>>();
    let befores: Vec<usize> = checks
        .iter()
        .map(|p| match p {
            ClusterPurpose::LeaderCheck { before, .. } => *before,
            ClusterPurpose::Switchover { .. } => usize::MAX,
        })
        .collect();
    assert_eq!(befores, [0, 1, 2], "one leader check per step of the follower");
    run.assert_final_invariants();
}

#[test]
fn leader_changes_before_any_follower_started() {
    let mut run = Run::new(cluster_spec(&[3], 1, 1, false, false));
    run.start();
    // mc1-0 is the leader: it is sent back to wait, mc1-1 is asked next.
    answer(&mut run, "mc1-0", "mc1-0");
    assert_eq!(run.state_of("mc1-0"), HostState::Pending);
    assert_eq!(probing(&run), ["mc1-1"]);
    // Failover before any follower ran a step: mc1-2 (not upgraded) leads now.
    let order = drive(&mut run, &mut fixed("mc1-2"));
    assert_eq!(order, ["mc1-1", "mc1-0", "mc1-2"], "the new leader goes last, the old one is a follower now");
    run.assert_final_invariants();
}

#[test]
fn leader_fails_over_to_an_upgraded_follower_mid_way() {
    let mut run = Run::new(cluster_spec(&[3], 1, 1, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    // mc1-1 is upgraded; the leadership moves to it.
    let order = drive(&mut run, &mut fixed("mc1-1"));
    assert_eq!(order, ["mc1-2", "mc1-0"], "the old leader is upgraded as a follower");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn leader_fails_over_to_a_pending_follower_mid_way() {
    let mut run = Run::new(cluster_spec(&[3], 1, 2, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    // Between mc1-1's two steps, mc1-2 (never upgraded) is elected.
    let order = drive(&mut run, &mut fixed("mc1-2"));
    assert_eq!(order, ["mc1-1", "mc1-0", "mc1-2"]);
    run.assert_final_invariants();
}

#[test]
fn a_member_elected_mid_upgrade_is_held_until_the_others_are_done() {
    let mut run = Run::new(cluster_spec(&[3], 1, 2, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    // mc1-1 ran step 0 and is elected before its step 1: it waits, holding no slot.
    let a = answer(&mut run, "mc1-1", "mc1-1");
    assert_eq!(run.state_of("mc1-1"), HostState::Held { step: 1 });
    assert!(steps_of(&a).is_empty());
    assert_eq!(probing(&run), ["mc1-0"], "the old leader's mark is stale: it is asked again");
    let order = drive(&mut run, &mut fixed("mc1-1"));
    assert_eq!(order, ["mc1-0", "mc1-2", "mc1-1"]);
    run.assert_final_invariants();
}

#[test]
fn switchover_hands_the_leadership_over_before_the_leader_is_upgraded() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, true));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    // Only the leader is left: it switches over first.
    let a = answer(&mut run, "mc1-0", "mc1-0");
    assert_eq!(checks_of(&a), vec![("mc1-0".into(), ClusterPurpose::Switchover { before: 0, index: 0 })]);
    assert!(steps_of(&a).is_empty());
    let a = run.ok("mc1-0");
    assert_eq!(
        checks_of(&a),
        vec![("mc1-0".into(), ClusterPurpose::LeaderCheck { before: 0, after_switchover: true })]
    );
    // The switchover took: mc1-1 leads, mc1-0 is upgraded as a follower.
    let a = answer(&mut run, "mc1-0", "mc1-1");
    assert_eq!(steps_of(&a), hosts(&["mc1-0"]));
    run.ok("mc1-0");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn a_switchover_that_does_not_take_effect_fails_the_leader() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, true));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    answer(&mut run, "mc1-0", "mc1-0");
    run.ok("mc1-0");
    let a = answer(&mut run, "mc1-0", "mc1-0");
    assert!(steps_of(&a).is_empty(), "the leader is not upgraded");
    match run.state_of("mc1-0") {
        HostState::Failed { reason, .. } => assert!(reason.contains("switchover did not take effect"), "{reason}"),
        other => panic!("mc1-0 should have failed: {other:?}"),
    }
    assert_eq!(run.engine.state(), RolloutState::Failed);
    run.assert_final_invariants();
}

#[test]
fn clusters_of_a_group_proceed_in_parallel_each_in_its_own_order() {
    let mut run = Run::new(cluster_spec(&[3, 3], 1, 1, false, false));
    let a = run.start();
    let asked: Vec<String> = checks_of(&a).into_iter().map(|(h, _)| h).collect();
    assert_eq!(asked, ["mc1-0", "mc2-0"], "one member of each cluster at once");
    let order =
        drive(&mut run, &mut |h: &str, _: &Run| if h.starts_with("mc1") { "mc1-0" } else { "mc2-2" }.to_string());
    let mc1: Vec<&String> = order.iter().filter(|h| h.starts_with("mc1")).collect();
    let mc2: Vec<&String> = order.iter().filter(|h| h.starts_with("mc2")).collect();
    assert_eq!(mc1, ["mc1-1", "mc1-2", "mc1-0"]);
    assert_eq!(mc2, ["mc2-0", "mc2-1", "mc2-2"]);
    run.assert_final_invariants();
}

#[test]
fn max_parallel_is_per_cluster_and_the_leader_waits_for_every_follower() {
    let mut run = Run::new(cluster_spec(&[4], 2, 1, false, false));
    run.start();
    // Two followers at once; the leader (mc1-3) is asked only when both are done.
    assert_eq!(probing(&run), ["mc1-0", "mc1-1"]);
    answer(&mut run, "mc1-0", "mc1-3");
    answer(&mut run, "mc1-1", "mc1-3");
    assert_eq!(running(&run), ["mc1-0", "mc1-1"]);
    run.ok("mc1-0");
    assert_eq!(probing(&run), ["mc1-2"]);
    let order = drive(&mut run, &mut fixed("mc1-3"));
    assert_eq!(order.last().map(String::as_str), Some("mc1-3"));
    run.assert_final_invariants();
}

#[test]
fn members_that_all_claim_leadership_fail_instead_of_looping() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    // Split brain: every member's check passes.
    for _ in 0..20 {
        let Some(h) = probing(&run).first().cloned() else { break };
        answer(&mut run, &h, &h);
    }
    assert_eq!(run.engine.state(), RolloutState::Failed);
    let reasons: Vec<String> = ["mc1-0", "mc1-1"]
        .iter()
        .filter_map(|h| match run.state_of(h) {
            HostState::Failed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(reasons.iter().any(|r| r.contains("leadership keeps moving")), "{reasons:?}");
    run.assert_final_invariants();
}

#[test]
fn a_held_leader_finishes_its_steps_when_the_rollout_halts() {
    let mut run = Run::new(cluster_spec(&[3], 1, 2, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    answer(&mut run, "mc1-1", "mc1-1");
    assert_eq!(run.state_of("mc1-1"), HostState::Held { step: 1 });
    // mc1-0 is asked next and fails its step: the rollout halts.
    answer(&mut run, "mc1-0", "mc1-1");
    run.fail("mc1-0");
    assert_eq!(run.engine.state(), RolloutState::Halting);
    // The held host started: it goes on (its leader check no longer holds it back).
    assert_eq!(probing(&run), ["mc1-1"]);
    answer(&mut run, "mc1-1", "mc1-1");
    let a = run.ok("mc1-1");
    assert_eq!(finished(&a), Some(RolloutState::Failed));
    assert_eq!(run.state_of("mc1-1"), HostState::Succeeded);
    assert_eq!(run.state_of("mc1-2"), HostState::Skipped);
    run.assert_final_invariants();
}

#[test]
fn a_leader_check_the_agent_cannot_run_fails_the_host_at_once() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    let a = run.report("mc1-0", outcome(StepStatus::Unsupported, "unknown step kind"));
    assert!(steps_of(&a).is_empty());
    match run.state_of("mc1-0") {
        HostState::Failed { reason, .. } => assert!(reason.starts_with("leader check: unknown step kind"), "{reason}"),
        other => panic!("{other:?}"),
    }
    run.assert_invariants();
}

fn failed_reason(run: &Run, host: &str) -> String {
    match run.state_of(host) {
        HostState::Failed { reason, .. } => reason,
        other => panic!("{host} should have failed: {other:?}"),
    }
}

/// Fire `host`'s recheck timer once its time has come.
fn recheck(run: &mut Run, host: &str) -> Vec<Action> {
    let HostState::LeaderUnknown { retry_at, .. } = run.state_of(host) else {
        panic!("{host} is not waiting to be asked again: {:?}", run.state_of(host))
    };
    let wait = retry_at.0.saturating_sub(run.now().0);
    run.advance(wait);
    run.timer(Timer::LeaderRecheck { host: host.to_string() })
}

#[test]
fn an_unknown_answer_is_asked_again_then_fails_the_host_untouched() {
    let mut run = Run::new(cluster_spec(&[3], 1, 1, false, false));
    run.start();
    let first_asked = run.now();
    let mut asks = 1;
    let mut touched = Vec::new();
    // The primary does not answer: every ask says exit 2.
    loop {
        let a = run.report("mc1-0", unknown_outcome());
        touched.extend(steps_of(&a));
        match run.state_of("mc1-0") {
            HostState::LeaderUnknown { step: 0, after_switchover: false, retry_at } => {
                assert_eq!(scheduled(&a), vec![(retry_at, Timer::LeaderRecheck { host: "mc1-0".into() })]);
                assert_eq!(retry_at.0, run.now().0 + 1000, "asked again after the interval");
                // It keeps its slot: nobody else starts meanwhile.
                assert!(probing(&run).is_empty() && running(&run).is_empty());
            }
            HostState::Failed { .. } => break,
            other => panic!("{other:?}"),
        }
        let a = recheck(&mut run, "mc1-0");
        assert_eq!(
            checks_of(&a),
            vec![("mc1-0".into(), ClusterPurpose::LeaderCheck { before: 0, after_switchover: false })]
        );
        asks += 1;
        assert!(asks < 50, "never gave up");
    }
    assert!(touched.is_empty(), "no step ran on a host whose role was unknown: {touched:?}");
    assert!(run.now().0 - first_asked.0 <= 10_000, "gave up within the check's deadline");
    assert!(asks >= 9, "asked every second for ten seconds, not {asks} times");
    let reason = failed_reason(&run, "mc1-0");
    assert!(reason.contains("could not tell leader from follower"), "{reason}");
    assert!(reason.contains("connection refused"), "{reason}");
    // Budget 0: the rollout halts and nothing else was touched.
    assert_eq!(run.engine.state(), RolloutState::Failed);
    let all_steps: Vec<(String, usize)> = run.log.iter().flat_map(|e| steps_of(&e.actions)).collect();
    assert!(all_steps.is_empty(), "{all_steps:?}");
    run.assert_final_invariants();
}

#[test]
fn an_unknown_answer_then_leader_waits_then_leads() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    let a = run.report("mc1-0", unknown_outcome());
    assert!(steps_of(&a).is_empty());
    recheck(&mut run, "mc1-0");
    // Now it answers: it is the leader, so it waits and mc1-1 goes first.
    answer(&mut run, "mc1-0", "mc1-0");
    assert_eq!(run.state_of("mc1-0"), HostState::Pending);
    let order = drive(&mut run, &mut fixed("mc1-0"));
    assert_eq!(order, ["mc1-1", "mc1-0"]);
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn an_unknown_answer_mid_upgrade_fails_the_host_before_its_next_step() {
    let mut run = Run::new(cluster_spec(&[2], 1, 2, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-1");
    run.ok("mc1-0");
    // Before step 1 the check stops answering (timeouts, then exit 2).
    run.report("mc1-0", outcome(StepStatus::TimedOut, "killed after 10s"));
    for _ in 0..100 {
        if !matches!(run.state_of("mc1-0"), HostState::LeaderUnknown { .. }) {
            break;
        }
        recheck(&mut run, "mc1-0");
        run.report("mc1-0", unknown_outcome());
    }
    assert!(matches!(run.state_of("mc1-0"), HostState::Failed { step: Some(1), .. }), "{:?}", run.state_of("mc1-0"));
    let steps: Vec<(String, usize)> = run.log.iter().flat_map(|e| steps_of(&e.actions)).collect();
    assert_eq!(steps, hosts(&["mc1-0"]), "step 1 never ran");
    run.assert_invariants();
}

#[test]
fn an_unknown_answer_survives_a_replay() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    run.report("mc1-0", unknown_outcome());
    let mut copy = convoy_common::engine::Engine::new("r1", run.engine.spec().clone());
    for e in &run.log {
        assert_eq!(copy.handle(e.now, e.event.clone()), e.actions);
    }
    let resumed = copy.resume_actions(run.now());
    let HostState::LeaderUnknown { retry_at, .. } = run.state_of("mc1-0") else { panic!() };
    assert_eq!(scheduled(&resumed), vec![(retry_at, Timer::LeaderRecheck { host: "mc1-0".into() })]);
}

#[test]
fn no_member_claiming_the_leadership_fails_the_last_member() {
    let mut run = Run::new(cluster_spec(&[3], 1, 1, false, false));
    run.start();
    // Every member answers "follower" (a check that never finds the leader).
    let order = drive(&mut run, &mut fixed("nobody"));
    assert_eq!(order, ["mc1-0", "mc1-1"], "the last member is not upgraded");
    let reason = failed_reason(&run, "mc1-2");
    assert!(reason.contains("no member claims the leadership"), "{reason}");
    let steps: Vec<(String, usize)> = run.log.iter().flat_map(|e| steps_of(&e.actions)).collect();
    assert!(!steps.iter().any(|(h, _)| h == "mc1-2"));
    assert_ne!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn no_member_claiming_the_leadership_is_caught_with_members_in_parallel() {
    let mut run = Run::new(cluster_spec(&[2], 2, 1, false, false));
    run.start();
    assert_eq!(probing(&run), ["mc1-0", "mc1-1"]);
    answer(&mut run, "mc1-0", "nobody");
    let a = answer(&mut run, "mc1-1", "nobody");
    assert!(steps_of(&a).is_empty(), "the second follower is the last: nobody leads");
    assert!(failed_reason(&run, "mc1-1").contains("no member claims the leadership"));
    run.ok("mc1-0");
    assert_eq!(run.engine.state(), RolloutState::Failed);
    run.assert_final_invariants();
}

#[test]
fn a_leader_found_earlier_lets_the_last_member_follow() {
    // The leadership moved to an upgraded member: the last one is a follower.
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    let order = drive(&mut run, &mut fixed("mc1-1"));
    assert_eq!(order, ["mc1-0"]);
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn a_leader_check_that_always_fails_no_longer_upgrades_the_leader_first() {
    // Before: a failing check meant "follower", so mc1-0 (the real primary,
    // whose check errors) was upgraded first and nobody switched over.
    let mut run = Run::new(cluster_spec(&[3], 1, 1, false, true));
    run.start();
    for _ in 0..200 {
        let Some(h) = probing(&run).first().cloned() else {
            let Some(h) = hosts_in(&run, |s| matches!(s, HostState::LeaderUnknown { .. })).first().cloned() else {
                break;
            };
            recheck(&mut run, &h);
            continue;
        };
        run.report(&h, StepOutcome { exit_code: Some(127), ..StepOutcome::failed("command not found") });
    }
    let steps: Vec<(String, usize)> = run.log.iter().flat_map(|e| steps_of(&e.actions)).collect();
    assert!(steps.is_empty(), "no member is upgraded on a check that cannot tell: {steps:?}");
    assert!(failed_reason(&run, "mc1-0").contains("could not tell"));
    assert_eq!(run.engine.state(), RolloutState::Failed);
    run.assert_final_invariants();
}

#[test]
fn a_spec_stored_before_the_three_answers_reads_checks_as_before() {
    // Replays of old rollouts must decide what they decided then.
    let mut spec = cluster_spec(&[2], 1, 1, false, false);
    for h in &mut spec.hosts {
        h.leader_answers = None;
    }
    let mut run = Run::new(spec);
    run.start();
    run.report("mc1-0", StepOutcome::failed("exit 1"));
    assert!(matches!(run.state_of("mc1-0"), HostState::Running { .. }), "a failing check meant follower");
    run.ok("mc1-0");
    run.report("mc1-1", StepOutcome::failed("exit 1"));
    run.ok("mc1-1");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
}

#[test]
fn a_switchover_step_uses_what_the_previous_one_captured() {
    let mut spec = cluster_spec(&[2], 1, 1, false, true);
    for h in &mut spec.hosts {
        let mut pick = step("pick");
        if let StepKind::Exec(e) = &mut pick.kind {
            e.command = "pick-candidate".into();
        }
        let mut hand = step("hand-over");
        if let StepKind::Exec(e) = &mut hand.kind {
            e.args = vec!["--to".into(), "{{captured.candidate}}".into()];
        }
        h.switchover = vec![pick, hand];
        h.switchover_captures =
            vec![Some(CaptureSpec { name: "candidate".into(), from: CaptureFrom::Regex(r"candidate=(\S+)".into()) })];
    }
    let mut run = Run::new(spec);
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    answer(&mut run, "mc1-0", "mc1-0");
    let a = run.report("mc1-0", StepOutcome { stdout_tail: "candidate=mc1-1\n".into(), ..StepOutcome::ok() });
    let sent: Vec<&StepSpec> = a
        .iter()
        .filter_map(|x| match x {
            Action::DispatchCluster { purpose: ClusterPurpose::Switchover { index: 1, .. }, step, .. } => Some(step),
            _ => None,
        })
        .collect();
    match sent.as_slice() {
        [s] => match &s.kind {
            StepKind::Exec(e) => assert_eq!(e.args, ["--to", "mc1-1"]),
            other => panic!("{other:?}"),
        },
        other => panic!("the second switchover step was not sent: {other:?} ({:?})", run.state_of("mc1-0")),
    }
    run.ok("mc1-0");
    answer(&mut run, "mc1-0", "mc1-1");
    run.ok("mc1-0");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    assert_eq!(run.engine.view().hosts[0].captured.get("candidate").map(String::as_str), Some("mc1-1"));
    run.assert_final_invariants();
}

#[test]
fn same_version_runs_every_step_on_all_members_together() {
    let mut run = Run::new(cluster_spec(&[3], 1, 3, true, false));
    let a = run.start();
    assert_eq!(steps_of(&a), hosts(&["mc1-0", "mc1-1", "mc1-2"]), "stop all at once");
    let a = run.ok("mc1-0");
    assert!(steps_of(&a).is_empty());
    assert_eq!(run.state_of("mc1-0"), HostState::AtBarrier { step: 1 });
    run.ok("mc1-2");
    let a = run.ok("mc1-1");
    let next: Vec<(String, usize)> = ["mc1-0", "mc1-1", "mc1-2"].iter().map(|h| (h.to_string(), 1)).collect();
    let mut got = steps_of(&a);
    got.sort();
    assert_eq!(got, next, "step 1 starts on every member once all finished step 0");
    let order = drive(&mut run, &mut fixed(""));
    assert_eq!(order.len(), 3);
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

#[test]
fn same_version_stops_the_whole_cluster_when_a_member_fails() {
    let mut spec = cluster_spec(&[3], 1, 3, true, false);
    spec.groups[0].max_failures = 3;
    let mut run = Run::new(spec);
    run.start();
    run.ok("mc1-0");
    run.fail("mc1-1");
    // mc1-0 waited at the barrier: it stops with its cluster.
    match run.state_of("mc1-0") {
        HostState::Failed { reason, .. } => assert!(reason.contains("member mc1-1 failed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // mc1-2 was still running step 0: it stops when it reaches the barrier.
    let a = run.ok("mc1-2");
    assert!(steps_of(&a).is_empty());
    assert!(matches!(run.state_of("mc1-2"), HostState::Failed { .. }));
    assert_eq!(run.engine.state(), RolloutState::Succeeded, "within a budget of 3");
    run.assert_final_invariants();
}

#[test]
fn a_same_version_failure_rolls_every_member_back_under_rollback_host() {
    let mut spec = cluster_spec(&[2], 1, 3, true, false);
    spec.groups[0].on_failure = OnFailure::RollbackHost;
    spec.groups[0].max_failures = 2;
    let mut run = Run::new(spec);
    run.start();
    run.ok("mc1-0");
    run.ok("mc1-1");
    run.ok("mc1-0");
    // mc1-0 waits at the barrier before step 2 when mc1-1 fails step 1.
    run.fail("mc1-1");
    let undos: Vec<usize> =
        run.log.last().map(|e| rolled(&e.actions)).unwrap_or_default().iter().map(|(_, i)| *i).collect();
    assert_eq!(undos, [0, 0], "both members start rolling back");
    for h in ["mc1-0", "mc1-1"] {
        run.complete_rollback(h);
    }
    assert_eq!(run.state_of("mc1-0"), HostState::RolledBack);
    assert_eq!(run.state_of("mc1-1"), HostState::RolledBack);
    run.assert_final_invariants();
}

#[test]
fn a_member_asked_before_a_pause_does_not_start_during_it() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, false));
    run.start();
    run.op(OperatorCommand::Pause, "op");
    let a = answer(&mut run, "mc1-0", "mc1-1");
    assert!(steps_of(&a).is_empty(), "nothing starts while paused");
    assert_eq!(run.state_of("mc1-0"), HostState::Pending);
    let a = run.op(OperatorCommand::Resume, "op");
    assert_eq!(
        checks_of(&a),
        vec![("mc1-0".into(), ClusterPurpose::LeaderCheck { before: 0, after_switchover: false })]
    );
    let order = drive(&mut run, &mut fixed("mc1-1"));
    assert_eq!(order, ["mc1-0", "mc1-1"]);
    run.assert_final_invariants();
}

#[test]
fn a_replay_resends_outstanding_leader_checks_and_keeps_held_hosts() {
    let mut run = Run::new(cluster_spec(&[3, 2], 1, 2, false, false));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    // mc1-1 is elected mid-upgrade: held; mc1-0 and mc2-0 are being asked.
    answer(&mut run, "mc1-1", "mc1-1");
    assert_eq!(run.state_of("mc1-1"), HostState::Held { step: 1 });
    let mut copy = convoy_common::engine::Engine::new("r1", run.engine.spec().clone());
    for e in &run.log {
        assert_eq!(copy.handle(e.now, e.event.clone()), e.actions);
    }
    assert_eq!(copy.view(), run.engine.view());
    let resumed = copy.resume_actions(run.now());
    let resent: Vec<(String, ClusterPurpose)> = resumed
        .iter()
        .filter_map(|a| match a {
            Action::DispatchCluster { host, purpose, resend: true, .. } => Some((host.clone(), *purpose)),
            _ => None,
        })
        .collect();
    let check = ClusterPurpose::LeaderCheck { before: 0, after_switchover: false };
    assert_eq!(resent, vec![("mc1-0".to_string(), check), ("mc2-0".to_string(), check)]);
    assert!(steps_of(&resumed).is_empty() && resent.iter().all(|(h, _)| h != "mc1-1"), "a held host has nothing out");
    let deadlines = scheduled(&resumed).len();
    assert_eq!(deadlines, 2, "one step deadline per outstanding check");
}

/// PostgreSQL's `select pg_is_in_recovery()`: the command succeeds on every
/// member and its output tells the role, `f` on the primary and `t` on a
/// standby.
#[test]
fn a_leader_check_answered_by_its_output_reads_leader_and_follower() {
    let mut spec = cluster_spec(&[3], 1, 2, false, false);
    for h in &mut spec.hosts {
        h.leader_answers = Some(LeaderAnswers {
            leader: RoleMatch { stdout_equals: Some("f".into()), ..RoleMatch::default() },
            follower: RoleMatch { stdout_equals: Some("t".into()), ..RoleMatch::default() },
            ..answers()
        });
    }
    let said = |text: &str| StepOutcome { stdout_tail: text.into(), ..StepOutcome::ok() };
    let mut run = Run::new(spec);
    run.start();
    // The primary says "f": it leads, so it waits and the standbys go first.
    run.report("mc1-0", said("f\n"));
    assert_eq!(run.state_of("mc1-0"), HostState::Pending);
    // An answer that is neither (psql printed nothing) cannot tell.
    let a = run.report("mc1-1", said(""));
    assert!(steps_of(&a).is_empty());
    assert!(matches!(run.state_of("mc1-1"), HostState::LeaderUnknown { .. }), "{:?}", run.state_of("mc1-1"));
    recheck(&mut run, "mc1-1");
    let a = run.report("mc1-1", said("t\n"));
    assert_eq!(steps_of(&a), vec![("mc1-1".to_string(), 0)], "a standby is upgraded at once");
    let order = drive_answering(&mut run, &mut |h, _| said(if h == "mc1-0" { "f\n" } else { "t\n" }));
    assert_eq!(order, ["mc1-1", "mc1-2", "mc1-0"]);
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

/// `convoy status` says "switchover" while a leader switches over and while
/// it is asked to confirm the leadership moved, not "leader check before".
#[test]
fn a_switching_leader_is_shown_as_switching_over() {
    let mut run = Run::new(cluster_spec(&[2], 1, 1, false, true));
    run.start();
    answer(&mut run, "mc1-0", "mc1-0");
    answer(&mut run, "mc1-1", "mc1-0");
    run.ok("mc1-1");
    answer(&mut run, "mc1-0", "mc1-0");
    let current = |run: &Run| run.engine.view().hosts.iter().find(|h| h.host == "mc1-0").unwrap().current_step.clone();
    let shown = current(&run).unwrap_or_default();
    assert!(shown.starts_with("switchover: "), "{shown}");
    run.ok("mc1-0");
    assert_eq!(current(&run).as_deref(), Some("switchover: confirming the leadership moved"));
    answer(&mut run, "mc1-0", "mc1-1");
    assert_eq!(current(&run).as_deref(), Some("step0"));
}

/// The step a cluster dispatch (leader check or switchover) carries, with its args.
fn cluster_step_args(actions: &[Action]) -> Vec<(String, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DispatchCluster { host, step, .. } | Action::Dispatch { host, step, .. } => match &step.kind {
                StepKind::Exec(e) => Some((host.clone(), e.args.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A plan written with `{{cluster.target}}`: the engine fills in the
/// upgraded member at dispatch, from the log, so the checker agrees.
#[test]
fn the_switchover_names_the_upgraded_member_it_hands_over_to() {
    use convoy_common::plan::{expand, parse_plan};
    let plan = r#"name: pg
version: "16"
groups:
  - name: db
    select: { role: pg }
    strategy:
      type: cluster
      by: cluster
      leader:
        exec: { command: is-primary, args: ["{{host}}"] }
        follower_when: { exit_code: 1 }
      switchover:
        - name: promote
          exec: { command: switchover, args: ["{{cluster.target}}:{{cluster.target.label.port}}", "{{cluster.upgraded}}"] }
    steps:
      - name: upgrade
        exec: { command: upgrade, args: ["{{cluster.others}}"] }
"#;
    let inventory: Vec<convoy_common::model::InventoryHost> = [("pg-1", "5432"), ("pg-2", "5433"), ("pg-3", "5434")]
        .iter()
        .map(|(id, port)| convoy_common::model::InventoryHost {
            id: id.to_string(),
            labels: [("role", "pg"), ("cluster", "main"), ("port", port)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .collect();
    let spec = expand(&parse_plan("pg.yaml", plan).unwrap(), &inventory).unwrap();
    let mut run = Run::new(spec);
    run.start();
    // pg-1 leads; pg-2 then pg-3 are upgraded first.
    answer(&mut run, "pg-1", "pg-1");
    let a = answer(&mut run, "pg-2", "pg-1");
    assert_eq!(cluster_step_args(&a), vec![("pg-2".to_string(), vec!["pg-1,pg-3".to_string()])]);
    run.ok("pg-2");
    answer(&mut run, "pg-3", "pg-1");
    run.ok("pg-3");
    // The leader hands over to the first upgraded member, on its port.
    let a = answer(&mut run, "pg-1", "pg-1");
    assert_eq!(
        cluster_step_args(&a),
        vec![("pg-1".to_string(), vec!["pg-2:5433".to_string(), "pg-2,pg-3".to_string()])]
    );
    run.ok("pg-1");
    answer(&mut run, "pg-1", "pg-2");
    run.ok("pg-1");
    assert_eq!(run.engine.state(), RolloutState::Succeeded);
    run.assert_final_invariants();
}

/// Nobody to hand over to: the step fails with the reason, not a
/// half-rendered command.
#[test]
fn a_target_with_no_upgraded_member_fails_the_host_and_says_why() {
    let mut spec = cluster_spec(&[2], 1, 1, false, false);
    for h in &mut spec.hosts {
        if let StepKind::Exec(e) = &mut h.steps[0].kind {
            e.args = vec!["--rejoin".into(), "{{cluster.target}}".into()];
        }
    }
    let mut run = Run::new(spec);
    run.start();
    let a = answer(&mut run, "mc1-0", "mc1-1");
    assert!(cluster_step_args(&a).is_empty(), "nothing half-rendered is sent: {a:?}");
    let reason = failed_reason(&run, "mc1-0");
    assert!(reason.contains("no other member of cluster mc1 is upgraded"), "{reason}");
    run.assert_invariants();
}

//! Random outcomes and orderings over a 3-group DAG, for many seeds, with
//! random canaries, `on_failure` modes, rollout-wide budgets, approvals and
//! rollbacks: every log must pass the invariants, end in a terminal state,
//! and replay exactly.

mod engine_support;

use std::collections::BTreeMap;

use convoy_common::engine::{Action, Engine, Event, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::invariants;
use convoy_common::model::{OnFailure, RolloutSpec, StepOutcome, StepStatus, UnixMillis};
use engine_support::*;

/// SplitMix64: tiny, deterministic, good enough to shuffle test schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const MODES: [OnFailure; 4] =
    [OnFailure::Halt, OnFailure::RollbackHost, OnFailure::RollbackGroup, OnFailure::RollbackAll];

/// A group with, at random, a canary phase (manual or timed) and a mode.
fn vary(rng: &mut Rng, group: G) -> G {
    let group = group.on_failure(MODES[rng.below(4)]);
    match rng.below(4) {
        0 => group.canary(1 + rng.below(2)),
        1 => group.canary_after(1 + rng.below(2), rng.below(3) as u64 * 40),
        _ => group,
    }
}

/// db, then two branches (app, web) in parallel; `varied` adds canaries,
/// failure modes and a rollout-wide budget.
fn dag(rng: &mut Rng, varied: bool) -> RolloutSpec {
    let groups = [
        g("db", 2 + rng.below(3), 1).budget(rng.below(2)).soak(rng.below(2) as u64 * 30),
        g("app", 3 + rng.below(4), 1 + rng.below(3)).after(&[0]).budget(rng.below(3)),
        g("web", 2 + rng.below(5), 1 + rng.below(2)).after(&[0]).budget(rng.below(2)).soak(rng.below(2) as u64 * 20),
    ];
    let groups = if varied { groups.map(|grp| vary(rng, grp)) } else { groups };
    let mut s = spec(&groups, 1 + rng.below(3));
    if varied && rng.below(3) == 0 {
        s.max_failures = Some(rng.below(4));
        s.on_failure = MODES[rng.below(4)];
    }
    s
}

/// What a fake runtime knows: results not yet delivered, timers armed.
#[derive(Default)]
struct World {
    outstanding: Vec<String>,
    delivered: Vec<String>,
    timers: BTreeMap<(UnixMillis, u64), Timer>,
    seq: u64,
}

impl World {
    fn absorb(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Dispatch { execution_id, .. } | Action::DispatchRollback { execution_id, .. } => {
                    if !self.outstanding.contains(execution_id) {
                        self.outstanding.push(execution_id.clone());
                    }
                }
                Action::Schedule { at, timer } => {
                    self.seq += 1;
                    self.timers.insert((*at, self.seq), timer.clone());
                }
                Action::HostDone { .. } | Action::Finished { .. } => {}
            }
        }
    }
}

fn random_outcome(rng: &mut Rng) -> StepOutcome {
    match rng.below(100) {
        0..80 => ok_installed(),
        80..90 => StepOutcome::failed("exit 1"),
        90..95 => outcome(StepStatus::Unsupported, "unsupported"),
        _ => outcome(StepStatus::TimedOut, "killed"),
    }
}

fn drive(seed: u64) -> (Run, usize) {
    let mut rng = Rng(seed);
    // Odd seeds get canaries, failure modes, rollout budgets and rollbacks.
    let varied = seed % 2 == 1;
    let spec = dag(&mut rng, varied);
    let host_names: Vec<String> = spec.hosts.iter().map(|h| h.host.clone()).collect();
    let mut run = Run::new(spec);
    let mut world = World::default();
    world.absorb(&run.start());
    let mut steps = 0;
    while !run.engine.is_finished() {
        steps += 1;
        assert!(steps < 20_000, "seed {seed}: no end in sight");
        let roll = rng.below(1000);
        let event = if roll < 550 && !world.outstanding.is_empty() {
            let id = world.outstanding.swap_remove(rng.below(world.outstanding.len()));
            world.delivered.push(id.clone());
            run.advance(rng.below(40_000) as u64);
            Event::StepFinished { execution_id: id, outcome: random_outcome(&mut rng) }
        } else if roll < 600 && !world.delivered.is_empty() {
            let id = world.delivered[rng.below(world.delivered.len())].clone();
            Event::StepFinished { execution_id: id, outcome: random_outcome(&mut rng) }
        } else if roll < 800 && !world.timers.is_empty() {
            // Timers fire in time order, never early.
            let ((at, _), timer) = world.timers.pop_first().unwrap();
            run.now = run.now.max(at.0);
            Event::TimerFired { timer }
        } else if roll < 870 {
            Event::AgentLost { host: host_names[rng.below(host_names.len())].clone() }
        } else if roll < 950 {
            Event::AgentConnected { host: host_names[rng.below(host_names.len())].clone() }
        } else if roll < 965 {
            Event::Operator { command: OperatorCommand::Pause, by: "op".into() }
        } else if roll < 990 {
            Event::Operator { command: OperatorCommand::Resume, by: "op".into() }
        } else if roll < 993 {
            Event::Operator { command: OperatorCommand::Abort, by: "op".into() }
        } else if roll < 995 && varied && rng.below(2) == 0 {
            Event::Operator { command: OperatorCommand::Rollback, by: "op".into() }
        } else if world.outstanding.is_empty() && world.timers.is_empty() {
            // Nothing can happen by itself: only an operator can move it on.
            let command = if rng.below(2) == 0 { OperatorCommand::Resume } else { OperatorCommand::Approve };
            Event::Operator { command, by: "op".into() }
        } else {
            Event::Operator { command: OperatorCommand::Approve, by: "op".into() }
        };
        let actions = run.ev(event);
        world.absorb(&actions);
        if steps % 50 == 0 {
            run.assert_invariants();
        }
    }
    (run, steps)
}

#[test]
fn random_runs_keep_every_invariant() {
    let mut ends: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut promotions: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 0..400 {
        let (run, _) = drive(seed);
        for a in run.log.iter().flat_map(|e| &e.actions) {
            if let Action::HostDone { state, .. } = a {
                *states.entry(state.as_str()).or_default() += 1;
            }
        }
        for e in &run.log {
            let starts = !dispatched(&e.actions).is_empty();
            let how = match &e.event {
                Event::Operator { command: OperatorCommand::Approve, .. } => Some("approved"),
                Event::TimerFired { timer: Timer::PromoteCanaries { .. } } => Some("timer"),
                Event::Operator { .. }
                | Event::TimerFired { .. }
                | Event::Started
                | Event::AgentConnected { .. }
                | Event::AgentLost { .. }
                | Event::StepFinished { .. } => None,
            };
            if let (Some(how), true) = (how, starts) {
                *promotions.entry(how).or_default() += 1;
            }
        }
        for a in run.log.iter().flat_map(|e| &e.actions) {
            if let Action::HostDone {
                state: HostState::Failed { reason, .. } | HostState::RollbackFailed { reason, .. },
                ..
            } = a
            {
                *reasons.entry(reason.clone()).or_default() += 1;
            }
        }
        if let Err(v) = invariants::check_final(run.engine.spec(), &run.log) {
            panic!("seed {seed}: {}", v.join("\n"));
        }
        let view = run.engine.view();
        assert!(view.hosts.iter().all(|h| h.state.is_terminal()), "seed {seed}: a host did not end");
        let finished: usize =
            run.log.iter().flat_map(|e| &e.actions).filter(|a| matches!(a, Action::Finished { .. })).count();
        assert_eq!(finished, 1, "seed {seed}");
        if run.engine.state() == RolloutState::Succeeded {
            assert!(view.hosts.iter().all(|h| h.version.is_some()));
        }
        *ends.entry(run.engine.state().as_str()).or_default() += 1;

        // Replaying the stored events reproduces every batch of actions.
        let mut copy = Engine::new("r1", run.engine.spec().clone());
        for (n, entry) in run.log.iter().enumerate() {
            assert_eq!(copy.handle(entry.now, entry.event.clone()), entry.actions, "seed {seed}, entry {n}");
        }
        assert_eq!(copy.view(), view, "seed {seed}");
    }
    // The schedule really explores every ending and every host outcome.
    for end in ["succeeded", "failed", "aborted", "rolled_back"] {
        assert!(ends.get(end).copied().unwrap_or(0) > 0, "no seed ended {end}: {ends:?}");
    }
    for how in ["approved", "timer"] {
        assert!(promotions.get(how).copied().unwrap_or(0) > 0, "no canaries were promoted by {how}: {promotions:?}");
    }
    for state in ["succeeded", "failed", "skipped", "rolled_back", "rollback_failed"] {
        assert!(states.get(state).copied().unwrap_or(0) > 0, "no host ended {state}: {states:?}");
    }
    for reason in ["exit 1", "unsupported", "killed", "agent lost", "no result within timeout"] {
        assert!(reasons.contains_key(reason), "no host failed with {reason:?}: {reasons:?}");
    }
}

#[test]
fn large_fleet_is_handled_quickly() {
    // 10,000 hosts in one window of 50: every event must stay cheap.
    let s = spec(&[g("a", 10_000, 50).budget(10_000)], 2);
    let mut engine = Engine::new("big", s);
    let mut queue = std::collections::VecDeque::new();
    let mut now = 0;
    let absorb = |actions: Vec<Action>, queue: &mut std::collections::VecDeque<String>| {
        for a in actions {
            if let Action::Dispatch { execution_id, .. } = a {
                queue.push_back(execution_id);
            }
        }
    };
    absorb(engine.handle(UnixMillis(now), Event::Started), &mut queue);
    let started = std::time::Instant::now();
    let mut events = 0;
    while let Some(id) = queue.pop_front() {
        now += 1;
        events += 1;
        let outcome = if events % 97 == 0 { StepOutcome::failed("x") } else { ok_installed() };
        absorb(engine.handle(UnixMillis(now), Event::StepFinished { execution_id: id, outcome }), &mut queue);
    }
    assert_eq!(engine.state(), RolloutState::Succeeded);
    assert!(events > 19_000);
    // Quadratic work would take minutes here; linear work takes well under a second.
    assert!(started.elapsed().as_secs() < 20, "took {:?}", started.elapsed());
}

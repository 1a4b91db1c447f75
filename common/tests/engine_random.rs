//! Random outcomes and orderings over a 3-group DAG, for many seeds, with
//! random canaries, `on_failure` modes, rollout-wide budgets, approvals and
//! rollbacks: every log must pass the invariants, end in a terminal state,
//! and replay exactly.

mod engine_support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use convoy_common::engine::{
    Action, ClusterPurpose, Engine, Event, ExecutionId, HostState, OperatorCommand, RolloutState, Timer,
};
use convoy_common::invariants;
use convoy_common::model::{
    ClusterMembers, ClusterSpec, ExecCheckSpec, ExecSpec, LeaderAnswers, OnFailure, RoleMatch, RolloutSpec, StepKind,
    StepOutcome, StepSpec, StepStatus, Strategy, UnixMillis,
};
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
    // A third of the varied seeds ramp `web`'s window, and gate its
    // hosts with a pre-check (their first step).
    if varied && rng.below(3) == 0 {
        let stages = (0..1 + rng.below(3)).map(|_| 1 + rng.below(3)).collect();
        s.groups[2].strategy =
            Strategy::Rolling { window: convoy_common::model::Window { stages }, order: Default::default() };
        for &h in &s.groups[2].hosts.clone() {
            s.hosts[h].pre_checks = 1;
        }
    }
    // Half the seeds make `app` a `cluster` group of two clusters.
    if rng.below(2) == 0 {
        clusterize(&mut s, 1, rng.below(4) == 0, rng.below(2) == 0);
    }
    s
}

/// Make group `g` a `cluster` group: its hosts split into two clusters,
/// each host with a leader check (and a switchover step when asked), or
/// lock-step with `same_version`.
fn clusterize(s: &mut RolloutSpec, g: usize, same_version: bool, switchover: bool) {
    let hosts = s.groups[g].hosts.clone();
    let half = hosts.len().div_ceil(2);
    let clusters = vec![
        ClusterMembers { name: "c1".into(), hosts: hosts[..half].to_vec(), labels: Vec::new() },
        ClusterMembers { name: "c2".into(), hosts: hosts[half..].to_vec(), labels: Vec::new() },
    ];
    s.groups[g].canary = None;
    let max_parallel = s.groups[g].steady_window();
    s.groups[g].strategy =
        Strategy::Cluster { max_parallel, cluster: ClusterSpec { label: "cluster".into(), clusters, same_version } };
    if same_version {
        return;
    }
    for &h in &hosts {
        let host = s.hosts[h].host.clone();
        s.hosts[h].leader_check = Some(StepSpec {
            name: "leader-check".into(),
            timeout: STEP_TIMEOUT,
            kind: StepKind::ExecCheck(ExecCheckSpec {
                exec: ExecSpec { command: "is-leader".into(), args: vec![host], ..ExecSpec::default() },
                policy: Default::default(),
                output: Default::default(),
            }),
            rerun_safe: false,
        });
        // Exit 0 leads, exit 1 follows, anything else cannot tell.
        s.hosts[h].leader_answers = Some(LeaderAnswers {
            leader: RoleMatch::default(),
            follower: RoleMatch { exit_code: Some(1), ..RoleMatch::default() },
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        });
        if switchover {
            s.hosts[h].switchover = vec![step("hand-over")];
        }
    }
}

/// What a fake runtime knows: results not yet delivered, timers armed.
#[derive(Default)]
struct World {
    outstanding: Vec<ExecutionId>,
    delivered: Vec<ExecutionId>,
    timers: BTreeMap<(UnixMillis, u64), Timer>,
    seq: u64,
    /// Leader checks and switchover steps sent, by execution id.
    cluster_execs: HashMap<ExecutionId, (String, ClusterPurpose)>,
    /// The leader of each cluster, by cluster name.
    leaders: BTreeMap<String, String>,
    /// Each clustered host's cluster, and every cluster's members.
    cluster_of: HashMap<String, String>,
    members: BTreeMap<String, Vec<String>>,
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
                Action::DispatchCluster { host, execution_id, purpose, .. } => {
                    self.cluster_execs.insert(execution_id.clone(), (host.clone(), *purpose));
                    if !self.outstanding.contains(execution_id) {
                        self.outstanding.push(execution_id.clone());
                    }
                }
                Action::Schedule { at, timer } => {
                    self.seq += 1;
                    self.timers.insert((*at, self.seq), timer.clone());
                }
                Action::HostDone { .. } | Action::Finished { .. } | Action::StepSucceeded { .. } => {}
            }
        }
    }
}

impl World {
    /// A leader check passes on the cluster's leader (and now and then
    /// cannot run); a switchover usually hands the leadership to another member.
    fn cluster_outcome(&mut self, rng: &mut Rng, host: &str, purpose: ClusterPurpose) -> StepOutcome {
        let Some(cluster) = self.cluster_of.get(host).cloned() else { return random_outcome(rng) };
        match purpose {
            ClusterPurpose::LeaderCheck { .. } => {
                if rng.below(50) == 0 {
                    return outcome(StepStatus::TimedOut, "killed");
                }
                // The product does not answer now and then: unknown, asked again.
                if rng.below(8) == 0 {
                    return StepOutcome { exit_code: Some(2), ..StepOutcome::failed("connection refused") };
                }
                if self.leaders.get(&cluster).map(String::as_str) == Some(host) {
                    StepOutcome::ok()
                } else {
                    StepOutcome { exit_code: Some(1), ..StepOutcome::failed("not the leader") }
                }
            }
            ClusterPurpose::Switchover { .. } => {
                let outcome = random_outcome(rng);
                if outcome.status.is_success() && rng.below(2) == 0 {
                    let others: Vec<String> =
                        self.members[&cluster].iter().filter(|m| m.as_str() != host).cloned().collect();
                    if !others.is_empty() {
                        self.leaders.insert(cluster, others[rng.below(others.len())].clone());
                    }
                }
                outcome
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
    let mut world = World::default();
    for c in spec.groups.iter().filter_map(|g| g.cluster()).flat_map(|c| c.clusters.iter()) {
        let names: Vec<String> = c.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect();
        for n in &names {
            world.cluster_of.insert(n.clone(), c.name.clone());
        }
        if let Some(first) = names.get(rng.below(names.len().max(1))) {
            world.leaders.insert(c.name.clone(), first.clone());
        }
        world.members.insert(c.name.clone(), names);
    }
    let mut run = Run::new(spec);
    world.absorb(&run.start());
    let mut steps = 0;
    while !run.engine.is_finished() {
        steps += 1;
        assert!(steps < 20_000, "seed {seed}: no end in sight");
        let roll = rng.below(1000);
        // A failover, now and then, at any point of the rollout.
        if !world.members.is_empty() && rng.below(12) == 0 {
            let (name, members) = world.members.iter().nth(rng.below(world.members.len())).unwrap();
            let pick = members[rng.below(members.len())].clone();
            world.leaders.insert(name.clone(), pick);
        }
        let event = if roll < 550 && !world.outstanding.is_empty() {
            let id = world.outstanding.swap_remove(rng.below(world.outstanding.len()));
            world.delivered.push(id.clone());
            run.advance(rng.below(40_000) as u64);
            let outcome = match world.cluster_execs.get(&id).cloned() {
                Some((host, purpose)) => world.cluster_outcome(&mut rng, &host, purpose),
                // Cluster members fail less, so that failovers meet them mid-way.
                None if world.cluster_of.contains_key(id.entry()) && rng.below(4) != 0 => ok_installed(),
                None => random_outcome(&mut rng),
            };
            Event::StepFinished { execution_id: id, outcome }
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
        for h in &host_names {
            if let Some(state) = run.engine.host_state(h) {
                run.seen.insert(state.as_str());
            }
        }
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
    let mut seen_states: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 0..400 {
        let (run, _) = drive(seed);
        for h in &run.seen {
            *seen_states.entry(h).or_default() += 1;
        }
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
    // Clusters: leaders held back, switchovers that did not take, barriers.
    for prefix in ["leader check: ", "switchover did not take effect", "stopped with its cluster"] {
        assert!(reasons.keys().any(|r| r.starts_with(prefix)), "no host failed with {prefix:?}…: {reasons:?}");
    }
    for state in ["held", "leader_check", "leader_unknown", "switching_over", "at_barrier"] {
        assert!(seen_states.get(state).copied().unwrap_or(0) > 0, "no host was ever {state}: {seen_states:?}");
    }
}

#[test]
fn large_fleet_is_handled_quickly() {
    // 10,000 hosts in one window of 50: every event must stay cheap.
    let s = spec(&[g("a", 10_000, 50).budget(10_000)], 2);
    let mut engine = Engine::new("big", s);
    let mut queue = std::collections::VecDeque::new();
    let mut now = 0;
    let absorb = |actions: Vec<Action>, queue: &mut std::collections::VecDeque<ExecutionId>| {
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

/// Snapshots: an engine restored from a snapshot taken after any event of a
/// random log (through its stored JSON form) and fed the rest of the log
/// returns the same actions, re-arms the same work on resume, and ends in
/// the same state as the engine that handled the whole log.
#[test]
fn an_engine_restored_from_a_snapshot_at_any_point_carries_on_like_a_full_replay() {
    use convoy_common::engine::EngineSnapshot;
    let mut points = 0;
    for seed in 0..160 {
        let (run, _) = drive(seed);
        let spec = run.engine.spec().clone();
        let log = &run.log;
        let last_at = log.last().map_or(UnixMillis(0), |e| e.now);
        let full_final = run.engine.snapshot(log.len() as u64, last_at);
        let mut replayed = Engine::new("r1", spec.clone());
        for k in 0..=log.len() {
            if k > 0 {
                let e = &log[k - 1];
                replayed.handle(e.now, e.event.clone());
            }
            let at = if k == 0 { UnixMillis(0) } else { log[k - 1].now };
            let stored = replayed.snapshot(k as u64, at).to_json();
            let snap = EngineSnapshot::from_json(&stored).unwrap();
            assert_eq!((snap.seq, snap.at), (k as u64, at));
            let mut restored = Engine::restore("r1", spec.clone(), snap).unwrap();
            assert_eq!(restored.resume_actions(at), replayed.resume_actions(at), "seed {seed}, snapshot at {k}");
            for h in &spec.hosts {
                // The execution ids issued are rebuilt from the attempt counters.
                assert_eq!(restored.executions_of(&h.host), replayed.executions_of(&h.host), "seed {seed}, at {k}");
            }
            for (n, entry) in log.iter().enumerate().skip(k) {
                let actions = restored.handle(entry.now, entry.event.clone());
                assert_eq!(actions, entry.actions, "seed {seed}, snapshot at {k}, entry {n}");
            }
            assert_eq!(restored.view(), run.engine.view(), "seed {seed}, snapshot at {k}");
            assert_eq!(restored.snapshot(log.len() as u64, last_at), full_final, "seed {seed}, snapshot at {k}");
            points += 1;
        }
    }
    assert!(points > 5_000, "{points} snapshot points");
}

/// Watchers: a full view plus every [`RolloutChange`] since, applied in
/// order, is the full view, after any batch of any random log. This is what
/// proves every path that changes a host's view marks the host (the change
/// carries only the hosts the engine says it touched).
#[test]
fn a_view_kept_up_to_date_by_changes_is_the_full_view() {
    use convoy_common::view::ChangeTracker;
    let mut batches = 0;
    for seed in 0..400 {
        let (run, _) = drive(seed);
        let mut rng = Rng(seed ^ 0x5eed);
        let mut engine = Engine::new("r1", run.engine.spec().clone());
        let (mut tracker, mut view) = ChangeTracker::start(&mut engine, UnixMillis(0));
        let mut log = run.log.iter().peekable();
        while log.peek().is_some() {
            // Batches of 1 to 4 events, as the runtime commits them.
            let mut now = UnixMillis(0);
            for e in log.by_ref().take(1 + rng.below(4)) {
                engine.handle(e.now, e.event.clone());
                now = e.now;
            }
            let change = tracker.change(&mut engine, now);
            assert!(change.hosts.windows(2).all(|w| w[0].0 < w[1].0), "seed {seed}: hosts ascending, once each");
            change.apply(&mut view);
            assert_eq!(view, engine.view_at(now), "seed {seed}, batch {batches}");
            // Applying it again changes nothing (a resync may overlap).
            change.apply(&mut view);
            assert_eq!(view, engine.view_at(now), "seed {seed}, batch {batches}, applied twice");
            batches += 1;
        }
        let quiet = tracker.change(&mut engine, UnixMillis(u64::MAX / 2));
        assert!(quiet.hosts.is_empty() && quiet.groups.is_empty(), "seed {seed}: nothing happened, nothing changed");
    }
    assert!(batches > 3_000, "{batches} batches");
}

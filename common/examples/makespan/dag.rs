//! Random rollouts for the makespan benchmark: a DAG of groups with random
//! sizes, windows (fixed, ramped or parallel), soaks, steps per host and step
//! durations, all drawn from one seed.

use std::collections::HashMap;
use std::time::Duration;

use convoy_common::host_order::HostOrder;
use convoy_common::model::{
    ExecSpec, GroupSpec, HostPlan, OnFailure, RolloutSpec, StepKind, StepSpec, Strategy, Window,
};

/// SplitMix64: tiny and deterministic; a seed always gives the same rollout.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5851_F42D_4C95_7F2D)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

/// Steps time out long after any simulated duration: deadlines never fire
/// before a result.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A generated rollout and how long each execution takes.
pub struct Case {
    pub spec: RolloutSpec,
    /// Milliseconds each `(host, step index)` runs for.
    pub durations: HashMap<(String, usize), u64>,
}

impl Case {
    /// Each step's duration as a past run measured it: the true one off by
    /// up to `spread_pct` percent either way (drawn from its own seed, so the
    /// rollout is the same whatever the spread).
    pub fn history(&self, seed: u64, spread_pct: u64) -> HashMap<(String, usize), u64> {
        let mut rng = Rng::new(seed ^ 0x0005_EED0_F01D);
        let mut keys: Vec<&(String, usize)> = self.durations.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let off = rng.range(0, 2 * spread_pct) as i64 - spread_pct as i64;
                let ms = self.durations[k] as i64 * (100 + off) / 100;
                (k.clone(), ms.max(0) as u64)
            })
            .collect()
    }

    /// This rollout with every rolling group balanced
    /// ([`convoy_common::host_order::balance`]) from `history`.
    pub fn balanced(&self, history: &HashMap<(String, usize), u64>) -> Case {
        let mut spec = self.spec.clone();
        for g in &mut spec.groups {
            if let Strategy::Rolling { order, .. } = &mut g.strategy {
                *order = HostOrder::Balanced;
            }
            let hosts = &self.spec.hosts;
            convoy_common::host_order::balance(g, |h| {
                let plan = &hosts[h];
                let ms: u64 = (0..plan.steps.len()).map(|s| history[&(plan.host.clone(), s)]).sum();
                Duration::from_millis(ms)
            });
        }
        Case { spec, durations: self.durations.clone() }
    }

    /// How long host entry `h` holds a slot: its steps, then its group's soak.
    pub fn occupancy(&self, h: usize) -> u64 {
        let plan = &self.spec.hosts[h];
        if plan.steps.is_empty() {
            return 0;
        }
        let steps: u64 = (0..plan.steps.len()).map(|s| self.durations[&(plan.host.clone(), s)]).sum();
        let soak = self.spec.groups[plan.group].soak.as_millis() as u64;
        steps + soak
    }
}

fn step(name: String) -> StepSpec {
    StepSpec {
        name,
        timeout: STEP_TIMEOUT,
        kind: StepKind::Exec(ExecSpec { command: "true".to_string(), ..ExecSpec::default() }),
        rerun_safe: false,
    }
}

/// Host counts spread over 1..=300, small groups as likely as big ones
/// (roughly log-uniform): databases of 2, API tiers of 10, pollers by the hundred.
fn group_size(rng: &mut Rng) -> usize {
    match rng.range(0, 3) {
        0 => rng.range(1, 4) as usize,
        1 => rng.range(5, 20) as usize,
        2 => rng.range(21, 80) as usize,
        _ => rng.range(81, 300) as usize,
    }
}

/// A group's strategy: a fixed window (an absolute size or 10–25 %), a ramp
/// of one to three stages before it, or everything at once.
fn strategy(rng: &mut Rng, size: usize) -> Strategy {
    let fixed = |rng: &mut Rng| -> usize {
        if rng.chance(1, 2) { rng.range(1, 20) as usize } else { (size * rng.range(10, 25) as usize / 100).max(1) }
    };
    match rng.range(0, 9) {
        0 => Strategy::Parallel,
        1 | 2 => {
            let mut stages: Vec<usize> = (0..rng.range(1, 3)).map(|_| rng.range(1, 5) as usize).collect();
            stages.push(fixed(rng));
            Strategy::Rolling { window: Window { stages }, order: HostOrder::Listed }
        }
        _ => Strategy::rolling(fixed(rng)),
    }
}

/// The rollout of seed `seed`: 2–8 groups, each after up to two earlier ones,
/// 1–3 steps per host of 5–60 s each, a soak of 0 or 10–30 s per group.
pub fn generate(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let n_groups = rng.range(2, 8) as usize;
    let mut hosts = Vec::new();
    let mut groups = Vec::new();
    let mut durations = HashMap::new();
    for gi in 0..n_groups {
        let size = group_size(&mut rng);
        let mut after = Vec::new();
        if gi > 0 {
            for _ in 0..rng.range(0, 2) {
                let d = rng.range(0, gi as u64 - 1) as usize;
                if !after.contains(&d) {
                    after.push(d);
                }
            }
        }
        let steps = rng.range(1, 3) as usize;
        let mut members = Vec::new();
        for k in 0..size {
            let host = format!("g{gi}-h{k}");
            for s in 0..steps {
                durations.insert((host.clone(), s), rng.range(5_000, 60_000));
            }
            members.push(hosts.len());
            hosts.push(HostPlan {
                host,
                group: gi,
                steps: (0..steps).map(|s| step(format!("step{s}"))).collect(),
                ..HostPlan::default()
            });
        }
        let soak = if rng.chance(1, 3) { Duration::from_secs(rng.range(10, 30)) } else { Duration::ZERO };
        groups.push(GroupSpec {
            name: format!("g{gi}"),
            after,
            strategy: strategy(&mut rng, size),
            max_failures: 0,
            soak,
            hosts: members,
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        });
    }
    let spec = RolloutSpec {
        plan_name: format!("makespan-{seed}"),
        target_version: "2.0".to_string(),
        component: None,
        groups,
        hosts,
        host_lost_timeout: Duration::from_secs(120),
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: None,
        windows: None,
    };
    Case { spec, durations }
}

//! Estimated durations, for `convoy plan`.
//!
//! A step's estimate comes from, in this order:
//! 1. its declared `estimate:` (a plan step or check, or a catalog step);
//! 2. the median of its recent measured durations, when the coordinator has
//!    seen it succeed before: the coordinator keeps the last [`HISTORY`]
//!    durations of every (plan name, group, step name) and `convoy plan`
//!    receives them as [`Measured`];
//! 3. a default for its kind ([`crate::model::StepKind::default_estimate`]), never above the step's
//!    timeout.
//!
//! Each estimate says where it comes from ([`Source`]), and `convoy plan`
//! prints it (`~2m (declared)`, `~14s (measured, 12 runs)`, `~10s (default)`).
//!
//! A host entry's estimate is the sum of its steps'. A group's follows its
//! strategy ([`group_estimate`]): hosts go through a sliding window of
//! `max_parallel`, each holding its slot for its steps plus the soak, in
//! the group's order; canaries go first and the group waits for their
//! promotion (`after: 5m` counts, a manual approval counts as nothing and is
//! reported); in a `cluster` group each cluster runs its followers through
//! the window and then its leader (the last member, whose time includes its
//! switchover; every member's includes a leader check before each step:
//! [`cluster_overhead`]), or, with `same_version`, every member
//! at once, and the group takes as long as its slowest cluster. The rollout
//! follows the DAG ([`rollout_estimate`]): a group starts when the last group
//! it waits for ends, so groups on parallel branches overlap (the longer
//! branch counts) and groups in sequence add up.
//!
//! Pure: no clock, no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host_order::HostOrder;
use crate::model::{GroupSpec, Promote, RolloutSpec, StepSpec, Strategy};
use crate::plan::summary::{
    EstimatedStep, GroupEstimateSummary, HopSummary, PathSummary, RolloutEstimateSummary, SourceCounts,
};
use crate::plan::{Expansion, HostDetail, PlanSummary};

/// How many recent durations of a step the coordinator keeps (the median is
/// taken over them).
pub const HISTORY: usize = 20;

/// Where an estimate comes from. In a summary's JSON, `source` names it and
/// a measured one adds its `runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The step's `estimate:`.
    Declared,
    /// The median of the step's last `runs` successful runs.
    Measured { runs: u32 },
    /// The default for the step's kind.
    Default,
}

impl Source {
    /// `declared`, `measured` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Declared => "declared",
            Source::Measured { .. } => "measured",
            Source::Default => "default",
        }
    }

    /// How `convoy plan` says it: `declared`, `measured, 14 runs`, `default`.
    pub fn describe(self) -> String {
        match self {
            Source::Measured { runs: 1 } => "measured, 1 run".to_string(),
            Source::Measured { runs } => format!("measured, {runs} runs"),
            other => other.as_str().to_string(),
        }
    }
}

/// One step's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepEstimate {
    pub duration: Duration,
    pub source: Source,
}

/// What the coordinator measured for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredStep {
    /// The median of the recent runs ([`median`]).
    pub median: Duration,
    /// How many runs the median is taken over (at most [`HISTORY`]).
    pub runs: u32,
}

/// Measured times of one plan's steps, by (group name, step name).
pub type Measured = BTreeMap<(String, String), MeasuredStep>;

/// Measured times of one plan's steps on each host that ran them, by
/// (host, group name, step name).
pub type HostMeasured = BTreeMap<(String, String, String), MeasuredStep>;

/// Reorder the hosts of every `order: balanced` group
/// ([`crate::host_order::balance`]) from each host entry's estimate: for
/// each of its steps, how long the step took on that host lately (the
/// median of its history there), else the step's estimate
/// ([`host_step_estimates`]: declared, measured on the plan's other hosts,
/// or its kind's default). Groups in the listed order are left alone, and
/// `on_hosts` (a read of every host's history) is asked for only when some
/// group is balanced.
pub fn balance_hosts(x: &mut Expansion, measured: &Measured, on_hosts: impl FnOnce() -> HostMeasured) {
    let balanced = |g: &GroupSpec| matches!(g.strategy, Strategy::Rolling { order: HostOrder::Balanced, .. });
    if !x.spec.groups.iter().any(balanced) {
        return;
    }
    let on_hosts = on_hosts();
    let estimates = host_step_estimates(&x.spec, &x.hosts, measured);
    let lengths: Vec<Duration> = x
        .spec
        .hosts
        .iter()
        .zip(&estimates)
        .map(|(h, est)| {
            let group = x.spec.groups.get(h.group).map(|g| g.name.clone()).unwrap_or_default();
            sum(h.steps.iter().zip(est).map(|(step, e)| {
                let key = (h.host.clone(), group.clone(), step.name.clone());
                on_hosts.get(&key).map_or(e.duration, |m| m.median)
            }))
        })
        .collect();
    for g in &mut x.spec.groups {
        crate::host_order::balance(g, |entry| lengths.get(entry).copied().unwrap_or_default());
    }
}

/// The median of `samples` (the mean of the two middle values when there is
/// an even number); `None` when there are none.
pub fn median(samples: &[u64]) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let mid = s.len() / 2;
    Some(if s.len() % 2 == 1 { s[mid] } else { s[mid - 1] / 2 + s[mid] / 2 + (s[mid - 1] % 2 + s[mid] % 2) / 2 })
}

/// A step's estimate: declared, else measured, else the kind's default
/// capped by the step's timeout.
pub fn step_estimate(step: &StepSpec, declared: Option<Duration>, measured: Option<&MeasuredStep>) -> StepEstimate {
    match (declared, measured) {
        (Some(d), _) => StepEstimate { duration: d, source: Source::Declared },
        (None, Some(m)) => StepEstimate { duration: m.median, source: Source::Measured { runs: m.runs } },
        (None, None) => {
            StepEstimate { duration: step.kind.default_estimate().min(step.timeout), source: Source::Default }
        }
    }
}

/// Every host entry's step estimates (`details` as [`Expansion::hosts`]).
pub fn host_step_estimates(spec: &RolloutSpec, details: &[HostDetail], measured: &Measured) -> Vec<Vec<StepEstimate>> {
    spec.hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let group = spec.groups.get(h.group).map(|g| g.name.as_str()).unwrap_or_default();
            h.steps
                .iter()
                .enumerate()
                .map(|(k, step)| {
                    let declared = details.get(i).and_then(|d| d.declared.get(k).copied().flatten());
                    let m = measured.get(&(group.to_string(), step.name.clone()));
                    step_estimate(step, declared, m)
                })
                .collect()
        })
        .collect()
}

/// The estimate of one group, given every host entry's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupEstimate {
    /// When the group starts, from the start of the rollout.
    pub start: Duration,
    /// How long it runs.
    pub duration: Duration,
    /// It waits for `convoy approve` after its canaries (not counted).
    pub manual_approval: bool,
}

impl GroupEstimate {
    pub fn finish(&self) -> Duration {
        self.start.saturating_add(self.duration)
    }
}

/// The estimate of a whole rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEstimate {
    /// One per [`RolloutSpec::groups`].
    pub groups: Vec<GroupEstimate>,
    /// When the last group ends.
    pub total: Duration,
}

/// How long `durations` take through a sliding window of `width` slots, each
/// host holding its slot for its duration plus `soak` (a host with nothing
/// to do, `Duration::ZERO`, takes no slot time at all).
fn window(durations: &[Duration], width: usize, soak: Duration) -> Duration {
    // Never more slots than hosts: `width` comes from the plan.
    let width = width.clamp(1, durations.len().max(1));
    let mut slots: BinaryHeap<Reverse<Duration>> = (0..width).map(|_| Reverse(Duration::ZERO)).collect();
    let mut end = Duration::ZERO;
    for &d in durations {
        let Reverse(free) = slots.pop().expect("at least one slot");
        let busy = if d.is_zero() { Duration::ZERO } else { d.saturating_add(soak) };
        let done = free.saturating_add(busy);
        end = end.max(done);
        slots.push(Reverse(done));
    }
    end
}

/// How long group `g` of `spec` takes (see the module docs), and whether it
/// waits for a manual approval. `host_durations` has one entry per
/// [`RolloutSpec::hosts`] entry.
pub fn group_estimate(spec: &RolloutSpec, g: usize, host_durations: &[Duration]) -> (Duration, bool) {
    let Some(group) = spec.groups.get(g) else { return (Duration::ZERO, false) };
    let of = |hosts: &[usize]| -> Vec<Duration> {
        hosts.iter().map(|&h| host_durations.get(h).copied().unwrap_or_default()).collect()
    };
    let soak = group.soak;
    if let Some(cluster) = group.cluster() {
        let max_parallel = group.steady_window();
        let longest = cluster
            .clusters
            .iter()
            .map(|c| {
                let d = of(&c.hosts);
                if cluster.same_version {
                    window(&d, d.len(), soak)
                } else {
                    let (leader, followers) = d.split_last().map(|(l, f)| (*l, f)).unwrap_or_default();
                    window(followers, max_parallel, soak).saturating_add(window(&[leader], 1, soak))
                }
            })
            .max()
            .unwrap_or_default();
        return (longest, false);
    }
    let all = of(&group.hosts);
    match group.canary {
        Some(c) if c.hosts > 0 && c.hosts < all.len() => {
            let (canaries, rest) = all.split_at(c.hosts);
            let (wait, manual) = match c.promote {
                Promote::After(d) => (d, false),
                Promote::Manual => (Duration::ZERO, true),
            };
            (ramped(canaries, group, 0).saturating_add(wait).saturating_add(ramped(rest, group, c.hosts)), manual)
        }
        _ => (ramped(&all, group, 0), false),
    }
}

/// How long hosts `d` take through `group`'s window, the first of them
/// being at `offset` in the group's order: each ramp stage is a batch that
/// waits for the one before, then the steady window slides.
fn ramped(d: &[Duration], group: &GroupSpec, offset: usize) -> Duration {
    let mut total = Duration::ZERO;
    let mut at = 0;
    while at < d.len() {
        let w = group.window_at(offset + at);
        // From the first host of the last stage on, the window slides.
        let end = if is_ramp_stage(group, offset + at) { (at + w.size).min(d.len()) } else { d.len() };
        total = total.saturating_add(window(&d[at..end], w.size, group.soak));
        at = end;
    }
    total
}

/// The host at `position` is in a ramp stage (before the steady window).
fn is_ramp_stage(group: &GroupSpec, position: usize) -> bool {
    match &group.strategy {
        crate::model::Strategy::Rolling { window, .. } => {
            let ramp: usize = window.stages.iter().rev().skip(1).map(|s| (*s).max(1)).sum();
            position < ramp
        }
        crate::model::Strategy::Parallel | crate::model::Strategy::Cluster { .. } => false,
    }
}

/// The rollout's estimate: every group after the last of the groups it
/// waits for (see the module docs).
pub fn rollout_estimate(spec: &RolloutSpec, host_durations: &[Duration]) -> RolloutEstimate {
    let n = spec.groups.len();
    // `groups` are in a topological order, but do not rely on it: order them
    // here (iteratively, so a long chain of groups cannot overflow the stack).
    let after: Vec<Vec<usize>> =
        spec.groups.iter().map(|g| g.after.iter().copied().filter(|&a| a < n).collect()).collect();
    let order = crate::dag::topo_order(&after).unwrap_or_else(|_| (0..n).collect());
    let mut done: Vec<Option<GroupEstimate>> = vec![None; n];
    for g in order {
        // A dependency not yet estimated can only come from a cycle, which
        // plans refuse: it counts as starting at zero.
        let start = after[g].iter().filter_map(|&a| done[a].map(|e| e.finish())).max().unwrap_or_default();
        let (duration, manual_approval) = group_estimate(spec, g, host_durations);
        done[g] = Some(GroupEstimate { start, duration, manual_approval });
    }
    let groups: Vec<GroupEstimate> = done.into_iter().map(Option::unwrap_or_default).collect();
    let total = groups.iter().map(GroupEstimate::finish).max().unwrap_or_default();
    RolloutEstimate { groups, total }
}

/// A sum of durations that saturates instead of panicking.
fn sum(durations: impl Iterator<Item = Duration>) -> Duration {
    durations.fold(Duration::ZERO, Duration::saturating_add)
}

/// `1h 5m`, `6m 30s`, `45s`, `500ms`: a duration for people (seconds
/// dropped from an hour up).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() { "0s".to_string() } else { format!("{}ms", d.subsec_millis()) };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Milliseconds, saturating (a cast would wrap past 2^64 ms).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn estimated_step(step: &StepSpec, e: &StepEstimate) -> EstimatedStep {
    EstimatedStep {
        name: step.name.clone(),
        kind: step.kind.kind_name().to_string(),
        run_as: step.kind.run_as().map(ToString::to_string),
        estimate_ms: ms(e.duration),
        estimate: human_duration(e.duration),
        source: e.source,
    }
}

/// What the `cluster` strategy adds to each host entry's time: its leader
/// check before every step, and for the member the estimate takes as the
/// leader (its cluster's last) the switchover and the check after it. By
/// default times (a check that polls once), never measured.
pub fn cluster_overhead(spec: &RolloutSpec) -> Vec<Duration> {
    let mut extra = vec![Duration::ZERO; spec.hosts.len()];
    let leaders: std::collections::HashSet<usize> = spec
        .groups
        .iter()
        .filter_map(|g| g.cluster())
        .filter(|c| !c.same_version)
        .flat_map(|c| c.clusters.iter().filter_map(|m| m.hosts.last().copied()))
        .collect();
    for (i, h) in spec.hosts.iter().enumerate() {
        let Some(check) = &h.leader_check else { continue };
        let check = step_estimate(check, None, None).duration;
        extra[i] = check.saturating_mul(u32::try_from(h.steps.len()).unwrap_or(u32::MAX));
        if leaders.contains(&i) && !h.switchover.is_empty() {
            let switchover = sum(h.switchover.iter().map(|s| step_estimate(s, None, None).duration));
            extra[i] = extra[i].saturating_add(switchover).saturating_add(check);
        }
    }
    extra
}

/// Every host entry's estimated duration: its steps' estimates plus its
/// cluster overhead (one per [`RolloutSpec::hosts`] entry).
pub fn host_durations(x: &Expansion, measured: &Measured) -> Vec<Duration> {
    let estimates = host_step_estimates(&x.spec, &x.hosts, measured);
    let overhead = cluster_overhead(&x.spec);
    estimates.iter().zip(&overhead).map(|(e, extra)| sum(e.iter().map(|s| s.duration)).saturating_add(*extra)).collect()
}

/// Set each host entry's estimate in the spec's maintenance windows
/// ([`crate::schedule::HostWindow::estimate`]), which the engine fits into
/// the windows: expansion calls it with no measurements, the coordinator
/// again with its own before the rollout starts.
pub fn fill_window_estimates(x: &mut Expansion, measured: &Measured) {
    if x.spec.windows.is_none() {
        return;
    }
    let durations = host_durations(x, measured);
    if let Some(w) = x.spec.windows.as_mut() {
        for (h, d) in w.hosts.iter_mut().zip(durations) {
            h.estimate = d;
        }
    }
}

/// [`PlanSummary::of`] plus what `convoy plan` shows about paths and
/// durations: per group its `paths` (host entries grouped by identical
/// release path and steps, each step with its estimate) and its
/// `estimate`, and the whole rollout's `estimate`.
pub fn summary(x: &Expansion, measured: &Measured) -> PlanSummary {
    let spec = &x.spec;
    let mut summary = PlanSummary::of(spec);
    let estimates = host_step_estimates(spec, &x.hosts, measured);
    let overhead = cluster_overhead(spec);
    let host_durations: Vec<Duration> = estimates
        .iter()
        .zip(&overhead)
        .map(|(e, extra)| sum(e.iter().map(|s| s.duration)).saturating_add(*extra))
        .collect();
    let rollout = rollout_estimate(spec, &host_durations);
    // Each (group, step name) once, whatever its number of hosts.
    let mut sources: BTreeMap<(&str, &str), Source> = BTreeMap::new();
    for (h, e) in spec.hosts.iter().zip(&estimates) {
        let group = spec.groups.get(h.group).map(|g| g.name.as_str()).unwrap_or_default();
        for (step, e) in h.steps.iter().zip(e) {
            sources.insert((group, step.name.as_str()), e.source);
        }
    }
    let mut counts = SourceCounts::default();
    for source in sources.values() {
        match source {
            Source::Declared => counts.declared += 1,
            Source::Measured { .. } => counts.measured += 1,
            Source::Default => counts.default += 1,
        }
    }

    let no_detail = HostDetail::default();
    for ((g, e), out) in spec.groups.iter().zip(&rollout.groups).zip(&mut summary.groups) {
        // Host entries with the same path and steps share one entry.
        let mut paths: Vec<PathSummary> = Vec::new();
        for &h in &g.hosts {
            let plan = &spec.hosts[h];
            let detail = x.hosts.get(h).unwrap_or(&no_detail);
            let steps: Vec<EstimatedStep> =
                plan.steps.iter().zip(&estimates[h]).map(|(s, e)| estimated_step(s, e)).collect();
            let mut at = 0;
            let hops: Vec<HopSummary> = detail
                .path
                .iter()
                .flatten()
                .map(|hop| {
                    let end = (at + hop.steps).min(steps.len());
                    let v = HopSummary {
                        from: hop.from.clone(),
                        to: hop.to.clone(),
                        skipped: hop.skipped.clone(),
                        downgrade: hop.downgrade,
                        steps: steps[at..end].to_vec(),
                    };
                    at = end;
                    v
                })
                .collect();
            let versions: Option<Vec<String>> = detail
                .path
                .as_ref()
                .map(|p| p.first().map(|f| f.from.clone()).into_iter().chain(p.iter().map(|h| h.to.clone())).collect());
            let entry = PathSummary {
                hosts: Vec::new(),
                path: versions,
                hops,
                steps: steps[at..].to_vec(),
                estimate_ms: ms(host_durations[h]),
                estimate: human_duration(host_durations[h]),
            };
            let same = |p: &&mut PathSummary| {
                (&p.path, &p.hops, &p.steps, p.estimate_ms, &p.estimate)
                    == (&entry.path, &entry.hops, &entry.steps, entry.estimate_ms, &entry.estimate)
            };
            match paths.iter_mut().find(same) {
                Some(p) => p.hosts.push(plan.host.clone()),
                None => paths.push(PathSummary { hosts: vec![plan.host.clone()], ..entry }),
            }
        }
        out.paths = Some(paths);
        out.estimate = Some(GroupEstimateSummary {
            start_ms: ms(e.start),
            duration_ms: ms(e.duration),
            finish_ms: ms(e.finish()),
            duration: human_duration(e.duration),
            manual_approval: e.manual_approval,
        });
    }
    summary.estimate = Some(RolloutEstimateSummary {
        total_ms: ms(rollout.total),
        total: human_duration(rollout.total),
        manual_approvals: spec
            .groups
            .iter()
            .zip(&rollout.groups)
            .filter(|(_, e)| e.manual_approval)
            .map(|(g, _)| g.name.clone())
            .collect(),
        steps: counts,
    });
    summary
}

/// [`summary`] as JSON (what `convoy plan --output json` prints).
pub fn summary_json(x: &Expansion, measured: &Measured) -> serde_json::Value {
    summary(x, measured).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepKind;
    use crate::model::{CanarySpec, ClusterMembers, ClusterSpec, ExecSpec, FileSpec, HostPlan, OnFailure, Strategy};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn host(group: usize) -> HostPlan {
        HostPlan { host: format!("h{group}"), group, ..HostPlan::default() }
    }

    fn group(name: &str, after: &[usize], hosts: std::ops::Range<usize>, max_parallel: usize, soak: u64) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            after: after.to_vec(),
            strategy: Strategy::rolling(max_parallel),
            max_failures: 0,
            soak: S(soak),
            hosts: hosts.collect(),
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        }
    }

    fn spec(groups: Vec<GroupSpec>) -> RolloutSpec {
        let n = groups.iter().flat_map(|g| g.hosts.iter()).max().map_or(0, |m| m + 1);
        let mut hosts: Vec<HostPlan> = (0..n).map(|_| host(0)).collect();
        for (gi, g) in groups.iter().enumerate() {
            for &h in &g.hosts {
                hosts[h].group = gi;
                hosts[h].host = format!("{}-{h}", g.name);
            }
        }
        RolloutSpec {
            plan_name: "p".into(),
            target_version: "2".into(),
            component: None,
            groups,
            hosts,
            host_lost_timeout: S(60),
            max_failures: None,
            on_failure: OnFailure::Halt,
            require_backup: false,
            rollback_of: None,
            windows: None,
        }
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2)); // (2 + 3) / 2, rounded down
        assert_eq!(median(&[u64::MAX, u64::MAX]), Some(u64::MAX), "no overflow");
        assert_eq!(median(&[1000, 3000, 2000, 100_000]), Some(2500), "an outlier does not move it much");
    }

    #[test]
    fn declared_beats_measured_beats_default_capped_by_timeout() {
        let step =
            StepSpec { name: "x".into(), timeout: S(4), kind: StepKind::Exec(ExecSpec::default()), rerun_safe: false };
        let m = MeasuredStep { median: S(14), runs: 12 };
        assert_eq!(
            step_estimate(&step, Some(S(90)), Some(&m)),
            StepEstimate { duration: S(90), source: Source::Declared }
        );
        assert_eq!(
            step_estimate(&step, None, Some(&m)),
            StepEstimate { duration: S(14), source: Source::Measured { runs: 12 } }
        );
        // exec defaults to 10s, but this one is killed after 4s.
        assert_eq!(step_estimate(&step, None, None), StepEstimate { duration: S(4), source: Source::Default });
        let file = StepSpec {
            name: "f".into(),
            timeout: S(300),
            kind: StepKind::File(FileSpec { path: "/x".into(), content: String::new() }),
            rerun_safe: false,
        };
        assert_eq!(step_estimate(&file, None, None).duration, S(1));
        assert_eq!(Source::Measured { runs: 14 }.describe(), "measured, 14 runs");
        assert_eq!(Source::Declared.describe(), "declared");
    }

    #[test]
    fn window_rolls_hosts_with_soak_and_parallel_takes_the_longest() {
        let d = [S(10), S(10), S(10), S(10), S(10)];
        assert_eq!(window(&d, 1, S(0)), S(50));
        assert_eq!(window(&d, 1, S(5)), S(75), "every host soaks, the last one too");
        assert_eq!(window(&d, 2, S(0)), S(30), "waves of 2: 2 + 2 + 1");
        assert_eq!(window(&d, 10, S(0)), S(10));
        // A sliding window, not waves: the short hosts fill the free slot.
        assert_eq!(window(&[S(30), S(10), S(10), S(10)], 2, S(0)), S(30));
        assert_eq!(window(&[S(0), S(0)], 1, S(60)), S(0), "nothing to do, no soak");
        assert_eq!(window(&[], 3, S(5)), S(0));
    }

    #[test]
    fn parallel_branches_take_the_max_and_sequences_add() {
        // a -> (b | c) -> d: b is the longer branch.
        let s = spec(vec![
            group("a", &[], 0..2, 1, 0),  // 2 hosts one at a time
            group("b", &[0], 2..6, 2, 0), // 4 hosts, 2 at a time
            group("c", &[0], 6..7, 1, 0), // 1 host
            group("d", &[1, 2], 7..8, 1, 0),
        ]);
        let d = vec![S(10); 8];
        let e = rollout_estimate(&s, &d);
        assert_eq!(e.groups[0], GroupEstimate { start: S(0), duration: S(20), manual_approval: false });
        assert_eq!(e.groups[1].start, S(20));
        assert_eq!(e.groups[1].duration, S(20));
        assert_eq!(e.groups[2].finish(), S(30));
        assert_eq!(e.groups[3].start, S(40), "d waits for the longer branch");
        assert_eq!(e.total, S(50));
        // Independent groups overlap entirely.
        let s = spec(vec![group("x", &[], 0..1, 1, 0), group("y", &[], 1..2, 1, 0)]);
        assert_eq!(rollout_estimate(&s, &[S(5), S(7)]).total, S(7));
    }

    #[test]
    fn canaries_go_first_and_wait_for_promotion() {
        let mut s = spec(vec![group("web", &[], 0..5, 2, 0)]);
        let d = vec![S(10); 5];
        assert_eq!(group_estimate(&s, 0, &d), (S(30), false));
        s.groups[0].canary = Some(CanarySpec { hosts: 1, promote: Promote::After(S(60)) });
        // 1 canary (10s), 60s wait, then 4 hosts 2 at a time (20s).
        assert_eq!(group_estimate(&s, 0, &d), (S(90), false));
        s.groups[0].canary = Some(CanarySpec { hosts: 1, promote: Promote::Manual });
        assert_eq!(group_estimate(&s, 0, &d), (S(30), true));
        let e = rollout_estimate(&s, &d);
        assert!(e.groups[0].manual_approval);
    }

    #[test]
    fn clusters_run_in_parallel_followers_then_leader() {
        let mut s = spec(vec![group("db", &[], 0..5, 1, 0)]);
        let max_parallel = s.groups[0].steady_window();
        s.groups[0].strategy = Strategy::Cluster {
            max_parallel,
            cluster: ClusterSpec {
                label: "cluster".into(),
                clusters: vec![
                    ClusterMembers { name: "mc1".into(), hosts: vec![0, 1, 2], labels: Vec::new() },
                    ClusterMembers { name: "mc2".into(), hosts: vec![3, 4], labels: Vec::new() },
                ],
                same_version: false,
            },
        };
        let d = vec![S(10); 5];
        // mc1: 2 followers one at a time, then the leader: 30s; mc2: 20s.
        assert_eq!(group_estimate(&s, 0, &d), (S(30), false));
        if let Some(c) = s.groups[0].cluster_mut() {
            c.same_version = true;
        }
        assert_eq!(group_estimate(&s, 0, &d), (S(10), false), "all members together");
    }

    #[test]
    fn leader_checks_and_the_switchover_add_to_a_cluster_members_time() {
        let mut s = spec(vec![group("db", &[], 0..2, 1, 0)]);
        let max_parallel = s.groups[0].steady_window();
        s.groups[0].strategy = Strategy::Cluster {
            max_parallel,
            cluster: ClusterSpec {
                label: "cluster".into(),
                clusters: vec![ClusterMembers { name: "mc1".into(), hosts: vec![0, 1], labels: Vec::new() }],
                same_version: false,
            },
        };
        let exec = |name: &str| StepSpec {
            name: name.into(),
            timeout: S(600),
            kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            rerun_safe: false,
        };
        let check = StepSpec {
            name: "leader-check".into(),
            timeout: S(600),
            kind: StepKind::ExecCheck(crate::model::ExecCheckSpec {
                exec: ExecSpec { command: "is-leader".into(), ..ExecSpec::default() },
                policy: Default::default(),
                output: Default::default(),
            }),
            rerun_safe: false,
        };
        for h in &mut s.hosts {
            h.steps = vec![exec("stop"), exec("upgrade"), exec("start")];
            h.leader_check = Some(check.clone());
            h.switchover = vec![exec("hand-over")];
        }
        let lc = step_estimate(&check, None, None).duration;
        let sw = step_estimate(&exec("hand-over"), None, None).duration;
        // The follower: a check before each of its 3 steps; the leader also
        // switches over and is asked once more.
        assert_eq!(cluster_overhead(&s), vec![lc * 3, lc * 3 + sw + lc]);
        s.groups[0].cluster_mut().unwrap().same_version = true;
        for h in &mut s.hosts {
            h.leader_check = None;
            h.switchover.clear();
        }
        assert_eq!(cluster_overhead(&s), vec![Duration::ZERO; 2]);
    }

    #[test]
    fn a_summary_reads_back_from_its_json_and_names_each_source() {
        let mut s = spec(vec![group("web", &[], 0..2, 1, 0)]);
        s.groups[0].canary = Some(CanarySpec { hosts: 1, promote: Promote::Manual });
        let exec = |name: &str| StepSpec {
            name: name.into(),
            timeout: S(600),
            kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            rerun_safe: false,
        };
        for h in &mut s.hosts {
            h.steps = vec![exec("stop"), exec("upgrade"), exec("start")];
        }
        let details = vec![HostDetail { path: None, declared: vec![None, Some(S(90)), None] }; 2];
        let x = Expansion { spec: s, hosts: details };
        let measured: Measured =
            [(("web".to_string(), "start".to_string()), MeasuredStep { median: S(7), runs: 3 })].into();
        let summary = super::summary(&x, &measured);
        let json = summary.to_json();
        let back: PlanSummary = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, summary, "what the coordinator sends is what the CLI reads");
        let steps = &json["groups"][0]["paths"][0]["steps"];
        assert_eq!(steps[0]["source"], "default");
        assert_eq!(steps[1]["source"], "declared");
        assert_eq!(steps[2]["source"], "measured");
        assert_eq!(steps[2]["runs"], 3);
        assert!(steps[1].get("runs").is_none(), "runs only for a measured step");
        let e = summary.estimate.as_ref().unwrap();
        assert_eq!((e.steps.declared, e.steps.measured, e.steps.default), (1, 1, 1));
        assert_eq!(e.manual_approvals, ["web"]);
        // Without the estimates, neither they nor the paths are in the JSON.
        let bare = PlanSummary::of(&x.spec).to_json();
        assert!(bare.get("estimate").is_none() && bare["groups"][0].get("paths").is_none(), "{bare}");
        assert_eq!(serde_json::from_value::<PlanSummary>(bare).unwrap(), PlanSummary::of(&x.spec));
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(S(45)), "45s");
        assert_eq!(human_duration(S(120)), "2m");
        assert_eq!(human_duration(S(390)), "6m 30s");
        assert_eq!(human_duration(S(3600)), "1h");
        assert_eq!(human_duration(S(3600 + 5 * 60 + 9)), "1h 5m");
    }
}

//! What the engine's makespan is compared with.
//!
//! **Lower bound.** Every schedule that keeps the plan's rules — a group
//! starts only once the groups in its `after` list finished; at most
//! `window` hosts of a group in flight; a ramp stage starts once the stages
//! before it are done; a host runs its steps back to back and keeps its slot
//! through its group's soak — takes at least the longest path through the
//! group DAG where each group weighs the sum, over its stages, of
//!
//! ```text
//! max( longest host,                      (no host is split)
//!      stage work / window,               (at most `window` hosts at once)
//!      p-th + (p+1)-th longest hosts )    (when the stage has more than p = window
//!                                          hosts, two of its p+1 longest share a slot)
//! ```
//!
//! where a host's length is its steps' durations plus the soak. This is the
//! classic "critical path vs. total work / parallelism" bound taken group by
//! group, so it is never above the true optimum. It lets hosts run in any
//! order, while the engine starts them in the plan's order (canaries first,
//! the operator's order): the gap that order costs is measured separately.
//!
//! **In-order optimum.** The shortest makespan possible when hosts start in
//! the group's order: each host starts as soon as a slot is free (greedy list
//! scheduling in a fixed order gives every host its earliest possible start),
//! each stage once the previous one is done, each group once its
//! dependencies are. An engine that never waits needlessly matches it exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use convoy_common::model::{GroupSpec, Strategy};

use crate::dag::Case;

/// A group's hosts (positions in its order) split into stages, each with its window.
fn stages(group: &GroupSpec) -> Vec<(std::ops::Range<usize>, usize)> {
    let n = group.hosts.len();
    if let Strategy::Parallel = group.strategy {
        return vec![(0..n, n.max(1))];
    }
    let mut out: Vec<(std::ops::Range<usize>, usize)> = Vec::new();
    for pos in 0..n {
        let w = group.window_at(pos);
        match out.last_mut() {
            Some((range, _)) if !w.first_of_stage => range.end = pos + 1,
            Some(_) | None => out.push((pos..pos + 1, w.size)),
        }
    }
    out
}

/// The host lengths (ms) of group `g`, in its order.
fn lengths(case: &Case, g: usize) -> Vec<u64> {
    case.spec.groups[g].hosts.iter().map(|&h| case.occupancy(h)).collect()
}

/// The lower bound on one stage's duration, in ms.
fn stage_bound(d: &[u64], window: usize) -> f64 {
    let longest = d.iter().copied().max().unwrap_or(0) as f64;
    let work = d.iter().sum::<u64>() as f64 / window as f64;
    let mut pair = 0.0;
    if d.len() > window {
        let mut sorted = d.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        pair = (sorted[window - 1] + sorted[window]) as f64;
    }
    longest.max(work).max(pair)
}

/// How long the stage takes when its hosts start in order as soon as a slot is free.
fn stage_in_order(d: &[u64], window: usize) -> u64 {
    let mut running: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut end = 0;
    for &len in d {
        let start = if running.len() == window { running.pop().map_or(0, |Reverse(t)| t) } else { 0 };
        running.push(Reverse(start + len));
        end = end.max(start + len);
    }
    end
}

/// Longest path through the group DAG with each group weighing `weight(g)`
/// (groups come in a topological order).
fn longest_path(case: &Case, weight: impl Fn(usize) -> f64) -> f64 {
    let groups = &case.spec.groups;
    let mut finish = vec![0.0f64; groups.len()];
    for g in 0..groups.len() {
        let start = groups[g].after.iter().map(|&d| finish[d]).fold(0.0, f64::max);
        finish[g] = start + weight(g);
    }
    finish.into_iter().fold(0.0, f64::max)
}

/// The lower bound on the rollout's makespan, in ms.
pub fn lower_bound(case: &Case) -> f64 {
    longest_path(case, |g| {
        let d = lengths(case, g);
        stages(&case.spec.groups[g]).into_iter().map(|(r, w)| stage_bound(&d[r], w)).sum()
    })
}

/// The makespan when every host starts in its group's order at its earliest, in ms.
pub fn in_order(case: &Case) -> f64 {
    longest_path(case, |g| {
        let d = lengths(case, g);
        stages(&case.spec.groups[g]).into_iter().map(|(r, w)| stage_in_order(&d[r], w) as f64).sum()
    })
}

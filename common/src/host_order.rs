//! The order a rolling group starts its hosts in: as listed in the plan
//! (the default), or balanced from each host's estimated duration so the
//! window's slots finish together (`order: balanced`).
//!
//! A rolling window is list scheduling: each host starts, in the group's
//! order, as soon as a slot frees. In the listed order a long host that
//! happens to come last runs alone at the end, while the other slots sit
//! idle; the group then takes up to `work / window + longest host`. With
//! estimates the order can do better. [`balance`] splits each stage's hosts
//! over the window's slots — longest first onto the least loaded slot, then
//! moves and swaps between the most loaded slot and the others while that
//! shortens it — and lists the hosts in the order they start in that plan.
//! Started in that order by the engine's sliding window, every host starts
//! no later than in the plan (a host listed earlier never finishes later
//! than planned, so a slot is free for the next one by its planned start),
//! so the group takes at most the plan's longest slot: close to the lower
//! bound `max(longest host, work / window)` when the estimates are right.
//!
//! What stays put: a canary phase's hosts (the operator picked them), and
//! the split into ramp stages (`max_parallel: [1, 5, 20%]`): hosts move only
//! within their stage, so each stage keeps its size and its members. Only
//! `rolling` groups have an order; `parallel` starts everything at once and
//! `cluster` keeps followers before the leader.
//!
//! Pure: the estimates come in as durations (the coordinator's per-host
//! history, else the plan's estimates), no clock, no I/O.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{GroupSpec, Strategy};

/// How a rolling group orders its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOrder {
    /// In the plan's order (canaries first): the inventory's order, or the
    /// order the operator wrote.
    #[default]
    Listed,
    /// Each stage's hosts reordered from their estimated durations so the
    /// window's slots finish together ([`balance`]).
    Balanced,
}

impl HostOrder {
    /// The name plans use (`order:`).
    pub fn as_str(self) -> &'static str {
        match self {
            HostOrder::Listed => "listed",
            HostOrder::Balanced => "balanced",
        }
    }

    /// True for the default, which stored specs leave out.
    pub fn is_listed(&self) -> bool {
        *self == HostOrder::Listed
    }
}

impl fmt::Display for HostOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `order:` that is neither `listed` nor `balanced`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOrder(pub String);

impl fmt::Display for UnknownOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown order `{}`: use `listed` (the plan's order, the default) or `balanced` \
             (reordered from each host's estimated duration)",
            self.0
        )
    }
}

impl std::error::Error for UnknownOrder {}

impl FromStr for HostOrder {
    type Err = UnknownOrder;
    fn from_str(s: &str) -> Result<HostOrder, UnknownOrder> {
        match s {
            "listed" => Ok(HostOrder::Listed),
            "balanced" => Ok(HostOrder::Balanced),
            other => Err(UnknownOrder(other.to_string())),
        }
    }
}

/// Pairs of hosts [`improve`] weighs at most per stage (each change scans
/// the most loaded slot's hosts against every other host): tens of
/// milliseconds whatever the stage, 0.06–0.16 s for 10,000 hosts in a
/// release build, which rarely needs the whole budget.
const MAX_PAIRS: usize = 20_000_000;

/// Reorder `group.hosts` when it is a rolling group with `order: balanced`
/// (anything else is left as it is). `length(entry)` is the estimated time
/// host entry `entry` (an index into the rollout's hosts, as in
/// [`GroupSpec::hosts`]) runs its steps; the group's soak is added here,
/// since a host keeps its slot through it.
pub fn balance(group: &mut GroupSpec, length: impl Fn(usize) -> Duration) {
    match &group.strategy {
        Strategy::Rolling { order: HostOrder::Balanced, .. } => {}
        Strategy::Rolling { order: HostOrder::Listed, .. } | Strategy::Parallel | Strategy::Cluster { .. } => return,
    }
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let soak = ms(group.soak);
    let mut hosts = group.hosts.clone();
    for (range, window) in segments(group) {
        let lengths: Vec<u64> = hosts[range.clone()].iter().map(|&h| ms(length(h)).saturating_add(soak)).collect();
        let order = stage_order(&lengths, window);
        let reordered: Vec<usize> = order.iter().map(|&k| hosts[range.start + k]).collect();
        hosts[range].copy_from_slice(&reordered);
    }
    group.hosts = hosts;
}

/// The runs of positions whose hosts may swap places, each with the window
/// its hosts start under: the group split at every ramp stage's first host,
/// the canaries left out.
fn segments(group: &GroupSpec) -> Vec<(Range<usize>, usize)> {
    let n = group.hosts.len();
    let first = group.canary.map_or(0, |c| c.hosts.min(n));
    let mut out: Vec<(Range<usize>, usize)> = Vec::new();
    for pos in first..n {
        let w = group.window_at(pos);
        match out.last_mut() {
            Some((range, _)) if !w.first_of_stage => range.end = pos + 1,
            Some(_) | None => out.push((pos..pos + 1, w.size.max(1))),
        }
    }
    out
}

/// One slot of the window in a plan: its hosts (indices into the stage) and
/// their total length.
#[derive(Debug, Clone, Default)]
struct Slot {
    load: u64,
    hosts: Vec<usize>,
}

/// The order (indices into `lengths`) that starts a stage of hosts of these
/// lengths through a sliding window of `window` so that its slots finish
/// close together.
fn stage_order(lengths: &[u64], window: usize) -> Vec<usize> {
    let window = window.clamp(1, lengths.len().max(1));
    if window >= lengths.len() {
        // Everything starts at once: longest first only reads better.
        return by_length(lengths);
    }
    let mut slots = longest_first(lengths, window);
    improve(&mut slots, lengths);
    start_order(&slots, lengths)
}

/// Indices of `lengths`, longest first (ties in the listed order).
fn by_length(lengths: &[u64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by_key(|&i| (Reverse(lengths[i]), i));
    idx
}

/// Graham's LPT: longest first, each onto the least loaded slot.
fn longest_first(lengths: &[u64], window: usize) -> Vec<Slot> {
    let mut slots = vec![Slot::default(); window];
    let mut least: BinaryHeap<Reverse<(u64, usize)>> = (0..window).map(|s| Reverse((0, s))).collect();
    for i in by_length(lengths) {
        let Some(Reverse((load, s))) = least.pop() else { break };
        slots[s].hosts.push(i);
        slots[s].load = load + lengths[i];
        least.push(Reverse((slots[s].load, s)));
    }
    slots
}

/// Shorten the most loaded slot while a move of one of its hosts to another
/// slot, or a swap with a shorter host there, leaves both below its load;
/// the best such change each time, until none helps or [`MAX_PAIRS`] have
/// been weighed. Each change lowers the most loaded slot or the number of
/// slots at that load, so it ends.
fn improve(slots: &mut [Slot], lengths: &[u64]) {
    let mut weighed = 0usize;
    while weighed < MAX_PAIRS {
        let Some(top) = (0..slots.len()).max_by_key(|&s| (slots[s].load, Reverse(s))) else { return };
        let peak = slots[top].load;
        // (new peak of the pair, other slot, position in top, position in other)
        let mut best: Option<(u64, usize, usize, Option<usize>)> = None;
        for (o, other) in slots.iter().enumerate() {
            if o == top || other.load >= peak {
                continue;
            }
            weighed = weighed.saturating_add(slots[top].hosts.len().saturating_mul(other.hosts.len() + 1));
            for (a_pos, &a) in slots[top].hosts.iter().enumerate() {
                let la = lengths[a];
                let moved = (peak - la).max(other.load + la);
                if moved < peak && best.is_none_or(|b| moved < b.0) {
                    best = Some((moved, o, a_pos, None));
                }
                for (b_pos, &b) in other.hosts.iter().enumerate() {
                    let lb = lengths[b];
                    if lb >= la {
                        continue;
                    }
                    let swapped = (peak - la + lb).max(other.load + la - lb);
                    if swapped < peak && best.is_none_or(|x| swapped < x.0) {
                        best = Some((swapped, o, a_pos, Some(b_pos)));
                    }
                }
            }
        }
        let Some((_, o, a_pos, b_pos)) = best else { return };
        let a = slots[top].hosts.swap_remove(a_pos);
        slots[top].load -= lengths[a];
        slots[o].hosts.push(a);
        slots[o].load += lengths[a];
        if let Some(b_pos) = b_pos {
            let b = slots[o].hosts.swap_remove(b_pos);
            slots[o].load -= lengths[b];
            slots[top].hosts.push(b);
            slots[top].load += lengths[b];
        }
    }
}

/// The hosts of `slots` in the order they start when each slot runs its
/// hosts back to back, longest first (ties: the slot that frees first, then
/// the lower slot).
fn start_order(slots: &[Slot], lengths: &[u64]) -> Vec<usize> {
    let queues: Vec<Vec<usize>> = slots
        .iter()
        .map(|s| {
            let mut h = s.hosts.clone();
            h.sort_by_key(|&i| (Reverse(lengths[i]), i));
            h
        })
        .collect();
    let mut next = vec![0usize; queues.len()];
    let mut free: BinaryHeap<Reverse<(u64, usize)>> =
        (0..queues.len()).filter(|&s| !queues[s].is_empty()).map(|s| Reverse((0, s))).collect();
    let mut out = Vec::with_capacity(lengths.len());
    while let Some(Reverse((at, s))) = free.pop() {
        let i = queues[s][next[s]];
        out.push(i);
        next[s] += 1;
        if next[s] < queues[s].len() {
            free.push(Reverse((at + lengths[i], s)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CanarySpec, OnFailure, Promote, Window};

    /// The makespan of starting hosts of `lengths` in `order` through a
    /// sliding window of `window` (what the engine does).
    fn sliding(lengths: &[u64], order: &[usize], window: usize) -> u64 {
        let mut running: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
        let mut end = 0;
        for &i in order {
            let start = if running.len() == window { running.pop().map_or(0, |Reverse(t)| t) } else { 0 };
            running.push(Reverse(start + lengths[i]));
            end = end.max(start + lengths[i]);
        }
        end
    }

    fn group(n: usize, stages: Vec<usize>, order: HostOrder) -> GroupSpec {
        GroupSpec {
            name: "g".into(),
            after: vec![],
            strategy: Strategy::Rolling { window: Window { stages }, order },
            max_failures: 0,
            soak: Duration::ZERO,
            hosts: (0..n).collect(),
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        }
    }

    #[test]
    fn order_names_round_trip_and_unknown_ones_are_named() {
        for o in [HostOrder::Listed, HostOrder::Balanced] {
            assert_eq!(o.to_string().parse::<HostOrder>(), Ok(o));
        }
        let e = "fastest".parse::<HostOrder>().unwrap_err().to_string();
        assert!(e.contains("`fastest`") && e.contains("balanced"), "{e}");
    }

    #[test]
    fn a_long_host_listed_last_no_longer_runs_alone_at_the_end() {
        // Listed: eight 10 s hosts through 2 slots, then a 40 s one: 40 + 40 = 80 s.
        let lengths = [10, 10, 10, 10, 10, 10, 10, 10, 40];
        let listed: Vec<usize> = (0..lengths.len()).collect();
        assert_eq!(sliding(&lengths, &listed, 2), 80);
        let order = stage_order(&lengths, 2);
        assert_eq!(sliding(&lengths, &order, 2), 60, "{order:?}");
        assert_eq!(order[0], 8, "the longest host starts first: {order:?}");
    }

    #[test]
    fn improving_on_longest_first_reaches_the_perfect_split() {
        // LPT puts 3,3 | 2,2,2 on two slots: 6 and 6; but on 3 slots with
        // 5,5,4,4,3,3,3 LPT gives 5+3, 5+3, 4+4+3 = 11 against 9 possible.
        let lengths = [5, 5, 4, 4, 3, 3, 3];
        let lpt = longest_first(&lengths, 3);
        assert_eq!(lpt.iter().map(|s| s.load).max(), Some(11));
        let order = stage_order(&lengths, 3);
        assert_eq!(sliding(&lengths, &order, 3), 9, "{order:?}");
    }

    #[test]
    fn the_start_order_never_does_worse_than_its_plan_on_random_stages() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut listed_total, mut balanced_total) = (0.0, 0.0);
        for _ in 0..300 {
            let n = 1 + (next() % 120) as usize;
            let window = 1 + (next() % 20) as usize;
            let lengths: Vec<u64> = (0..n).map(|_| 5_000 + next() % 175_000).collect();
            let w = window.min(n);
            let mut slots = longest_first(&lengths, w);
            improve(&mut slots, &lengths);
            let planned = slots.iter().map(|s| s.load).max().unwrap_or(0);
            let order = stage_order(&lengths, window);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            let got = sliding(&lengths, &order, w);
            assert!(got <= planned, "n={n} w={w}: {got} > planned {planned}");
            let longest = *lengths.iter().max().unwrap();
            let lower = longest.max(lengths.iter().sum::<u64>().div_ceil(w as u64));
            assert!(got >= lower, "n={n} w={w}: {got} below the bound {lower}");
            listed_total += sliding(&lengths, &(0..n).collect::<Vec<_>>(), w) as f64 / lower as f64;
            balanced_total += got as f64 / lower as f64;
        }
        assert!(balanced_total < listed_total, "balanced {balanced_total} vs listed {listed_total}");
    }

    #[test]
    fn a_large_stage_through_a_narrow_window_is_balanced_within_the_work_bound() {
        // 20,000 hosts over 3 slots: each change weighs ~6,700 hosts against
        // all the others, so the pair budget ends it, not the plan.
        let lengths: Vec<u64> = (0..20_000u64).map(|i| 5_000 + (i * 7_919) % 175_000).collect();
        let order = stage_order(&lengths, 3);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..lengths.len()).collect::<Vec<_>>());
        let lower = lengths.iter().sum::<u64>().div_ceil(3);
        let got = sliding(&lengths, &order, 3);
        assert!(got < lower + 180_000, "{got} against the bound {lower}");
    }

    #[test]
    fn canaries_and_ramp_stages_keep_their_members() {
        // Lengths by entry: entry i takes 10 + i seconds, so balancing wants the last first.
        let len = |i: usize| Duration::from_secs(10 + i as u64);
        let mut g = group(12, vec![2, 3], HostOrder::Balanced);
        g.canary = Some(CanarySpec { hosts: 1, promote: Promote::Manual });
        balance(&mut g, len);
        assert_eq!(g.hosts[0], 0, "the canary stays first: {:?}", g.hosts);
        let mut stage1 = g.hosts[1..2].to_vec();
        stage1.sort_unstable();
        assert_eq!(stage1, vec![1], "the first stage's other host: {:?}", g.hosts);
        let mut rest = g.hosts[2..].to_vec();
        assert_eq!(rest[0], 11, "the longest of the last stage starts first: {:?}", g.hosts);
        rest.sort_unstable();
        assert_eq!(rest, (2..12).collect::<Vec<_>>());
    }

    #[test]
    fn listed_parallel_and_cluster_groups_keep_the_plan_order() {
        let len = |i: usize| Duration::from_secs(100 - i as u64 * 7);
        let reversed = |i: usize| Duration::from_secs(10 + i as u64);
        let mut g = group(8, vec![2], HostOrder::Listed);
        balance(&mut g, reversed);
        assert_eq!(g.hosts, (0..8).collect::<Vec<_>>());
        g.strategy = Strategy::Parallel;
        balance(&mut g, len);
        assert_eq!(g.hosts, (0..8).collect::<Vec<_>>());
        let mut b = group(8, vec![2], HostOrder::Balanced);
        balance(&mut b, reversed);
        assert_ne!(b.hosts, (0..8).collect::<Vec<_>>(), "balanced does reorder");
    }

    #[test]
    fn a_soak_counts_toward_each_hosts_slot() {
        // With a long soak every host holds its slot about as long: the plan
        // is balanced by count, which plain lengths would not give.
        let mut g = group(4, vec![2], HostOrder::Balanced);
        g.soak = Duration::from_secs(1000);
        balance(&mut g, |i| Duration::from_secs([1, 2, 3, 100][i]));
        let slots: Vec<usize> = g.hosts.clone();
        // Two slots: the 100 s host and the 1 s host share one, 2 and 3 the other.
        let lengths = [1001, 1002, 1003, 1100];
        assert_eq!(sliding(&lengths, &slots, 2), 2101, "{slots:?}");
    }
}

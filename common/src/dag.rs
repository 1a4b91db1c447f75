//! Dependency ordering and cycle detection over groups.
//!
//! Groups form a DAG through their `after:` lists. The rollout needs one
//! topological order (the engine and every report list groups in it), and
//! operators diff plan outputs, so the order must not depend on hashing or on
//! anything but the plan: among the groups that are ready, the one declared
//! first goes first. A plan that reads top to bottom in dependency order
//! therefore keeps its declaration order.
//!
//! When there is a cycle, the operator needs to see the whole loop to know
//! which `after:` to remove, so the error is one complete cycle rather than
//! "some groups could not be ordered".

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Order nodes `0..after.len()` so that every node comes after the nodes it
/// lists in `after[node]`, preferring the lowest index among ready nodes.
///
/// On a cycle, returns `Err(cycle)`: the nodes of one cycle, starting at its
/// lowest index, each listed by the next one in its `after` (so each must run
/// before the next, and the last before the first).
///
/// Duplicate entries in an `after` list are harmless. Panics if an entry is
/// out of range: callers resolve names to indices first.
pub fn topo_order(after: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = after.len();
    let deps: Vec<Vec<usize>> = after
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.sort_unstable();
            a.dedup();
            a
        })
        .collect();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (node, ds) in deps.iter().enumerate() {
        for &d in ds {
            assert!(d < n, "dependency index {d} out of range ({n} nodes)");
            dependents[d].push(node);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(node)) = ready.pop() {
        order.push(node);
        for &next in &dependents[node] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    Err(find_cycle(&deps, &waiting))
}

/// Every node still waiting has a dependency that is also still waiting, so
/// following those from any waiting node must come back to a node already
/// seen: that loop is a cycle.
fn find_cycle(deps: &[Vec<usize>], waiting: &[usize]) -> Vec<usize> {
    let stuck = |i: usize| waiting[i] > 0;
    let start = (0..deps.len()).find(|&i| stuck(i)).expect("called only when some node is stuck");
    let mut path = vec![start];
    let mut seen_at = vec![None; deps.len()];
    seen_at[start] = Some(0);
    loop {
        let current = *path.last().expect("path starts non-empty");
        let next = deps[current].iter().copied().find(|&d| stuck(d)).expect("a stuck node waits on a stuck node");
        if let Some(pos) = seen_at[next] {
            // `path` runs from dependent to dependency; flip it so each node
            // runs before the next, then start at the lowest index.
            let mut cycle: Vec<usize> = path[pos..].iter().rev().copied().collect();
            let lowest = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap_or(0);
            cycle.rotate_left(lowest);
            return cycle;
        }
        seen_at[next] = Some(path.len());
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_graph() {
        assert_eq!(topo_order(&[]), Ok(vec![]));
    }

    #[test]
    fn independent_nodes_keep_declaration_order() {
        assert_eq!(topo_order(&[vec![], vec![], vec![]]), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn dependencies_come_first() {
        // 0 after 2, 1 after 0, 2 free.
        assert_eq!(topo_order(&[vec![2], vec![0], vec![]]), Ok(vec![2, 0, 1]));
    }

    #[test]
    fn lowest_ready_index_goes_first() {
        // A diamond: 0 -> {1, 2} -> 3, plus an unrelated 4 declared last.
        let after = [vec![], vec![0], vec![0], vec![2, 1], vec![]];
        assert_eq!(topo_order(&after), Ok(vec![0, 1, 2, 3, 4]));
        // 3 and 4 are ready from the start but wait for 1 and 2, which are
        // declared earlier and become ready one after the other.
        let after = [vec![], vec![0], vec![1], vec![], vec![]];
        assert_eq!(topo_order(&after), Ok(vec![0, 1, 2, 3, 4]));
        let after = [vec![4], vec![], vec![], vec![], vec![]];
        assert_eq!(topo_order(&after), Ok(vec![1, 2, 3, 4, 0]));
    }

    #[test]
    fn duplicate_dependencies_are_harmless() {
        assert_eq!(topo_order(&[vec![], vec![0, 0]]), Ok(vec![0, 1]));
    }

    #[test]
    fn self_loop_is_a_cycle() {
        assert_eq!(topo_order(&[vec![], vec![1]]), Err(vec![1]));
    }

    #[test]
    fn cycle_is_reported_in_run_order_from_lowest_index() {
        // 0 after 2, 1 after 0, 2 after 1: 0 runs before 1, 1 before 2, 2 before 0.
        assert_eq!(topo_order(&[vec![2], vec![0], vec![1]]), Err(vec![0, 1, 2]));
        // Same loop, other direction: 0 after 1, 1 after 2, 2 after 0.
        assert_eq!(topo_order(&[vec![1], vec![2], vec![0]]), Err(vec![0, 2, 1]));
    }

    #[test]
    fn cycle_behind_a_tail_excludes_the_tail() {
        // 0 waits on 1, which is in a loop with 2; 3 is fine.
        let after = [vec![1], vec![2], vec![1], vec![]];
        assert_eq!(topo_order(&after), Err(vec![1, 2]));
    }
}

//! The engine's per-host tracking, indexed like [`crate::model::RolloutSpec::hosts`],
//! recording which hosts were touched so watchers get changes, not full views.
//!
//! Why a wrapper and not a plain `Vec`: every path that can change what a
//! [`crate::view::HostView`] shows goes through `&mut self.hosts[i]`
//! ([`IndexMut`]), and that marks host `i`. There is no `iter_mut` or
//! `DerefMut`, so a new mutation point cannot forget to mark: it does not
//! compile without going through [`IndexMut`]. A host marked but left
//! unchanged costs one redundant host view, never a missed change.

use std::ops::{Deref, Index, IndexMut};

use crate::engine::tracking::HostRt;

/// Hosts' tracking state plus the set of hosts touched since the last
/// [`HostTable::take_changed`].
#[derive(Debug, Clone)]
pub(crate) struct HostTable {
    rows: Vec<HostRt>,
    /// `changed[i]`: host `i` is in `touched` (so each host is listed once
    /// and the list never outgrows the hosts).
    changed: Vec<bool>,
    /// Hosts touched, in the order first touched since the last drain.
    touched: Vec<usize>,
}

impl HostTable {
    /// A table of `rows`, none touched.
    pub(crate) fn new(rows: Vec<HostRt>) -> HostTable {
        let changed = vec![false; rows.len()];
        HostTable { rows, changed, touched: Vec::new() }
    }

    /// The rows, read-only (snapshots serialize them).
    pub(crate) fn rows(&self) -> &[HostRt] {
        &self.rows
    }

    /// The hosts touched since the last call, each once, in ascending
    /// order; O(touched · log touched).
    pub(crate) fn take_changed(&mut self) -> Vec<usize> {
        let mut out = std::mem::take(&mut self.touched);
        for &i in &out {
            self.changed[i] = false;
        }
        out.sort_unstable();
        out
    }
}

impl Deref for HostTable {
    type Target = [HostRt];
    fn deref(&self) -> &[HostRt] {
        &self.rows
    }
}

impl Index<usize> for HostTable {
    type Output = HostRt;
    fn index(&self, i: usize) -> &HostRt {
        &self.rows[i]
    }
}

impl IndexMut<usize> for HostTable {
    /// Marks host `i` touched: the caller may change anything in it.
    fn index_mut(&mut self, i: usize) -> &mut HostRt {
        if !self.changed[i] {
            self.changed[i] = true;
            self.touched.push(i);
        }
        &mut self.rows[i]
    }
}

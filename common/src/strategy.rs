//! How a group moves through its hosts: the [`Strategy`] enum (rolling with
//! a window that may ramp, parallel, cluster), the ramp's stages, and what a
//! group's strategy says about its window at each host.

use serde::{Deserialize, Serialize};

use crate::host_order::HostOrder;
use crate::model::{ClusterSpec, GroupSpec};

impl GroupSpec {
    /// The `cluster` strategy's clusters, when the group uses it.
    pub fn cluster(&self) -> Option<&ClusterSpec> {
        match &self.strategy {
            Strategy::Cluster { cluster, .. } => Some(cluster),
            Strategy::Rolling { .. } | Strategy::Parallel => None,
        }
    }

    /// The `cluster` strategy's clusters, to change them.
    pub fn cluster_mut(&mut self) -> Option<&mut ClusterSpec> {
        match &mut self.strategy {
            Strategy::Cluster { cluster, .. } => Some(cluster),
            Strategy::Rolling { .. } | Strategy::Parallel => None,
        }
    }

    /// The window once any ramp is over: how many hosts (of one cluster, for
    /// the `cluster` strategy) are in flight at once; a group rollback uses it.
    pub fn steady_window(&self) -> usize {
        match &self.strategy {
            Strategy::Rolling { window, .. } => window.steady(),
            Strategy::Parallel => self.hosts.len().max(1),
            Strategy::Cluster { max_parallel, .. } => (*max_parallel).max(1),
        }
    }

    /// The widest the window gets (over every ramp stage).
    pub fn widest_window(&self) -> usize {
        match &self.strategy {
            Strategy::Rolling { window, .. } => window.stages.iter().copied().max().unwrap_or(1).max(1),
            Strategy::Parallel | Strategy::Cluster { .. } => self.steady_window(),
        }
    }

    /// The window the host at `position` (in the group's order) starts
    /// under. For `cluster` groups, whose members start out of order, this is
    /// the per-cluster window.
    pub fn window_at(&self, position: usize) -> WindowAt {
        match &self.strategy {
            Strategy::Rolling { window, .. } => window.at(position),
            Strategy::Parallel => WindowAt { size: self.hosts.len().max(1), first_of_stage: false },
            Strategy::Cluster { max_parallel, .. } => WindowAt { size: (*max_parallel).max(1), first_of_stage: false },
        }
    }

    /// The group's hosts (by position) in the batches a preview shows: each
    /// ramp stage, then runs of the steady window.
    pub fn batches(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.hosts.len() {
            let end = (start + self.window_at(start).size).min(self.hosts.len());
            out.push(start..end);
            start = end;
        }
        out
    }
}

/// How a group moves through its hosts (each strategy's own settings with
/// it; percentages are already resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Hosts in the group's order through a sliding window, which may grow
    /// in stages ([`Window`]); `order` says whether that order is the
    /// plan's or balanced from estimates ([`HostOrder`]).
    Rolling {
        window: Window,
        #[serde(default, skip_serializing_if = "HostOrder::is_listed")]
        order: HostOrder,
    },
    /// Every host of the group at once.
    Parallel,
    /// Leader/follower (or same-version) clusters, in parallel, each with its
    /// own window of `max_parallel` (see [`ClusterSpec`]).
    Cluster { max_parallel: usize, cluster: ClusterSpec },
}

impl Strategy {
    /// A rolling window of `n` hosts that never grows.
    pub fn rolling(n: usize) -> Strategy {
        Strategy::Rolling { window: Window::fixed(n), order: HostOrder::Listed }
    }

    /// The name plans use (`type:`).
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Rolling { .. } => "rolling",
            Strategy::Parallel => "parallel",
            Strategy::Cluster { .. } => "cluster",
        }
    }
}

/// A rolling window's size as the group goes on (Ansible's `serial` list):
/// the first `stages[0]` hosts form a batch of that size, the next
/// `stages[1]` hosts the next batch, and so on; a batch starts only once
/// every host of the earlier batches finished (soak included). The last
/// size holds for the rest of the group as a sliding window. One stage is a
/// plain sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Sizes, each at least 1; never empty.
    pub stages: Vec<usize>,
}

/// The window a host starts under (see [`GroupSpec::window_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAt {
    /// Hosts of the group in flight at once, this host included.
    pub size: usize,
    /// The host opens a new stage: it starts only when nothing of the group
    /// is in flight.
    pub first_of_stage: bool,
}

impl Window {
    pub fn fixed(n: usize) -> Window {
        Window { stages: vec![n.max(1)] }
    }

    /// The size once every stage is done.
    pub fn steady(&self) -> usize {
        self.stages.last().copied().unwrap_or(1).max(1)
    }

    /// The window of the host at `position`.
    pub fn at(&self, position: usize) -> WindowAt {
        let (last, ramp) = match self.stages.split_last() {
            Some((last, ramp)) => (*last, ramp),
            None => (1, &[][..]),
        };
        let mut start = 0;
        for &size in ramp {
            let size = size.max(1);
            if position < start + size {
                return WindowAt { size, first_of_stage: position == start };
            }
            start += size;
        }
        WindowAt { size: last.max(1), first_of_stage: position == start && !ramp.is_empty() }
    }
}

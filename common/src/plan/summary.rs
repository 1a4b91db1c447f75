//! What `convoy plan` shows of an expanded rollout, as one typed model
//! ([`PlanSummary`]): per group its strategy, hosts, batches and steps, and
//! (filled in by [`crate::estimate::summary`]) its host paths and estimates.
//! `convoy plan --output json` prints it, the coordinator sends it for a dry
//! run, and the CLI renders its text from it.

use crate::host_order::HostOrder;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::estimate::Source;
use crate::model::{GroupSpec, OnFailure, Promote, RolloutSpec, Strategy};

use super::duration::format_duration;

/// A rollout as `convoy plan` shows it. From a spec alone
/// ([`PlanSummary::of`]) `estimate` and every group's `paths` and `estimate`
/// are absent (and so are they in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub plan: String,
    pub target_version: String,
    pub component: Option<String>,
    /// As plans write durations (`5m`).
    pub host_lost_timeout: String,
    pub max_failures: Option<usize>,
    pub on_failure: OnFailure,
    pub require_backup: bool,
    /// In rollout order.
    pub groups: Vec<GroupSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<RolloutEstimateSummary>,
    /// With maintenance windows: when each batch is expected to run, from
    /// a start instant ([`crate::calendar_estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<crate::calendar_estimate::CalendarSummary>,
}

/// One group of a [`PlanSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    /// The names of the groups it waits for.
    pub after: Vec<String>,
    pub strategy: StrategySummary,
    /// In upgrade order (canaries first).
    pub hosts: Vec<String>,
    /// As [`batches`].
    pub batches: Vec<Vec<String>>,
    /// The `cluster` strategy's clusters, when it has them.
    pub clusters: Option<ClustersSummary>,
    /// The steps of its first host entry.
    pub steps: Vec<StepSummary>,
    /// How many of `steps` (the first ones) are pre-checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pre_checks: usize,
    pub on_failure: OnFailure,
    pub hook: bool,
    pub canary: Option<CanarySummary>,
    /// Every host's step names.
    pub host_steps: BTreeMap<String, Vec<String>>,
    /// The rollback step names of its first host entry.
    pub rollback_steps: Vec<String>,
    /// Its host entries, those with the same path and steps once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PathSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<GroupEstimateSummary>,
}

/// A group's resolved strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategySummary {
    #[serde(rename = "type")]
    pub kind: StrategyType,
    /// The window (the steady one after a ramp).
    pub max_parallel: usize,
    /// Ramped batches: every stage's size, the last being `max_parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Vec<usize>>,
    pub max_failures: usize,
    /// As plans write durations.
    pub soak: String,
    pub soak_ms: u64,
    /// `balanced` when the hosts were reordered from estimated durations
    /// (the batches show the new order); left out for the listed order.
    #[serde(default, skip_serializing_if = "HostOrder::is_listed")]
    pub order: HostOrder,
}

/// How a group moves its hosts, as `convoy plan` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyType {
    /// A sliding window smaller than the group.
    Rolling,
    /// Every host at once.
    Parallel,
    /// `type: cluster`.
    Cluster,
}

impl StrategyType {
    /// `cluster` for the cluster strategy, `parallel` when a group moves
    /// all its hosts at once, `rolling` otherwise.
    pub fn of(g: &GroupSpec) -> StrategyType {
        if g.cluster().is_some() {
            StrategyType::Cluster
        } else if g.hosts.len() > 1 && g.widest_window() >= g.hosts.len() {
            StrategyType::Parallel
        } else {
            StrategyType::Rolling
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StrategyType::Rolling => "rolling",
            StrategyType::Parallel => "parallel",
            StrategyType::Cluster => "cluster",
        }
    }
}

/// The clusters of a `cluster` group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClustersSummary {
    /// The label naming a host's cluster.
    pub by: String,
    pub same_version: bool,
    /// Each cluster's members, by cluster name.
    pub members: BTreeMap<String, Vec<String>>,
    /// The leader check's name.
    pub leader_check: Option<String>,
    /// The switchover steps' names.
    pub switchover: Vec<String>,
}

/// One step of a group, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSummary {
    pub name: String,
    /// [`crate::model::StepKind::kind_name`].
    pub kind: String,
    pub timeout: String,
}

/// A group's canaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySummary {
    pub hosts: Vec<String>,
    /// `manual`, or `after 5m`.
    pub promote: String,
}

/// Host entries of a group that share a release path and steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSummary {
    pub hosts: Vec<String>,
    /// The versions the path goes through, from the installed one (absent
    /// outside `release:` groups).
    pub path: Option<Vec<String>>,
    /// Empty outside `release:` groups.
    pub hops: Vec<HopSummary>,
    /// The steps after the path's.
    pub steps: Vec<EstimatedStep>,
    /// One host entry's estimate.
    pub estimate_ms: u64,
    pub estimate: String,
}

/// One hop of a release path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopSummary {
    pub from: String,
    pub to: String,
    pub skipped: Vec<String>,
    pub downgrade: bool,
    pub steps: Vec<EstimatedStep>,
}

/// A step with its estimate: `{ name, kind, run_as?, estimate_ms, estimate,
/// source, runs? }` (`runs` for a measured one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimatedStep {
    pub name: String,
    pub kind: String,
    /// Who its command runs as (`postgres`, `postgres:ssl-cert`), when its
    /// `run_as` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    pub estimate_ms: u64,
    pub estimate: String,
    #[serde(flatten)]
    pub source: Source,
}

/// When a group runs, from the start of the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEstimateSummary {
    pub start_ms: u64,
    pub duration_ms: u64,
    pub finish_ms: u64,
    pub duration: String,
    /// It waits for `convoy approve` after its canaries (not counted).
    pub manual_approval: bool,
}

/// How long the whole rollout takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEstimateSummary {
    pub total_ms: u64,
    pub total: String,
    /// The groups whose wait for `convoy approve` is not counted.
    pub manual_approvals: Vec<String>,
    /// Where the step estimates come from, each distinct group and step name
    /// counted once.
    pub steps: SourceCounts,
}

/// How many step estimates come from each [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceCounts {
    pub declared: usize,
    pub measured: usize,
    pub default: usize,
}

/// The hosts of group `group` (an index into [`RolloutSpec::groups`]) in
/// upgrade order, chunked by `max_parallel`. The engine uses a sliding
/// window, so these are the batches of an undisturbed run, for display.
pub fn batches(spec: &RolloutSpec, group: usize) -> Vec<Vec<String>> {
    let Some(g) = spec.groups.get(group) else { return Vec::new() };
    let name = |h: &usize| spec.hosts[*h].host.clone();
    match g.cluster() {
        // Every member of every cluster at once.
        Some(c) if c.same_version => vec![g.hosts.iter().map(name).collect()],
        // Clusters side by side, `max_parallel` members of each at a time;
        // which member leads (and so goes last) is only known at run time.
        Some(c) => {
            let window = g.steady_window();
            let rounds = c.clusters.iter().map(|m| m.hosts.len().div_ceil(window)).max().unwrap_or(0);
            (0..rounds)
                .map(|r| {
                    c.clusters.iter().flat_map(|m| m.hosts.iter().skip(r * window).take(window).map(name)).collect()
                })
                .collect()
        }
        None => g.batches().into_iter().map(|r| g.hosts[r].iter().map(name).collect()).collect(),
    }
}

impl PlanSummary {
    /// The rollout `spec` describes, without paths or estimates.
    pub fn of(spec: &RolloutSpec) -> PlanSummary {
        let host = |h: &usize| spec.hosts[*h].host.clone();
        let groups = spec
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let first = g.hosts.first().map(|&h| &spec.hosts[h]);
                GroupSummary {
                    name: g.name.clone(),
                    after: g.after.iter().map(|&a| spec.groups[a].name.clone()).collect(),
                    strategy: StrategySummary {
                        kind: StrategyType::of(g),
                        max_parallel: g.steady_window(),
                        ramp: match &g.strategy {
                            Strategy::Rolling { window, .. } if window.stages.len() > 1 => Some(window.stages.clone()),
                            Strategy::Rolling { .. } | Strategy::Parallel | Strategy::Cluster { .. } => None,
                        },
                        max_failures: g.max_failures,
                        soak: format_duration(g.soak),
                        soak_ms: u64::try_from(g.soak.as_millis()).unwrap_or(u64::MAX),
                        order: match &g.strategy {
                            Strategy::Rolling { order, .. } => *order,
                            Strategy::Parallel | Strategy::Cluster { .. } => HostOrder::Listed,
                        },
                    },
                    hosts: g.hosts.iter().map(host).collect(),
                    batches: batches(spec, i),
                    clusters: g.cluster().map(|c| ClustersSummary {
                        by: c.label.clone(),
                        same_version: c.same_version,
                        members: c
                            .clusters
                            .iter()
                            .map(|m| (m.name.clone(), m.hosts.iter().map(host).collect()))
                            .collect(),
                        leader_check: first.and_then(|h| h.leader_check.as_ref()).map(|s| s.name.clone()),
                        switchover: first
                            .map(|h| h.switchover.iter().map(|s| s.name.clone()).collect())
                            .unwrap_or_default(),
                    }),
                    steps: first
                        .map(|h| &h.steps[..])
                        .unwrap_or_default()
                        .iter()
                        .map(|s| StepSummary {
                            name: s.name.clone(),
                            kind: s.kind.kind_name().to_string(),
                            timeout: format_duration(s.timeout),
                        })
                        .collect(),
                    pre_checks: first.map_or(0, |h| h.pre_checks),
                    on_failure: g.on_failure,
                    hook: g.hook,
                    canary: g.canary.map(|c| CanarySummary {
                        hosts: g.hosts.iter().take(c.hosts).map(host).collect(),
                        promote: match c.promote {
                            Promote::Manual => "manual".to_string(),
                            Promote::After(d) => format!("after {}", format_duration(d)),
                        },
                    }),
                    host_steps: g
                        .hosts
                        .iter()
                        .map(|&h| (host(&h), spec.hosts[h].steps.iter().map(|s| s.name.clone()).collect()))
                        .collect(),
                    rollback_steps: first
                        .map(|h| h.rollback_steps.iter().map(|s| s.name.clone()).collect())
                        .unwrap_or_default(),
                    paths: None,
                    estimate: None,
                }
            })
            .collect();
        PlanSummary {
            plan: spec.plan_name.clone(),
            target_version: spec.target_version.clone(),
            component: spec.component.clone(),
            host_lost_timeout: format_duration(spec.host_lost_timeout),
            max_failures: spec.max_failures,
            on_failure: spec.on_failure,
            require_backup: spec.require_backup,
            groups,
            estimate: None,
            calendar: None,
        }
    }

    /// As JSON, keys sorted (as `convoy plan --output json` has always
    /// printed them).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a summary has only string keys and plain values")
    }
}

/// [`PlanSummary::of`] as JSON.
pub fn summary_json(spec: &RolloutSpec) -> serde_json::Value {
    PlanSummary::of(spec).to_json()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

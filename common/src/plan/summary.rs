//! Views of an expanded rollout for `convoy plan`: batches, a Graphviz
//! graph and a JSON summary.

use crate::model::{GroupSpec, Promote, RolloutSpec};

use super::duration::format_duration;

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

/// "cluster" for the cluster strategy, "parallel" when a group moves all
/// its hosts at once, "rolling" otherwise.
fn strategy_label(g: &GroupSpec) -> &'static str {
    if g.cluster().is_some() {
        "cluster"
    } else if g.hosts.len() > 1 && g.widest_window() >= g.hosts.len() {
        "parallel"
    } else {
        "rolling"
    }
}

/// `max_parallel` as a plan writes it: `3`, or `[1, 5, 20]` for a ramp.
fn window_text(g: &GroupSpec) -> String {
    match &g.strategy {
        crate::model::Strategy::Rolling { window } if window.stages.len() > 1 => {
            let stages: Vec<String> = window.stages.iter().map(usize::to_string).collect();
            format!("[{}]", stages.join(", "))
        }
        crate::model::Strategy::Rolling { .. }
        | crate::model::Strategy::Parallel
        | crate::model::Strategy::Cluster { .. } => g.steady_window().to_string(),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A Graphviz digraph of the groups: one node per group labelled with its
/// name, host count and strategy; an edge from each group to those that wait
/// for it.
pub fn to_dot(spec: &RolloutSpec) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", dot_escape(&spec.plan_name));
    for g in &spec.groups {
        let n = g.hosts.len();
        out.push_str(&format!(
            "  \"{name}\" [label=\"{name}\\n{n} host{plural}\\n{kind}: max_parallel={mp} max_failures={mf} soak={soak}\"];\n",
            name = dot_escape(&g.name),
            plural = if n == 1 { "" } else { "s" },
            kind = strategy_label(g),
            mp = window_text(g),
            mf = g.max_failures,
            soak = format_duration(g.soak),
        ));
    }
    for g in &spec.groups {
        for &a in &g.after {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", dot_escape(&spec.groups[a].name), dot_escape(&g.name)));
        }
    }
    out.push_str("}\n");
    out
}

/// The rollout as JSON for `convoy plan --output json`: per group (in rollout
/// order) its name, the names it waits for, the resolved strategy, its hosts,
/// its batches and the steps each host runs.
pub fn summary_json(spec: &RolloutSpec) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = spec
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let steps: Vec<serde_json::Value> = g
                .hosts
                .first()
                .map(|&h| &spec.hosts[h].steps[..])
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "kind": s.kind.kind_name(),
                        "timeout": format_duration(s.timeout),
                    })
                })
                .collect();
            serde_json::json!({
                "name": g.name,
                "after": g.after.iter().map(|&a| spec.groups[a].name.clone()).collect::<Vec<_>>(),
                "strategy": {
                    "type": strategy_label(g),
                    "max_parallel": g.steady_window(),
                    "max_failures": g.max_failures,
                    "soak": format_duration(g.soak),
                    "soak_ms": u64::try_from(g.soak.as_millis()).unwrap_or(u64::MAX),
                },
                "hosts": g.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>(),
                "batches": batches(spec, i),
                "clusters": g.cluster().map(|c| serde_json::json!({
                    "by": c.label,
                    "same_version": c.same_version,
                    "members": c
                        .clusters
                        .iter()
                        .map(|m| (m.name.clone(), serde_json::json!(m.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>())))
                        .collect::<serde_json::Map<String, serde_json::Value>>(),
                    "leader_check": g.hosts.first().and_then(|&h| spec.hosts[h].leader_check.as_ref()).map(|s| s.name.clone()),
                    "switchover": g.hosts.first().map(|&h| spec.hosts[h].switchover.iter().map(|s| s.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                })),
                "steps": steps,
                "on_failure": g.on_failure.as_str(),
                "hook": g.hook,
                "canary": g.canary.map(|c| serde_json::json!({
                    "hosts": g.hosts.iter().take(c.hosts).map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>(),
                    "promote": match c.promote {
                        Promote::Manual => "manual".to_string(),
                        Promote::After(d) => format!("after {}", format_duration(d)),
                    },
                })),
                "host_steps": g
                    .hosts
                    .iter()
                    .map(|&h| {
                        let names: Vec<&str> = spec.hosts[h].steps.iter().map(|s| s.name.as_str()).collect();
                        (spec.hosts[h].host.clone(), serde_json::json!(names))
                    })
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
                "rollback_steps": g
                    .hosts
                    .first()
                    .map(|&h| spec.hosts[h].rollback_steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            })
        })
        .collect();
    serde_json::json!({
        "plan": spec.plan_name,
        "target_version": spec.target_version,
        "component": spec.component,
        "host_lost_timeout": format_duration(spec.host_lost_timeout),
        "max_failures": spec.max_failures,
        "on_failure": spec.on_failure.as_str(),
        "require_backup": spec.require_backup,
        "groups": groups,
    })
}

//! The Graphviz graph of an expanded rollout's groups, for
//! `convoy plan --format dot`.

use crate::model::{GroupSpec, RolloutSpec, Strategy};

use super::duration::format_duration;
use super::summary::StrategyType;

/// `max_parallel` as a plan writes it: `3`, or `[1, 5, 20]` for a ramp.
fn window_text(g: &GroupSpec) -> String {
    match &g.strategy {
        Strategy::Rolling { window, .. } if window.stages.len() > 1 => {
            let stages: Vec<String> = window.stages.iter().map(usize::to_string).collect();
            format!("[{}]", stages.join(", "))
        }
        Strategy::Rolling { .. } | Strategy::Parallel | Strategy::Cluster { .. } => g.steady_window().to_string(),
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
            kind = StrategyType::of(g).as_str(),
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

//! Text output: group progress, host tables, agent lists.

use std::fmt::Write as _;

use convoy_proto::v1 as pb;

/// One line per group: `name  state  done/total  running  failed  pending`.
pub fn groups(s: &pb::RolloutStatus) -> String {
    let w = s.groups.iter().map(|g| g.name.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    for g in &s.groups {
        let bar = bar(g.done as usize, g.failed as usize, g.total as usize, 20);
        let _ = writeln!(
            out,
            "  {:<w$}  {bar}  {:>3}/{:<3} done  {:>2} running  {:>2} failed  {:>3} pending  {}",
            g.name, g.done, g.total, g.running, g.failed, g.pending, g.state
        );
    }
    out
}

fn bar(done: usize, failed: usize, total: usize, width: usize) -> String {
    if total == 0 {
        return format!("[{}]", " ".repeat(width));
    }
    let d = done * width / total;
    let f = (failed * width).div_ceil(total).min(width - d);
    format!("[{}{}{}]", "#".repeat(d), "x".repeat(f), ".".repeat(width - d - f))
}

/// The final table of hosts and versions.
pub fn hosts(s: &pb::RolloutStatus) -> String {
    let hw = s.hosts.iter().map(|h| h.host_id.len()).max().unwrap_or(4).max(4);
    let gw = s.hosts.iter().map(|h| h.group.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let _ = writeln!(out, "  {:<hw$}  {:<gw$}  {:<10}  {:<12}  NOTE", "HOST", "GROUP", "STATE", "VERSION");
    for h in &s.hosts {
        let note = if h.message.is_empty() { h.current_step.clone() } else { h.message.clone() };
        let note: String = note.chars().take(100).collect();
        // Captured values matter to the operator (e.g. replica counts to restore): never cut them.
        let note = if h.captured.is_empty() {
            note
        } else {
            let vals: Vec<String> = h.captured.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("[{}] {note}", vals.join(" "))
        };
        let v = if h.version.is_empty() { "-" } else { &h.version };
        let _ = writeln!(
            out,
            "  {:<hw$}  {:<gw$}  {:<10}  {:<12}  {}",
            h.host_id,
            h.group,
            h.state,
            v,
            note.replace('\n', " ")
        );
    }
    out
}

pub fn agents(list: &[pb::AgentInfo]) -> String {
    let w = list.iter().map(|a| a.agent_id.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(out, "{:<w$}  {:<9}  {:<8}  {:<30}  INSTALLED", "HOST", "STATE", "VERSION", "LABELS");
    for a in list {
        let labels: Vec<String> = {
            let mut l: Vec<_> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            l.sort();
            l
        };
        let installed: Vec<String> = {
            let mut l: Vec<_> = a
                .facts
                .as_ref()
                .map(|f| f.installed.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            l.sort();
            l
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:<9}  {:<8}  {:<30}  {}",
            a.agent_id,
            if a.connected { "connected" } else { "lost" },
            a.agent_version,
            labels.join(","),
            installed.join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_shows_done_and_failed_and_never_overflows() {
        assert_eq!(bar(5, 0, 10, 10), "[#####.....]");
        assert_eq!(bar(0, 1, 10, 10), "[x.........]");
        assert_eq!(bar(10, 0, 10, 10), "[##########]");
        assert_eq!(bar(9, 3, 10, 10).len(), 12);
    }
}

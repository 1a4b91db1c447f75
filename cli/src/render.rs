//! Text output: group progress, host tables, agent lists.

use std::fmt::Write as _;
use std::time::Duration;

use convoy_common::plan::summary::{EstimatedStep, GroupSummary, RolloutEstimateSummary};
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
        if let Some(line) = window_line(g, crate::timefmt::now_ms()) {
            let _ = writeln!(out, "  {:<w$}  {line}", "");
        }
    }
    out
}

/// A group's maintenance windows under its progress line: the next opening
/// of a group waiting for one, the time left in an open one.
pub fn window_line(g: &pb::GroupStatus, now_ms: u64) -> Option<String> {
    if g.windows.is_empty() {
        return None;
    }
    let windows = format!("windows {} ({})", g.windows.join("; "), g.window_timezone);
    let at = |ms: u64| (ms > 0).then_some(convoy_common::model::UnixMillis(ms));
    let view = convoy_common::view::WindowView {
        windows: g.windows.clone(),
        timezone: g.window_timezone.clone(),
        waiting_until: at(g.window_waiting_until_unix_ms),
        closes_at: at(g.window_closes_unix_ms),
        overridden_by: (!g.windows_overridden_by.is_empty()).then(|| g.windows_overridden_by.clone()),
    };
    let status = view.status_text(convoy_common::model::UnixMillis(now_ms));
    Some(format!("{windows}: {status}"))
}

fn bar(done: usize, failed: usize, total: usize, width: usize) -> String {
    if total == 0 {
        return format!("[{}]", " ".repeat(width));
    }
    let d = done * width / total;
    let f = (failed * width).div_ceil(total).min(width - d);
    format!("[{}{}{}]", "#".repeat(d), "x".repeat(f), ".".repeat(width - d - f))
}

/// How much of a host's note the table shows unless `--wide`.
pub const NOTE_CHARS: usize = 100;

/// The final table of hosts and versions. Every column is as wide as its
/// longest value; notes are cut at [`NOTE_CHARS`] (saying so) unless `wide`.
pub fn hosts(s: &pb::RolloutStatus, wide: bool) -> String {
    let width = |f: &dyn Fn(&pb::HostStatus) -> usize, min: usize| s.hosts.iter().map(f).max().unwrap_or(min).max(min);
    let hw = width(&|h| h.host_id.chars().count(), 4);
    let gw = width(&|h| h.group.chars().count(), 5);
    let sw = width(&|h| h.state.len(), 5);
    let vw = width(&|h| h.version.chars().count().max(1), 9);
    let mut out = String::new();
    let mut cut = false;
    let _ = writeln!(out, "  {:<hw$}  {:<gw$}  {:<sw$}  {:<vw$}  NOTE", "HOST", "GROUP", "STATE", "INSTALLED");
    for h in &s.hosts {
        let note = if h.message.is_empty() { h.current_step.clone() } else { h.message.clone() };
        let note = note.replace('\n', " ");
        let note = if !wide && note.chars().count() > NOTE_CHARS {
            cut = true;
            format!("{}…", note.chars().take(NOTE_CHARS).collect::<String>())
        } else {
            note
        };
        // Captured values matter to the operator (e.g. replica counts to restore): never cut them.
        let note = if h.captured.is_empty() {
            note
        } else {
            let vals: Vec<String> = h.captured.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("[{}] {note}", vals.join(" "))
        };
        let v = if h.version.is_empty() { "-" } else { &h.version };
        let line = format!("  {:<hw$}  {:<gw$}  {:<sw$}  {:<vw$}  {note}", h.host_id, h.group, h.state, v);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if cut {
        let _ = writeln!(
            out,
            "  (notes cut at {NOTE_CHARS} characters: --wide shows them whole, `convoy events` each step's message)"
        );
    }
    out
}

/// Held hosts under a heading (empty when none).
pub fn held(list: &[pb::HeldHost], heading: &str) -> String {
    if list.is_empty() {
        return String::new();
    }
    let w = list.iter().map(|h| h.host_id.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{heading}:\n");
    for h in list {
        let _ = writeln!(out, "  {:<w$}  {} (held by {})", h.host_id, h.reason, h.by);
    }
    out
}

/// The backups the rollout took, one per line (empty when it took none).
pub fn backups(s: &pb::RolloutStatus) -> String {
    if s.backups.is_empty() {
        return String::new();
    }
    let hw = s.backups.iter().map(|b| b.host_id.len()).max().unwrap_or(4).max(4);
    let sw = s.backups.iter().map(|b| b.step.len()).max().unwrap_or(4).max(4);
    let mut out = String::from("backups:\n");
    let _ = writeln!(out, "  {:<hw$}  {:<sw$}  {:>10}  LOCATION", "HOST", "STEP", "SIZE");
    for b in &s.backups {
        let size = convoy_common::model::human_size(b.size_bytes);
        let _ = writeln!(out, "  {:<hw$}  {:<sw$}  {size:>10}  {}", b.host_id, b.step, b.location);
    }
    out
}

/// The agents table. AGENT VERSION is the agent's own build (what
/// `convoy status` calls INSTALLED is what the rollout put on the host).
pub fn agents(list: &[pb::AgentInfo]) -> String {
    let sorted = |mut l: Vec<String>| {
        l.sort();
        l.join(",")
    };
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|a| {
            let labels = sorted(a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect());
            let installed = sorted(
                a.facts
                    .as_ref()
                    .map(|f| f.installed.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default(),
            );
            let hold = a.hold.as_ref().map_or("-".to_string(), |h| format!("held: {} ({})", h.reason, h.by));
            let state = if a.connected { "connected" } else { "lost" };
            [a.agent_id.clone(), state.into(), a.agent_version.clone(), labels, installed, hold]
        })
        .collect();
    let head = ["HOST", "STATE", "AGENT VERSION", "LABELS", "INSTALLED", "HOLD"];
    let w: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(head[i].len())).collect();
    let mut out = String::new();
    for r in std::iter::once(head.map(str::to_string)).chain(rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// A group's batches, one line each, kept short on a large fleet: a batch
/// of more than 8 hosts shows its first 3 and its last, and of more than 6
/// batches the first 3 and the last 2 are shown.
pub fn batches(list: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, i: usize, names: &Vec<String>| {
        let shown = match names.len() {
            0..=8 => names.join(" "),
            n => format!("{} … {} ({n} hosts)", names[..3].join(" "), names[n - 1]),
        };
        let _ = writeln!(out, "  batch {}: {shown}", i + 1);
    };
    let n = list.len();
    for (i, b) in list.iter().enumerate() {
        if n > 6 && (3..n - 2).contains(&i) {
            if i == 3 {
                let _ = writeln!(out, "  … {} more batches", n - 5);
            }
            continue;
        }
        line(&mut out, i, b);
    }
    out
}

/// `hosts a-1, a-2 (+198 more)`: a few names of a list, and how many more.
pub fn host_list(hosts: &[&str]) -> String {
    let word = if hosts.len() == 1 { "host" } else { "hosts" };
    if hosts.len() <= 3 {
        return format!("{word} {}", hosts.join(", "));
    }
    format!("{word} {} (+{} more)", hosts[..2].join(", "), hosts.len() - 2)
}

/// `~2m (declared)`, `~14s (measured, 12 runs)`, `~10s (default)`.
fn step_estimate(step: &EstimatedStep) -> String {
    format!("~{} ({})", step.estimate, step.source.describe())
}

/// A step's name without its hop's `3.39.0/` (or `3.40.0->3.39.1/`).
fn short_name(step: &EstimatedStep) -> &str {
    step.name.split_once('/').map_or(&step.name, |(_, rest)| rest)
}

/// Steps as lines (`name  kind  ~estimate (source)`, then `(as USER)` for a
/// step with `run_as`) at `indent`, the first
/// two columns `widths` wide; `hop`: the names lose their hop's prefix.
fn step_lines(out: &mut String, steps: &[EstimatedStep], indent: usize, hop: bool, widths: (usize, usize)) {
    let (nw, kw) = widths;
    for s in steps {
        let name = if hop { short_name(s) } else { &s.name };
        let who = s.run_as.as_ref().map(|u| format!("  (as {u})")).unwrap_or_default();
        let line = format!("{:indent$}{name:<nw$}  {:<kw$}  {}{who}", "", s.kind, step_estimate(s));
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The host paths of one group of `convoy plan`'s summary (its `paths`):
/// hosts with the same release path and steps once, then per hop its
/// steps, then the group's own steps, each with its estimate.
pub fn plan_paths(group: &GroupSummary) -> String {
    let mut out = String::new();
    if let Some(e) = &group.estimate {
        let at = |ms: u64| convoy_common::estimate::human_duration(Duration::from_millis(ms));
        let _ = writeln!(
            out,
            "  estimate: ~{} (from +{} to +{}){}",
            e.duration,
            at(e.start_ms),
            at(e.finish_ms),
            if e.manual_approval { ", plus the wait for `convoy approve`" } else { "" }
        );
    }
    // In a leader/follower cluster the estimate counts the leader's extra
    // checks and switchover on each cluster's last member; which member
    // leads is known only at run time, so say so rather than name it.
    let leaders: Vec<&str> = match &group.clusters {
        Some(c) if !c.same_version => c.members.values().filter_map(|m| m.last()).map(String::as_str).collect(),
        Some(_) | None => Vec::new(),
    };
    for p in group.paths.iter().flatten() {
        let hosts: Vec<&str> = p.hosts.iter().map(String::as_str).collect();
        let as_leader = !leaders.is_empty() && hosts.iter().all(|h| leaders.contains(h));
        let who = if as_leader {
            format!("the leader of each cluster (whichever member leads; counted on {})", hosts.join(", "))
        } else if !leaders.is_empty() {
            format!("each follower ({})", host_list(&hosts))
        } else {
            host_list(&hosts)
        };
        let own = &p.steps;
        let hop_steps = p.hops.iter().flat_map(|h| &h.steps);
        let count = hop_steps.clone().count() + own.len();
        let per_host = format!("{count} step{}, ~{} per host", if count == 1 { "" } else { "s" }, p.estimate);
        // One set of columns for the whole entry.
        let nw = hop_steps.clone().map(|s| short_name(s).len()).chain(own.iter().map(|s| s.name.len())).max();
        let kw = hop_steps.chain(own).map(|s| s.kind.len()).max().unwrap_or(0);
        let widths = (nw.unwrap_or(0), kw);
        let path = p.path.as_deref().unwrap_or_default();
        if path.is_empty() {
            let _ = writeln!(out, "  {who}: {per_host}");
            step_lines(&mut out, own, 4, false, widths);
            continue;
        }
        let shown = if path.len() == 1 { format!("{} (already there)", path[0]) } else { path.join(" → ") };
        let _ = writeln!(out, "  {who}: {shown}, {per_host}");
        for hop in &p.hops {
            let mut notes = Vec::new();
            if !hop.skipped.is_empty() {
                notes.push(format!("skips {}", hop.skipped.join(", ")));
            }
            if hop.downgrade {
                notes.push("downgrade".to_string());
            }
            if hop.steps.is_empty() {
                notes.push("no steps for these hosts".to_string());
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            let _ = writeln!(out, "    {} → {}{notes}", hop.from, hop.to);
            step_lines(&mut out, &hop.steps, 6, true, widths);
        }
        if !own.is_empty() {
            let _ = writeln!(out, "    then the group's steps");
            step_lines(&mut out, own, 6, false, widths);
        }
    }
    out
}

/// The last line of `convoy plan`: the whole rollout's estimate (empty when
/// the summary has none, e.g. from an older coordinator).
pub fn plan_estimate(estimate: Option<&RolloutEstimateSummary>) -> String {
    let Some(e) = estimate else { return String::new() };
    let n = &e.steps;
    let mut out = format!(
        "estimated duration: ~{} (parallel branches overlap; step times: {} declared, {} measured, {} default)\n",
        e.total, n.declared, n.measured, n.default
    );
    if !e.manual_approvals.is_empty() {
        let _ = writeln!(out, "  not counted: waiting for `convoy approve` in {}", e.manual_approvals.join(", "));
    }
    out
}

/// `convoy plan`'s calendar estimate: per windowed group its windows and
/// the window each batch is expected to land in, then the end date.
pub fn plan_calendar(c: &convoy_common::calendar_estimate::CalendarSummary) -> String {
    let mut out = format!("calendar (if started now, {}):\n", c.start);
    for g in &c.groups {
        let _ = writeln!(out, "  {}: windows {} ({})", g.name, g.windows.join("; "), g.timezone);
        for (k, b) in g.batches.iter().enumerate() {
            let when = match (&b.start, &b.end) {
                (Some(s), Some(e)) => format!("window at {s}, done by {e}"),
                _ => "fits no window (estimate plus cutoff too long)".to_string(),
            };
            let _ = writeln!(out, "    batch {}: {} -> {when}", k + 1, b.hosts.join(", "));
        }
    }
    let end = c.end.as_deref().unwrap_or("unknown (a host fits no window)");
    let _ = writeln!(out, "  expected end: {end}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::plan::summary::SourceCounts;

    fn host(id: &str, state: &str, message: &str) -> pb::HostStatus {
        pb::HostStatus {
            host_id: id.into(),
            group: "db".into(),
            state: state.into(),
            version: "2.0.0".into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn host_columns_fit_the_longest_state_and_notes_are_cut_only_without_wide() {
        let long = "x".repeat(150);
        let s = pb::RolloutStatus {
            hosts: vec![
                host("a", "rolled_back", "ok"),
                host("b", "leader_check", "ok"),
                host("c", "switching_over", &long),
                host("d", "succeeded", "ok"),
            ],
            ..Default::default()
        };
        let text = hosts(&s, false);
        let lines: Vec<&str> = text.lines().collect();
        let note_at = lines[0].find("NOTE").unwrap();
        for l in &lines[1..5] {
            let note = l.find(" ok").map(|i| i + 1).or_else(|| l.find('x')).unwrap();
            assert_eq!(note, note_at, "misaligned:\n{text}");
        }
        assert!(lines[0].contains("INSTALLED") && !lines[0].contains("VERSION"), "{text}");
        assert!(lines[3].ends_with(&format!("{}…", "x".repeat(100))), "{text}");
        assert!(lines[5].contains("--wide"), "{text}");
        let wide = hosts(&s, true);
        assert!(wide.contains(&long) && !wide.contains("--wide"), "{wide}");
    }

    #[test]
    fn agents_say_agent_version_and_line_up() {
        let a = |id: &str, v: &str| pb::AgentInfo {
            agent_id: id.into(),
            agent_version: v.into(),
            connected: true,
            ..Default::default()
        };
        let mut held = a("web-10", "0.1.0-rc1");
        held.hold =
            Some(pb::HeldHost { host_id: "web-10".into(), reason: "disk".into(), by: "ann".into(), since_unix_ms: 1 });
        let text = agents(&[a("db-1", "0.1.0"), held]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HOST    STATE      AGENT VERSION  LABELS"), "{text}");
        assert!(lines[2].ends_with("held: disk (ann)"), "{text}");
        assert_eq!(lines[1].find("0.1.0"), lines[2].find("0.1.0-rc1"), "{text}");
    }

    #[test]
    fn batches_stay_short_on_a_large_fleet() {
        let hosts: Vec<String> = (1..=200).map(|i| format!("a-{i:03}")).collect();
        let list: Vec<Vec<String>> = hosts.chunks(20).map(<[String]>::to_vec).collect();
        let text = batches(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[0], "  batch 1: a-001 a-002 a-003 … a-020 (20 hosts)");
        assert_eq!(lines[2], "  batch 3: a-041 a-042 a-043 … a-060 (20 hosts)");
        assert_eq!(lines[3], "  … 5 more batches");
        assert_eq!(lines[5], "  batch 10: a-181 a-182 a-183 … a-200 (20 hosts)");
        // Small ones stay whole.
        let small: Vec<Vec<String>> = (1..=3).map(|i| vec![format!("b-{i}")]).collect();
        assert_eq!(batches(&small), "  batch 1: b-1\n  batch 2: b-2\n  batch 3: b-3\n");
    }

    #[test]
    fn host_lists_stay_short() {
        assert_eq!(host_list(&["a"]), "host a");
        assert_eq!(host_list(&["a", "b", "c"]), "hosts a, b, c");
        let many: Vec<String> = (1..=200).map(|i| format!("a-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(host_list(&many), "hosts a-1, a-2 (+198 more)");
    }

    #[test]
    fn plan_estimate_says_what_is_not_counted_and_is_empty_without_one() {
        assert_eq!(plan_estimate(None), "", "an older coordinator's summary");
        let e = RolloutEstimateSummary {
            total_ms: 12 * 60_000,
            total: "12m".into(),
            manual_approvals: vec!["web".into()],
            steps: SourceCounts { declared: 1, measured: 2, default: 3 },
        };
        assert_eq!(
            plan_estimate(Some(&e)),
            "estimated duration: ~12m (parallel branches overlap; step times: 1 declared, 2 measured, 3 default)\n  not counted: waiting for `convoy approve` in web\n"
        );
    }

    #[test]
    fn bar_shows_done_and_failed_and_never_overflows() {
        assert_eq!(bar(5, 0, 10, 10), "[#####.....]");
        assert_eq!(bar(0, 1, 10, 10), "[x.........]");
        assert_eq!(bar(10, 0, 10, 10), "[##########]");
        assert_eq!(bar(9, 3, 10, 10).len(), 12);
    }

    #[test]
    fn backups_list_host_step_size_and_location() {
        let mut s = pb::RolloutStatus::default();
        assert_eq!(backups(&s), "", "no backups, no section");
        s.backups = vec![
            pb::RolloutBackup {
                host_id: "db-1".into(),
                group: "database".into(),
                step: "dump".into(),
                location: "/var/backups/db.dump".into(),
                size_bytes: 3 * 1024 * 1024 + 1024 * 512,
                taken_unix_ms: 1,
            },
            pb::RolloutBackup {
                host_id: "db-2".into(),
                step: "snapshot-config".into(),
                location: "/var/backups/etc".into(),
                size_bytes: 900,
                ..Default::default()
            },
        ];
        let text = backups(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "backups:");
        assert!(lines[1].contains("HOST") && lines[1].contains("LOCATION"), "{text}");
        assert!(
            lines[2].contains("db-1") && lines[2].contains("3.5 MiB") && lines[2].ends_with("/var/backups/db.dump")
        );
        assert!(lines[3].contains("snapshot-config") && lines[3].contains("900 B"), "{text}");
    }
}

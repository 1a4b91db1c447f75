//! HTML helpers for the dashboard: escaping, the page layout, times and
//! durations, and the group DAG drawn as inline SVG (computed here, so the
//! browser needs no graph library).
//!
//! Pages carry no inline script or `style` attribute: the Content Security
//! Policy allows scripts and styles from this origin only. SVG presentation
//! attributes (`fill`, `width`) are not styles and are used freely.

use std::fmt::Write;
use std::time::Duration;

use convoy_common::model::{RolloutSpec, UnixMillis};
use convoy_common::view::GroupView;

use super::auth::Authed;

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the navigation, who is signed in, then `body`.
pub fn layout(title: &str, who: Option<&Authed>, body: &str) -> String {
    let nav = match who {
        Some(a) => {
            let logout = match &a.csrf {
                Some(csrf) => format!(
                    "<form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"link\">sign out</button></form>",
                    esc(csrf)
                ),
                None => String::new(),
            };
            format!(
                "<nav><a href=\"/\" class=\"brand\">Convoy</a><a href=\"/\">Rollouts</a><a href=\"/agents\">Agents</a><a href=\"/audit\">Audit</a>\
                 <span class=\"who\" id=\"who\" data-role=\"{role}\">{name} ({role}) {logout}</span></nav>",
                name = esc(&a.caller.name),
                role = a.caller.role,
            )
        }
        None => "<nav><span class=\"brand\">Convoy</span></nav>".to_string(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Convoy</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\"><script src=\"/static/dashboard.js\" defer></script></head>\
         <body>{nav}<main>{body}</main></body></html>",
        esc(title)
    )
}

/// `at` as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(at: UnixMillis) -> String {
    let secs = at.0 / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A duration for people: `850ms`, `12s`, `3m 04s`, `2h 05m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    }
}

/// The CSS class of a state name (`s-running`, …).
pub fn badge(state: &str) -> String {
    format!("<span class=\"badge s-{0}\">{0}</span>", esc(state))
}

/// A group's maintenance-window status, worded as `convoy status` words it
/// (`cli/src/render.rs`, `window_line`): who lifted the windows, the next
/// opening of a group waiting for one, the time left in an open one.
/// `None` for a group without windows.
pub fn window_status(g: &GroupView, now: UnixMillis) -> Option<String> {
    Some(g.window.as_ref()?.status_text(now))
}

/// A group's windows described (`mon,tue 22:00 for 6h (Europe/Paris)`).
pub fn window_rules(g: &GroupView) -> Option<String> {
    let w = g.window.as_ref()?;
    Some(format!("{} ({})", w.windows.join("; "), w.timezone))
}

const NODE_W: usize = 190;
const NODE_H: usize = 66;
const GAP_X: usize = 60;
const GAP_Y: usize = 18;

/// The group DAG as inline SVG: one column per depth (longest path from a
/// group with no `after`), each group a box with its state, counts and a
/// progress bar; an arrow from each group it waits for. The JS updates the
/// boxes in place from the live changes (`data-group`).
pub fn dag_svg(spec: &RolloutSpec, groups: &[GroupView]) -> String {
    let n = spec.groups.len();
    let mut depth = vec![0usize; n];
    // Groups are in a valid topological order only after validation; a few
    // passes settle the depths either way (bounded by the group count).
    for _ in 0..n {
        let mut changed = false;
        for (i, g) in spec.groups.iter().enumerate() {
            let d = g.after.iter().filter(|&&a| a < n).map(|&a| depth[a] + 1).max().unwrap_or(0);
            if d != depth[i] && d <= n {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut row = vec![0usize; n];
    let mut per_depth = vec![0usize; n.max(1)];
    for i in 0..n {
        let d = depth[i].min(n.saturating_sub(1));
        row[i] = per_depth[d];
        per_depth[d] += 1;
    }
    let cols = depth.iter().max().map_or(1, |d| d + 1);
    let rows = per_depth.iter().max().copied().unwrap_or(1).max(1);
    let (w, h) = (cols * (NODE_W + GAP_X) + 10, rows * (NODE_H + GAP_Y) + 10);
    let pos = |i: usize| (10 + depth[i] * (NODE_W + GAP_X), 10 + row[i] * (NODE_H + GAP_Y));
    let mut svg = format!(
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"group DAG\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#7a869a\"/></marker></defs>"
    );
    for (i, g) in spec.groups.iter().enumerate() {
        let (x2, y2) = pos(i);
        for &a in g.after.iter().filter(|&&a| a < n) {
            let (x1, y1) = pos(a);
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
            let mid = (sx + ex) / 2;
            let _ = write!(
                svg,
                "<path class=\"edge\" d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\" fill=\"none\" stroke=\"#7a869a\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>"
            );
        }
    }
    for (i, g) in spec.groups.iter().enumerate() {
        let (x, y) = pos(i);
        let Some(v) = groups.iter().find(|v| v.name == g.name) else { continue };
        let bar = ((NODE_W - 20) * v.done).checked_div(v.total).unwrap_or(0);
        let _ = write!(
            svg,
            "<g class=\"node s-{state}\" data-group=\"{name}\" data-total=\"{total}\" transform=\"translate({x},{y})\">\
             <rect class=\"box\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/>\
             <text x=\"10\" y=\"18\" class=\"g-name\">{name}</text>\
             <text x=\"10\" y=\"35\" class=\"g-state\">{state}</text>\
             <text x=\"10\" y=\"51\" class=\"g-counts\">{counts}</text>\
             <rect x=\"10\" y=\"56\" width=\"{bw}\" height=\"4\" class=\"track\"/>\
             <rect x=\"10\" y=\"56\" width=\"{bar}\" height=\"4\" class=\"bar\"/></g>",
            state = v.state_str(),
            name = esc(&g.name),
            total = v.total,
            counts = esc(&counts(v)),
            bw = NODE_W - 20,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `3/8 done · 2 running · 1 failed` for a group.
pub fn counts(v: &GroupView) -> String {
    let mut s = format!("{}/{} done", v.done, v.total);
    if v.running > 0 {
        let _ = write!(s, " · {} running", v.running);
    }
    if v.failed > 0 {
        let _ = write!(s, " · {} failed", v.failed);
    }
    if v.rolled_back > 0 {
        let _ = write!(s, " · {} rolled back", v.rolled_back);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(utc(UnixMillis(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(UnixMillis(1_795_869_296_000)), "2026-11-28 12:34:56");
        assert_eq!(utc(UnixMillis(951_782_400_000)), "2000-02-29 00:00:00");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(184)), "3m 04s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h 05m");
    }
}

//! `windows:` (plan level, and per group over it): maintenance windows,
//! read into [`WindowsDef`] at parse time and resolved per host (time zone,
//! estimate) at expansion ([`expand_windows`]).
//!
//! ```yaml
//! windows:
//!   timezone: "{{label.tz}}"     # IANA name or a template; default UTC
//!   cutoff: 15m                  # margin before a window closes; default 0
//!   open:
//!     - days: [mon, tue, wed, thu, fri]
//!       start: "22:00"
//!       duration: 6h
//!     - cron: "0 2 * * sat,sun"
//!       duration: 4h
//!   blackouts:
//!     - { from: 2026-12-20, to: 2027-01-04, reason: year-end freeze }
//! ```
//!
//! A group's `windows:` replaces the plan's wholesale; `windows: { anytime:
//! true }` lets a group run at any time under a plan that has windows.
//! Hooks are never gated. A `cluster` group may not have windows (its
//! leader/follower order is not gated yet). A blackout's `from`/`to` are
//! local dates (`2026-12-20`: from midnight; as `to`, up to the end of that
//! day) or date-times (`2026-12-20 18:00`, `to` excluded), read in each
//! host's zone.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Weekday};

use crate::model::{InventoryHost, RolloutSpec};
use crate::schedule::{
    self, Blackout, CronExpr, GroupWindows, HostWindow, MAX_WINDOW, Recurrence, RolloutWindows, WindowRule,
};

use super::duration::parse_duration;
use super::errors::{FieldPath, PlanError, Src};
use super::raw::RawWindows;
use super::template::{Scope, Var, lookup, render};

/// Most window rules and blackouts in one `windows:` block.
const MAX_RULES: usize = 64;

/// A validated `windows:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WindowsDef {
    pub(super) open: Vec<WindowRule>,
    pub(super) blackouts: Vec<Blackout>,
    pub(super) cutoff: Duration,
    /// The zone as written (a name or a template).
    pub(super) timezone: String,
    /// Where it was written, for errors at expansion.
    pub(super) path: FieldPath,
}

/// Read a `windows:` block at `p`; `None` for `anytime: true`.
pub(super) fn windows(src: Src<'_>, raw: &RawWindows, p: &FieldPath) -> Result<Option<WindowsDef>, PlanError> {
    if raw.anytime == Some(true) {
        if raw.open.is_some() || raw.blackouts.is_some() || raw.timezone.is_some() || raw.cutoff.is_some() {
            return Err(src.err(&p.key("anytime"), "anytime: true takes no other field"));
        }
        return Ok(None);
    }
    let timezone = raw.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    if timezone.contains("{{") {
        // Checked for syntax now, per host at expansion.
        render(&timezone, |v| match v {
            Var::Label(_) | Var::Fact(_) => Ok(String::new()),
            Var::Host
            | Var::Version
            | Var::Group
            | Var::Installed(_)
            | Var::Captured(_)
            | Var::Vars(_)
            | Var::Cluster(_)
            | Var::InstallRoot
            | Var::Current(_) => Err("a time zone template may use {{label.NAME}} or {{fact.NAME}} only".to_string()),
        })
        .map_err(|m| src.err(&p.key("timezone"), m))?;
    } else {
        schedule::parse_tz(&timezone).map_err(|m| src.err(&p.key("timezone"), m))?;
    }
    let cutoff = match &raw.cutoff {
        Some(s) => parse_duration(s).map_err(|m| src.err(&p.key("cutoff"), m))?,
        None => Duration::ZERO,
    };
    if cutoff > MAX_WINDOW {
        return Err(src.err(&p.key("cutoff"), "must be at most 7d"));
    }
    let op = p.key("open");
    let raw_open = raw.open.as_deref().unwrap_or_default();
    if raw_open.is_empty() {
        return Err(src.err(&op, "list at least one window (or write `anytime: true`)"));
    }
    if raw_open.len() > MAX_RULES {
        return Err(src.err(&op, format!("{} windows, more than the limit of {MAX_RULES}", raw_open.len())));
    }
    let mut open = Vec::new();
    for (k, w) in raw_open.iter().enumerate() {
        let wp = op.idx(k);
        let duration = match &w.duration {
            Some(s) => parse_duration(s).map_err(|m| src.err(&wp.key("duration"), m))?,
            None => return Err(src.err(&wp.key("duration"), "missing required field 'duration'")),
        };
        if duration.is_zero() || duration > MAX_WINDOW {
            return Err(src.err(&wp.key("duration"), "must be positive and at most 7d"));
        }
        let recurrence = match (&w.cron, &w.days, &w.start) {
            (Some(c), None, None) => Recurrence::Cron(CronExpr::parse(c).map_err(|m| src.err(&wp.key("cron"), m))?),
            (None, days, Some(start)) => {
                let start = NaiveTime::parse_from_str(start, "%H:%M")
                    .or_else(|_| NaiveTime::parse_from_str(start, "%H:%M:%S"))
                    .map_err(|_| src.err(&wp.key("start"), format!("'{start}' is not a time of day HH:MM")))?;
                let days = match days {
                    None => vec![
                        Weekday::Mon,
                        Weekday::Tue,
                        Weekday::Wed,
                        Weekday::Thu,
                        Weekday::Fri,
                        Weekday::Sat,
                        Weekday::Sun,
                    ],
                    Some(days) if days.is_empty() => return Err(src.err(&wp.key("days"), "list at least one day")),
                    Some(days) => days
                        .iter()
                        .enumerate()
                        .map(|(d, s)| {
                            s.parse::<Weekday>().map_err(|_| {
                                src.err(&wp.key("days").idx(d), format!("'{s}' is not a day (mon, tue, ... sun)"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                Recurrence::Weekly { days, start }
            }
            (Some(_), _, _) => return Err(src.err(&wp.key("cron"), "use either 'cron' or 'days'/'start', not both")),
            (None, _, None) => return Err(src.err(&wp.key("start"), "a window needs 'start' (HH:MM) or 'cron'")),
        };
        open.push(WindowRule { recurrence, duration });
    }
    let bp = p.key("blackouts");
    let raw_blackouts = raw.blackouts.as_deref().unwrap_or_default();
    if raw_blackouts.len() > MAX_RULES {
        return Err(src.err(&bp, format!("{} blackouts, more than the limit of {MAX_RULES}", raw_blackouts.len())));
    }
    let mut blackouts = Vec::new();
    for (k, b) in raw_blackouts.iter().enumerate() {
        let at = bp.idx(k);
        let from = match &b.from {
            Some(s) => local_time(s, false).map_err(|m| src.err(&at.key("from"), m))?,
            None => return Err(src.err(&at.key("from"), "missing required field 'from'")),
        };
        let to = match &b.to {
            Some(s) => local_time(s, true).map_err(|m| src.err(&at.key("to"), m))?,
            None => return Err(src.err(&at.key("to"), "missing required field 'to'")),
        };
        if to <= from {
            return Err(src.err(&at.key("to"), "must be after 'from'"));
        }
        blackouts.push(Blackout { from, to });
    }
    Ok(Some(WindowsDef { open, blackouts, cutoff, timezone, path: p.clone() }))
}

/// `2026-12-20` or `2026-12-20 18:00` (also with a `T`); a date as an end
/// means the end of that day.
fn local_time(s: &str, end: bool) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let start = d.and_time(NaiveTime::MIN);
        return Ok(if end { start + TimeDelta::days(1) } else { start });
    }
    for f in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    Err(format!("'{s}' is not a date (YYYY-MM-DD) or a local date-time (YYYY-MM-DD HH:MM)"))
}

/// The spec's [`RolloutWindows`] for the groups' definitions (one per
/// `spec.groups`), each host's zone rendered from its inventory entry.
/// Estimates are left at zero: [`crate::estimate::fill_window_estimates`]
/// sets them.
pub(super) fn expand_windows(
    src: Src<'_>,
    spec: &RolloutSpec,
    defs: &[Option<&WindowsDef>],
    hosts: &BTreeMap<&str, &InventoryHost>,
) -> Result<Option<RolloutWindows>, PlanError> {
    if defs.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out_hosts = vec![HostWindow::default(); spec.hosts.len()];
    let mut groups = Vec::with_capacity(spec.groups.len());
    for (g, def) in spec.groups.iter().zip(defs) {
        let Some(def) = def else {
            groups.push(None);
            continue;
        };
        for &i in &g.hosts {
            let id = spec.hosts[i].host.as_str();
            let zone = match hosts.get(id) {
                Some(host) if def.timezone.contains("{{") => {
                    let scope = Scope { host, version: &spec.target_version, group: &g.name, cluster: None };
                    render(&def.timezone, |v| lookup(v, &scope)).map_err(|m| src.err(&def.path.key("timezone"), m))?
                }
                Some(_) | None => def.timezone.clone(),
            };
            let zone = schedule::parse_tz(zone.trim())
                .map_err(|m| src.err(&def.path.key("timezone"), format!("host {id}: {m}")))?;
            out_hosts[i].zone = zone;
        }
        groups.push(Some(GroupWindows {
            open: def.open.clone(),
            blackouts: def.blackouts.clone(),
            cutoff: def.cutoff,
            timezone: def.timezone.clone(),
        }));
    }
    Ok(Some(RolloutWindows { groups, hosts: out_hosts }))
}

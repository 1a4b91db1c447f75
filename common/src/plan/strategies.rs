//! How a group moves through its hosts: strategies (`max_parallel`, which
//! may ramp as a list, `max_failures`, `soak`) with their counts and
//! percentages, canaries, and the `type: cluster` strategy.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::host_order::HostOrder;
use crate::model::{ClusterSpec, LeaderAnswers, Promote, Strategy, Window};

use super::checks::{check_inner, leader_answers};
use super::duration::parse_duration;
use super::errors::{FieldPath, PlanError, Src};
use super::raw::{RawCanary, RawSizes, RawStrategy, StrategyType};
use super::steps::{name_steps, one_kind, step, templates};
use super::validated::StepTemplate;

/// A count or a share of a group's hosts, resolved at expand time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Amount {
    Count(usize),
    Percent(u32),
}

/// At most this many stages in a `max_parallel` list.
pub(super) const MAX_RAMP_STAGES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StrategyDef {
    /// `type: parallel`: every host of the group at once.
    pub(super) all_at_once: bool,
    /// `max_parallel`: one size, or a ramp of sizes (never empty).
    pub(super) max_parallel: Vec<Amount>,
    pub(super) max_failures: Amount,
    pub(super) soak: Duration,
    /// `order:` (rolling only).
    pub(super) order: HostOrder,
}

impl Default for StrategyDef {
    fn default() -> Self {
        StrategyDef {
            all_at_once: false,
            max_parallel: vec![Amount::Count(1)],
            max_failures: Amount::Count(0),
            soak: Duration::ZERO,
            order: HostOrder::Listed,
        }
    }
}

/// A strategy's numbers resolved against a group's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    /// The window's stages (one for a plain window).
    pub(super) window: Vec<usize>,
    /// The steady window (the last stage).
    pub(super) max_parallel: usize,
    pub(super) max_failures: usize,
    pub(super) soak: Duration,
}

impl StrategyDef {
    /// Sizes for a group of `hosts` hosts (for a cluster group, the largest
    /// cluster's size).
    pub(super) fn resolve(&self, hosts: usize) -> Resolved {
        let share = |p: u32| hosts.saturating_mul(p as usize) / 100;
        // Clamped to the group's size: nothing may be sized by a number the
        // plan chose, and a window wider than the group changes nothing.
        let size = |a: Amount| match a {
            Amount::Count(n) => n.min(hosts),
            Amount::Percent(p) => share(p),
        };
        let window: Vec<usize> = if self.all_at_once {
            vec![hosts.max(1)]
        } else {
            self.max_parallel.iter().map(|&a| size(a).max(1)).collect()
        };
        let max_parallel = window.last().copied().unwrap_or(1);
        Resolved { window, max_parallel, max_failures: size(self.max_failures), soak: self.soak }
    }

    /// The group's strategy: a cluster group's when `cluster` is given.
    pub(super) fn strategy(&self, resolved: &Resolved, cluster: Option<ClusterSpec>) -> Strategy {
        match cluster {
            Some(cluster) => Strategy::Cluster { max_parallel: resolved.max_parallel, cluster },
            None if self.all_at_once => Strategy::Parallel,
            None => Strategy::Rolling { window: Window { stages: resolved.window.clone() }, order: self.order },
        }
    }
}

/// Which of a group's hosts are its canaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CanaryPick {
    Count(usize),
    Percent(u32),
    Select(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CanaryDef {
    pub(super) pick: CanaryPick,
    pub(super) promote: Promote,
}

/// A group's `type: cluster` strategy, with its steps still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterDef {
    /// Where the strategy was written (the group's or the defaults').
    pub(super) path: FieldPath,
    pub(super) by: String,
    pub(super) same_version: bool,
    pub(super) leader: Option<StepTemplate>,
    /// How the leader check's answers read (with `leader`).
    pub(super) answers: Option<LeaderAnswers>,
    pub(super) switchover: Vec<StepTemplate>,
}

/// Validate a group's `canary:` block.
pub(super) fn canary(src: Src<'_>, raw: &RawCanary, p: &FieldPath) -> Result<CanaryDef, PlanError> {
    let kind = one_kind(
        src,
        &[("count", raw.count.is_some()), ("percent", raw.percent.is_some()), ("select", raw.select.is_some())],
        p,
        "canary",
    )?;
    let kp = p.key(kind);
    let pick = match (&raw.count, &raw.percent, &raw.select) {
        (Some(c), _, _) => match parse_amount(c, 1).map_err(|m| src.err(&kp, m))? {
            Amount::Count(n) => CanaryPick::Count(n),
            Amount::Percent(n) => CanaryPick::Percent(n),
        },
        (_, Some(pc), _) => {
            let text = pc.trim();
            let with_sign = if text.ends_with('%') { text.to_string() } else { format!("{text}%") };
            match parse_amount(&with_sign, 1).map_err(|m| src.err(&kp, m))? {
                Amount::Percent(n) => CanaryPick::Percent(n),
                Amount::Count(_) => unreachable!("a value ending in % is a percentage"),
            }
        }
        (_, _, Some(sel)) => {
            if sel.is_empty() {
                return Err(src.err(&kp, "a canary selector needs at least one label"));
            }
            CanaryPick::Select(sel.clone())
        }
        (None, None, None) => unreachable!("one_kind found a kind"),
    };
    let pp = p.key("promote");
    let bad = || src.err(&pp, "expected 'manual' or a mapping such as { after: 5m }");
    let promote = match &raw.promote {
        None => Promote::Manual,
        Some(serde_norway::Value::String(s)) if s == "manual" => Promote::Manual,
        Some(serde_norway::Value::Mapping(m)) => {
            let mut after = None;
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("after"), serde_norway::Value::String(s)) => after = Some(s.clone()),
                    (Some("after"), serde_norway::Value::Number(n)) => after = Some(n.to_string()),
                    (Some("after"), _) => return Err(src.err(&pp.key("after"), "expected a duration such as 5m")),
                    (Some(other), _) => {
                        return Err(src.err(&pp, format!("unknown field `{other}`, expected `after`")));
                    }
                    (None, _) => return Err(bad()),
                }
            }
            let after = after.ok_or_else(|| src.err(&pp, "missing required field 'after'"))?;
            Promote::After(parse_duration(&after).map_err(|m| src.err(&pp.key("after"), m))?)
        }
        Some(_) => return Err(bad()),
    };
    Ok(CanaryDef { pick, promote })
}

/// The `type: cluster` part of a strategy; `None` for other types, which
/// may not use its fields.
pub(super) fn cluster_def(src: Src<'_>, raw: &RawStrategy, p: &FieldPath) -> Result<Option<ClusterDef>, PlanError> {
    if raw.kind != Some(StrategyType::Cluster) {
        let extra = [
            ("by", raw.by.is_some()),
            ("leader", raw.leader.is_some()),
            ("switchover", raw.switchover.is_some()),
            ("same_version", raw.same_version.is_some()),
        ];
        if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
            return Err(src.err(&p.key(field), "only allowed with type: cluster"));
        }
        return Ok(None);
    }
    let by = match &raw.by {
        Some(b) if b.trim().is_empty() => return Err(src.err(&p.key("by"), "must name a label")),
        Some(b) => b.clone(),
        None => "cluster".to_string(),
    };
    let same_version = raw.same_version.unwrap_or(false);
    let (leader, answers) = match &raw.leader {
        Some(_) if same_version => {
            return Err(src.err(
                &p.key("leader"),
                "not allowed with same_version: true, which upgrades every member together, in no leader order",
            ));
        }
        Some(l) => {
            let lp = p.key("leader");
            if l.retries.is_some_and(|r| r > 0) || l.min_healthy_time.is_some() {
                return Err(src.err(
                    &lp,
                    "a leader check is asked once each time (an unknown answer is asked again every 'interval' \
                     until 'deadline'): 'retries' and 'min_healthy_time' are not allowed",
                ));
            }
            let mut t = check_inner(src, l, &lp, true)?;
            if t.spec.name.is_empty() {
                t.spec.name = "leader-check".to_string();
            }
            let answers = leader_answers(src, l, &lp)?;
            (Some(t), Some(answers))
        }
        None if same_version => (None, None),
        None => {
            return Err(src.err(
                &p.key("leader"),
                "type: cluster needs a 'leader' check (exec or http) with its 'follower_when' answer, \
                 or same_version: true",
            ));
        }
    };
    let switchover = match (&raw.switchover, same_version) {
        (Some(_), true) => return Err(src.err(&p.key("switchover"), "not allowed with same_version: true")),
        (Some(steps), false) => {
            let sp = p.key("switchover");
            let parsed = templates(src, Some(steps.as_slice()), &sp, step)?.unwrap_or_default();
            name_steps(src, parsed)?
        }
        (None, _) => Vec::new(),
    };
    Ok(Some(ClusterDef { path: p.clone(), by, same_version, leader, answers, switchover }))
}

pub(super) fn strategy(src: Src<'_>, raw: &RawStrategy, p: &FieldPath) -> Result<StrategyDef, PlanError> {
    let all_at_once = raw.kind == Some(StrategyType::Parallel);
    let mp = p.key("max_parallel");
    let max_parallel = match &raw.max_parallel {
        Some(_) if all_at_once => {
            return Err(src.err(&mp, "not allowed with type: parallel, which upgrades every host of the group at once"));
        }
        Some(RawSizes::Many(items)) => {
            if raw.kind == Some(StrategyType::Cluster) {
                return Err(src.err(
                    &mp,
                    "a list (ramped batches) is not allowed with type: cluster, whose members start in leader order",
                ));
            }
            if items.is_empty() {
                return Err(src.err(&mp, "an empty list: give at least one size, e.g. [1, 5, \"20%\"]"));
            }
            if items.len() > MAX_RAMP_STAGES {
                return Err(src.err(&mp, format!("{} stages, more than {MAX_RAMP_STAGES}", items.len())));
            }
            items
                .iter()
                .enumerate()
                .map(|(k, text)| parse_amount(text, 1).map_err(|m| src.err(&mp.idx(k), m)))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(RawSizes::One(text)) => vec![parse_amount(text, 1).map_err(|m| src.err(&mp, m))?],
        None => vec![Amount::Count(1)],
    };
    let max_failures = match &raw.max_failures {
        Some(s) => parse_amount(s, 0).map_err(|m| src.err(&p.key("max_failures"), m))?,
        None => Amount::Count(0),
    };
    let soak = match &raw.soak {
        Some(s) => parse_duration(s).map_err(|m| src.err(&p.key("soak"), m))?,
        None => Duration::ZERO,
    };
    let order = match &raw.order {
        None => HostOrder::Listed,
        Some(_) if raw.kind.is_some_and(|k| k != StrategyType::Rolling) => {
            return Err(src.err(
                &p.key("order"),
                "only allowed with type: rolling (parallel starts every host at once; cluster keeps the leader last)",
            ));
        }
        Some(text) => text.trim().parse::<HostOrder>().map_err(|e| src.err(&p.key("order"), e.to_string()))?,
    };
    Ok(StrategyDef { all_at_once, max_parallel, max_failures, soak, order })
}

/// An integer >= `min`, or a percentage `N%` with `min <= N <= 100`.
pub(super) fn parse_amount(s: &str, min: usize) -> Result<Amount, String> {
    let s = s.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let shape = || format!("invalid value '{s}': expected an integer or a percentage such as '25%'");
    if let Some(num) = s.strip_suffix('%') {
        let num = num.trim_end();
        if !digits(num) {
            return Err(shape());
        }
        match num.parse::<u32>() {
            Ok(n) if n as usize >= min && n <= 100 => Ok(Amount::Percent(n)),
            _ => Err(format!("invalid percentage '{s}': must be between {min}% and 100%")),
        }
    } else {
        if !digits(s) {
            return Err(shape());
        }
        match s.parse::<usize>() {
            Ok(n) if n >= min => Ok(Amount::Count(n)),
            Ok(_) => Err(format!("must be at least {min}")),
            Err(_) => Err(format!("invalid value '{s}': too large")),
        }
    }
}

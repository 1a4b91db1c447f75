//! Expansion: a [`Plan`] matched against an inventory into the
//! [`RolloutSpec`] the engine runs (members, canaries, clusters, rendered
//! steps and their undos).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::model::{
    CanarySpec, CaptureSpec, ClusterMembers, ClusterSpec, GroupSpec, HostPlan, InventoryHost, RolloutSpec, StepKind,
    StepSpec,
};
use crate::step_strings::exec_strings_mut;

use super::captures::{AncestorWalk, check_path_captures, hook_captures_before};
use super::catalogs::catalog_steps;
use super::errors::{PlanError, Src};
use super::steps::undo_name;
use super::strategies::{Amount, CanaryPick, ClusterDef};
use super::template::{Scope, lookup, render, render_step};
use super::validated::{HookOn, Plan, PlanGroup, Selection, StepTemplate};
use super::windows::{WindowsDef, expand_windows};
use crate::cluster_vars::{ClusterScope, Member};

/// Match the plan's selectors against the inventory and produce the rollout
/// the engine runs (templates substituted, percentages resolved).
///
/// Hosts of the inventory that no group selects are not part of the rollout.
/// If the inventory lists a host id twice, the first entry is used.
pub fn expand(plan: &Plan, inventory: &[InventoryHost]) -> Result<RolloutSpec, PlanError> {
    expand_detailed(plan, inventory).map(|x| x.spec)
}

/// What [`expand`] produces, with what `convoy plan` shows beside it: per
/// host entry, its release path and its steps' declared estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub spec: RolloutSpec,
    /// One per [`RolloutSpec::hosts`] entry, in the same order.
    pub hosts: Vec<HostDetail>,
}

/// What the expansion knows about one host entry beyond its [`HostPlan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostDetail {
    /// The hops of the entry's release path (`release: { catalog }` groups
    /// only), in order; its first steps are the hops' steps, in order.
    pub path: Option<Vec<HopDetail>>,
    /// Each step's declared `estimate:`, by step index (as long as the steps).
    pub declared: Vec<Option<Duration>>,
}

/// One hop of a host's release path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopDetail {
    pub from: String,
    pub to: String,
    /// Skippable releases jumped over.
    pub skipped: Vec<String>,
    pub downgrade: bool,
    /// How many of the entry's steps belong to this hop (they follow the
    /// previous hops' steps).
    pub steps: usize,
}

/// [`expand`], keeping each host entry's release path and declared
/// estimates ([`Expansion::hosts`]).
pub fn expand_detailed(plan: &Plan, inventory: &[InventoryHost]) -> Result<Expansion, PlanError> {
    let src = plan.src();
    let mut by_id: HashMap<&str, &InventoryHost> = HashMap::new();
    for h in inventory {
        by_id.entry(h.id.as_str()).or_insert(h);
    }
    // Hosts by label, so that each selector looks only at the hosts having
    // its rarest label instead of the whole inventory (which, once per
    // group, was groups x hosts).
    let mut by_label: HashMap<(&str, &str), Vec<&InventoryHost>> = HashMap::new();
    for h in by_id.values() {
        for (k, v) in &h.labels {
            by_label.entry((k.as_str(), v.as_str())).or_default().push(h);
        }
    }
    let matching = |sel: &BTreeMap<String, String>| -> Vec<&InventoryHost> {
        // `host: ID` (see `selects`) names one host; otherwise the rarest label.
        if let Some(id) = sel.get("host") {
            return by_id.get(id.as_str()).copied().filter(|h| selects(sel, h)).into_iter().collect();
        }
        let rarest = sel
            .iter()
            .map(|(k, v)| by_label.get(&(k.as_str(), v.as_str())).map_or(&[][..], Vec::as_slice))
            .min_by_key(|l| l.len());
        match rarest {
            Some(candidates) => candidates.iter().copied().filter(|h| selects(sel, h)).collect(),
            None => by_id.values().copied().collect(),
        }
    };

    // Membership is decided in declaration order so that "matched by two
    // groups" blames the group written second.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut members: Vec<Vec<&InventoryHost>> = Vec::with_capacity(plan.groups.len());
    for (i, g) in plan.groups.iter().enumerate() {
        let (hosts, field) = match &g.selection {
            Selection::Hook(on) => {
                // A hook's host may also be in a normal group: it gets its own entry.
                let host = match on {
                    HookOn::Host(id) => by_id.get(id.as_str()).copied().ok_or_else(|| {
                        src.err(&g.path.key("on"), format!("unknown host '{id}': not in the inventory"))
                    })?,
                    HookOn::Select(sel) => {
                        matching(sel).into_iter().min_by(|a, b| a.id.cmp(&b.id)).ok_or_else(|| {
                            src.err(
                                &g.path.key("on").key("select"),
                                format!("selector {} matches no host", show_selector(sel)),
                            )
                        })?
                    }
                };
                members.push(vec![host]);
                continue;
            }
            Selection::Labels(sel) => {
                let mut hosts: Vec<&InventoryHost> = matching(sel);
                hosts.sort_by(|a, b| a.id.cmp(&b.id));
                if hosts.is_empty() {
                    return Err(
                        src.err(&g.path.key("select"), format!("selector {} matches no host", show_selector(sel)))
                    );
                }
                (hosts, g.path.key("select"))
            }
            Selection::Hosts(ids) => {
                let mut hosts = Vec::with_capacity(ids.len());
                for (j, id) in ids.iter().enumerate() {
                    match by_id.get(id.as_str()) {
                        Some(h) => hosts.push(*h),
                        None => {
                            return Err(src.err(
                                &g.path.key("hosts").idx(j),
                                format!("unknown host '{id}': not in the inventory"),
                            ));
                        }
                    }
                }
                (hosts, g.path.key("hosts"))
            }
        };
        for h in &hosts {
            if let Some(&other) = owner.get(h.id.as_str()) {
                return Err(src.err(
                    &field,
                    format!(
                        "host {} is in both group '{}' and group '{}'; a host must belong to one group",
                        h.id, plan.groups[other].name, g.name
                    ),
                ));
            }
            owner.insert(&h.id, i);
        }
        if owner.len() > plan.limits.max_hosts {
            return Err(src.err(
                &field,
                format!("the rollout would cover more than the limit of {} hosts", plan.limits.max_hosts),
            ));
        }
        members.push(hosts);
    }

    let mut position = vec![0; plan.groups.len()];
    for (pos, &decl) in plan.order.iter().enumerate() {
        position[decl] = pos;
    }
    let mut groups = Vec::with_capacity(plan.groups.len());
    let mut hosts = Vec::new();
    // The labels of each entry of `hosts`, for the clusters' run-time templates.
    let mut member_labels: Vec<BTreeMap<String, String>> = Vec::new();
    let mut details = Vec::new();
    let mut hook_memo = AncestorWalk::new(plan.groups.len());
    // By position: a backup step runs in this group or in one it waits for.
    let mut backed_up = vec![false; plan.groups.len()];
    for (pos, &decl) in plan.order.iter().enumerate() {
        let g = &plan.groups[decl];
        let (members, canary) = pick_canaries(src, g, &members[decl])?;
        let (members, cluster_names) = match &g.cluster {
            Some(c) => clusters_of(src, g, c, members)?,
            None => (members, Vec::new()),
        };
        let mut indices = Vec::with_capacity(members.len());
        let backup_upstream = g.after.iter().any(|&d| backed_up[position[d]]);
        let mut backup_here = false;
        let from_hooks = match g.release {
            Some(_) => hook_captures_before(&plan.groups, decl, &mut hook_memo),
            None => Vec::new(),
        };
        // Each host's cluster: its name and the range of `members` it spans.
        let mut spans = Vec::with_capacity(cluster_names.len());
        let mut start = 0;
        for (name, n) in &cluster_names {
            spans.push((name.as_str(), start..start + n));
            start += n;
        }
        for (k, h) in members.iter().copied().enumerate() {
            let cluster = spans.iter().find(|(_, r)| r.contains(&k)).map(|(name, r)| ClusterScope {
                name,
                members: members[r.clone()]
                    .iter()
                    .map(|m| Member { id: &m.id, labels: &m.labels, upgraded: false })
                    .collect(),
                me: &h.id,
            });
            let scope = Scope { host: h, version: &plan.version, group: &g.name, cluster };
            // Pre-checks, then the host's release path (catalog steps, each
            // from its own file), then the group's own steps.
            let (pre_checks, own_steps) = g.steps.split_at(g.pre_checks);
            let mut items: Vec<(Src<'_>, StepTemplate)> = pre_checks.iter().map(|t| (src, t.clone())).collect();
            let path = match &g.release {
                Some(name) => {
                    let (path_items, hops) = catalog_steps(src, plan, g, name, h)?;
                    items.extend(path_items);
                    Some(hops)
                }
                None => None,
            };
            for t in &g.steps {
                let path_items = &items[g.pre_checks..];
                if let Some((_, c)) = path_items.iter().find(|(_, c)| c.spec.name == t.spec.name) {
                    return Err(src.err(
                        &t.path.key("name"),
                        format!(
                            "step name '{}' is also a step of the release path of host {} ({})",
                            t.spec.name, h.id, c.path
                        ),
                    ));
                }
            }
            items.extend(own_steps.iter().map(|t| (src, t.clone())));
            if g.release.is_some() {
                check_path_captures(&items, &from_hooks, &h.id, &g.name)?;
            }
            details.push(HostDetail { path, declared: items.iter().map(|(_, t)| t.estimate).collect() });
            let mut steps = Vec::with_capacity(items.len());
            let mut undo = Vec::with_capacity(items.len());
            for (tsrc, t) in &items {
                let step = render_step(*tsrc, t, &scope)?;
                undo.push(undo_step(*tsrc, t, &step, &scope)?);
                steps.push(step);
            }
            if undo.iter().all(Option::is_none) {
                undo.clear();
            }
            if plan.require_backup && !backup_upstream {
                check_backup_before(&items, &h.id, &g.name)?;
            }
            backup_here |= steps.iter().any(|s| matches!(s.kind, StepKind::Backup(_)));
            let migrations: Vec<usize> =
                items.iter().enumerate().filter(|(_, (_, t))| t.migration.is_some()).map(|(k, _)| k).collect();
            let rollback_steps =
                g.rollback_steps.iter().map(|t| render_step(src, t, &scope)).collect::<Result<Vec<_>, _>>()?;
            indices.push(hosts.len());
            let leader_check = match g.cluster.as_ref().and_then(|c| c.leader.as_ref()) {
                Some(t) => Some(render_step(src, t, &scope)?),
                None => None,
            };
            let switchover = g
                .cluster
                .iter()
                .flat_map(|c| c.switchover.iter())
                .map(|t| render_step(src, t, &scope))
                .collect::<Result<Vec<_>, _>>()?;
            let mut switchover_captures: Vec<Option<CaptureSpec>> =
                g.cluster.iter().flat_map(|c| c.switchover.iter()).map(|t| t.capture.clone()).collect();
            if switchover_captures.iter().all(Option::is_none) {
                switchover_captures.clear();
            }
            let mut captures: Vec<Option<CaptureSpec>> = items.iter().map(|(_, t)| t.capture.clone()).collect();
            if captures.iter().all(Option::is_none) {
                captures.clear();
            }
            let mut installs = Vec::with_capacity(items.len());
            for (tsrc, t) in &items {
                installs.push(match &t.installs {
                    None => None,
                    Some((component, version)) => {
                        let ip = t.path.key("installs");
                        let Some(component) = component.clone().or_else(|| plan.component.clone()) else {
                            return Err(tsrc.err(&ip, "needs the plan's `component`: the version is that component's"));
                        };
                        let version = render(version, |var| lookup(var, &scope))
                            .map_err(|m| tsrc.err(&ip, format!("{m} (group '{}')", g.name)))?;
                        Some((component, version))
                    }
                });
            }
            if installs.iter().all(Option::is_none) {
                installs.clear();
            }
            member_labels.push(h.labels.clone());
            hosts.push(HostPlan {
                host: h.id.clone(),
                key: g.hook.then(|| format!("{}@{}", h.id, g.name)),
                group: pos,
                initial_version: plan.component.as_ref().and_then(|c| h.installed.get(c).cloned()),
                steps,
                undo,
                rollback_steps,
                captures,
                migrations,
                pre_checks: g.pre_checks,
                leader_check,
                switchover,
                switchover_captures,
                leader_answers: g.cluster.as_ref().and_then(|c| c.answers.clone()),
                installs,
            });
        }
        backed_up[pos] = backup_upstream || backup_here;
        let mut after: Vec<usize> = g.after.iter().map(|&d| position[d]).collect();
        after.sort_unstable();
        after.dedup();
        // A cluster group's window is per cluster: a share is of the largest.
        let window_of = match &g.cluster {
            Some(_) => cluster_names.iter().map(|(_, n)| *n).max().unwrap_or(0),
            None => indices.len(),
        };
        let cluster_spec = g.cluster.as_ref().map(|c| {
            let mut start = 0;
            let clusters = cluster_names
                .iter()
                .map(|(name, n)| {
                    let hosts = indices[start..start + n].to_vec();
                    start += n;
                    let labels = hosts.iter().map(|&i| member_labels[i].clone()).collect();
                    ClusterMembers { name: name.clone(), hosts, labels }
                })
                .collect();
            ClusterSpec { label: c.by.clone(), clusters, same_version: c.same_version }
        });
        let sizes = g.strategy.resolve(window_of);
        groups.push(GroupSpec {
            name: g.name.clone(),
            after,
            strategy: g.strategy.strategy(&sizes, cluster_spec),
            max_failures: sizes.max_failures,
            soak: sizes.soak,
            hosts: indices,
            canary,
            on_failure: g.on_failure,
            hook: g.hook,
        });
    }

    // The rollout-wide budget counts the hosts being upgraded, not hook runs.
    let total = groups.iter().filter(|g| !g.hook).map(|g| g.hosts.len()).sum::<usize>();
    let spec = RolloutSpec {
        plan_name: plan.name.clone(),
        target_version: plan.version.clone(),
        component: plan.component.clone(),
        groups,
        hosts,
        host_lost_timeout: plan.host_lost_timeout,
        max_failures: plan.max_failures.map(|a| match a {
            Amount::Count(n) => n,
            Amount::Percent(p) => total.saturating_mul(p as usize) / 100,
        }),
        on_failure: plan.on_failure,
        require_backup: plan.require_backup,
        rollback_of: None,
        windows: None,
    };
    let defs: Vec<Option<&WindowsDef>> = plan.order.iter().map(|&d| plan.groups[d].windows.as_ref()).collect();
    let inventory_by_id: BTreeMap<&str, &InventoryHost> = by_id.iter().map(|(k, v)| (*k, *v)).collect();
    let windows = expand_windows(src, &spec, &defs, &inventory_by_id)?;
    let mut spec = spec;
    spec.windows = windows;
    let mut expansion = Expansion { spec, hosts: details };
    crate::estimate::fill_window_estimates(&mut expansion, &crate::estimate::Measured::new());
    Ok(expansion)
}

/// With `require_backup: true`, for a host entry whose group waits for no
/// backup: every migration step needs a backup step before it in the entry.
fn check_backup_before(items: &[(Src<'_>, StepTemplate)], host: &str, group: &str) -> Result<(), PlanError> {
    let mut backed = false;
    for (tsrc, t) in items {
        if let Some(field) = &t.migration
            && !backed
        {
            return Err(tsrc.err(
                field,
                format!(
                    "step '{}' is a migration and the plan sets require_backup, but no backup runs before it on host {host} (group '{group}'): add a backup step before it, or in a group or hook that group runs after",
                    t.spec.name
                ),
            ));
        }
        backed |= matches!(t.spec.kind, StepKind::Backup(_));
    }
    Ok(())
}

/// A cluster group's hosts in order, and each cluster's name and size.
type ClusterOrder<'h> = (Vec<&'h InventoryHost>, Vec<(String, usize)>);

/// A `type: cluster` group's hosts ordered cluster by cluster (clusters by
/// name, members by id), with each cluster's name and size. A host without
/// the label is an error naming it.
fn clusters_of<'h>(
    src: Src<'_>,
    g: &PlanGroup,
    c: &ClusterDef,
    members: Vec<&'h InventoryHost>,
) -> Result<ClusterOrder<'h>, PlanError> {
    let mut by_cluster: BTreeMap<&str, Vec<&'h InventoryHost>> = BTreeMap::new();
    for h in members {
        let Some(name) = h.labels.get(&c.by) else {
            return Err(src.err(
                &c.path.key("by"),
                format!(
                    "host {} of group '{}' has no label '{}', which names its cluster (type: cluster, by: {})",
                    h.id, g.name, c.by, c.by
                ),
            ));
        };
        by_cluster.entry(name.as_str()).or_default().push(h);
    }
    let mut ordered = Vec::new();
    let mut names = Vec::new();
    for (name, mut hosts) in by_cluster {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        names.push((name.to_string(), hosts.len()));
        ordered.extend(hosts);
    }
    Ok((ordered, names))
}

/// The group's hosts with its canaries first, and its canary phase. A count
/// or percentage takes the first hosts (at least one, at most all); a
/// selector moves the hosts it matches to the front, keeping their order.
fn pick_canaries<'h>(
    src: Src<'_>,
    g: &PlanGroup,
    members: &[&'h InventoryHost],
) -> Result<(Vec<&'h InventoryHost>, Option<CanarySpec>), PlanError> {
    let Some(def) = &g.canary else { return Ok((members.to_vec(), None)) };
    let n = members.len();
    let (ordered, hosts) = match &def.pick {
        CanaryPick::Count(c) => (members.to_vec(), (*c).min(n)),
        CanaryPick::Percent(p) => (members.to_vec(), (n.saturating_mul(*p as usize) / 100).max(1).min(n)),
        CanaryPick::Select(sel) => {
            let (mut first, rest): (Vec<_>, Vec<_>) = members.iter().partition(|h| selects(sel, h));
            if first.is_empty() {
                return Err(src.err(
                    &g.path.key("canary").key("select"),
                    format!("canary selector {} matches no host of group '{}'", show_selector(sel), g.name),
                ));
            }
            let k = first.len();
            first.extend(rest);
            (first, k)
        }
    };
    Ok((ordered, Some(CanarySpec { hosts, promote: def.promote })))
}

/// The undo of a rendered step: its explicit `rollback:` command, else for
/// an archive the switch back to the release the host had before.
fn undo_step(
    src: Src<'_>,
    t: &StepTemplate,
    step: &StepSpec,
    scope: &Scope<'_>,
) -> Result<Option<StepSpec>, PlanError> {
    let (host, group) = (scope.host, scope.group);
    let kind = match (&t.undo, &step.kind) {
        (Some(exec), _) => {
            let mut exec = exec.clone();
            let rp = t.path.key("rollback");
            for (rel, s) in exec_strings_mut(rp, &mut exec) {
                *s =
                    render(s, |var| lookup(var, scope)).map_err(|m| src.err(&rel, format!("{m} (group '{group}')")))?;
            }
            super::template::check_run_as(src, &t.path.key("rollback"), &exec, &host.id, group)?;
            StepKind::Exec(exec)
        }
        (None, kind) => match kind.implicit_undo(&host.installed) {
            Some(undo) => undo,
            None => return Ok(None),
        },
    };
    Ok(Some(StepSpec { name: undo_name(&step.name), timeout: step.timeout, kind, rerun_safe: false }))
}

/// Every `key: value` must match; the key `host` matches the host id.
fn selects(sel: &BTreeMap<String, String>, host: &InventoryHost) -> bool {
    sel.iter().all(|(k, v)| if k == "host" { &host.id == v } else { host.labels.get(k) == Some(v) })
}

fn show_selector(sel: &BTreeMap<String, String>) -> String {
    if sel.is_empty() {
        return "{}".to_string();
    }
    sel.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

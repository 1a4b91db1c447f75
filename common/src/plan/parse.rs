//! The entry of static validation: [`parse_plan`] and its variants read a
//! plan's text into a [`Plan`], group by group, before any host is involved.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::catalog::Catalog;
use crate::dag;
use crate::limits::{self, PlanLimits};

use super::captures::check_captures;
use super::catalogs::{PlanCatalog, plan_catalog};
use super::checks::check;
use super::duration::positive_duration;
use super::errors::{FieldPath, PlanError, Src, required};
use super::hooks::with_hooks;
use super::raw::{self, RawCheck, RawGroup, RawHooks, RawPlan, RawStep, RawStrategy};
use super::steps::{name_rollback_steps, name_steps, step, templates};
use super::strategies::{StrategyDef, canary, cluster_def, parse_amount, strategy};
use super::validated::{Plan, PlanGroup, Selection};
use super::vars::Scope;
use super::windows::windows;

const DEFAULT_HOST_LOST_TIMEOUT: Duration = Duration::from_secs(60);

/// Parse and statically validate a plan (syntax, unknown fields, duplicate
/// groups, unknown `after:` groups, cycles, bad percentages and durations).
/// Returns the first error found.
pub fn parse_plan(file: &str, source: &str) -> Result<Plan, PlanError> {
    parse_plan_with_catalogs(file, source, &BTreeMap::new())
}

/// [`parse_plan`] for a plan whose groups may use release catalogs
/// (`release: { catalog: NAME }`, NAME a key of `catalogs`). Every step of
/// a catalog the plan uses is parsed here as a plan step or check (errors
/// name the catalog's file and the step's line), and the plan's `version`
/// must be a release of it.
pub fn parse_plan_with_catalogs(
    file: &str,
    source: &str,
    catalogs: &BTreeMap<String, Catalog>,
) -> Result<Plan, PlanError> {
    parse_plan_with_limits(file, source, catalogs, &PlanLimits::default())
}

/// [`parse_plan_with_catalogs`] under `limits` (see [`crate::limits`]): the
/// text's size and nesting are checked before it is parsed, the number of
/// groups and of steps per group before they are validated, and `limits`
/// stays with the plan for [`expand`](super::expand) (hosts).
pub fn parse_plan_with_limits(
    file: &str,
    source: &str,
    catalogs: &BTreeMap<String, Catalog>,
    limits: &PlanLimits,
) -> Result<Plan, PlanError> {
    let source = limits::strip_bom(source);
    limits::check_text(file, source, limits)?;
    let src = Src { file, source };
    let mut used_catalogs: BTreeMap<String, PlanCatalog> = BTreeMap::new();
    let raw: RawPlan = raw::read(src)?;
    check_counts(src, &raw, limits)?;
    let root = FieldPath::default();

    let name = required(src, raw.name, &root.key("name"))?;
    let version = required(src, raw.version, &root.key("version"))?;
    let component = match raw.component {
        Some(c) if c.trim().is_empty() => return Err(src.err(&root.key("component"), "must not be empty")),
        c => c,
    };
    let host_lost_timeout = match &raw.host_lost_timeout {
        Some(s) => positive_duration(src, s, &root.key("host_lost_timeout"))?,
        None => DEFAULT_HOST_LOST_TIMEOUT,
    };
    let max_failures = match &raw.max_failures {
        Some(s) => Some(parse_amount(s, 0).map_err(|m| src.err(&root.key("max_failures"), m))?),
        None => None,
    };
    let on_failure = raw.on_failure.unwrap_or_default();
    let plan_scope = Scope::default().child(src, raw.vars.as_ref(), raw.env.as_ref(), &root, limits)?;

    let defaults = raw.defaults.unwrap_or_default();
    let dpath = root.key("defaults");
    let default_strategy = match &defaults.strategy {
        Some(s) => strategy(src, s, &dpath.key("strategy"))?,
        None => StrategyDef::default(),
    };
    let default_steps = templates(src, defaults.steps.as_deref(), &dpath.key("steps"), step)?;
    let default_checks = templates(src, defaults.checks.as_deref(), &dpath.key("checks"), check)?;
    let default_pre_checks = templates(src, defaults.pre_checks.as_deref(), &dpath.key("pre_checks"), check)?;
    let default_rollback = templates(src, defaults.rollback_steps.as_deref(), &dpath.key("rollback_steps"), step)?;

    let plan_windows = match &raw.windows {
        Some(w) => windows(src, w, &root.key("windows"))?,
        None => None,
    };
    let gpath = root.key("groups");
    let raw_groups = raw.groups.ok_or_else(|| src.err(&gpath, "missing required field 'groups'"))?;
    if raw_groups.is_empty() {
        return Err(src.err(&gpath, "a plan needs at least one group"));
    }

    // Names first, so that `after:` may refer to a group declared later.
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::with_capacity(raw_groups.len());
    for (i, g) in raw_groups.iter().enumerate() {
        let p = gpath.idx(i).key("name");
        let name = required(src, g.name.clone(), &p)?;
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
            return Err(
                src.err(&p, format!("invalid group name '{name}': {bad:?} is not allowed (use A-Z a-z 0-9 _ . -)"))
            );
        }
        if let Some(first) = index_of.get(&name) {
            return Err(src.err(&p, format!("duplicate group name '{name}' (already used by groups[{first}])")));
        }
        index_of.insert(name.clone(), i);
        names.push(name);
    }

    let mut groups = Vec::with_capacity(raw_groups.len());
    let mut scopes = Vec::with_capacity(raw_groups.len());
    for (i, (g, name)) in raw_groups.iter().zip(names).enumerate() {
        let p = gpath.idx(i);
        // Most groups add nothing: they share the plan's scope rather than copy it.
        let own_scope = match (&g.vars, &g.env) {
            (None, None) => None,
            (vars, env) => Some(plan_scope.child(src, vars.as_ref(), env.as_ref(), &p, limits)?),
        };
        let scope = own_scope.as_ref().unwrap_or(&plan_scope);
        let mut after = Vec::new();
        for dep in g.after.iter().flatten() {
            match index_of.get(dep) {
                Some(&d) => after.push(d),
                None => return Err(src.err(&p.key("after"), format!("unknown group '{dep}'"))),
            }
        }
        let selection = selection(src, g, &p)?;
        let strategy = match &g.strategy {
            Some(s) => strategy(src, s, &p.key("strategy"))?,
            None => default_strategy.clone(),
        };
        let cluster = match (&g.strategy, &defaults.strategy) {
            (Some(s), _) => cluster_def(src, s, &p.key("strategy"))?,
            (None, Some(s)) => cluster_def(src, s, &dpath.key("strategy"))?,
            (None, None) => None,
        };
        if let (Some(_), Some(_)) = (&cluster, &g.canary) {
            return Err(src.err(
                &p.key("canary"),
                "not allowed with type: cluster, which picks its own order (followers first, the leader last)",
            ));
        }
        let own_steps = templates(src, g.steps.as_deref(), &p.key("steps"), step)?;
        let own_checks = templates(src, g.checks.as_deref(), &p.key("checks"), check)?;
        let steps = own_steps.or_else(|| default_steps.clone()).unwrap_or_default();
        let checks = own_checks.or_else(|| default_checks.clone()).unwrap_or_default();
        let own_pre_checks = templates(src, g.pre_checks.as_deref(), &p.key("pre_checks"), check)?;
        let pre_checks = own_pre_checks.or_else(|| default_pre_checks.clone()).unwrap_or_default();
        let pre_check_count = pre_checks.len();
        let steps = name_steps(src, pre_checks.into_iter().chain(steps).chain(checks).collect())?;
        let release = match &g.release {
            Some(r) => {
                let rp = p.key("release").key("catalog");
                let cname = required(src, r.catalog.clone(), &rp)?;
                if !used_catalogs.contains_key(&cname) {
                    let Some(catalog) = catalogs.get(&cname) else {
                        let known: Vec<&str> = catalogs.keys().map(String::as_str).collect();
                        let known = if known.is_empty() { "none given".to_string() } else { known.join(", ") };
                        return Err(src.err(&rp, format!("unknown catalog '{cname}' (catalogs given: {known})")));
                    };
                    let parsed = plan_catalog(src, catalog, &version, &rp, &cname)?;
                    used_catalogs.insert(cname.clone(), parsed);
                }
                Some(cname)
            }
            None => None,
        };
        if steps.is_empty() && release.is_none() {
            return Err(
                src.err(&p.key("name"), format!("group '{name}' has no steps or checks (nor defaults to inherit)"))
            );
        }
        let own_rollback = templates(src, g.rollback_steps.as_deref(), &p.key("rollback_steps"), step)?;
        let rollback_steps =
            name_rollback_steps(src, own_rollback.or_else(|| default_rollback.clone()).unwrap_or_default(), &steps)?;
        let canary = match &g.canary {
            Some(c) => Some(canary(src, c, &p.key("canary"))?),
            None => None,
        };
        let on_failure = g.on_failure.unwrap_or(on_failure);
        let group_windows = match &g.windows {
            Some(w) => windows(src, w, &p.key("windows"))?,
            None => plan_windows.clone(),
        };
        if let (Some(_), Some(_)) = (&cluster, &group_windows) {
            let at = if g.windows.is_some() { p.key("windows") } else { p.key("strategy") };
            return Err(src.err(
                &at,
                "maintenance windows are not supported with type: cluster yet (give the group `windows: { anytime: true }`)",
            ));
        }
        let mut group = PlanGroup {
            name,
            path: p,
            after,
            selection,
            strategy,
            canary,
            on_failure,
            steps,
            pre_checks: pre_check_count,
            rollback_steps,
            hook: false,
            release,
            cluster,
            windows: group_windows,
        };
        // Before captures are checked: a var's value may use a captured value.
        scope.apply_group(src, &mut group)?;
        groups.push(group);
        scopes.push(own_scope);
    }

    let after: Vec<Vec<usize>> = groups.iter().map(|g| g.after.clone()).collect();
    dag::topo_order(&after).map_err(|cycle| {
        let mut names: Vec<&str> = cycle.iter().map(|&i| groups[i].name.as_str()).collect();
        names.push(names[0]);
        src.err(&groups[cycle[0]].path.key("after"), format!("cycle: {}", names.join(" -> ")))
    })?;

    let group_scopes: Vec<&Scope> = scopes.iter().map(|s| s.as_ref().unwrap_or(&plan_scope)).collect();
    let group_hooks: Vec<Option<&RawHooks>> = raw_groups.iter().map(|g| g.hooks.as_ref()).collect();
    let groups = with_hooks(src, groups, raw.hooks.as_ref(), &group_hooks, &plan_scope, &group_scopes)?;
    let after: Vec<Vec<usize>> = groups.iter().map(|g| g.after.clone()).collect();
    let order = dag::topo_order(&after).map_err(|cycle| {
        // Hooks only add edges around existing ones, so this cannot happen.
        src.err(&groups[cycle[0]].path, "cycle through hooks")
    })?;
    check_captures(src, &groups, &used_catalogs)?;

    Ok(Plan {
        file: file.to_string(),
        source: source.to_string(),
        name,
        version,
        component,
        host_lost_timeout,
        max_failures,
        on_failure,
        require_backup: raw.require_backup.unwrap_or(false),
        groups,
        order,
        catalogs: used_catalogs,
        limits: *limits,
    })
}

/// Refuse more groups than `limits.max_groups`, a group, hook or defaults
/// block with more steps than `limits.max_steps`, or a group listing more
/// hosts than `limits.max_hosts`, before any of them is validated.
fn check_counts(src: Src<'_>, raw: &RawPlan, limits: &PlanLimits) -> Result<(), PlanError> {
    let groups = raw.groups.as_ref().map_or(0, Vec::len);
    if groups > limits.max_groups {
        let p = FieldPath::default().key("groups");
        return Err(src.err(&p, format!("{groups} groups, more than the limit of {}", limits.max_groups)));
    }
    let too_many = |p: FieldPath, n: usize, what: &str, limit: usize| -> Result<(), PlanError> {
        if n > limit { Err(src.err(&p, format!("{n} {what}, more than the limit of {limit}"))) } else { Ok(()) }
    };
    let steps = |p: &FieldPath, lists: [(&str, usize); 3]| -> Result<(), PlanError> {
        let total: usize = lists.iter().map(|(_, n)| n).sum();
        let (first, _) = lists.iter().find(|(_, n)| *n > 0).copied().unwrap_or(("steps", 0));
        too_many(p.key(first), total, "steps and checks", limits.max_steps)
    };
    let hooks = |p: &FieldPath, h: Option<&RawHooks>| -> Result<(), PlanError> {
        for (name, hook) in [("before", h.and_then(|h| h.before.as_ref())), ("after", h.and_then(|h| h.after.as_ref()))]
        {
            if let Some(hook) = hook {
                let (st, ch) = (hook.steps.as_ref().map_or(0, Vec::len), hook.checks.as_ref().map_or(0, Vec::len));
                steps(&p.key("hooks").key(name), [("steps", st), ("checks", ch), ("", 0)])?;
            }
        }
        Ok(())
    };
    let root = FieldPath::default();
    hooks(&root, raw.hooks.as_ref())?;
    let len = |l: &Option<Vec<RawStep>>| l.as_ref().map_or(0, Vec::len);
    let checks = |l: &Option<Vec<RawCheck>>| l.as_ref().map_or(0, Vec::len);
    let strategy = |p: &FieldPath, s: Option<&RawStrategy>| -> Result<(), PlanError> {
        let n = s.and_then(|s| s.switchover.as_ref()).map_or(0, Vec::len);
        too_many(p.key("strategy").key("switchover"), n, "switchover steps", limits.max_steps)
    };
    if let Some(d) = &raw.defaults {
        let dp = root.key("defaults");
        steps(&dp, [("pre_checks", checks(&d.pre_checks)), ("steps", len(&d.steps)), ("checks", checks(&d.checks))])?;
        too_many(dp.key("rollback_steps"), len(&d.rollback_steps), "rollback steps", limits.max_steps)?;
        strategy(&dp, d.strategy.as_ref())?;
    }
    for (i, g) in raw.groups.iter().flatten().enumerate() {
        let gp = root.key("groups").idx(i);
        steps(&gp, [("pre_checks", checks(&g.pre_checks)), ("steps", len(&g.steps)), ("checks", checks(&g.checks))])?;
        too_many(gp.key("rollback_steps"), len(&g.rollback_steps), "rollback steps", limits.max_steps)?;
        too_many(gp.key("hosts"), g.hosts.as_ref().map_or(0, Vec::len), "hosts", limits.max_hosts)?;
        strategy(&gp, g.strategy.as_ref())?;
        hooks(&gp, g.hooks.as_ref())?;
    }
    Ok(())
}

pub(super) fn selection(src: Src<'_>, g: &RawGroup, p: &FieldPath) -> Result<Selection, PlanError> {
    match (&g.select, &g.hosts) {
        (Some(_), Some(_)) => Err(src.err(&p.key("hosts"), "use either 'select' or 'hosts', not both")),
        (None, None) => Err(src.err(&p.key("name"), "a group needs 'select' (a label selector) or 'hosts' (host ids)")),
        (Some(sel), None) => {
            if sel.keys().any(|k| k.trim().is_empty()) {
                return Err(src.err(&p.key("select"), "selector keys must not be empty"));
            }
            Ok(Selection::Labels(sel.clone()))
        }
        (None, Some(hosts)) => {
            let hp = p.key("hosts");
            if hosts.is_empty() {
                return Err(src.err(&hp, "must list at least one host"));
            }
            for (j, h) in hosts.iter().enumerate() {
                if h.trim().is_empty() {
                    return Err(src.err(&hp.idx(j), "host id must not be empty"));
                }
                if hosts[..j].contains(h) {
                    return Err(src.err(&hp.idx(j), format!("host '{h}' is listed twice")));
                }
            }
            Ok(Selection::Hosts(hosts.clone()))
        }
    }
}

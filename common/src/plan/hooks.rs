//! Hooks (see "Hooks" in [`crate::plan`]): each becomes a one-host group,
//! wired into the group DAG around the groups it belongs to.

use std::collections::{BTreeMap, HashMap};

use crate::model::OnFailure;

use super::checks::check;
use super::errors::{FieldPath, PlanError, Src};
use super::raw::{RawHook, RawHooks};
use super::steps::{name_steps, step, templates};
use super::strategies::StrategyDef;
use super::validated::{HookOn, PlanGroup, Selection};
use super::vars::Scope;

/// Add the hook groups to `groups` (user groups, `after` as declaration
/// indices) and wire them into the DAG (see "Hooks" in [`crate::plan`]).
/// The result is in display order: `before`, then each group preceded by
/// its `.before` and followed by its `.after`, then `after`; every `after`
/// list is in the new indices.
pub(super) fn with_hooks(
    src: Src<'_>,
    groups: Vec<PlanGroup>,
    plan_hooks: Option<&RawHooks>,
    group_hooks: &[Option<&RawHooks>],
    plan_scope: &Scope,
    group_scopes: &[&Scope],
) -> Result<Vec<PlanGroup>, PlanError> {
    let n = groups.len();
    let names: HashMap<String, usize> = groups.iter().enumerate().map(|(i, g)| (g.name.clone(), i)).collect();
    let hp = FieldPath::default().key("hooks");
    // A hook sees the vars and env of where it is written (the plan, or its group).
    let make = |raw: &RawHook, p: FieldPath, name: String, scope: &Scope| {
        let mut g = hook_group(src, raw, p, name, &names)?;
        scope.apply_group(src, &mut g)?;
        Ok::<_, PlanError>(g)
    };
    let plan_before =
        plan_hooks.and_then(|h| h.before.as_ref()).map(|h| make(h, hp.key("before"), "before".into(), plan_scope));
    let plan_after =
        plan_hooks.and_then(|h| h.after.as_ref()).map(|h| make(h, hp.key("after"), "after".into(), plan_scope));
    let (plan_before, plan_after) = (plan_before.transpose()?, plan_after.transpose()?);

    let mut out: Vec<PlanGroup> = Vec::with_capacity(n + 2);
    let pb = plan_before.map(|g| {
        out.push(g);
        out.len() - 1
    });
    let mut index = vec![0; n];
    let (mut gb, mut ga) = (vec![None; n], vec![None; n]);
    let mut user_after = Vec::with_capacity(n);
    for (i, g) in groups.into_iter().enumerate() {
        let hooks = group_hooks.get(i).copied().flatten();
        let p = g.path.key("hooks");
        if let Some(h) = hooks.and_then(|h| h.before.as_ref()) {
            out.push(make(h, p.key("before"), format!("{}.before", g.name), group_scopes[i])?);
            gb[i] = Some(out.len() - 1);
        }
        let after_hook = hooks
            .and_then(|h| h.after.as_ref())
            .map(|h| make(h, p.key("after"), format!("{}.after", g.name), group_scopes[i]));
        let after_hook = after_hook.transpose()?;
        user_after.push(g.after.clone());
        out.push(g);
        index[i] = out.len() - 1;
        if let Some(h) = after_hook {
            out.push(h);
            ga[i] = Some(out.len() - 1);
        }
    }
    for (i, deps) in user_after.into_iter().enumerate() {
        // Waiting for a group means waiting for its `after` hook, if any.
        let deps: Vec<usize> = deps.iter().map(|&d| ga[d].unwrap_or(index[d])).collect();
        match gb[i] {
            Some(b) => {
                out[b].after = deps;
                out[index[i]].after = vec![b];
            }
            None => out[index[i]].after = deps,
        }
        if let Some(a) = ga[i] {
            out[a].after = vec![index[i]];
        }
    }
    if let Some(pb) = pb {
        for (k, g) in out.iter_mut().enumerate() {
            if k != pb && g.after.is_empty() {
                g.after = vec![pb];
            }
        }
    }
    if let Some(g) = plan_after {
        let mut has_dependant = vec![false; out.len()];
        for g in &out {
            for &d in &g.after {
                has_dependant[d] = true;
            }
        }
        let mut g = g;
        g.after = (0..out.len()).filter(|&k| !has_dependant[k]).collect();
        out.push(g);
    }
    Ok(out)
}

/// A hook as a one-host group (its DAG edges are set by [`with_hooks`]).
fn hook_group(
    src: Src<'_>,
    raw: &RawHook,
    p: FieldPath,
    name: String,
    names: &HashMap<String, usize>,
) -> Result<PlanGroup, PlanError> {
    if let Some(&clash) = names.get(&name) {
        return Err(
            src.err(&p, format!("this hook runs as group '{name}', which is already the name of groups[{clash}]"))
        );
    }
    let op = p.key("on");
    let shape = || src.err(&op, "expected a host id or { select: { LABEL: VALUE } }");
    let on = match &raw.on {
        None => return Err(src.err(&op, "missing required field 'on' (a host id or { select: { LABEL: VALUE } })")),
        Some(serde_norway::Value::String(id)) if !id.trim().is_empty() => HookOn::Host(id.clone()),
        Some(serde_norway::Value::Mapping(m)) => {
            let mut sel = None;
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("select"), serde_norway::Value::Mapping(labels)) => {
                        let mut out = BTreeMap::new();
                        for (lk, lv) in labels {
                            let value = match lv {
                                serde_norway::Value::String(s) => s.clone(),
                                serde_norway::Value::Number(n) => n.to_string(),
                                serde_norway::Value::Bool(b) => b.to_string(),
                                _ => return Err(src.err(&op.key("select"), "label values must be scalars")),
                            };
                            let key = lk
                                .as_str()
                                .filter(|k| !k.trim().is_empty())
                                .ok_or_else(|| src.err(&op.key("select"), "selector keys must be non-empty strings"))?;
                            out.insert(key.to_string(), value);
                        }
                        sel = Some(out);
                    }
                    (Some("select"), _) => return Err(src.err(&op.key("select"), "expected a mapping of labels")),
                    (Some(other), _) => return Err(src.err(&op, format!("unknown field `{other}`, expected `select`"))),
                    (None, _) => return Err(shape()),
                }
            }
            HookOn::Select(sel.ok_or_else(shape)?)
        }
        Some(_) => return Err(shape()),
    };
    let steps = templates(src, raw.steps.as_deref(), &p.key("steps"), step)?.unwrap_or_default();
    let checks = templates(src, raw.checks.as_deref(), &p.key("checks"), check)?.unwrap_or_default();
    let steps = name_steps(src, steps.into_iter().chain(checks).collect())?;
    if steps.is_empty() {
        return Err(src.err(&p, "a hook needs at least one step or check"));
    }
    Ok(PlanGroup {
        name,
        path: p,
        after: Vec::new(),
        selection: Selection::Hook(on),
        strategy: StrategyDef::default(),
        canary: None,
        on_failure: OnFailure::Halt,
        steps,
        pre_checks: 0,
        rollback_steps: Vec::new(),
        hook: true,
        release: None,
        cluster: None,
        windows: None,
    })
}

//! Planning a rollback rollout from a finished one (`convoy rollback` after the end): the
//! undo of what it upgraded, as a new [`RolloutSpec`].

use crate::engine::Engine;
use crate::model::{GroupSpec, HostPlan, OnFailure, RolloutSpec, Strategy};
use std::collections::BTreeMap;

/// A new rollout that undoes what this one upgraded, for `convoy rollback`
/// on a rollout that has already ended (a running one rolls back in
/// place). Every host entry that ran steps and was not rolled back gets
/// its rollback plan — the undos of its succeeded steps, last first, then
/// its group's rollback steps — with captured values filled in; groups go
/// in reverse DAG order with their own windows and budgets, and halt on
/// failure. Hook groups are not undone. `Err` names why there is nothing
/// to do, or the host whose rollback needs a value never captured.
pub fn undo_spec(engine: &Engine) -> Result<RolloutSpec, String> {
    if !engine.state.is_terminal() {
        return Err(format!("rollout {} is {}: it rolls back in place", engine.rollout_id, engine.state.as_str()));
    }
    let mut plans: Vec<Vec<HostPlan>> = vec![Vec::new(); engine.spec.groups.len()];
    for (i, h) in engine.hosts.iter().enumerate() {
        let plan = &engine.spec.hosts[i];
        if engine.spec.groups[h.group].hook || h.rollback_considered || h.steps_ok <= plan.pre_checks {
            continue;
        }
        let steps = plan
            .rollback_plan(h.steps_ok)
            .iter()
            .map(|st| engine.rendered(i, st).map_err(|e| format!("host {}: {e}", plan.host)))
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            continue;
        }
        plans[h.group].push(HostPlan {
            host: plan.host.clone(),
            key: plan.key.clone(),
            group: h.group,
            initial_version: h.installed.clone().or_else(|| plan.initial_version.clone()),
            steps,
            ..HostPlan::default()
        });
    }
    // Groups with something to undo, newest first (reverse topological order).
    let kept: Vec<usize> = (0..engine.spec.groups.len()).rev().filter(|&g| !plans[g].is_empty()).collect();
    if kept.is_empty() {
        return Err(format!("rollout {}: nothing was upgraded, nothing to roll back", engine.rollout_id));
    }
    let new_index: BTreeMap<usize, usize> = kept.iter().enumerate().map(|(n, &g)| (g, n)).collect();
    let mut spec = RolloutSpec {
        plan_name: format!("rollback of {} ({})", engine.rollout_id, engine.spec.plan_name),
        target_version: "previous".to_string(),
        component: engine.spec.component.clone(),
        groups: Vec::new(),
        hosts: Vec::new(),
        host_lost_timeout: engine.spec.host_lost_timeout,
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: Some(engine.rollout_id.clone()),
        windows: None,
    };
    for &g in &kept {
        let old = &engine.spec.groups[g];
        // Undo a group only after every group that depended on it is undone.
        let after = kept.iter().filter(|&&d| engine.spec.groups[d].after.contains(&g)).map(|d| new_index[d]).collect();
        let n = new_index[&g];
        let mut hosts = Vec::new();
        for mut hp in std::mem::take(&mut plans[g]).into_iter().rev() {
            hp.group = n;
            hosts.push(spec.hosts.len());
            spec.hosts.push(hp);
        }
        spec.groups.push(GroupSpec {
            name: old.name.clone(),
            after,
            // Clusters are not undone in leader order: their hosts roll
            // back through the group's steady window.
            strategy: Strategy::rolling(old.steady_window()),
            max_failures: old.max_failures,
            soak: old.soak,
            hosts,
            canary: None,
            on_failure: OnFailure::Halt,
            hook: false,
        });
    }
    Ok(spec)
}

//! Where `{{captured.NAME}}` may be used (see "Captured values" in
//! [`crate::plan`]): capture names and references checked at parse time
//! over groups, hooks and catalogs, and per host at expansion over a
//! host's release path.

use std::collections::{BTreeMap, HashMap};

use crate::capture;
use crate::step_strings::{exec_strings_mut, kind_strings_mut, step_strings_mut};

use super::catalogs::PlanCatalog;
use super::errors::{FieldPath, PlanError, Src};
use super::locate;
use super::strategies::ClusterDef;
use super::validated::{PlanGroup, StepTemplate};

/// Check capture names and every `{{captured.NAME}}` reference (see
/// "Captured values" in [`crate::plan`]). `groups` have their final `after`;
/// `catalogs` are the release catalogs the groups use, whose steps are
/// checked in catalog order (see "Captured values" in [`crate::catalog`]).
pub(super) fn check_captures(
    src: Src<'_>,
    groups: &[PlanGroup],
    catalogs: &BTreeMap<String, PlanCatalog>,
) -> Result<(), PlanError> {
    // Hook captures are rollout-wide, so their names must be unique.
    let mut by_hooks: HashMap<&str, &StepTemplate> = HashMap::new();
    for g in groups.iter().filter(|g| g.hook) {
        for t in &g.steps {
            let Some(c) = &t.capture else { continue };
            if let Some(other) = by_hooks.insert(&c.name, t) {
                return Err(src.err(
                    &t.path.key("capture").key("name"),
                    format!(
                        "capture '{}' is already captured by {} (hook captures are rollout-wide)",
                        c.name, other.path
                    ),
                ));
            }
        }
    }
    for pc in catalogs.values() {
        for t in pc.ordered_steps() {
            let Some(c) = &t.capture else { continue };
            if let Some(hook) = by_hooks.get(c.name.as_str()) {
                return Err(pc.src().err(
                    &t.path.key("capture").key("name"),
                    format!(
                        "capture '{}' is also captured by the hook step {} of {} (hook captures are rollout-wide)",
                        c.name, hook.path, src.file
                    ),
                ));
            }
        }
    }
    for g in groups.iter().filter(|g| !g.hook) {
        let from_catalog = g.release.as_ref().and_then(|n| catalogs.get(n));
        let mut seen: HashMap<&str, &StepTemplate> = HashMap::new();
        for t in &g.steps {
            let Some(c) = &t.capture else { continue };
            let np = t.path.key("capture").key("name");
            if let Some(other) = seen.insert(&c.name, t) {
                return Err(
                    src.err(&np, format!("capture '{}' is already captured by {} in this group", c.name, other.path))
                );
            }
            if let Some(hook) = by_hooks.get(c.name.as_str()) {
                return Err(src.err(
                    &np,
                    format!(
                        "capture '{}' is also captured by the hook step {} (hook captures are rollout-wide)",
                        c.name, hook.path
                    ),
                ));
            }
            if let Some(pc) = from_catalog
                && let Some(other) = pc.ordered_steps().find(|o| o.capture.as_ref().is_some_and(|oc| oc.name == c.name))
            {
                return Err(src.err(
                    &np,
                    format!(
                        "capture '{}' is already captured by the release path of this group ({}:{}: {})",
                        c.name,
                        pc.catalog.file,
                        locate::line_of(&pc.catalog.source, &other.path.key("capture").0),
                        other.path
                    ),
                ));
            }
        }
    }

    // Hooks a group may read from: the hooks it (transitively) waits for.
    // Walked only for a group that reads a value its own steps do not
    // capture, so most plans never walk at all.
    let walk = std::cell::RefCell::new(AncestorWalk::new(groups.len()));
    let any_hook_capture = groups.iter().any(|g| g.hook && g.steps.iter().any(|t| t.capture.is_some()));
    for (gi, g) in groups.iter().enumerate() {
        let hooks_cell = std::cell::OnceCell::new();
        let from_hooks = || -> &Vec<&str> {
            hooks_cell.get_or_init(|| {
                if any_hook_capture { hook_captures_before(groups, gi, &mut walk.borrow_mut()) } else { Vec::new() }
            })
        };
        let mut from_path: Vec<&str> = Vec::new();
        if let Some(pc) = g.release.as_ref().and_then(|n| catalogs.get(n)) {
            check_catalog_captures(pc, from_hooks(), &g.name)?;
            from_path = pc.ordered_steps().filter_map(|t| t.capture.as_ref().map(|c| c.name.as_str())).collect();
        }
        let captured_by = |upto: usize| -> Vec<&str> {
            g.steps[..upto.min(g.steps.len())]
                .iter()
                .filter_map(|t| t.capture.as_ref().map(|c| c.name.as_str()))
                .chain(from_path.iter().copied())
                .collect()
        };
        let check = |path: FieldPath, text: &str, own: &[&str]| -> Result<(), PlanError> {
            for name in capture::references(text) {
                if !own.contains(&name) && !from_hooks().contains(&name) {
                    return Err(src.err(
                        &path,
                        format!(
                            "'{{{{captured.{name}}}}}' is not captured by an earlier step of group '{}' nor by a hook that runs before it",
                            g.name
                        ),
                    ));
                }
            }
            Ok(())
        };
        if let Some(c) = &g.cluster {
            check_cluster_captures(src, g, c, from_hooks(), &captured_by(g.steps.len()))?;
        }
        for (k, t) in g.steps.iter().enumerate() {
            let mut spec = t.spec.clone();
            for (rel, text) in step_strings_mut(&mut spec) {
                let path = t.path.join(&rel);
                if rel == FieldPath::default().key("name") {
                    if !capture::references(text).is_empty() {
                        return Err(src.err(&path, "a step name cannot use a captured value"));
                    }
                    continue;
                }
                check(path, text, &captured_by(k))?;
            }
            if let Some(undo) = &t.undo {
                let mut undo = undo.clone();
                // The undo runs only after its step succeeded: it may read that step's capture.
                for (path, text) in exec_strings_mut(t.path.key("rollback"), &mut undo) {
                    check(path, text, &captured_by(k + 1))?;
                }
            }
        }
        for t in &g.rollback_steps {
            let mut kind = t.spec.kind.clone();
            for (rel, text) in kind_strings_mut(&mut kind) {
                check(t.path.join(&rel), text, &captured_by(g.steps.len()))?;
            }
        }
    }
    Ok(())
}

/// Captures of a cluster's leader check and switchover steps. The leader
/// check is asked before a member's first step: it may use hooks' values
/// only. Switchover steps run on the leader alone, before whichever step it
/// reached: they may use hooks' values and earlier switchover steps'. A
/// switchover capture is for later switchover steps only (followers never
/// switch over), so group steps may not use it; its name is unique in the
/// group.
fn check_cluster_captures(
    src: Src<'_>,
    g: &PlanGroup,
    c: &ClusterDef,
    from_hooks: &[&str],
    group_captures: &[&str],
) -> Result<(), PlanError> {
    let switchover_names: Vec<(&str, &FieldPath)> =
        c.switchover.iter().filter_map(|t| t.capture.as_ref().map(|cp| (cp.name.as_str(), &t.path))).collect();
    let check = |t: &StepTemplate, own: &[&str], what: &str| -> Result<(), PlanError> {
        let mut spec = t.spec.clone();
        for (rel, text) in step_strings_mut(&mut spec) {
            let path = t.path.join(&rel);
            for name in capture::references(text) {
                if own.contains(&name) || from_hooks.contains(&name) {
                    continue;
                }
                let why = if group_captures.contains(&name) {
                    format!(
                        "'{{{{captured.{name}}}}}' is captured by a step of group '{}', which may not have run yet when {what} runs; {what} may use hooks' values{}",
                        g.name,
                        if what == "a switchover step" { " and earlier switchover steps'" } else { "" }
                    )
                } else {
                    format!(
                        "'{{{{captured.{name}}}}}' is not captured by a hook that runs before group '{}'{}",
                        g.name,
                        if what == "a switchover step" { " nor by an earlier switchover step" } else { "" }
                    )
                };
                return Err(src.err(&path, why));
            }
        }
        Ok(())
    };
    if let Some(t) = &c.leader {
        check(t, &[], "the leader check")?;
    }
    let mut earlier: Vec<&str> = Vec::new();
    for t in &c.switchover {
        check(t, &earlier, "a switchover step")?;
        if let Some(cp) = &t.capture {
            let np = t.path.key("capture").key("name");
            if earlier.contains(&cp.name.as_str()) {
                return Err(
                    src.err(&np, format!("capture '{}' is already captured by an earlier switchover step", cp.name))
                );
            }
            if group_captures.contains(&cp.name.as_str()) || from_hooks.contains(&cp.name.as_str()) {
                return Err(src.err(
                    &np,
                    format!("capture '{}' is already captured by a step of group '{}' or a hook", cp.name, g.name),
                ));
            }
            earlier.push(&cp.name);
        }
    }
    // Group steps, undos and rollback steps run on followers too, which never switch over.
    for t in g.steps.iter().chain(&g.rollback_steps) {
        let mut spec = t.spec.clone();
        let undo = t.undo.clone();
        let mut texts: Vec<(FieldPath, String)> =
            step_strings_mut(&mut spec).into_iter().map(|(rel, text)| (t.path.join(&rel), text.clone())).collect();
        if let Some(mut u) = undo {
            texts.extend(exec_strings_mut(t.path.key("rollback"), &mut u).into_iter().map(|(p, x)| (p, x.clone())));
        }
        for (path, text) in texts {
            for name in capture::references(&text) {
                if let Some((_, at)) = switchover_names.iter().find(|(n, _)| *n == name) {
                    return Err(src.err(
                        &path,
                        format!(
                            "'{{{{captured.{name}}}}}' is captured by the switchover step {at}, which runs on the leader only: \
                             only later switchover steps may use it"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reusable scratch space for walking a group's ancestors: memory linear in
/// the number of groups, whatever the shape of the DAG (a table of every
/// group's ancestors would be quadratic).
pub(super) struct AncestorWalk {
    /// `seen[g] == round` when `g` was reached in the current walk.
    seen: Vec<u64>,
    round: u64,
    stack: Vec<usize>,
}

impl AncestorWalk {
    pub(super) fn new(n: usize) -> AncestorWalk {
        AncestorWalk { seen: vec![0; n], round: 0, stack: Vec::new() }
    }
}

/// Names captured by the hooks group `gi` waits for, directly or not: one
/// iterative walk up its `after` edges (no recursion, so a long chain of
/// groups cannot overflow the stack).
pub(super) fn hook_captures_before<'g>(groups: &'g [PlanGroup], gi: usize, walk: &mut AncestorWalk) -> Vec<&'g str> {
    walk.round += 1;
    let round = walk.round;
    let mut names = Vec::new();
    walk.stack.clear();
    walk.stack.extend(groups[gi].after.iter().copied());
    while let Some(g) = walk.stack.pop() {
        if walk.seen[g] == round {
            continue;
        }
        walk.seen[g] = round;
        if groups[g].hook {
            names.extend(groups[g].steps.iter().filter_map(|t| t.capture.as_ref().map(|c| c.name.as_str())));
        }
        walk.stack.extend(groups[g].after.iter().copied().filter(|&d| walk.seen[d] != round));
    }
    names
}

/// Every `{{captured.NAME}}` of a catalog's steps must be captured by an
/// earlier step in catalog order (releases ascending, phases in order; the
/// downgrade edges on their own, in declaration order) or by a hook the group
/// `group` waits for. The error names the catalog's file and line.
fn check_catalog_captures(pc: &PlanCatalog, from_hooks: &[&str], group: &str) -> Result<(), PlanError> {
    let lists: [(bool, Vec<&StepTemplate>); 2] =
        [(false, pc.release_steps().collect()), (true, pc.downgrade_steps().collect())];
    for (downgrades, list) in lists {
        let mut captured: Vec<&str> = Vec::new();
        for t in list {
            let known = |name: &str, own: bool| {
                from_hooks.contains(&name)
                    || captured.contains(&name)
                    || (own && t.capture.as_ref().is_some_and(|c| c.name == name))
            };
            let mut spec = t.spec.clone();
            let mut undo = t.undo.clone();
            // The undo runs only after its step succeeded: it may read that step's capture.
            let strings =
                kind_strings_mut(&mut spec.kind).into_iter().map(|(rel, s)| (t.path.join(&rel), s, false)).chain(
                    undo.iter_mut().flat_map(|u| {
                        exec_strings_mut(t.path.key("rollback"), u).into_iter().map(|(p, s)| (p, s, true))
                    }),
                );
            for (path, text, own) in strings {
                if let Some(name) = capture::references(text).into_iter().find(|n| !known(n, own)) {
                    let scope = if downgrades { "downgrade edge" } else { "release" };
                    return Err(pc.src().err(
                        &path,
                        format!(
                            "'{{{{captured.{name}}}}}' is used before it is captured: no earlier step of catalog '{}' (any {scope} before it, in order) nor a hook that runs before group '{group}' captures it",
                            pc.name
                        ),
                    ));
                }
            }
            if let Some(c) = &t.capture {
                captured.push(&c.name);
            }
        }
    }
    Ok(())
}

/// On one host's path (catalog steps, then the group's steps), every
/// `{{captured.NAME}}` needs a capture by an earlier step of the same entry
/// (its own, for its `rollback:`) or by a hook the group waits for: a
/// conditioned or skipped release may leave out the step that captures it.
pub(super) fn check_path_captures(
    items: &[(Src<'_>, StepTemplate)],
    from_hooks: &[&str],
    host: &str,
    group: &str,
) -> Result<(), PlanError> {
    let mut captured: Vec<&str> = from_hooks.to_vec();
    for (tsrc, t) in items {
        let mut spec = t.spec.clone();
        let mut undo = t.undo.clone();
        let strings = kind_strings_mut(&mut spec.kind).into_iter().map(|(rel, s)| (t.path.join(&rel), s, false)).chain(
            undo.iter_mut()
                .flat_map(|u| exec_strings_mut(t.path.key("rollback"), u).into_iter().map(|(p, s)| (p, s, true))),
        );
        for (path, text, own) in strings {
            for name in capture::references(text) {
                let by_self = own && t.capture.as_ref().is_some_and(|c| c.name == name);
                if !captured.contains(&name) && !by_self {
                    return Err(tsrc.err(
                        &path,
                        format!(
                            "'{{{{captured.{name}}}}}' is used before it is captured on host {host} (group '{group}'): no earlier step of its release path nor a hook that runs before the group captures it (a `when:` may leave the capturing step out, or the host may start above its release)"
                        ),
                    ));
                }
            }
        }
        if let Some(c) = &t.capture {
            captured.push(&c.name);
        }
    }
    Ok(())
}

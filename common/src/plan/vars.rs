//! Plan variables and shared environment: `vars:` and `env:` at the plan
//! and group level, substituted into a group's steps at parse time.
//!
//! A group's scope is the plan's `vars`/`env` with the group's on top (per
//! key). `{{vars.NAME}}` is replaced in every templated string of the
//! group's steps, checks, undos, `rollback_steps`, cluster steps and hooks
//! (defaults included, with the vars of the group inheriting them); what
//! a var's value says of the host (`{{host}}`, `{{label.K}}`, ...) is left
//! for expansion. A var's value may not use another var: one pass, no
//! order between vars to define. `env` values may use vars (the group's);
//! the scope's env is merged into every exec spec of a step (exec, exec
//! check, metric command, service command, backup, `rollback:`), the
//! step's own `env` winning.

use std::collections::BTreeMap;

use crate::limits::PlanLimits;
use crate::model::{ExecSpec, MetricSource, StepKind};
use crate::step_strings::step_strings_mut;

use super::errors::{FieldPath, PlanError, Src};
use super::template::{Var, render};
use super::validated::{PlanGroup, StepTemplate};

/// A value as written, with where it was written.
#[derive(Debug, Clone)]
struct Written {
    value: String,
    path: FieldPath,
}

/// The `vars` and `env` in force at one level (plan, or a group over it).
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    vars: BTreeMap<String, String>,
    env: BTreeMap<String, Written>,
}

impl Scope {
    /// This scope with `vars`/`env` written at `p` on top.
    pub(super) fn child(
        &self,
        src: Src<'_>,
        vars: Option<&BTreeMap<String, String>>,
        env: Option<&BTreeMap<String, String>>,
        p: &FieldPath,
        limits: &PlanLimits,
    ) -> Result<Scope, PlanError> {
        let mut out = self.clone();
        let (vp, ep) = (p.key("vars"), p.key("env"));
        let vars = vars.into_iter().flatten();
        let env = env.into_iter().flatten();
        for (field, n) in [(&vp, vars.clone().count()), (&ep, env.clone().count())] {
            if n > limits.max_vars {
                return Err(src.err(field, format!("{n} entries, more than the limit of {}", limits.max_vars)));
            }
        }
        for (name, value) in vars {
            let at = vp.key(name);
            if name.is_empty() {
                return Err(src.err(&vp, "a var name must not be empty"));
            }
            if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
                return Err(
                    src.err(&at, format!("invalid var name '{name}': {bad:?} is not allowed (use A-Z a-z 0-9 _ -)"))
                );
            }
            check_size(src, value, &at, limits)?;
            render(value, |var| match var {
                Var::Vars(_) => Err("a var's value may not use another var (vars are substituted in one pass)".into()),
                Var::Host
                | Var::Version
                | Var::Group
                | Var::Label(_)
                | Var::Installed(_)
                | Var::Fact(_)
                | Var::Captured(_)
                | Var::Cluster(_)
                | Var::InstallRoot
                | Var::Current(_) => Ok(String::new()),
            })
            .map_err(|m| src.err(&at, m))?;
            out.vars.insert(name.clone(), value.clone());
        }
        for (name, value) in env {
            let at = ep.key(name);
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(
                    src.err(&ep, format!("invalid env name {name:?}: must not be empty nor contain '=' or NUL"))
                );
            }
            check_size(src, value, &at, limits)?;
            if value.contains('\0') {
                return Err(src.err(&at, "an env value must not contain NUL"));
            }
            render(value, |_| Ok(String::new())).map_err(|m| src.err(&at, m))?;
            out.env.insert(name.clone(), Written { value: value.clone(), path: at });
        }
        Ok(out)
    }

    /// The env of this scope with its vars substituted; `group` names the
    /// group in errors (an env written on the plan uses each group's vars).
    fn env(&self, src: Src<'_>, group: &str) -> Result<BTreeMap<String, String>, PlanError> {
        self.env.iter().map(|(k, w)| Ok((k.clone(), self.substitute(src, &w.value, &w.path, group)?))).collect()
    }

    /// `s` with every `{{vars.NAME}}` replaced; other variables kept as written.
    fn substitute(&self, src: Src<'_>, s: &str, at: &FieldPath, group: &str) -> Result<String, PlanError> {
        if !s.contains("{{") {
            return Ok(s.to_string());
        }
        render(s, |var| match var {
            Var::Vars(name) => self.vars.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                format!("unknown variable 'vars.{name}' (group '{group}' has vars: {known})")
            }),
            Var::Host
            | Var::Version
            | Var::Group
            | Var::Label(_)
            | Var::Installed(_)
            | Var::Fact(_)
            | Var::Captured(_)
            | Var::Cluster(_)
            | Var::InstallRoot
            | Var::Current(_) => Ok(var.to_string()),
        })
        .map_err(|m| src.err(at, m))
    }

    /// Substitute the vars and merge the env into every step of `g` (the
    /// group itself or one of its hooks).
    pub(super) fn apply_group(&self, src: Src<'_>, g: &mut PlanGroup) -> Result<(), PlanError> {
        let group = g.name.as_str();
        let env = self.env(src, group)?;
        let cluster = g.cluster.iter_mut().flat_map(|c| c.leader.iter_mut().chain(c.switchover.iter_mut()));
        for t in g.steps.iter_mut().chain(g.rollback_steps.iter_mut()).chain(cluster) {
            self.apply(src, &env, t, group)?;
        }
        Ok(())
    }

    fn apply(
        &self,
        src: Src<'_>,
        env: &BTreeMap<String, String>,
        t: &mut StepTemplate,
        group: &str,
    ) -> Result<(), PlanError> {
        for (rel, s) in step_strings_mut(&mut t.spec) {
            *s = self.substitute(src, s, &t.path.join(&rel), group)?;
        }
        if let Some(undo) = &mut t.undo {
            let rp = t.path.key("rollback");
            for (rel, s) in crate::step_strings::exec_strings_mut(rp, undo) {
                *s = self.substitute(src, s, &rel, group)?;
            }
        }
        if let Some((_, v)) = &mut t.installs {
            *v = self.substitute(src, v, &t.path.key("installs"), group)?;
        }
        for e in exec_specs_mut(&mut t.spec.kind).into_iter().chain(t.undo.as_mut()) {
            for (k, v) in env {
                e.env.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(())
    }
}

fn check_size(src: Src<'_>, value: &str, at: &FieldPath, limits: &PlanLimits) -> Result<(), PlanError> {
    if value.len() > limits.max_var_bytes {
        return Err(src.err(
            at,
            format!("the value is {} bytes, more than the limit of {} bytes", value.len(), limits.max_var_bytes),
        ));
    }
    Ok(())
}

/// The commands a step runs (its exec-like parts), which the scope's env
/// reaches.
fn exec_specs_mut(kind: &mut StepKind) -> Vec<&mut ExecSpec> {
    match kind {
        StepKind::Exec(e) => vec![e],
        StepKind::ExecCheck(c) => vec![&mut c.exec],
        StepKind::Backup(b) => vec![&mut b.command],
        StepKind::Service(s) => s.command.iter_mut().collect(),
        StepKind::MetricCheck(m) => match &mut m.source {
            MetricSource::Command(e) => vec![e],
            MetricSource::Http { .. } => Vec::new(),
        },
        StepKind::Archive(_)
        | StepKind::File(_)
        | StepKind::HttpCheck(_)
        | StepKind::TcpCheck(_)
        | StepKind::FileCheck(_)
        | StepKind::ArchiveRollback(_)
        | StepKind::Apt(_)
        | StepKind::Dpkg(_)
        | StepKind::Rpm(_)
        | StepKind::PkgRollback(_)
        | StepKind::AgentUpgrade(_) => Vec::new(),
    }
}

/// Refuse `{{vars.NAME}}` in a release catalog's step: a catalog is shared
/// by plans and groups, and sees none of their vars.
pub(super) fn refuse_vars(src: Src<'_>, t: &mut StepTemplate) -> Result<(), PlanError> {
    let no_vars = |var: Var<'_>| match var {
        Var::Vars(n) => Err(format!("'{{{{vars.{n}}}}}': release catalogs do not see plan vars")),
        Var::Host
        | Var::Version
        | Var::Group
        | Var::Label(_)
        | Var::Installed(_)
        | Var::Fact(_)
        | Var::Captured(_)
        | Var::Cluster(_)
        | Var::InstallRoot
        | Var::Current(_) => Ok(String::new()),
    };
    let path = t.path.clone();
    for (rel, s) in step_strings_mut(&mut t.spec) {
        render(s, no_vars).map_err(|m| src.err(&path.join(&rel), m))?;
    }
    if let Some(undo) = &mut t.undo {
        for (rel, s) in crate::step_strings::exec_strings_mut(path.key("rollback"), undo) {
            render(s, no_vars).map_err(|m| src.err(&rel, m))?;
        }
    }
    if let Some((_, v)) = &t.installs {
        render(v, no_vars).map_err(|m| src.err(&path.key("installs"), m))?;
    }
    Ok(())
}

//! Template variables (`{{host}}`, `{{label.KEY}}`, ...): their syntax,
//! their values for a host, and a step rendered for a host.

use std::fmt;

use crate::capture;
use crate::cluster_vars::{self, ClusterScope, ClusterVar};
use crate::model::{AgentUpgradeSpec, ArchiveSpec, DpkgSpec, ExecSpec, InventoryHost, StepKind, StepSpec};
use crate::step_strings::{exec_specs, step_strings_mut};

use super::errors::{FieldPath, PlanError, Src};
use super::steps::{check_archive_name, check_pkg_word, check_sha256};
use super::validated::StepTemplate;

/// A template variable: `{{host}}`, `{{version}}`, `{{group}}`,
/// `{{label.KEY}}`, `{{installed.COMPONENT}}`, `{{fact.NAME}}`,
/// `{{captured.NAME}}`, `{{vars.NAME}}`, `{{cluster.…}}` (see
/// [`crate::cluster_vars`]), `{{install_root}}` or `{{current.COMPONENT}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Var<'a> {
    Host,
    Version,
    Group,
    Label(&'a str),
    Installed(&'a str),
    /// A fact of the host ([`InventoryHost::facts`]).
    Fact(&'a str),
    /// Filled by the engine when it dispatches the step, not at expansion.
    Captured(&'a str),
    /// A plan variable, substituted at parse time (see `vars`).
    Vars(&'a str),
    /// The cluster of the host, in a `type: cluster` group.
    Cluster(ClusterVar<'a>),
    /// The agent's install root (its `--install-root`), as it reported it.
    InstallRoot,
    /// `<install root>/COMPONENT/current`: the current release of an
    /// archive-installed component.
    Current(&'a str),
}

/// What a template is rendered for: one host of one group.
#[derive(Debug, Clone)]
pub(super) struct Scope<'a> {
    pub host: &'a InventoryHost,
    /// The plan's target version.
    pub version: &'a str,
    pub group: &'a str,
    /// The host's cluster, in a `type: cluster` group.
    pub cluster: Option<ClusterScope<'a>>,
}

/// The fact under which an agent reports its install root.
pub const INSTALL_ROOT_FACT: &str = "install_root";

/// The variable as written (`{{label.KEY}}`), for substitutions that keep
/// it for a later stage.
impl fmt::Display for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Host => f.write_str("{{host}}"),
            Var::Version => f.write_str("{{version}}"),
            Var::Group => f.write_str("{{group}}"),
            Var::Label(k) => write!(f, "{{{{label.{k}}}}}"),
            Var::Installed(c) => write!(f, "{{{{installed.{c}}}}}"),
            Var::Fact(n) => write!(f, "{{{{fact.{n}}}}}"),
            Var::Captured(n) => write!(f, "{{{{captured.{n}}}}}"),
            Var::Vars(n) => write!(f, "{{{{vars.{n}}}}}"),
            Var::Cluster(c) => c.fmt(f),
            Var::InstallRoot => f.write_str("{{install_root}}"),
            Var::Current(c) => write!(f, "{{{{current.{c}}}}}"),
        }
    }
}

pub(super) fn parse_var(inner: &str) -> Result<Var<'_>, String> {
    let unknown = || {
        format!(
            "unknown template variable '{{{{{inner}}}}}': expected host, version, group, label.KEY, installed.COMPONENT, fact.NAME, captured.NAME, vars.NAME, install_root, current.COMPONENT or {}",
            cluster_vars::KNOWN
        )
    };
    match inner {
        "host" => Ok(Var::Host),
        "version" => Ok(Var::Version),
        "group" => Ok(Var::Group),
        "install_root" => Ok(Var::InstallRoot),
        _ => match inner.split_once('.') {
            Some(("cluster", rest)) => ClusterVar::parse(rest).map(Var::Cluster).ok_or_else(unknown),
            Some(("current", c)) if !c.is_empty() => Ok(Var::Current(c)),
            Some(("label", key)) if !key.is_empty() => Ok(Var::Label(key)),
            Some(("installed", c)) if !c.is_empty() => Ok(Var::Installed(c)),
            Some(("fact", f)) if !f.is_empty() => Ok(Var::Fact(f)),
            Some(("captured", c)) if !c.is_empty() => Ok(Var::Captured(c)),
            Some(("vars", v)) if !v.is_empty() => Ok(Var::Vars(v)),
            _ => Err(unknown()),
        },
    }
}

/// Substitute every `{{ var }}` in `template` with `lookup(var)`.
pub(super) fn render(
    template: &str,
    mut lookup: impl FnMut(Var<'_>) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let inside = &rest[start + 2..];
        let end = inside.find("}}").ok_or_else(|| format!("unterminated '{{{{' in '{template}'"))?;
        out.push_str(&lookup(parse_var(inside[..end].trim())?)?);
        rest = &inside[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of a template variable for `scope`'s host.
pub(super) fn lookup(var: Var<'_>, scope: &Scope<'_>) -> Result<String, String> {
    let host = scope.host;
    let id = &host.id;
    let install_root = || {
        host.facts.get(INSTALL_ROOT_FACT).filter(|r| !r.is_empty()).ok_or_else(|| {
            format!(
                "host {id} does not report its install root (an agent older than this coordinator, or an \
                 inventory host without the fact '{INSTALL_ROOT_FACT}')"
            )
        })
    };
    match var {
        Var::Host => Ok(id.clone()),
        Var::Version => Ok(scope.version.to_string()),
        Var::Group => Ok(scope.group.to_string()),
        Var::Label(k) => host.labels.get(k).cloned().ok_or_else(|| format!("host {id} has no label '{k}'")),
        Var::Installed(c) => {
            host.installed.get(c).cloned().ok_or_else(|| format!("host {id} has no installed component '{c}'"))
        }
        Var::Fact(f) => host.facts.get(f).cloned().ok_or_else(|| format!("host {id} has no fact '{f}'")),
        // Kept for the engine, which substitutes it at dispatch.
        Var::Captured(c) => Ok(format!("{{{{{}{c}}}}}", capture::PREFIX)),
        // Plan variables are gone after parsing; one left here was written
        // where they are not substituted (a release catalog).
        Var::Vars(v) => {
            Err(format!("'{{{{vars.{v}}}}}' is not substituted here (plan vars apply to the plan's own steps)"))
        }
        Var::Cluster(c) => match &scope.cluster {
            // Kept for the engine, which knows who is upgraded.
            Some(cluster) if c.at_run_time() => cluster.check_run_time(c).map(|()| c.to_string()),
            Some(cluster) => cluster.value(c),
            None => Err(format!("{c} is only known in a group with type: cluster (group '{}')", scope.group)),
        },
        Var::InstallRoot => install_root().cloned(),
        Var::Current(c) => {
            super::steps::check_archive_name(c).map_err(|m| format!("{{{{current.{c}}}}}: {m}"))?;
            Ok(format!("{}/{c}/current", install_root()?.trim_end_matches('/')))
        }
    }
}

pub(super) fn render_step(src: Src<'_>, t: &StepTemplate, scope: &Scope<'_>) -> Result<StepSpec, PlanError> {
    let mut spec = t.spec.clone();
    let (id, group) = (&scope.host.id, scope.group);
    for (rel, s) in step_strings_mut(&mut spec) {
        *s = render(s, |var| lookup(var, scope))
            .map_err(|m| src.err(&t.path.join(&rel), format!("{m} (group '{group}')")))?;
    }
    // A digest the plan left out is the artifact store's to fill in at submit
    // time (see `crate::artifact_ref`); a written one is checked here.
    let from_store = matches!(
        &t.spec.kind,
        StepKind::Archive(ArchiveSpec { sha256, .. })
            | StepKind::Dpkg(DpkgSpec { sha256, .. })
            | StepKind::AgentUpgrade(AgentUpgradeSpec { sha256, .. }) if sha256.is_empty()
    );
    if let StepKind::AgentUpgrade(a) = &mut spec.kind {
        let at = t.path.key("agent_upgrade");
        if !from_store {
            check_sha256(&a.sha256)
                .map_err(|m| src.err(&at.key("sha256"), format!("{m} for host {id} (group '{group}')")))?;
            a.sha256.make_ascii_lowercase();
        }
        check_archive_name(&a.version)
            .map_err(|m| src.err(&at.key("version"), format!("{m} for host {id} (group '{group}')")))?;
    }
    if let StepKind::Archive(a) = &mut spec.kind {
        if !from_store {
            check_sha256(&a.sha256).map_err(|m| {
                src.err(&t.path.key("archive").key("sha256"), format!("{m} for host {id} (group '{group}')"))
            })?;
            a.sha256.make_ascii_lowercase();
        }
        for (field, value) in [("component", &a.component), ("version", &a.version)] {
            check_archive_name(value).map_err(|m| {
                src.err(&t.path.key("archive").key(field), format!("{m} for host {id} (group '{group}')"))
            })?;
        }
    }
    // Templated package fields are checked once rendered.
    let (kind, words, sha): (&str, Vec<(&str, &str)>, Option<&mut String>) = match &mut spec.kind {
        StepKind::Apt(a) => ("apt", vec![("package", a.package.as_str()), ("version", a.version.as_str())], None),
        StepKind::Dpkg(d) => (
            "dpkg",
            vec![("package", d.package.as_str()), ("version", d.version.as_str())],
            (!from_store).then_some(&mut d.sha256),
        ),
        StepKind::Rpm(r) => {
            ("rpm", vec![("package", r.package.as_str()), ("version", r.version.as_str())], r.sha256.as_mut())
        }
        StepKind::Exec(_)
        | StepKind::Archive(_)
        | StepKind::File(_)
        | StepKind::HttpCheck(_)
        | StepKind::TcpCheck(_)
        | StepKind::ExecCheck(_)
        | StepKind::FileCheck(_)
        | StepKind::MetricCheck(_)
        | StepKind::ArchiveRollback(_)
        | StepKind::Service(_)
        | StepKind::PkgRollback(_)
        | StepKind::Backup(_)
        | StepKind::AgentUpgrade(_) => ("", Vec::new(), None),
    };
    for (field, v) in words {
        check_pkg_word(field, v)
            .map_err(|m| src.err(&t.path.key(kind).key(field), format!("{m} for host {id} (group '{group}')")))?;
    }
    if let Some(sha) = sha {
        check_sha256(sha)
            .map_err(|m| src.err(&t.path.key(kind).key("sha256"), format!("{m} for host {id} (group '{group}')")))?;
        sha.make_ascii_lowercase();
    }
    for (rel, exec) in exec_specs(&spec.kind) {
        check_run_as(src, &t.path.join(&rel), exec, id, group)?;
    }
    Ok(spec)
}

/// A command's rendered `run_as` names (written at `p`), checked with
/// [`crate::run_as::parse`]; a `{{captured.X}}` still in one is the agent's
/// to check once the engine filled it in.
pub(super) fn check_run_as(
    src: Src<'_>,
    p: &FieldPath,
    exec: &ExecSpec,
    id: &str,
    group: &str,
) -> Result<(), PlanError> {
    let Some(r) = &exec.run_as else { return Ok(()) };
    let names = [("user", Some(&r.user)), ("group", r.group.as_ref())];
    for (what, name) in names.into_iter().filter_map(|(w, n)| n.map(|n| (w, n))) {
        if name.contains("{{") {
            continue;
        }
        crate::run_as::parse(what, name)
            .map_err(|m| src.err(&p.key("run_as").key(what), format!("{m} for host {id} (group '{group}')")))?;
    }
    Ok(())
}

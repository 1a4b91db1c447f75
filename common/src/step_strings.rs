//! The templated strings of a step: one walk over every [`StepKind`].
//!
//! Plan validation and expansion render `{{...}}` templates in these strings
//! ([`crate::plan`]), and the engine fills `{{captured.NAME}}` in the same
//! strings when it dispatches a step ([`crate::capture`]); both walk them
//! here, so a new string field is templated everywhere or nowhere. Each
//! string comes with its field path as a plan writes it, relative to the
//! step (a check's `exec` is `exec`, not `exec_check`), for plan errors;
//! callers that report no field ignore it.

use crate::model::{ExecSpec, MetricSource, StepKind, StepSpec};
use crate::plan::FieldPath;

/// The step's name, then every templated string of its kind
/// ([`kind_strings_mut`]).
pub(crate) fn step_strings_mut(spec: &mut StepSpec) -> Vec<(FieldPath, &mut String)> {
    let mut out = vec![(FieldPath::default().key("name"), &mut spec.name)];
    out.extend(kind_strings_mut(&mut spec.kind));
    out
}

/// Every templated string of a step's kind (all of the step's strings but
/// its name), in field order.
pub(crate) fn kind_strings_mut(kind: &mut StepKind) -> Vec<(FieldPath, &mut String)> {
    let root = FieldPath::default();
    let mut out = Vec::new();
    match kind {
        StepKind::Exec(e) => out.extend(exec_strings_mut(root.key("exec"), e)),
        StepKind::ExecCheck(c) => {
            out.extend(exec_strings_mut(root.key("exec"), &mut c.exec));
            // Plain texts only: a regex, checked as written, is not rendered
            // (its braces are regex syntax).
            if let Some(t) = &mut c.output.equals {
                out.push((root.key("stdout_equals"), t));
            }
            if let Some(t) = &mut c.output.contains {
                out.push((root.key("stdout_contains"), t));
            }
        }
        StepKind::Archive(a) => {
            let p = root.key("archive");
            out.push((p.key("component"), &mut a.component));
            out.push((p.key("version"), &mut a.version));
            out.push((p.key("source"), &mut a.source));
            out.push((p.key("sha256"), &mut a.sha256));
            if let Some(r) = &mut a.install_root {
                out.push((p.key("install_root"), r));
            }
        }
        StepKind::File(f) => {
            out.push((root.key("file").key("path"), &mut f.path));
            out.push((root.key("file").key("content"), &mut f.content));
        }
        StepKind::AgentUpgrade(a) => {
            let p = root.key("agent_upgrade");
            out.push((p.key("version"), &mut a.version));
            out.push((p.key("source"), &mut a.source));
            out.push((p.key("sha256"), &mut a.sha256));
        }
        StepKind::HttpCheck(h) => {
            out.push((root.key("http").key("url"), &mut h.url));
            if let Some(b) = &mut h.body_contains {
                out.push((root.key("http").key("body_contains"), b));
            }
            if let Some(j) = &mut h.json {
                out.push((root.key("http").key("json").key("equals"), &mut j.equals));
            }
        }
        StepKind::TcpCheck(t) => out.push((root.key("tcp").key("address"), &mut t.address)),
        StepKind::MetricCheck(m) => match &mut m.source {
            MetricSource::Http { url } => out.push((root.key("metric").key("url"), url)),
            MetricSource::Command(e) => out.extend(exec_strings_mut(root.key("metric").key("command"), e)),
        },
        StepKind::FileCheck(f) => {
            out.push((root.key("file").key("path"), &mut f.path));
            if let Some(c) = &mut f.contains {
                out.push((root.key("file").key("contains"), c));
            }
        }
        // Generated at expansion, never written in a plan: the paths only
        // name the field.
        StepKind::ArchiveRollback(a) => {
            let p = root.key("archive_rollback");
            out.push((p.key("component"), &mut a.component));
            if let Some(v) = &mut a.to_version {
                out.push((p.key("to_version"), v));
            }
            if let Some(r) = &mut a.install_root {
                out.push((p.key("install_root"), r));
            }
        }
        StepKind::Apt(a) => {
            out.push((root.key("apt").key("package"), &mut a.package));
            out.push((root.key("apt").key("version"), &mut a.version));
        }
        StepKind::Dpkg(d) => {
            let p = root.key("dpkg");
            out.push((p.key("package"), &mut d.package));
            out.push((p.key("version"), &mut d.version));
            out.push((p.key("source"), &mut d.source));
            out.push((p.key("sha256"), &mut d.sha256));
        }
        StepKind::Rpm(r) => {
            let p = root.key("rpm");
            out.push((p.key("package"), &mut r.package));
            out.push((p.key("version"), &mut r.version));
            if let Some(s) = &mut r.source {
                out.push((p.key("source"), s));
            }
            if let Some(s) = &mut r.sha256 {
                out.push((p.key("sha256"), s));
            }
        }
        StepKind::Service(sv) => {
            let p = root.key("service");
            out.push((p.key("name"), &mut sv.name));
            if let Some(c) = &mut sv.command {
                out.extend(exec_strings_mut(p.key("command"), c));
            }
            if let Some(f) = &mut sv.pidfile {
                out.push((p.key("pidfile"), f));
            }
            if let Some(l) = &mut sv.log {
                out.push((p.key("log"), l));
            }
        }
        // Generated at expansion, like `ArchiveRollback`.
        StepKind::PkgRollback(r) => {
            let p = root.key("pkg_rollback");
            out.push((p.key("package"), &mut r.package));
            if let Some(v) = &mut r.to_version {
                out.push((p.key("to_version"), v));
            }
        }
        StepKind::Backup(b) => {
            out.extend(exec_strings_mut(root.key("backup"), &mut b.command));
            if let Some(p) = &mut b.path {
                out.push((root.key("backup").key("path"), p));
            }
        }
    }
    out
}

/// The templated strings of an exec spec written at `p`.
pub(crate) fn exec_strings_mut(p: FieldPath, e: &mut ExecSpec) -> Vec<(FieldPath, &mut String)> {
    let mut out = vec![(p.key("command"), &mut e.command)];
    for (i, a) in e.args.iter_mut().enumerate() {
        out.push((p.key("args").idx(i), a));
    }
    for (k, v) in e.env.iter_mut() {
        out.push((p.key("env").key(k), v));
    }
    if let Some(w) = &mut e.workdir {
        out.push((p.key("workdir"), w));
    }
    if let Some(r) = &mut e.run_as {
        out.push((p.key("run_as").key("user"), &mut r.user));
        if let Some(g) = &mut r.group {
            out.push((p.key("run_as").key("group"), g));
        }
    }
    out
}

/// The commands of a step's kind with the field path each is written at
/// (the same paths as [`kind_strings_mut`]).
pub(crate) fn exec_specs(kind: &StepKind) -> Vec<(FieldPath, &ExecSpec)> {
    let root = FieldPath::default();
    match kind {
        StepKind::Exec(e) => vec![(root.key("exec"), e)],
        StepKind::ExecCheck(c) => vec![(root.key("exec"), &c.exec)],
        StepKind::Backup(b) => vec![(root.key("backup"), &b.command)],
        StepKind::Service(sv) => sv.command.iter().map(|c| (root.key("service").key("command"), c)).collect(),
        StepKind::MetricCheck(m) => match &m.source {
            MetricSource::Command(e) => vec![(root.key("metric").key("command"), e)],
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

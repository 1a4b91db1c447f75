//! One step as written (`exec`, `archive`, `file`, `apt`, `dpkg`, `rpm`,
//! `service`, `backup`) into a [`StepTemplate`], with the shared pieces of
//! steps and checks: lists, kinds, names, template syntax and estimates.

use std::time::Duration;

use crate::artifact_ref;
use crate::capture;
use crate::model::{
    AgentUpgradeSpec, AptSpec, ArchiveSpec, BackupSpec, CaptureFrom, CaptureSpec, DpkgSpec, ExecSpec, FileSpec,
    RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec, Signing, StepKind, StepSpec,
};
use crate::step_strings::{exec_strings_mut, step_strings_mut};

use super::duration::{parse_duration, positive_duration};
use super::errors::{FieldPath, PlanError, Src, required};
use super::raw::{RawBackup, RawExec, RawStep};
use super::run_as::run_as;
use super::template::{Var, render};
use super::validated::StepTemplate;

const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Validate a list of steps or checks; `None` when the list is absent (so the
/// caller can fall back to defaults), `Some(vec![])` when written empty.
pub(super) fn templates<R>(
    src: Src<'_>,
    list: Option<&[R]>,
    path: &FieldPath,
    one: fn(Src<'_>, &R, &FieldPath) -> Result<StepTemplate, PlanError>,
) -> Result<Option<Vec<StepTemplate>>, PlanError> {
    let Some(list) = list else { return Ok(None) };
    list.iter().enumerate().map(|(i, r)| one(src, r, &path.idx(i))).collect::<Result<Vec<_>, _>>().map(Some)
}

/// The single kind key of a step or check, or an error naming what is wrong.
pub(super) fn one_kind<'k>(
    src: Src<'_>,
    present: &[(&'k str, bool)],
    p: &FieldPath,
    what: &str,
) -> Result<&'k str, PlanError> {
    let kinds: Vec<&str> = present.iter().filter(|(_, set)| *set).map(|(k, _)| *k).collect();
    let all: Vec<&str> = present.iter().map(|(k, _)| *k).collect();
    match kinds.as_slice() {
        [one] => Ok(one),
        [] => Err(src.err(p, format!("{what} has no kind: give exactly one of {}", all.join(", ")))),
        [first, second, ..] => Err(src.err(
            &p.key(second),
            format!("{what} has more than one kind ('{first}' and '{second}'): give exactly one"),
        )),
    }
}

pub(super) fn step(src: Src<'_>, raw: &RawStep, p: &FieldPath) -> Result<StepTemplate, PlanError> {
    let kind = one_kind(
        src,
        &[
            ("exec", raw.exec.is_some()),
            ("archive", raw.archive.is_some()),
            ("file", raw.file.is_some()),
            ("apt", raw.apt.is_some()),
            ("dpkg", raw.dpkg.is_some()),
            ("rpm", raw.rpm.is_some()),
            ("service", raw.service.is_some()),
            ("backup", raw.backup.is_some()),
            ("agent_upgrade", raw.agent_upgrade.is_some()),
        ],
        p,
        "step",
    )?;
    let kp = p.key(kind);
    let kind = match (&raw.exec, &raw.archive, &raw.file) {
        _ if raw.apt.is_some() || raw.dpkg.is_some() || raw.rpm.is_some() || raw.service.is_some() => {
            pkg_step(src, raw, &kp)?
        }
        _ if raw.backup.is_some() => backup_step(src, raw.backup.as_ref().expect("checked"), &kp)?,
        _ if raw.agent_upgrade.is_some() => agent_upgrade_step(src, raw, &kp)?,
        (Some(e), _, _) => StepKind::Exec(exec_spec(src, e, &kp)?),
        (_, Some(a), _) => {
            let sha256 = staged_sha256(src, &a.sha256, &a.source, &kp)?;
            let name = |field: &str, value: &Option<String>| -> Result<String, PlanError> {
                let value = required(src, value.clone(), &kp.key(field))?;
                check_archive_name(&value).map_err(|m| src.err(&kp.key(field), m))?;
                Ok(value)
            };
            StepKind::Archive(ArchiveSpec {
                component: name("component", &a.component)?,
                version: name("version", &a.version)?,
                source: required(src, a.source.clone(), &kp.key("source"))?,
                sha256,
                install_root: a.install_root.clone(),
                signing: Signing::default(),
            })
        }
        (_, _, Some(f)) => StepKind::File(FileSpec {
            path: required(src, f.path.clone(), &kp.key("path"))?,
            content: f.content.clone().unwrap_or_default(),
        }),
        (None, None, None) => unreachable!("one_kind found a kind"),
    };
    let timeout = match &raw.timeout {
        Some(s) => positive_duration(src, s, &p.key("timeout"))?,
        None => DEFAULT_STEP_TIMEOUT,
    };
    if let StepKind::AgentUpgrade(a) = &kind
        && a.deadline >= timeout
    {
        return Err(src.err(
            &p.key("timeout"),
            format!(
                "the step's timeout ({}) must be longer than its agent_upgrade deadline ({}): the new agent comes back within the step",
                super::duration::format_duration(timeout),
                super::duration::format_duration(a.deadline)
            ),
        ));
    }
    let mut spec = StepSpec { name: String::new(), timeout, kind, rerun_safe: raw.rerun_safe };
    if raw.require_signature {
        let Some((_, _, signing)) = spec.kind.staged_source_mut() else {
            return Err(src.err(
                &p.key("require_signature"),
                "only steps that install a staged artifact (archive, dpkg, agent_upgrade) can require a signature",
            ));
        };
        signing.required = true;
    }
    let mut t = finish_template(src, raw.name.as_deref(), p, spec)?;
    t.estimate = estimate(src, raw.estimate.as_deref(), p)?;
    if let Some(v) = &raw.installs {
        if v.trim().is_empty() {
            return Err(src.err(&p.key("installs"), "must name a version (e.g. \"{{version}}\")"));
        }
        render(v, |var| match var {
            Var::Captured(_) => Err("captured values cannot name what a step installs".to_string()),
            Var::Cluster(_) => Err("cluster values cannot name what a step installs".to_string()),
            Var::Host
            | Var::Version
            | Var::Group
            | Var::Label(_)
            | Var::Installed(_)
            | Var::Fact(_)
            | Var::Vars(_)
            | Var::InstallRoot
            | Var::Current(_) => Ok(String::new()),
        })
        .map_err(|m| src.err(&p.key("installs"), m))?;
        t.installs = Some((None, v.clone()));
    }
    if raw.migration == Some(true) {
        t.migration = Some(p.key("migration"));
    }
    if let Some(r) = &raw.rollback {
        let rp = p.key("rollback");
        let mut undo = exec_spec(src, r, &rp)?;
        for (rel, s) in exec_strings_mut(rp, &mut undo) {
            render(s, |_| Ok(String::new())).map_err(|m| src.err(&rel, m))?;
        }
        t.undo = Some(undo);
    }
    if let Some(c) = &raw.capture {
        let cp = p.key("capture");
        if !matches!(t.spec.kind, StepKind::Exec(_)) {
            return Err(src.err(&cp, "only exec steps can capture (a capture reads the command's standard output)"));
        }
        let name = required(src, c.name.clone(), &cp.key("name"))?;
        if let Some(bad) = name.chars().find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-'))) {
            return Err(src.err(
                &cp.key("name"),
                format!("invalid capture name '{name}': {bad:?} is not allowed (use A-Z a-z 0-9 _ -)"),
            ));
        }
        let from = match (&c.regex, &c.json) {
            (Some(_), Some(_)) => return Err(src.err(&cp.key("json"), "give either 'regex' or 'json', not both")),
            (None, None) => return Err(src.err(&cp, "a capture needs 'regex' or 'json'")),
            (Some(r), None) => {
                capture::check_regex(r).map_err(|m| src.err(&cp.key("regex"), m))?;
                CaptureFrom::Regex(r.clone())
            }
            (None, Some(j)) => {
                capture::check_json_path(j).map_err(|m| src.err(&cp.key("json"), m))?;
                CaptureFrom::Json(j.clone())
            }
        };
        t.capture = Some(CaptureSpec { name, from });
    }
    Ok(t)
}

/// A step's or check's `estimate:` (a positive duration), if it has one.
pub(super) fn estimate(src: Src<'_>, raw: Option<&str>, p: &FieldPath) -> Result<Option<Duration>, PlanError> {
    raw.map(|s| positive_duration(src, s, &p.key("estimate"))).transpose()
}

/// The kind of an `apt`, `dpkg`, `rpm` or `service` step written at `kp`.
fn pkg_step(src: Src<'_>, raw: &RawStep, kp: &FieldPath) -> Result<StepKind, PlanError> {
    let name = |value: Option<String>, field: &str| -> Result<String, PlanError> {
        let v = required(src, value, &kp.key(field))?;
        if !v.contains("{{") {
            check_pkg_word(field, &v).map_err(|m| src.err(&kp.key(field), m))?;
        }
        Ok(v)
    };
    let sha = |value: String| checked_sha256(src, value, &kp.key("sha256"));
    if let Some(a) = &raw.apt {
        return Ok(StepKind::Apt(AptSpec {
            package: name(a.package.clone(), "package")?,
            version: name(a.version.clone(), "version")?,
            hold: a.hold,
            allow_downgrade: a.allow_downgrade.unwrap_or(false),
            update: a.update.unwrap_or(false),
        }));
    }
    if let Some(d) = &raw.dpkg {
        return Ok(StepKind::Dpkg(DpkgSpec {
            package: name(d.package.clone(), "package")?,
            version: name(d.version.clone(), "version")?,
            source: required(src, d.source.clone(), &kp.key("source"))?,
            sha256: staged_sha256(src, &d.sha256, &d.source, kp)?,
            signing: Signing::default(),
        }));
    }
    if let Some(r) = &raw.rpm {
        let manager = match r.manager.as_deref() {
            None | Some("dnf") => RpmManager::Dnf,
            Some("yum") => RpmManager::Yum,
            Some("rpm") => RpmManager::Rpm,
            Some(other) => {
                return Err(src.err(&kp.key("manager"), format!("unknown manager '{other}': expected dnf, yum or rpm")));
            }
        };
        match (&r.source, &r.sha256) {
            (None, _) if manager == RpmManager::Rpm => {
                return Err(src.err(&kp.key("source"), "manager rpm installs a staged file: 'source' is required"));
            }
            (Some(_), None) => return Err(src.err(&kp.key("sha256"), "a 'source' needs its 'sha256'")),
            (None, Some(_)) => return Err(src.err(&kp.key("sha256"), "'sha256' without a 'source'")),
            _ => {}
        }
        return Ok(StepKind::Rpm(RpmSpec {
            package: name(r.package.clone(), "package")?,
            version: name(r.version.clone(), "version")?,
            manager,
            source: r.source.clone(),
            sha256: r.sha256.clone().map(sha).transpose()?,
            allow_downgrade: r.allow_downgrade.unwrap_or(false),
        }));
    }
    let Some(sv) = &raw.service else { unreachable!("pkg_step is called for package and service steps only") };
    let action = match required(src, sv.action.clone(), &kp.key("action"))?.as_str() {
        "start" => ServiceAction::Start,
        "stop" => ServiceAction::Stop,
        "restart" => ServiceAction::Restart,
        "status" => ServiceAction::Status,
        other => {
            return Err(src
                .err(&kp.key("action"), format!("unknown action '{other}': expected start, stop, restart or status")));
        }
    };
    let manager = match sv.manager.as_deref() {
        None | Some("auto") => ServiceManager::Auto,
        Some("systemd") => ServiceManager::Systemd,
        Some("supervised") => ServiceManager::Supervised,
        Some(other) => {
            return Err(
                src.err(&kp.key("manager"), format!("unknown manager '{other}': expected auto, systemd or supervised"))
            );
        }
    };
    let command = sv.command.as_ref().map(|c| exec_spec(src, c, &kp.key("command"))).transpose()?;
    if command.as_ref().is_some_and(|c| c.run_as.is_some()) {
        return Err(src.err(
            &kp.key("command").key("run_as"),
            "not supported on a service's command (supervised services run as the agent)",
        ));
    }
    if manager == ServiceManager::Supervised
        && command.is_none()
        && matches!(action, ServiceAction::Start | ServiceAction::Restart)
    {
        return Err(
            src.err(&kp.key("command"), format!("a supervised service needs a 'command' to {}", action.as_str()))
        );
    }
    let svc_name = required(src, sv.name.clone(), &kp.key("name"))?;
    if svc_name.trim().is_empty() || svc_name.contains('/') || svc_name.starts_with('-') {
        return Err(src.err(&kp.key("name"), format!("invalid service name '{svc_name}': must be a plain name")));
    }
    Ok(StepKind::Service(ServiceSpec {
        name: svc_name,
        action,
        manager,
        command,
        pidfile: sv.pidfile.clone(),
        log: sv.log.clone(),
        stop_grace: sv
            .stop_grace
            .as_deref()
            .map(|g| parse_duration(g).map_err(|m| src.err(&kp.key("stop_grace"), m)))
            .transpose()?,
    }))
}

/// The kind of a `backup` step written at `kp`.
fn backup_step(src: Src<'_>, b: &RawBackup, kp: &FieldPath) -> Result<StepKind, PlanError> {
    let path = match &b.path {
        Some(p) if p.trim().is_empty() => return Err(src.err(&kp.key("path"), "must not be empty")),
        p => p.clone(),
    };
    Ok(StepKind::Backup(BackupSpec {
        command: ExecSpec {
            command: required(src, b.command.clone(), &kp.key("command"))?,
            args: b.args.clone().unwrap_or_default(),
            env: b.env.clone().unwrap_or_default(),
            workdir: b.workdir.clone(),
            run_as: run_as(src, b.run_as.as_ref(), &kp.key("run_as"))?,
        },
        path,
    }))
}

/// A package name or version the agent would accept as an argument.
pub(super) fn check_pkg_word(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.starts_with('-')
        || v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '=')
    {
        Err(format!("invalid {field} '{v}': must not start with '-' nor contain spaces, '/' or '='"))
    } else {
        Ok(())
    }
}

pub(super) fn exec_spec(src: Src<'_>, e: &RawExec, p: &FieldPath) -> Result<ExecSpec, PlanError> {
    Ok(ExecSpec {
        command: required(src, e.command.clone(), &p.key("command"))?,
        args: e.args.clone().unwrap_or_default(),
        env: e.env.clone().unwrap_or_default(),
        workdir: e.workdir.clone(),
        run_as: run_as(src, e.run_as.as_ref(), &p.key("run_as"))?,
    })
}

/// An archive's `component` and `version` name directories on the host
/// (`install_root/component/version`): a plain name, as the agent requires,
/// refused here so that `convoy plan` catches it. Templates are checked
/// again once rendered.
pub(super) fn check_archive_name(value: &str) -> Result<(), String> {
    let bad = if value.trim().is_empty() {
        Some("must not be empty")
    } else if value.contains("..") {
        Some("must not contain '..'")
    } else if value.contains('/') || value.contains('\\') {
        Some("must not contain '/' or '\\'")
    } else if value.starts_with('.') {
        Some("must not start with '.'")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!("invalid name {value:?}: {why} (it names a directory on the host)")),
        None => Ok(()),
    }
}

/// The `sha256` of an `archive` or `dpkg` step, lower-cased: required,
/// unless `source` names an artifact, whose digest the coordinator's artifact
/// store supplies when the plan is submitted (empty until then; see
/// [`crate::artifact_ref`]).
/// How long a new agent has by default to come back after the switch.
pub const DEFAULT_AGENT_UPGRADE_DEADLINE: Duration = Duration::from_secs(30);
/// The longest `agent_upgrade.deadline` a plan may give.
pub const MAX_AGENT_UPGRADE_DEADLINE: Duration = Duration::from_secs(600);

/// `agent_upgrade:` (the step's kind key path is `kp`). The source defaults
/// to the artifact store's `convoy-agent@VERSION`.
fn agent_upgrade_step(src: Src<'_>, raw: &RawStep, kp: &FieldPath) -> Result<StepKind, PlanError> {
    let a = raw.agent_upgrade.as_ref().expect("checked by the caller");
    let version = required(src, a.version.clone(), &kp.key("version"))?;
    if version.trim().is_empty() {
        return Err(src.err(&kp.key("version"), "must not be empty"));
    }
    let source = a.source.clone().unwrap_or_else(|| format!("artifact:convoy-agent@{version}"));
    let sha256 = staged_sha256(src, &a.sha256, &Some(source.clone()), kp)?;
    let deadline = match &a.deadline {
        Some(d) => {
            let d = positive_duration(src, d, &kp.key("deadline"))?;
            if d > MAX_AGENT_UPGRADE_DEADLINE {
                return Err(src.err(
                    &kp.key("deadline"),
                    format!("at most {}", super::duration::format_duration(MAX_AGENT_UPGRADE_DEADLINE)),
                ));
            }
            d
        }
        None => DEFAULT_AGENT_UPGRADE_DEADLINE,
    };
    Ok(StepKind::AgentUpgrade(AgentUpgradeSpec {
        version,
        source,
        sha256,
        // Agents require it for agent builds anyway; said here so plans
        // and previews show it.
        signing: Signing { required: true, signature: None },
        deadline,
        force: a.force,
    }))
}

fn staged_sha256(
    src: Src<'_>,
    sha256: &Option<String>,
    source: &Option<String>,
    kp: &FieldPath,
) -> Result<String, PlanError> {
    let p = kp.key("sha256");
    let sha = match sha256 {
        None if source.as_deref().is_some_and(artifact_ref::is_artifact) => return Ok(String::new()),
        None if source.is_some() => {
            return Err(src.err(
                &p,
                "missing required field 'sha256' (it may be left out only when the source is artifact:NAME@VERSION)",
            ));
        }
        given => required(src, given.clone(), &p)?,
    };
    checked_sha256(src, sha, &p)
}

/// A sha256 written at `p`, lower-cased; templated ones are checked once rendered.
fn checked_sha256(src: Src<'_>, value: String, p: &FieldPath) -> Result<String, PlanError> {
    if !value.contains("{{") {
        check_sha256(&value).map_err(|m| src.err(p, m))?;
    }
    Ok(value.to_ascii_lowercase())
}

pub(super) fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("sha256 must be 64 hexadecimal characters, got '{s}'"))
    }
}

/// Set the explicit name (empty means "unnamed", filled in by [`name_steps`])
/// and check the syntax of every template in the step.
pub(super) fn finish_template(
    src: Src<'_>,
    name: Option<&str>,
    p: &FieldPath,
    mut spec: StepSpec,
) -> Result<StepTemplate, PlanError> {
    if let Some(n) = name {
        if n.trim().is_empty() {
            return Err(src.err(&p.key("name"), "must not be empty"));
        }
        spec.name = n.to_string();
    }
    for (rel, s) in step_strings_mut(&mut spec) {
        render(s, |_| Ok(String::new())).map_err(|m| src.err(&p.join(&rel), m))?;
    }
    Ok(StepTemplate {
        path: p.clone(),
        spec,
        undo: None,
        capture: None,
        migration: None,
        estimate: None,
        installs: None,
    })
}

/// Give unnamed steps their `<kind>-<position>` name and reject duplicates.
pub(super) fn name_steps(src: Src<'_>, mut steps: Vec<StepTemplate>) -> Result<Vec<StepTemplate>, PlanError> {
    for (i, t) in steps.iter_mut().enumerate() {
        if t.spec.name.is_empty() {
            t.spec.name = format!("{}-{}", t.spec.kind.kind_name(), i + 1);
        }
    }
    for (i, t) in steps.iter().enumerate() {
        if let Some(first) = steps[..i].iter().find(|o| o.spec.name == t.spec.name) {
            return Err(src.err(
                &t.path.key("name"),
                format!("duplicate step name '{}' in the group (also {})", t.spec.name, first.path),
            ));
        }
    }
    Ok(steps)
}

/// Name a group's rollback steps (`rollback-<kind>-<n>` when unnamed) and
/// reject a rollback step that declares its own rollback or reuses a name a
/// rollback already has (`rollback-<step>` is the undo of `<step>`).
pub(super) fn name_rollback_steps(
    src: Src<'_>,
    mut list: Vec<StepTemplate>,
    steps: &[StepTemplate],
) -> Result<Vec<StepTemplate>, PlanError> {
    for (i, t) in list.iter_mut().enumerate() {
        if t.undo.is_some() {
            return Err(src.err(&t.path.key("rollback"), "a rollback step cannot have a rollback of its own"));
        }
        if t.spec.name.is_empty() {
            t.spec.name = format!("rollback-{}-{}", t.spec.kind.kind_name(), i + 1);
        }
    }
    for (i, t) in list.iter().enumerate() {
        let undo_name = steps.iter().find(|s| undo_name(&s.spec.name) == t.spec.name);
        let earlier = list[..i].iter().find(|o| o.spec.name == t.spec.name);
        if let Some(other) =
            earlier.map(|o| o.path.to_string()).or(undo_name.map(|s| format!("the undo of {}", s.path)))
        {
            return Err(src.err(
                &t.path.key("name"),
                format!("duplicate rollback step name '{}' in the group (also {other})", t.spec.name),
            ));
        }
    }
    Ok(list)
}

/// The name of the undo of step `name`.
pub(super) fn undo_name(name: &str) -> String {
    format!("rollback-{name}")
}

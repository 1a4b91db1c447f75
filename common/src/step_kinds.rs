//! What the domain knows about each step kind, kind by kind, in one place:
//! its default estimate, its implicit undo, what its undo puts back, and
//! whether it reports a backup, and which staged file it installs. Every function here is an exhaustive match on
//! [`StepKind`], so a new kind is a compile error here until it is decided.
//!
//! The rest of a kind lives in: its spec in [`crate::model`] (with its name in
//! the `StepKindName` table), its YAML in `plan/raw.rs` and its validation in
//! `plan/steps.rs` or `plan/checks.rs`, its templated strings in
//! `step_strings.rs`, its proto message and conversion in `wire/`, and its
//! driver in `agent/src/driver/`. See `docs/adding-a-step-kind.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{ArchiveRollbackSpec, HostPlan, PkgManager, PkgRollbackSpec, Signing, StepKind, StepSpec};

/// What a step may ask of an agent beyond its kind: a field an older agent
/// would ignore rather than refuse. Agents list these in their Hello's
/// capabilities after the step kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepFeature {
    /// `run_as:` on a command: an older agent would run it as itself (root).
    RunAs,
    /// `require_signature:` on an artifact: an older agent would install it
    /// without checking a signature.
    Signatures,
}

impl StepFeature {
    /// Every feature.
    pub const ALL: &'static [StepFeature] = &[StepFeature::RunAs, StepFeature::Signatures];

    /// The name in Hello's capabilities.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepFeature::RunAs => "run_as",
            StepFeature::Signatures => "signatures",
        }
    }
}

impl StepSpec {
    /// The features this step needs its agent to honour.
    pub fn features(&self) -> Vec<StepFeature> {
        let mut out = Vec::new();
        if self.kind.run_as().is_some() {
            out.push(StepFeature::RunAs);
        }
        let signed = match &self.kind {
            StepKind::Archive(a) => a.signing.required,
            StepKind::Dpkg(d) => d.signing.required,
            // Agents check an agent build's signature whatever the plan says.
            StepKind::AgentUpgrade(_) => false,
            StepKind::Exec(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::ArchiveRollback(_)
            | StepKind::Apt(_)
            | StepKind::Rpm(_)
            | StepKind::Service(_)
            | StepKind::PkgRollback(_)
            | StepKind::Backup(_) => false,
        };
        if signed {
            out.push(StepFeature::Signatures);
        }
        out
    }
}

impl HostPlan {
    /// Every capability this entry's agent needs, as Hello names them (step
    /// kinds and [`StepFeature`]s), each with the first step that needs it,
    /// over every step it may be sent: its steps, their undos, its rollback
    /// steps, leader check and switchover.
    pub fn capabilities_needed(&self) -> BTreeMap<&'static str, &StepSpec> {
        let mut out = BTreeMap::new();
        let all = self
            .steps
            .iter()
            .chain(self.undo.iter().flatten())
            .chain(&self.rollback_steps)
            .chain(&self.leader_check)
            .chain(&self.switchover);
        for step in all {
            out.entry(step.kind.name().as_str()).or_insert(step);
            for f in step.features() {
                out.entry(f.as_str()).or_insert(step);
            }
        }
        out
    }
}

impl StepKind {
    /// The estimate of a step of this kind when nothing was declared or
    /// measured, before the step's timeout caps it.
    pub fn default_estimate(&self) -> Duration {
        let s = Duration::from_secs;
        match self {
            StepKind::Exec(_) => s(10),
            StepKind::Archive(_) => s(30),
            StepKind::File(_) => s(1),
            StepKind::ArchiveRollback(_) => s(5),
            StepKind::Apt(_) | StepKind::Rpm(_) | StepKind::PkgRollback(_) => s(120),
            StepKind::Dpkg(_) => s(60),
            StepKind::Service(_) => s(15),
            StepKind::Backup(_) => s(300),
            // Fetch, self-check, switch, and the new agent's reconnection.
            StepKind::AgentUpgrade(_) => s(20),
            // A check usually passes within a few polls, then must stay healthy.
            StepKind::HttpCheck(c) => s(5).saturating_add(c.policy.min_healthy),
            StepKind::TcpCheck(c) => s(5).saturating_add(c.policy.min_healthy),
            StepKind::ExecCheck(c) => s(5).saturating_add(c.policy.min_healthy),
            StepKind::FileCheck(c) => s(5).saturating_add(c.policy.min_healthy),
            StepKind::MetricCheck(c) => s(5).saturating_add(c.policy.min_healthy),
        }
    }

    /// The undo a step of this kind has without a `rollback:` of its own, on
    /// a host that had `installed` before: an archive switches back to the
    /// release it had, a package goes back to its version. `None`: nothing to
    /// undo (checks, files, commands, services, undos themselves).
    pub fn implicit_undo(&self, installed: &BTreeMap<String, String>) -> Option<StepKind> {
        let pkg = |package: &str, manager: PkgManager| {
            StepKind::PkgRollback(PkgRollbackSpec {
                package: package.to_string(),
                manager,
                to_version: installed.get(package).cloned(),
            })
        };
        match self {
            StepKind::Archive(a) => Some(StepKind::ArchiveRollback(ArchiveRollbackSpec {
                component: a.component.clone(),
                to_version: installed.get(&a.component).cloned(),
                install_root: a.install_root.clone(),
            })),
            StepKind::Apt(a) => Some(pkg(&a.package, PkgManager::Apt)),
            StepKind::Dpkg(d) => Some(pkg(&d.package, PkgManager::Dpkg)),
            StepKind::Rpm(r) => Some(pkg(&r.package, PkgManager::of_rpm(r.manager))),
            StepKind::Service(_)
            | StepKind::PkgRollback(_)
            | StepKind::Exec(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::ArchiveRollback(_)
            | StepKind::Backup(_)
            // A failed self-upgrade reverts by itself on the host; a
            // succeeded one is undone by another self-upgrade.
            | StepKind::AgentUpgrade(_) => None,
        }
    }

    /// The (component, version) an undo of this kind puts back, when it
    /// names one; the agent's own report wins.
    pub fn restores(&self) -> Option<(String, String)> {
        match self {
            StepKind::ArchiveRollback(a) => a.to_version.clone().map(|v| (a.component.clone(), v)),
            StepKind::PkgRollback(p) => p.to_version.clone().map(|v| (p.package.clone(), v)),
            StepKind::Apt(_) | StepKind::Dpkg(_) | StepKind::Rpm(_) | StepKind::Service(_) => None,
            StepKind::Exec(_)
            | StepKind::Archive(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::Backup(_)
            | StepKind::AgentUpgrade(_) => None,
        }
    }

    /// A step of this kind must report the backup it took when it succeeds.
    pub fn reports_backup(&self) -> bool {
        match self {
            StepKind::Backup(_) => true,
            StepKind::Exec(_)
            | StepKind::Archive(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::ArchiveRollback(_)
            | StepKind::Apt(_)
            | StepKind::Dpkg(_)
            | StepKind::Rpm(_)
            | StepKind::Service(_)
            | StepKind::PkgRollback(_)
            | StepKind::AgentUpgrade(_) => false,
        }
    }

    /// The source, sha256 and signing of the staged file a step of this
    /// kind installs, when its sha256 and signature may come from the
    /// coordinator's artifact store (see [`crate::artifact_ref`]). `rpm`
    /// sources are paths only.
    pub fn staged_source_mut(&mut self) -> Option<(&str, &mut String, &mut Signing)> {
        match self {
            StepKind::Archive(a) => Some((&a.source, &mut a.sha256, &mut a.signing)),
            StepKind::Dpkg(d) => Some((&d.source, &mut d.sha256, &mut d.signing)),
            StepKind::AgentUpgrade(a) => Some((&a.source, &mut a.sha256, &mut a.signing)),
            StepKind::Exec(_)
            | StepKind::File(_)
            | StepKind::HttpCheck(_)
            | StepKind::TcpCheck(_)
            | StepKind::ExecCheck(_)
            | StepKind::FileCheck(_)
            | StepKind::MetricCheck(_)
            | StepKind::ArchiveRollback(_)
            | StepKind::Apt(_)
            | StepKind::Rpm(_)
            | StepKind::Service(_)
            | StepKind::PkgRollback(_)
            | StepKind::Backup(_) => None,
        }
    }
}

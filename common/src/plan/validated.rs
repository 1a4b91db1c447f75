//! The validated plan: what [`parse_plan`](super::parse_plan) returns and
//! [`expand`](super::expand) reads, with every step still templated.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::PlanLimits;
use crate::model::{CaptureSpec, ExecSpec, OnFailure, StepSpec};

use super::catalogs::PlanCatalog;
use super::errors::{FieldPath, Src};
use super::strategies::{Amount, CanaryDef, ClusterDef, StrategyDef};
use super::windows::WindowsDef;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Selection {
    Labels(BTreeMap<String, String>),
    Hosts(Vec<String>),
    /// A hook's one host: an id, or the first host (by id) a selector matches.
    Hook(HookOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HookOn {
    Host(String),
    Select(BTreeMap<String, String>),
}

/// A step or check with its strings still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StepTemplate {
    /// Where it was written (`groups[0].steps[1]`, `defaults.checks[0]`).
    pub(super) path: FieldPath,
    pub(super) spec: StepSpec,
    /// The step's explicit `rollback:` command, still templated.
    pub(super) undo: Option<ExecSpec>,
    /// What the step captures from its output.
    pub(super) capture: Option<CaptureSpec>,
    /// The step is a migration (`migration: true`, or a catalog's `migrate`
    /// phase): the field to blame when `require_backup` finds no backup
    /// before it.
    pub(super) migration: Option<FieldPath>,
    /// The step's declared `estimate:` (see [`crate::estimate`]).
    pub(super) estimate: Option<Duration>,
    /// `installs:`: (component, templated version) the host runs once the
    /// step succeeded; the component `None` means the plan's. The last step
    /// of a catalog hop installs the hop's release.
    pub(super) installs: Option<(Option<String>, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlanGroup {
    pub(super) name: String,
    pub(super) path: FieldPath,
    /// Declaration indices of the groups this one waits for.
    pub(super) after: Vec<usize>,
    pub(super) selection: Selection,
    pub(super) strategy: StrategyDef,
    pub(super) canary: Option<CanaryDef>,
    pub(super) on_failure: OnFailure,
    /// Pre-checks, steps, then checks, in order.
    pub(super) steps: Vec<StepTemplate>,
    /// How many of `steps` (the first ones) are `pre_checks`: they run
    /// before the host's release path too.
    pub(super) pre_checks: usize,
    /// Run after the steps' undos when a host is rolled back.
    pub(super) rollback_steps: Vec<StepTemplate>,
    /// A synthetic group running a hook (see "Hooks" in [`crate::plan`]).
    pub(super) hook: bool,
    /// The name of the release catalog whose path each host runs before
    /// `steps` (a key of [`Plan::catalogs`]).
    pub(super) release: Option<String>,
    /// `strategy: { type: cluster }`.
    pub(super) cluster: Option<ClusterDef>,
    /// Its maintenance windows (its own `windows:` or the plan's).
    pub(super) windows: Option<WindowsDef>,
}

/// A parsed, statically valid plan (not yet matched against hosts).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub file: String,
    pub source: String,
    /// The plan's `name`.
    pub name: String,
    /// The target version (`{{version}}`).
    pub version: String,
    /// Component whose installed version is a host's version.
    pub component: Option<String>,
    pub host_lost_timeout: Duration,
    /// Rollout-wide failure budget, resolved against the rollout's host count.
    pub(super) max_failures: Option<Amount>,
    /// The plan's `on_failure`: the default of every group, and what the
    /// rollout-wide budget does.
    pub(super) on_failure: OnFailure,
    /// `require_backup`: every migration step needs a backup before it.
    pub(super) require_backup: bool,
    /// In declaration order.
    pub(super) groups: Vec<PlanGroup>,
    /// Declaration indices in the topological order used for the rollout.
    pub(super) order: Vec<usize>,
    /// Release catalogs used by groups (`release: { catalog: NAME }`), by name.
    pub(super) catalogs: BTreeMap<String, PlanCatalog>,
    /// The limits it was parsed under, for [`expand`](super::expand).
    pub(super) limits: PlanLimits,
}

impl Plan {
    /// The plan's `name`.
    pub fn plan_name(&self) -> &str {
        &self.name
    }

    /// The version every host should end on.
    pub fn target_version(&self) -> &str {
        &self.version
    }

    /// Group names in rollout (topological) order.
    pub fn group_names(&self) -> Vec<&str> {
        self.order.iter().map(|&i| self.groups[i].name.as_str()).collect()
    }

    pub(super) fn src(&self) -> Src<'_> {
        Src { file: &self.file, source: &self.source }
    }
}

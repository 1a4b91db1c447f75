//! The YAML plan format: parsing, validation and expansion.
//!
//! A plan is what an operator writes and reviews; a [`RolloutSpec`] is what the
//! engine runs. Getting from one to the other happens in two stages so that
//! `convoy plan` can reject a broken file before any host is involved:
//!
//! 1. [`parse_plan`] checks everything that does not depend on the fleet:
//!    YAML syntax, unknown fields (a typo such as `max_paralel` must not be
//!    silently ignored), required fields, group names, `after:` references,
//!    cycles, durations, percentages, step shapes and template syntax.
//! 2. [`expand`] matches the groups against an inventory, substitutes the
//!    templates per host and resolves percentages against each group's size.
//!
//! Every error is a [`PlanError`] naming the file, the line and the field
//! path (`groups[1].checks[0].http.url`), because "invalid plan" is useless on
//! a 300-line file. serde_norway reports lines for its own errors; for the
//! semantic ones a small block-YAML locator (module `locate`) finds the line
//! of a field path in the source, falling back to the closest enclosing
//! field it can find (flow style such as `{ role: db }` sits on one line, so
//! the enclosing key's line is then exactly right).
//!
//! Format decisions, beyond the reference in the project docs:
//! - `defaults` are inherited **per key, wholesale**: a group that sets
//!   `strategy` replaces the whole default strategy (no field-by-field merge),
//!   so what a group does can be read from the group alone plus at most one
//!   default block.
//! - `type: parallel` upgrades every host of the group at once; setting
//!   `max_parallel` as well is an error rather than a silent override.
//! - Hosts matched by a selector are upgraded in host-id order (deterministic
//!   whatever order the inventory arrives in). An explicit `hosts:` list keeps
//!   the order written, because that order is the operator's intent (canary
//!   first, a cluster leader last).
//! - `select: {}` matches every host of the inventory; the "one group per
//!   host" rule still applies (hooks aside), so it only makes sense in a
//!   one-group plan.
//! - Steps and checks of a group run as one list, steps first. A step without
//!   a name is called `<kind>-<position>` (1-based over that list, the kind as
//!   in [`StepKind::kind_name`]: `exec-1`, `archive-2`, `http-3`,
//!   `exec_check-4`), so default names never collide; names must be unique
//!   inside a group because status and logs refer to steps by name.
//! - Templates are checked for syntax and known variables at parse time;
//!   labels, installed components and facts (`{{fact.NAME}}`: what the
//!   host's agent reports, or an inventory file's `facts:`) are looked up
//!   per host at expand time; a host without one is an error naming it.
//!   There is no escape for a literal `{{`.
//! - Any step or check may say `estimate: DURATION` (positive): how long it
//!   usually takes, for `convoy plan`'s estimates ([`crate::estimate`]);
//!   it changes nothing at run time. [`expand_detailed`] keeps it, with each
//!   host's release path, beside the [`RolloutSpec`].
//! - Timeouts, check intervals, check deadlines and `host_lost_timeout` must
//!   be positive; soak may be zero. A check's step timeout is its deadline
//!   plus 5s so the agent's own deadline handling always fires first.
//! - A group with neither steps nor checks (after defaults) is an error: it
//!   would mark hosts upgraded without touching them.
//! - `on_failure` is written at the plan level (the default of every group
//!   and what the rollout-wide `max_failures` does) and may be overridden per
//!   group; it defaults to `halt`. The rollout-wide `max_failures` is a count
//!   or a percentage of every host of the rollout (rounded down); without
//!   it there is no rollout-wide budget.
//! - `canary:` takes exactly one of `count` (at least 1, capped at the
//!   group's size), `percent` (of the group, rounded down, at least one host)
//!   or `select` (labels; the matching hosts of the group go first, in their
//!   order; matching none is an expansion error). `promote` is `manual`
//!   (the default: a missing promote never lets canaries through on their
//!   own) or `{ after: DURATION }`.
//! - Undo: a step's `rollback:` (an exec spec, templated like the step)
//!   replaces its default undo; an `archive` step without one is undone by
//!   an `archive_rollback` of the same component, back to the version the
//!   inventory reported for it (none: the agent's recorded previous release).
//!   An `apt`, `dpkg` or `rpm` step without one is undone by a `pkg_rollback`
//!   of the same package and manager, to the version the inventory reported
//!   for the package (none: the agent's recorded previous version, or removal
//!   when it was not installed before; see `PkgRollbackSpec`).
//!   Other steps (`service` included) and all checks have no undo.
//! - Package steps: `apt: { package, version, hold?, allow_downgrade?,
//!   update? }`, `dpkg: { package, version, source, sha256 }`, `rpm: {
//!   package, version, manager?: dnf|yum|rpm, source?, sha256?,
//!   allow_downgrade? }` (`manager: rpm` needs `source`; a `source` needs its
//!   `sha256`), `service: { name, action: start|stop|restart|status,
//!   manager?: auto|systemd|supervised, command?: EXEC, pidfile?, log?,
//!   stop_grace? }` (`supervised` start/restart need `command`). Every string
//!   is templated; package names and versions must not start with `-` nor
//!   contain spaces, `/` or `=` (checked at parse time, or after rendering
//!   when templated). An undo is named
//!   `rollback-<step>` and has its step's timeout. `rollback_steps:` (group,
//!   or inherited wholesale from `defaults`) run after the undos; unnamed
//!   ones are `rollback-<kind>-<n>`, and they may not declare a rollback.
//! - Checks: `healthy_deadline` is another name for `deadline` (giving both
//!   is an error); `min_healthy_time` (default 0) must be shorter than it.
//! - Backups: `backup: { command, args?, env?, workdir?, path? }` (every
//!   string templated; `path` may not be empty; no undo, no capture). Any
//!   step may say `migration: true`; so are the steps of a catalog's
//!   `migrate` phase ([`HostPlan::migrations`]). With the plan's
//!   `require_backup: true`, expansion refuses a host entry's migration step
//!   unless a backup step comes before it in the entry, or some group (or
//!   hook) its group waits for, directly or not, has a backup step on any of
//!   its hosts; the error names the `migration` field (for a catalog step,
//!   the step) and the host. The engine checks again at run time.
//!
//! Hooks (an expansion transform: the engine only sees more groups):
//! - `hooks: { before: HOOK, after: HOOK }` at the plan level and on any
//!   group, `HOOK` being `{ on: HOST_ID | { select: {LABELS} }, steps: [...],
//!   checks: [...] }`. The key is `hooks:` on both levels because a group's
//!   `after:` already lists its dependencies. `select` takes the first
//!   matching host by id; no match (or an unknown id) is an expansion error.
//! - Each hook becomes a one-host group (`max_parallel: 1`, `max_failures: 0`,
//!   no soak, `on_failure: halt`, so a failed hook halts the rollout) named
//!   `before`, `after`, `<group>.before` or `<group>.after`; a clash with a
//!   declared group's name is an error. Wiring: the plan's `before` precedes
//!   every group that would otherwise have no dependency; the plan's `after`
//!   follows every group nothing depends on; a group's `before` takes over
//!   the group's `after:` list and the group waits for it; a group's `after`
//!   waits for the group, and every group that waited for the group waits
//!   for the hook instead. Groups are listed `before`, then each group
//!   between its own hooks, then `after` (ties in the topological order go
//!   to that listing).
//! - The hook's host may also be in a normal group: it gets a second host
//!   entry with key `host@hook-group` (see [`HostPlan::key`]); the "one group
//!   per host" rule is about normal groups only. Templates in hook steps use
//!   the hook's host and `{{group}}` is the hook group's name. Hook steps may
//!   declare `rollback:` like any step (run if a `rollback_all` reaches
//!   them); `defaults` do not apply to hooks.
//! - Hooks run on an agent. Hooks run by the coordinator itself (a webhook
//!   call without a host) are not supported: put the call on a host.
//!
//! Captured values (see [`crate::capture`] for the extraction rules):
//! - An exec step may declare `capture: { name: N, regex: '...' }` or
//!   `capture: { name: N, json: a.b.0 }` (exactly one of the two; names are
//!   `A-Z a-z 0-9 _ -`; regexes and paths are checked at parse time).
//! - `{{captured.N}}` may appear in any templated string but a step name. It
//!   is left in place at expansion and filled by the engine at dispatch. It
//!   must name a capture of an earlier step of the same group (for a step's
//!   `rollback:`, also the step itself; for `rollback_steps`, any step of the
//!   group) or of a hook the group waits for, directly or not; otherwise it
//!   is a parse error at that string. Hook capture names are rollout-wide, so
//!   two hooks may not capture the same name, nor may a group step capture a
//!   name a hook captures; a group may not capture one name twice.
//! - Release catalog steps capture and use captured values too (see
//!   "Captured values" in [`crate::catalog`]): in catalog order at parse
//!   time (the error names the catalog's file and line), then per host at
//!   expansion, over the host's path followed by the group's steps, which
//!   may use what the path captured. A catalog capture may not reuse a
//!   hook's name, and a group step may not recapture a name its catalog
//!   captures.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::{Catalog, CatalogStep, HostContext, Phase, path_for_host};
use crate::limits::{self, MAX_DURATION, MAX_RETRIES, PlanLimits};
use crate::version::Version;
use crate::{capture, dag};

use crate::metric::MetricFormat;
use crate::model::{
    AptSpec, ArchiveRollbackSpec, ArchiveSpec, BackupSpec, CanarySpec, CaptureFrom, CaptureSpec, CheckPolicy,
    ClusterMembers, ClusterSpec, DpkgSpec, ExecCheckSpec, ExecSpec, FileCheckSpec, FileSpec, GroupSpec, HostPlan,
    HttpCheckSpec, InventoryHost, JsonExpect, LeaderAnswers, MetricCheckSpec, MetricSource, OnFailure, PkgManager,
    PkgRollbackSpec, Promote, RoleMatch, RolloutSpec, RpmManager, RpmSpec, ServiceAction, ServiceManager, ServiceSpec,
    StepKind, StepSpec, Strategy, TcpCheckSpec, Threshold,
};

/// A plan error that names the file, the line (when known) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PlanError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

const DEFAULT_HOST_LOST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Margin between a check's deadline and the step timeout the agent enforces.
const CHECK_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Field paths

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, e.g. `groups[1].checks[0].http.url`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldPath(pub(crate) Vec<Seg>);

impl FieldPath {
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    pub(crate) fn idx(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }

    fn join(&self, rest: &FieldPath) -> FieldPath {
        FieldPath(self.0.iter().chain(&rest.0).cloned().collect())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The file being read, to turn a field path and a message into a [`PlanError`].
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub(crate) file: &'a str,
    pub(crate) source: &'a str,
}

impl Src<'_> {
    pub(crate) fn err(&self, path: &FieldPath, message: impl Into<String>) -> PlanError {
        PlanError {
            file: self.file.to_string(),
            line: Some(locate::line_of(self.source, &path.0)),
            field: path.to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// The document as written. Scalars that accept several spellings (durations,
// counts or percentages) are read as text and validated by hand, so that the
// errors can say what was expected; serde_norway hands any scalar's text to a
// `String`.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    version: Option<String>,
    component: Option<String>,
    host_lost_timeout: Option<String>,
    max_failures: Option<String>,
    on_failure: Option<OnFailure>,
    require_backup: Option<bool>,
    hooks: Option<RawHooks>,
    defaults: Option<RawDefaults>,
    groups: Option<Vec<RawGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    before: Option<RawHook>,
    after: Option<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    /// A host id, or `{ select: { LABEL: VALUE } }`; read by hand.
    on: Option<serde_norway::Value>,
    steps: Option<Vec<RawStep>>,
    checks: Option<Vec<RawCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    name: Option<String>,
    regex: Option<String>,
    json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    strategy: Option<RawStrategy>,
    steps: Option<Vec<RawStep>>,
    checks: Option<Vec<RawCheck>>,
    rollback_steps: Option<Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<String>,
    select: Option<BTreeMap<String, String>>,
    hosts: Option<Vec<String>>,
    after: Option<Vec<String>>,
    strategy: Option<RawStrategy>,
    canary: Option<RawCanary>,
    on_failure: Option<OnFailure>,
    hooks: Option<RawHooks>,
    steps: Option<Vec<RawStep>>,
    checks: Option<Vec<RawCheck>>,
    rollback_steps: Option<Vec<RawStep>>,
    release: Option<RawGroupRelease>,
}

/// `release: { catalog: NAME }` on a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupRelease {
    catalog: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    count: Option<String>,
    percent: Option<String>,
    select: Option<BTreeMap<String, String>>,
    /// `manual` or `{ after: DURATION }`, read by hand for a clear error.
    promote: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StrategyType {
    Rolling,
    Parallel,
    Cluster,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrategy {
    #[serde(rename = "type")]
    kind: Option<StrategyType>,
    max_parallel: Option<String>,
    max_failures: Option<String>,
    soak: Option<String>,
    /// `type: cluster`: the label naming a host's cluster (default `cluster`).
    by: Option<String>,
    /// `type: cluster`: the check that passes on the leader.
    leader: Option<RawCheck>,
    /// `type: cluster`: steps handing the leadership over, run on the leader.
    switchover: Option<Vec<RawStep>>,
    /// `type: cluster`: every member of a cluster together, step by step.
    same_version: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    timeout: Option<String>,
    exec: Option<RawExec>,
    archive: Option<RawArchive>,
    file: Option<RawFile>,
    apt: Option<RawApt>,
    dpkg: Option<RawDpkg>,
    rpm: Option<RawRpm>,
    service: Option<RawService>,
    backup: Option<RawBackup>,
    rollback: Option<RawExec>,
    capture: Option<RawCapture>,
    migration: Option<bool>,
    /// How long the step usually takes (`90s`), for `convoy plan`'s estimate.
    estimate: Option<String>,
    /// May run again if the agent restarted while it ran (default false).
    #[serde(default)]
    rerun_safe: bool,
    /// The version of the plan's `component` the host runs once this step
    /// succeeded (templated), for steps whose driver cannot tell.
    installs: Option<String>,
}

/// `backup: { command, args, env, workdir, path }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    component: Option<String>,
    version: Option<String>,
    source: Option<String>,
    sha256: Option<String>,
    install_root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApt {
    package: Option<String>,
    version: Option<String>,
    hold: Option<bool>,
    allow_downgrade: Option<bool>,
    update: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpkg {
    package: Option<String>,
    version: Option<String>,
    source: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRpm {
    package: Option<String>,
    version: Option<String>,
    manager: Option<String>,
    source: Option<String>,
    sha256: Option<String>,
    allow_downgrade: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    action: Option<String>,
    manager: Option<String>,
    command: Option<RawExec>,
    pidfile: Option<String>,
    log: Option<String>,
    stop_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: Option<String>,
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<String>,
    retries: Option<u32>,
    interval: Option<String>,
    deadline: Option<String>,
    healthy_deadline: Option<String>,
    min_healthy_time: Option<String>,
    http: Option<RawHttp>,
    tcp: Option<RawTcp>,
    exec: Option<RawExec>,
    file: Option<RawFileCheck>,
    metric: Option<RawMetric>,
    /// How long the check usually takes to pass, for `convoy plan`'s estimate.
    estimate: Option<String>,
    /// A cluster's leader check only: the leader's answer (default: the check passes).
    leader_when: Option<RawRoleMatch>,
    /// A cluster's leader check only: the follower's answer (required).
    follower_when: Option<RawRoleMatch>,
}

/// `leader_when:` / `follower_when:` of a leader check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleMatch {
    exit_code: Option<i32>,
    status: Option<u16>,
    output_contains: Option<String>,
}

/// `metric:` — exactly one of `url`/`command`; `prometheus` (with optional
/// `labels`) or `json`, or neither for a plain number; `below` and/or `above`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    url: Option<String>,
    command: Option<RawExec>,
    prometheus: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    json: Option<String>,
    below: Option<f64>,
    above: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: Option<String>,
    status: Option<u16>,
    body_contains: Option<String>,
    json: Option<RawJsonExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonExpect {
    path: Option<String>,
    equals: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileCheck {
    path: Option<String>,
    contains: Option<String>,
}

// ---------------------------------------------------------------------------
// The validated plan

/// A count or a share of a group's hosts, resolved at expand time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amount {
    Count(usize),
    Percent(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StrategyDef {
    /// `type: parallel`: every host of the group at once.
    all_at_once: bool,
    max_parallel: Amount,
    max_failures: Amount,
    soak: Duration,
}

impl Default for StrategyDef {
    fn default() -> Self {
        StrategyDef {
            all_at_once: false,
            max_parallel: Amount::Count(1),
            max_failures: Amount::Count(0),
            soak: Duration::ZERO,
        }
    }
}

impl StrategyDef {
    fn resolve(&self, hosts: usize) -> Strategy {
        let share = |p: u32| hosts.saturating_mul(p as usize) / 100;
        // Clamped to the group's size: nothing may be sized by a number the
        // plan chose, and a window wider than the group changes nothing.
        let max_parallel = match (self.all_at_once, self.max_parallel) {
            (true, _) => hosts,
            (false, Amount::Count(n)) => n.min(hosts),
            (false, Amount::Percent(p)) => share(p),
        }
        .max(1);
        let max_failures = match self.max_failures {
            Amount::Count(n) => n.min(hosts),
            Amount::Percent(p) => share(p),
        };
        Strategy { max_parallel, max_failures, soak: self.soak }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    Labels(BTreeMap<String, String>),
    Hosts(Vec<String>),
    /// A hook's one host: an id, or the first host (by id) a selector matches.
    Hook(HookOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HookOn {
    Host(String),
    Select(BTreeMap<String, String>),
}

/// A step or check with its strings still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepTemplate {
    /// Where it was written (`groups[0].steps[1]`, `defaults.checks[0]`).
    path: FieldPath,
    spec: StepSpec,
    /// The step's explicit `rollback:` command, still templated.
    undo: Option<ExecSpec>,
    /// What the step captures from its output.
    capture: Option<CaptureSpec>,
    /// The step is a migration (`migration: true`, or a catalog's `migrate`
    /// phase): the field to blame when `require_backup` finds no backup
    /// before it.
    migration: Option<FieldPath>,
    /// The step's declared `estimate:` (see [`crate::estimate`]).
    estimate: Option<Duration>,
    /// `installs:`: (component, templated version) the host runs once the
    /// step succeeded; the component `None` means the plan's. The last step
    /// of a catalog hop installs the hop's release.
    installs: Option<(Option<String>, String)>,
}

/// Which of a group's hosts are its canaries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CanaryPick {
    Count(usize),
    Percent(u32),
    Select(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CanaryDef {
    pick: CanaryPick,
    promote: Promote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlanGroup {
    name: String,
    path: FieldPath,
    /// Declaration indices of the groups this one waits for.
    after: Vec<usize>,
    selection: Selection,
    strategy: StrategyDef,
    canary: Option<CanaryDef>,
    on_failure: OnFailure,
    /// Steps then checks, in order.
    steps: Vec<StepTemplate>,
    /// Run after the steps' undos when a host is rolled back.
    rollback_steps: Vec<StepTemplate>,
    /// A synthetic group running a hook (see "Hooks" in the module docs).
    hook: bool,
    /// The name of the release catalog whose path each host runs before
    /// `steps` (a key of [`Plan::catalogs`]).
    release: Option<String>,
    /// `strategy: { type: cluster }`.
    cluster: Option<ClusterDef>,
}

/// A group's `type: cluster` strategy, with its steps still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterDef {
    /// Where the strategy was written (the group's or the defaults').
    path: FieldPath,
    by: String,
    same_version: bool,
    leader: Option<StepTemplate>,
    /// How the leader check's answers read (with `leader`).
    answers: Option<LeaderAnswers>,
    switchover: Vec<StepTemplate>,
}

/// A catalog a plan uses, with every step parsed once as a plan step/check.
#[derive(Debug, Clone, PartialEq)]
struct PlanCatalog {
    /// The name the plan gives it (`release: { catalog: NAME }`).
    name: String,
    catalog: Catalog,
    /// The plan's `version` as a release of the catalog.
    target: Version,
    /// Parsed steps by their field in the catalog ([`CatalogStep::field`]),
    /// named with [`CatalogStep::name`] (qualified per hop at expansion).
    steps: HashMap<String, StepTemplate>,
}

impl PlanCatalog {
    fn src(&self) -> Src<'_> {
        Src { file: &self.catalog.file, source: &self.catalog.source }
    }

    /// The parsed steps of every release, releases ascending, each in phase order.
    fn release_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.catalog.releases.iter().flat_map(|r| &r.steps).filter_map(|cs| self.steps.get(&cs.field))
    }

    /// The parsed steps of every downgrade edge, in declaration order.
    fn downgrade_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.catalog.downgrades.iter().flat_map(|d| &d.steps).filter_map(|cs| self.steps.get(&cs.field))
    }

    /// [`PlanCatalog::release_steps`], then [`PlanCatalog::downgrade_steps`].
    fn ordered_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.release_steps().chain(self.downgrade_steps())
    }
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
    max_failures: Option<Amount>,
    /// The plan's `on_failure`: the default of every group, and what the
    /// rollout-wide budget does.
    on_failure: OnFailure,
    /// `require_backup`: every migration step needs a backup before it.
    require_backup: bool,
    /// In declaration order.
    groups: Vec<PlanGroup>,
    /// Declaration indices in the topological order used for the rollout.
    order: Vec<usize>,
    /// Release catalogs used by groups (`release: { catalog: NAME }`), by name.
    catalogs: BTreeMap<String, PlanCatalog>,
    /// The limits it was parsed under, for [`expand`].
    limits: PlanLimits,
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

    fn src(&self) -> Src<'_> {
        Src { file: &self.file, source: &self.source }
    }
}

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
/// stays with the plan for [`expand`] (hosts).
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
    let raw: RawPlan = serde_norway::from_str(source).map_err(|e| yaml_error(file, &e))?;
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

    let defaults = raw.defaults.unwrap_or_default();
    let dpath = root.key("defaults");
    let default_strategy = match &defaults.strategy {
        Some(s) => strategy(src, s, &dpath.key("strategy"))?,
        None => StrategyDef::default(),
    };
    let default_steps = templates(src, defaults.steps.as_deref(), &dpath.key("steps"), step)?;
    let default_checks = templates(src, defaults.checks.as_deref(), &dpath.key("checks"), check)?;
    let default_rollback = templates(src, defaults.rollback_steps.as_deref(), &dpath.key("rollback_steps"), step)?;

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
    for (i, (g, name)) in raw_groups.iter().zip(names).enumerate() {
        let p = gpath.idx(i);
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
            None => default_strategy,
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
        let steps = name_steps(src, steps.into_iter().chain(checks).collect())?;
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
        groups.push(PlanGroup {
            name,
            path: p,
            after,
            selection,
            strategy,
            canary,
            on_failure,
            steps,
            rollback_steps,
            hook: false,
            release,
            cluster,
        });
    }

    let after: Vec<Vec<usize>> = groups.iter().map(|g| g.after.clone()).collect();
    dag::topo_order(&after).map_err(|cycle| {
        let mut names: Vec<&str> = cycle.iter().map(|&i| groups[i].name.as_str()).collect();
        names.push(names[0]);
        src.err(&groups[cycle[0]].path.key("after"), format!("cycle: {}", names.join(" -> ")))
    })?;

    let group_hooks: Vec<Option<&RawHooks>> = raw_groups.iter().map(|g| g.hooks.as_ref()).collect();
    let groups = with_hooks(src, groups, raw.hooks.as_ref(), &group_hooks)?;
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
        steps(&dp, [("steps", len(&d.steps)), ("checks", checks(&d.checks)), ("", 0)])?;
        too_many(dp.key("rollback_steps"), len(&d.rollback_steps), "rollback steps", limits.max_steps)?;
        strategy(&dp, d.strategy.as_ref())?;
    }
    for (i, g) in raw.groups.iter().flatten().enumerate() {
        let gp = root.key("groups").idx(i);
        steps(&gp, [("steps", len(&g.steps)), ("checks", checks(&g.checks)), ("", 0)])?;
        too_many(gp.key("rollback_steps"), len(&g.rollback_steps), "rollback steps", limits.max_steps)?;
        too_many(gp.key("hosts"), g.hosts.as_ref().map_or(0, Vec::len), "hosts", limits.max_hosts)?;
        strategy(&gp, g.strategy.as_ref())?;
        hooks(&gp, g.hooks.as_ref())?;
    }
    Ok(())
}

/// Parse every step of `catalog` as a plan step or check, and check that
/// the plan's `version` is one of its releases (`at`: the group's
/// `release.catalog` field, for that error).
fn plan_catalog(
    src: Src<'_>,
    catalog: &Catalog,
    version: &str,
    at: &FieldPath,
    name: &str,
) -> Result<PlanCatalog, PlanError> {
    let target: Version = version.parse().map_err(|e: crate::version::VersionError| {
        src.err(at, format!("the plan's version '{version}' is not a version catalog '{name}' understands: {e}"))
    })?;
    if catalog.release(&target).is_none() {
        let known: Vec<String> = catalog.releases.iter().map(|r| r.version.to_string()).collect();
        return Err(src.err(
            at,
            format!(
                "the plan's version {version} is not a release of catalog '{name}' ({}; releases: {})",
                catalog.file,
                known.join(", ")
            ),
        ));
    }
    let csrc = Src { file: &catalog.file, source: &catalog.source };
    let mut steps = HashMap::new();
    let all = catalog.releases.iter().flat_map(|r| &r.steps).chain(catalog.downgrades.iter().flat_map(|d| &d.steps));
    for cs in all {
        let t = catalog_step(csrc, cs)?;
        steps.insert(cs.field.clone(), t);
    }
    Ok(PlanCatalog { name: name.to_string(), catalog: catalog.clone(), target, steps })
}

/// One catalog step through the plan's step (or check) grammar.
fn catalog_step(csrc: Src<'_>, cs: &CatalogStep) -> Result<StepTemplate, PlanError> {
    let p = field_path_of(&cs.field);
    // Through YAML text, as a plan step is read: a catalog's `timeout: 30`
    // must read as the plan's does (a value would refuse the integer), and
    // serde's error then names the field, which is located in the catalog.
    let text = serde_norway::to_string(&cs.raw).map_err(|e| csrc.err(&p, e.to_string()))?;
    let bad = |e: serde_norway::Error| {
        let e = yaml_error("", &e);
        let at = if e.field == "(yaml)" { p.clone() } else { p.join(&field_path_of(&e.field)) };
        csrc.err(&at, e.message)
    };
    let mut t = if cs.phase.is_check() {
        let raw: RawCheck = serde_norway::from_str(&text).map_err(bad)?;
        check(csrc, &raw, &p)?
    } else {
        let raw: RawStep = serde_norway::from_str(&text).map_err(bad)?;
        step(csrc, &raw, &p)?
    };
    // Captured values are checked with the plan's hooks (`check_captures`)
    // and per host at expansion (`check_path_captures`).
    t.spec.name = cs.name.clone();
    if cs.phase == Phase::Migrate && t.migration.is_none() {
        t.migration = Some(p);
    }
    Ok(t)
}

/// A catalog field path (`releases[1].steps.migrate[0]`) as a [`FieldPath`].
fn field_path_of(text: &str) -> FieldPath {
    let mut path = FieldPath::default();
    for part in text.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            path = path.key(key);
        }
        for idx in pieces {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                path = path.idx(n);
            }
        }
    }
    path
}

/// Add the hook groups to `groups` (user groups, `after` as declaration
/// indices) and wire them into the DAG (see "Hooks" in the module docs).
/// The result is in display order: `before`, then each group preceded by
/// its `.before` and followed by its `.after`, then `after`; every `after`
/// list is in the new indices.
fn with_hooks(
    src: Src<'_>,
    groups: Vec<PlanGroup>,
    plan_hooks: Option<&RawHooks>,
    group_hooks: &[Option<&RawHooks>],
) -> Result<Vec<PlanGroup>, PlanError> {
    let n = groups.len();
    let names: HashMap<String, usize> = groups.iter().enumerate().map(|(i, g)| (g.name.clone(), i)).collect();
    let hp = FieldPath::default().key("hooks");
    let make = |raw: &RawHook, p: FieldPath, name: String| hook_group(src, raw, p, name, &names);
    let plan_before = plan_hooks.and_then(|h| h.before.as_ref()).map(|h| make(h, hp.key("before"), "before".into()));
    let plan_after = plan_hooks.and_then(|h| h.after.as_ref()).map(|h| make(h, hp.key("after"), "after".into()));
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
            out.push(make(h, p.key("before"), format!("{}.before", g.name))?);
            gb[i] = Some(out.len() - 1);
        }
        let after_hook =
            hooks.and_then(|h| h.after.as_ref()).map(|h| make(h, p.key("after"), format!("{}.after", g.name)));
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
        rollback_steps: Vec::new(),
        hook: true,
        release: None,
        cluster: None,
    })
}

/// Check capture names and every `{{captured.NAME}}` reference (see
/// "Captured values" in the module docs). `groups` have their final `after`;
/// `catalogs` are the release catalogs the groups use, whose steps are
/// checked in catalog order (see "Captured values" in [`crate::catalog`]).
fn check_captures(
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
            for (rel, text) in strings_mut(&mut spec) {
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
            let mut spec = t.spec.clone();
            for (rel, text) in strings_mut(&mut spec) {
                if rel == FieldPath::default().key("name") {
                    continue;
                }
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
        for (rel, text) in strings_mut(&mut spec) {
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
            strings_mut(&mut spec).into_iter().map(|(rel, text)| (t.path.join(&rel), text.clone())).collect();
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
struct AncestorWalk {
    /// `seen[g] == round` when `g` was reached in the current walk.
    seen: Vec<u64>,
    round: u64,
    stack: Vec<usize>,
}

impl AncestorWalk {
    fn new(n: usize) -> AncestorWalk {
        AncestorWalk { seen: vec![0; n], round: 0, stack: Vec::new() }
    }
}

/// Names captured by the hooks group `gi` waits for, directly or not: one
/// iterative walk up its `after` edges (no recursion, so a long chain of
/// groups cannot overflow the stack).
fn hook_captures_before<'g>(groups: &'g [PlanGroup], gi: usize, walk: &mut AncestorWalk) -> Vec<&'g str> {
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
                strings_mut(&mut spec)
                    .into_iter()
                    .filter(|(rel, _)| *rel != FieldPath::default().key("name"))
                    .map(|(rel, s)| (t.path.join(&rel), s, false))
                    .chain(undo.iter_mut().flat_map(|u| {
                        exec_strings_mut(t.path.key("rollback"), u).into_iter().map(|(p, s)| (p, s, true))
                    }));
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

/// Validate a group's `canary:` block.
fn canary(src: Src<'_>, raw: &RawCanary, p: &FieldPath) -> Result<CanaryDef, PlanError> {
    let kind = one_kind(
        src,
        &[("count", raw.count.is_some()), ("percent", raw.percent.is_some()), ("select", raw.select.is_some())],
        p,
        "canary",
    )?;
    let kp = p.key(kind);
    let pick = match (&raw.count, &raw.percent, &raw.select) {
        (Some(c), _, _) => match parse_amount(c, 1).map_err(|m| src.err(&kp, m))? {
            Amount::Count(n) => CanaryPick::Count(n),
            Amount::Percent(n) => CanaryPick::Percent(n),
        },
        (_, Some(pc), _) => {
            let text = pc.trim();
            let with_sign = if text.ends_with('%') { text.to_string() } else { format!("{text}%") };
            match parse_amount(&with_sign, 1).map_err(|m| src.err(&kp, m))? {
                Amount::Percent(n) => CanaryPick::Percent(n),
                Amount::Count(_) => unreachable!("a value ending in % is a percentage"),
            }
        }
        (_, _, Some(sel)) => {
            if sel.is_empty() {
                return Err(src.err(&kp, "a canary selector needs at least one label"));
            }
            CanaryPick::Select(sel.clone())
        }
        (None, None, None) => unreachable!("one_kind found a kind"),
    };
    let pp = p.key("promote");
    let bad = || src.err(&pp, "expected 'manual' or a mapping such as { after: 5m }");
    let promote = match &raw.promote {
        None => Promote::Manual,
        Some(serde_norway::Value::String(s)) if s == "manual" => Promote::Manual,
        Some(serde_norway::Value::Mapping(m)) => {
            let mut after = None;
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("after"), serde_norway::Value::String(s)) => after = Some(s.clone()),
                    (Some("after"), serde_norway::Value::Number(n)) => after = Some(n.to_string()),
                    (Some("after"), _) => return Err(src.err(&pp.key("after"), "expected a duration such as 5m")),
                    (Some(other), _) => {
                        return Err(src.err(&pp, format!("unknown field `{other}`, expected `after`")));
                    }
                    (None, _) => return Err(bad()),
                }
            }
            let after = after.ok_or_else(|| src.err(&pp, "missing required field 'after'"))?;
            Promote::After(parse_duration(&after).map_err(|m| src.err(&pp.key("after"), m))?)
        }
        Some(_) => return Err(bad()),
    };
    Ok(CanaryDef { pick, promote })
}

/// Name a group's rollback steps (`rollback-<kind>-<n>` when unnamed) and
/// reject a rollback step that declares its own rollback or reuses a name a
/// rollback already has (`rollback-<step>` is the undo of `<step>`).
fn name_rollback_steps(
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
fn undo_name(name: &str) -> String {
    format!("rollback-{name}")
}

/// Turn a serde_norway error into a [`PlanError`]: its location gives the
/// line, and the path it prefixes to its message (`groups[0].strategy: ...`)
/// gives the field.
fn yaml_error(file: &str, err: &serde_norway::Error) -> PlanError {
    let line = err.location().map_or(1, |l| l.line());
    let text = plain_type_names(&strip_marks(&err.to_string()));
    let (path, message) = match text.split_once(": ") {
        Some((path, message)) if looks_like_path(path) => (path.to_string(), message.to_string()),
        _ => (String::new(), text),
    };
    let unknown =
        message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name.to_string());
    let field = match (unknown, path.is_empty()) {
        (Some(name), true) => name,
        (Some(name), false) => format!("{path}.{name}"),
        (None, false) => path,
        (None, true) => "(yaml)".to_string(),
    };
    PlanError { file: file.to_string(), line: Some(line), field, message }
}

/// serde_norway appends " at line L column C" (sometimes twice, for libyaml's
/// context); the line is reported separately.
fn strip_marks(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find(" at line ") {
        let tail = &out[start + " at line ".len()..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let Some(after_col) = tail[digits..].strip_prefix(" column ") else { break };
        let col_digits = after_col.chars().take_while(char::is_ascii_digit).count();
        let end = out.len() - after_col.len() + col_digits;
        out.replace_range(start..end, "");
    }
    out
}

/// serde names the Rust type it expected ("expected struct RawStrategy");
/// the operator only needs to know a mapping was expected there.
fn plain_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("struct Raw") {
        out.push_str(&rest[..i]);
        out.push_str("a mapping");
        let tail = &rest[i + "struct Raw".len()..];
        rest = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-' | '?'))
}

fn required(src: Src<'_>, value: Option<String>, path: &FieldPath) -> Result<String, PlanError> {
    let last = match path.0.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "value",
    };
    match value {
        None => Err(src.err(path, format!("missing required field '{last}'"))),
        Some(v) if v.trim().is_empty() => Err(src.err(path, "must not be empty")),
        Some(v) => Ok(v),
    }
}

fn selection(src: Src<'_>, g: &RawGroup, p: &FieldPath) -> Result<Selection, PlanError> {
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

/// The `type: cluster` part of a strategy; `None` for other types, which
/// may not use its fields.
fn cluster_def(src: Src<'_>, raw: &RawStrategy, p: &FieldPath) -> Result<Option<ClusterDef>, PlanError> {
    if raw.kind != Some(StrategyType::Cluster) {
        let extra = [
            ("by", raw.by.is_some()),
            ("leader", raw.leader.is_some()),
            ("switchover", raw.switchover.is_some()),
            ("same_version", raw.same_version.is_some()),
        ];
        if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
            return Err(src.err(&p.key(field), "only allowed with type: cluster"));
        }
        return Ok(None);
    }
    let by = match &raw.by {
        Some(b) if b.trim().is_empty() => return Err(src.err(&p.key("by"), "must name a label")),
        Some(b) => b.clone(),
        None => "cluster".to_string(),
    };
    let same_version = raw.same_version.unwrap_or(false);
    let (leader, answers) = match &raw.leader {
        Some(_) if same_version => {
            return Err(src.err(
                &p.key("leader"),
                "not allowed with same_version: true, which upgrades every member together, in no leader order",
            ));
        }
        Some(l) => {
            let lp = p.key("leader");
            if l.retries.is_some_and(|r| r > 0) || l.min_healthy_time.is_some() {
                return Err(src.err(
                    &lp,
                    "a leader check is asked once each time (an unknown answer is asked again every 'interval' \
                     until 'deadline'): 'retries' and 'min_healthy_time' are not allowed",
                ));
            }
            let mut t = check_inner(src, l, &lp, true)?;
            if t.spec.name.is_empty() {
                t.spec.name = "leader-check".to_string();
            }
            let answers = leader_answers(src, l, &lp)?;
            (Some(t), Some(answers))
        }
        None if same_version => (None, None),
        None => {
            return Err(src.err(
                &p.key("leader"),
                "type: cluster needs a 'leader' check (exec or http) with its 'follower_when' answer, \
                 or same_version: true",
            ));
        }
    };
    let switchover = match (&raw.switchover, same_version) {
        (Some(_), true) => return Err(src.err(&p.key("switchover"), "not allowed with same_version: true")),
        (Some(steps), false) => {
            let sp = p.key("switchover");
            let parsed = templates(src, Some(steps.as_slice()), &sp, step)?.unwrap_or_default();
            name_steps(src, parsed)?
        }
        (None, _) => Vec::new(),
    };
    Ok(Some(ClusterDef { path: p.clone(), by, same_version, leader, answers, switchover }))
}

/// Default pause between two asks of a leader check that could not tell.
const LEADER_INTERVAL: Duration = Duration::from_secs(1);

/// The three answers of a cluster's leader check written at `lp` (see
/// [`LeaderAnswers`]).
fn leader_answers(src: Src<'_>, l: &RawCheck, lp: &FieldPath) -> Result<LeaderAnswers, PlanError> {
    let exec = l.exec.is_some();
    if !exec && l.http.is_none() {
        let kind = [("tcp", l.tcp.is_some()), ("file", l.file.is_some()), ("metric", l.metric.is_some())]
            .into_iter()
            .find(|(_, set)| *set)
            .map_or("check", |(k, _)| k);
        return Err(src.err(
            &lp.key(kind),
            "a leader check asks a member its role: use 'exec' (exit code, output) or 'http' (status, body)",
        ));
    }
    let role = |raw: &RawRoleMatch, field: &str| -> Result<RoleMatch, PlanError> {
        let fp = lp.key(field);
        match (exec, raw.exit_code, raw.status) {
            (false, Some(_), _) => {
                return Err(src.err(&fp.key("exit_code"), "an http leader check has no exit code: use 'status'"));
            }
            (true, _, Some(_)) => {
                return Err(src.err(&fp.key("status"), "an exec leader check has no HTTP status: use 'exit_code'"));
            }
            (false, None, Some(st)) if !(100..=599).contains(&st) => {
                return Err(src.err(&fp.key("status"), format!("invalid HTTP status {st}")));
            }
            _ => {}
        }
        if raw.output_contains.as_deref().is_some_and(str::is_empty) {
            return Err(src.err(&fp.key("output_contains"), "must not be empty"));
        }
        if raw.exit_code.is_none() && raw.status.is_none() && raw.output_contains.is_none() {
            return Err(src
                .err(&fp, format!("give '{}', 'output_contains' or both", if exec { "exit_code" } else { "status" })));
        }
        Ok(RoleMatch { exit_code: raw.exit_code, status: raw.status, output_contains: raw.output_contains.clone() })
    };
    let Some(raw_follower) = &l.follower_when else {
        return Err(src.err(
            &lp.key("follower_when"),
            "a leader check needs 'follower_when': how a follower answers (e.g. follower_when: { exit_code: 1 }, \
             or { output_contains: slave }). A failing check no longer means 'follower': an answer that is \
             neither 'leader_when' (default: the check passes) nor 'follower_when' is unknown, asked again \
             until 'deadline', then the host fails untouched",
        ));
    };
    let follower = role(raw_follower, "follower_when")?;
    let leader = match &l.leader_when {
        Some(r) => role(r, "leader_when")?,
        None => RoleMatch::default(),
    };
    // What each answer needs of the code and the text, to refuse answers
    // that one outcome could give both.
    let expected_status = l.http.as_ref().and_then(|h| h.status).unwrap_or(200);
    let code = |m: &RoleMatch| match (m.exit_code, m.status) {
        (Some(c), _) => i64::from(c),
        (None, Some(st)) => i64::from(st),
        (None, None) if exec => 0,
        (None, None) => i64::from(expected_status),
    };
    let text = |m: &RoleMatch, own: bool| -> Option<String> {
        m.output_contains
            .clone()
            .or_else(|| if own { l.http.as_ref().and_then(|h| h.body_contains.clone()) } else { None })
    };
    let leader_default = l.leader_when.is_none();
    let (lt, ft) = (text(&leader, leader_default), text(&follower, false));
    let apart = code(&leader) != code(&follower) || matches!((&lt, &ft), (Some(a), Some(b)) if a != b);
    if !apart {
        let field = if leader_default { "follower_when" } else { "leader_when" };
        return Err(src.err(
            &lp.key(field),
            "the leader's and the follower's answers can be the same (same exit code or status, and no \
             different output_contains on both): one answer could not be told apart; give 'leader_when' and \
             'follower_when' different codes, or a different output_contains each",
        ));
    }
    let interval = match &l.interval {
        Some(s) => positive_duration(src, s, &lp.key("interval"))?,
        None => LEADER_INTERVAL,
    };
    let deadline = match (&l.deadline, &l.healthy_deadline) {
        (Some(s), _) => positive_duration(src, s, &lp.key("deadline"))?,
        (None, Some(s)) => positive_duration(src, s, &lp.key("healthy_deadline"))?,
        (None, None) => CheckPolicy::default().deadline,
    };
    Ok(LeaderAnswers { leader, follower, interval, deadline })
}

fn strategy(src: Src<'_>, raw: &RawStrategy, p: &FieldPath) -> Result<StrategyDef, PlanError> {
    let all_at_once = raw.kind == Some(StrategyType::Parallel);
    let mp = p.key("max_parallel");
    let max_parallel = match &raw.max_parallel {
        Some(_) if all_at_once => {
            return Err(src.err(&mp, "not allowed with type: parallel, which upgrades every host of the group at once"));
        }
        Some(s) => parse_amount(s, 1).map_err(|m| src.err(&mp, m))?,
        None => Amount::Count(1),
    };
    let max_failures = match &raw.max_failures {
        Some(s) => parse_amount(s, 0).map_err(|m| src.err(&p.key("max_failures"), m))?,
        None => Amount::Count(0),
    };
    let soak = match &raw.soak {
        Some(s) => parse_duration(s).map_err(|m| src.err(&p.key("soak"), m))?,
        None => Duration::ZERO,
    };
    Ok(StrategyDef { all_at_once, max_parallel, max_failures, soak })
}

/// An integer >= `min`, or a percentage `N%` with `min <= N <= 100`.
fn parse_amount(s: &str, min: usize) -> Result<Amount, String> {
    let s = s.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let shape = || format!("invalid value '{s}': expected an integer or a percentage such as '25%'");
    if let Some(num) = s.strip_suffix('%') {
        let num = num.trim_end();
        if !digits(num) {
            return Err(shape());
        }
        match num.parse::<u32>() {
            Ok(n) if n as usize >= min && n <= 100 => Ok(Amount::Percent(n)),
            _ => Err(format!("invalid percentage '{s}': must be between {min}% and 100%")),
        }
    } else {
        if !digits(s) {
            return Err(shape());
        }
        match s.parse::<usize>() {
            Ok(n) if n >= min => Ok(Amount::Count(n)),
            Ok(_) => Err(format!("must be at least {min}")),
            Err(_) => Err(format!("invalid value '{s}': too large")),
        }
    }
}

/// Parse `250ms`, `2s`, `1m`, `1h`, `1h30m` (units may be combined, largest
/// first or not) or a bare integer meaning seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("invalid duration '{s}': expected e.g. 250ms, 2s, 1m, 1h30m or a number of seconds");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let d = text.parse::<u64>().map(Duration::from_secs).map_err(|_| bad())?;
        return at_most_max(s, d);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    at_most_max(s, total)
}

fn at_most_max(s: &str, d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("duration '{}' is longer than the maximum of {}", s.trim(), format_duration(MAX_DURATION)));
    }
    Ok(d)
}

/// The shortest spelling [`parse_duration`] reads back: `0s`, `250ms`, `1h30m`, `1s500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

fn positive_duration(src: Src<'_>, s: &str, path: &FieldPath) -> Result<Duration, PlanError> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err(src.err(path, "must be greater than zero")),
        Ok(d) => Ok(d),
        Err(m) => Err(src.err(path, m)),
    }
}

/// Validate a list of steps or checks; `None` when the list is absent (so the
/// caller can fall back to defaults), `Some(vec![])` when written empty.
fn templates<R>(
    src: Src<'_>,
    list: Option<&[R]>,
    path: &FieldPath,
    one: fn(Src<'_>, &R, &FieldPath) -> Result<StepTemplate, PlanError>,
) -> Result<Option<Vec<StepTemplate>>, PlanError> {
    let Some(list) = list else { return Ok(None) };
    list.iter().enumerate().map(|(i, r)| one(src, r, &path.idx(i))).collect::<Result<Vec<_>, _>>().map(Some)
}

/// The single kind key of a step or check, or an error naming what is wrong.
fn one_kind<'k>(src: Src<'_>, present: &[(&'k str, bool)], p: &FieldPath, what: &str) -> Result<&'k str, PlanError> {
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

fn step(src: Src<'_>, raw: &RawStep, p: &FieldPath) -> Result<StepTemplate, PlanError> {
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
        (Some(e), _, _) => StepKind::Exec(exec_spec(src, e, &kp)?),
        (_, Some(a), _) => {
            let sha256 = required(src, a.sha256.clone(), &kp.key("sha256"))?;
            if !sha256.contains("{{") {
                check_sha256(&sha256).map_err(|m| src.err(&kp.key("sha256"), m))?;
            }
            let name = |field: &str, value: &Option<String>| -> Result<String, PlanError> {
                let value = required(src, value.clone(), &kp.key(field))?;
                check_archive_name(&value).map_err(|m| src.err(&kp.key(field), m))?;
                Ok(value)
            };
            StepKind::Archive(ArchiveSpec {
                component: name("component", &a.component)?,
                version: name("version", &a.version)?,
                source: required(src, a.source.clone(), &kp.key("source"))?,
                sha256: sha256.to_ascii_lowercase(),
                install_root: a.install_root.clone(),
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
    let spec = StepSpec { name: String::new(), timeout, kind, rerun_safe: raw.rerun_safe };
    let mut t = finish_template(src, raw.name.as_deref(), p, spec)?;
    t.estimate = estimate(src, raw.estimate.as_deref(), p)?;
    if let Some(v) = &raw.installs {
        if v.trim().is_empty() {
            return Err(src.err(&p.key("installs"), "must name a version (e.g. \"{{version}}\")"));
        }
        render(v, |var| match var {
            Var::Captured(_) => Err("captured values cannot name what a step installs".to_string()),
            Var::Host | Var::Version | Var::Group | Var::Label(_) | Var::Installed(_) | Var::Fact(_) => {
                Ok(String::new())
            }
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

fn check(src: Src<'_>, raw: &RawCheck, p: &FieldPath) -> Result<StepTemplate, PlanError> {
    check_inner(src, raw, p, false)
}

/// [`check`]; `leader`: a cluster's leader check, which alone may have
/// `leader_when` and `follower_when` (read by [`leader_answers`]).
fn check_inner(src: Src<'_>, raw: &RawCheck, p: &FieldPath, leader: bool) -> Result<StepTemplate, PlanError> {
    if !leader {
        for (field, set) in [("leader_when", raw.leader_when.is_some()), ("follower_when", raw.follower_when.is_some())]
        {
            if set {
                return Err(src.err(&p.key(field), "only allowed in a cluster strategy's 'leader' check"));
            }
        }
    }
    let kind = one_kind(
        src,
        &[
            ("http", raw.http.is_some()),
            ("tcp", raw.tcp.is_some()),
            ("exec", raw.exec.is_some()),
            ("file", raw.file.is_some()),
            ("metric", raw.metric.is_some()),
        ],
        p,
        "check",
    )?;
    let kp = p.key(kind);
    let defaults = CheckPolicy::default();
    let deadline = match (&raw.deadline, &raw.healthy_deadline) {
        (Some(_), Some(_)) => {
            return Err(src.err(&p.key("healthy_deadline"), "give either 'deadline' or 'healthy_deadline', not both"));
        }
        (Some(s), None) => positive_duration(src, s, &p.key("deadline"))?,
        (None, Some(s)) => positive_duration(src, s, &p.key("healthy_deadline"))?,
        (None, None) => defaults.deadline,
    };
    let min_healthy = match &raw.min_healthy_time {
        Some(s) => {
            let mp = p.key("min_healthy_time");
            let d = parse_duration(s).map_err(|m| src.err(&mp, m))?;
            if d >= deadline {
                return Err(src.err(
                    &mp,
                    format!(
                        "{} is not shorter than the check's deadline ({}): the check could never pass",
                        format_duration(d),
                        format_duration(deadline)
                    ),
                ));
            }
            d
        }
        None => defaults.min_healthy,
    };
    let retries = raw.retries.unwrap_or(defaults.retries);
    if retries > MAX_RETRIES {
        return Err(src.err(&p.key("retries"), format!("{retries} retries, more than the limit of {MAX_RETRIES}")));
    }
    let policy = CheckPolicy {
        retries,
        interval: match &raw.interval {
            Some(s) => positive_duration(src, s, &p.key("interval"))?,
            None => defaults.interval,
        },
        deadline,
        min_healthy,
    };
    let kind = match (&raw.http, &raw.tcp, &raw.exec, &raw.file) {
        _ if raw.metric.is_some() => metric_check(src, raw.metric.as_ref().expect("checked"), &kp, policy)?,
        (Some(h), _, _, _) => {
            let expect_status = h.status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(src.err(&kp.key("status"), format!("invalid HTTP status {expect_status}")));
            }
            StepKind::HttpCheck(HttpCheckSpec {
                url: required(src, h.url.clone(), &kp.key("url"))?,
                expect_status,
                body_contains: h.body_contains.clone(),
                json: match &h.json {
                    None => None,
                    Some(j) => {
                        let jp = kp.key("json");
                        let path = required(src, j.path.clone(), &jp.key("path"))?;
                        crate::capture::check_json_path(&path).map_err(|e| src.err(&jp.key("path"), e))?;
                        Some(JsonExpect { path, equals: required(src, j.equals.clone(), &jp.key("equals"))? })
                    }
                },
                policy,
            })
        }
        (_, Some(t), _, _) => {
            StepKind::TcpCheck(TcpCheckSpec { address: required(src, t.address.clone(), &kp.key("address"))?, policy })
        }
        (_, _, Some(e), _) => StepKind::ExecCheck(ExecCheckSpec { exec: exec_spec(src, e, &kp)?, policy }),
        (_, _, _, Some(f)) => StepKind::FileCheck(FileCheckSpec {
            path: required(src, f.path.clone(), &kp.key("path"))?,
            contains: f.contains.clone(),
            policy,
        }),
        (None, None, None, None) => unreachable!("one_kind found a kind"),
    };
    let timeout = policy.deadline.saturating_add(CHECK_TIMEOUT_MARGIN);
    let mut t = finish_template(
        src,
        raw.name.as_deref(),
        p,
        StepSpec { name: String::new(), timeout, kind, rerun_safe: false },
    )?;
    t.estimate = estimate(src, raw.estimate.as_deref(), p)?;
    Ok(t)
}

/// A step's or check's `estimate:` (a positive duration), if it has one.
fn estimate(src: Src<'_>, raw: Option<&str>, p: &FieldPath) -> Result<Option<Duration>, PlanError> {
    raw.map(|s| positive_duration(src, s, &p.key("estimate"))).transpose()
}

/// The kind of a `metric` check written at `kp`.
fn metric_check(src: Src<'_>, m: &RawMetric, kp: &FieldPath, policy: CheckPolicy) -> Result<StepKind, PlanError> {
    let source = match (&m.url, &m.command) {
        (Some(url), None) => MetricSource::Http { url: url.clone() },
        (None, Some(c)) => MetricSource::Command(exec_spec(src, c, &kp.key("command"))?),
        (Some(_), Some(_)) => return Err(src.err(&kp.key("command"), "give either 'url' or 'command', not both")),
        (None, None) => return Err(src.err(kp, "a metric check needs a 'url' or a 'command'")),
    };
    let format = match (&m.prometheus, &m.json) {
        (Some(name), None) => MetricFormat::Prometheus { name: name.clone(), labels: m.labels.clone() },
        (None, Some(path)) => {
            crate::capture::check_json_path(path).map_err(|e| src.err(&kp.key("json"), e))?;
            MetricFormat::Json { path: path.clone() }
        }
        (Some(_), Some(_)) => return Err(src.err(&kp.key("json"), "give either 'prometheus' or 'json', not both")),
        (None, None) if !m.labels.is_empty() => {
            return Err(src.err(&kp.key("labels"), "labels select Prometheus samples: add 'prometheus: NAME'"));
        }
        (None, None) => MetricFormat::Plain,
    };
    let threshold = |v: Option<f64>, field: &str| -> Result<Option<Threshold>, PlanError> {
        match v {
            Some(x) if !x.is_finite() => Err(src.err(&kp.key(field), format!("{x} is not a finite number"))),
            other => Ok(other.map(Threshold)),
        }
    };
    let (below, above) = (threshold(m.below, "below")?, threshold(m.above, "above")?);
    if below.is_none() && above.is_none() {
        return Err(src.err(kp, "a metric check needs 'below' and/or 'above'"));
    }
    if let (Some(b), Some(a)) = (below, above)
        && a.0 >= b.0
    {
        return Err(src.err(&kp.key("above"), format!("no value is above {} and below {}", a.0, b.0)));
    }
    Ok(StepKind::MetricCheck(MetricCheckSpec { source, format, below, above, policy }))
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
    let sha = |value: String| -> Result<String, PlanError> {
        if !value.contains("{{") {
            check_sha256(&value).map_err(|m| src.err(&kp.key("sha256"), m))?;
        }
        Ok(value.to_ascii_lowercase())
    };
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
            sha256: sha(required(src, d.sha256.clone(), &kp.key("sha256"))?)?,
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
        },
        path,
    }))
}

/// A package name or version the agent would accept as an argument.
fn check_pkg_word(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.starts_with('-')
        || v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '=')
    {
        Err(format!("invalid {field} '{v}': must not start with '-' nor contain spaces, '/' or '='"))
    } else {
        Ok(())
    }
}

fn exec_spec(src: Src<'_>, e: &RawExec, p: &FieldPath) -> Result<ExecSpec, PlanError> {
    Ok(ExecSpec {
        command: required(src, e.command.clone(), &p.key("command"))?,
        args: e.args.clone().unwrap_or_default(),
        env: e.env.clone().unwrap_or_default(),
        workdir: e.workdir.clone(),
    })
}

/// An archive's `component` and `version` name directories on the host
/// (`install_root/component/version`): a plain name, as the agent requires,
/// refused here so that `convoy plan` catches it. Templates are checked
/// again once rendered.
fn check_archive_name(value: &str) -> Result<(), String> {
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

fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("sha256 must be 64 hexadecimal characters, got '{s}'"))
    }
}

/// Set the explicit name (empty means "unnamed", filled in by [`name_steps`])
/// and check the syntax of every template in the step.
fn finish_template(
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
    for (rel, s) in strings_mut(&mut spec) {
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
fn name_steps(src: Src<'_>, mut steps: Vec<StepTemplate>) -> Result<Vec<StepTemplate>, PlanError> {
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

// ---------------------------------------------------------------------------
// Templates

/// A template variable: `{{host}}`, `{{version}}`, `{{group}}`,
/// `{{label.KEY}}`, `{{installed.COMPONENT}}`, `{{fact.NAME}}` or
/// `{{captured.NAME}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var<'a> {
    Host,
    Version,
    Group,
    Label(&'a str),
    Installed(&'a str),
    /// A fact of the host ([`InventoryHost::facts`]).
    Fact(&'a str),
    /// Filled by the engine when it dispatches the step, not at expansion.
    Captured(&'a str),
}

fn parse_var(inner: &str) -> Result<Var<'_>, String> {
    let unknown = || {
        format!(
            "unknown template variable '{{{{{inner}}}}}': expected host, version, group, label.KEY, installed.COMPONENT, fact.NAME or captured.NAME"
        )
    };
    match inner {
        "host" => Ok(Var::Host),
        "version" => Ok(Var::Version),
        "group" => Ok(Var::Group),
        _ => match inner.split_once('.') {
            Some(("label", key)) if !key.is_empty() => Ok(Var::Label(key)),
            Some(("installed", c)) if !c.is_empty() => Ok(Var::Installed(c)),
            Some(("fact", f)) if !f.is_empty() => Ok(Var::Fact(f)),
            Some(("captured", c)) if !c.is_empty() => Ok(Var::Captured(c)),
            _ => Err(unknown()),
        },
    }
}

/// Substitute every `{{ var }}` in `template` with `lookup(var)`.
fn render(template: &str, mut lookup: impl FnMut(Var<'_>) -> Result<String, String>) -> Result<String, String> {
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

/// Every templated string of a step, with its path relative to the step as
/// written in the plan (a check's `exec` is `exec`, not `exec_check`).
fn strings_mut(spec: &mut StepSpec) -> Vec<(FieldPath, &mut String)> {
    fn exec<'a>(p: FieldPath, e: &'a mut ExecSpec, out: &mut Vec<(FieldPath, &'a mut String)>) {
        out.extend(exec_strings_mut(p, e));
    }
    let root = FieldPath::default();
    let mut out = vec![(root.key("name"), &mut spec.name)];
    match &mut spec.kind {
        StepKind::Exec(e) => exec(root.key("exec"), e, &mut out),
        StepKind::ExecCheck(c) => exec(root.key("exec"), &mut c.exec, &mut out),
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
            MetricSource::Command(e) => exec(root.key("metric").key("command"), e, &mut out),
        },
        StepKind::FileCheck(f) => {
            out.push((root.key("file").key("path"), &mut f.path));
            if let Some(c) = &mut f.contains {
                out.push((root.key("file").key("contains"), c));
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
                exec(p.key("command"), c, &mut out);
            }
            if let Some(f) = &mut sv.pidfile {
                out.push((p.key("pidfile"), f));
            }
            if let Some(l) = &mut sv.log {
                out.push((p.key("log"), l));
            }
        }
        StepKind::Backup(b) => {
            exec(root.key("backup"), &mut b.command, &mut out);
            if let Some(p) = &mut b.path {
                out.push((root.key("backup").key("path"), p));
            }
        }
        // Generated at expansion from an already rendered step.
        StepKind::ArchiveRollback(_) | StepKind::PkgRollback(_) => {}
    }
    out
}

/// The templated strings of an exec spec written at `p`.
fn exec_strings_mut(p: FieldPath, e: &mut ExecSpec) -> Vec<(FieldPath, &mut String)> {
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
    out
}

// ---------------------------------------------------------------------------
// Expansion

/// Match the plan's selectors against the inventory and produce the rollout
/// the engine runs (templates substituted, percentages resolved).
///
/// Hosts of the inventory that no group selects are not part of the rollout.
/// If the inventory lists a host id twice, the first entry is used.
pub fn expand(plan: &Plan, inventory: &[InventoryHost]) -> Result<RolloutSpec, PlanError> {
    expand_detailed(plan, inventory).map(|x| x.spec)
}

/// What [`expand`] produces, with what `convoy plan` shows beside it: per
/// host entry, its release path and its steps' declared estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub spec: RolloutSpec,
    /// One per [`RolloutSpec::hosts`] entry, in the same order.
    pub hosts: Vec<HostDetail>,
}

/// What the expansion knows about one host entry beyond its [`HostPlan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostDetail {
    /// The hops of the entry's release path (`release: { catalog }` groups
    /// only), in order; its first steps are the hops' steps, in order.
    pub path: Option<Vec<HopDetail>>,
    /// Each step's declared `estimate:`, by step index (as long as the steps).
    pub declared: Vec<Option<Duration>>,
}

/// One hop of a host's release path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopDetail {
    pub from: String,
    pub to: String,
    /// Skippable releases jumped over.
    pub skipped: Vec<String>,
    pub downgrade: bool,
    /// How many of the entry's steps belong to this hop (they follow the
    /// previous hops' steps).
    pub steps: usize,
}

/// [`expand`], keeping each host entry's release path and declared
/// estimates ([`Expansion::hosts`]).
pub fn expand_detailed(plan: &Plan, inventory: &[InventoryHost]) -> Result<Expansion, PlanError> {
    let src = plan.src();
    let mut by_id: HashMap<&str, &InventoryHost> = HashMap::new();
    for h in inventory {
        by_id.entry(h.id.as_str()).or_insert(h);
    }
    // Hosts by label, so that each selector looks only at the hosts having
    // its rarest label instead of the whole inventory (which, once per
    // group, was groups x hosts).
    let mut by_label: HashMap<(&str, &str), Vec<&InventoryHost>> = HashMap::new();
    for h in by_id.values() {
        for (k, v) in &h.labels {
            by_label.entry((k.as_str(), v.as_str())).or_default().push(h);
        }
    }
    let matching = |sel: &BTreeMap<String, String>| -> Vec<&InventoryHost> {
        // `host: ID` (see `selects`) names one host; otherwise the rarest label.
        if let Some(id) = sel.get("host") {
            return by_id.get(id.as_str()).copied().filter(|h| selects(sel, h)).into_iter().collect();
        }
        let rarest = sel
            .iter()
            .map(|(k, v)| by_label.get(&(k.as_str(), v.as_str())).map_or(&[][..], Vec::as_slice))
            .min_by_key(|l| l.len());
        match rarest {
            Some(candidates) => candidates.iter().copied().filter(|h| selects(sel, h)).collect(),
            None => by_id.values().copied().collect(),
        }
    };

    // Membership is decided in declaration order so that "matched by two
    // groups" blames the group written second.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut members: Vec<Vec<&InventoryHost>> = Vec::with_capacity(plan.groups.len());
    for (i, g) in plan.groups.iter().enumerate() {
        let (hosts, field) = match &g.selection {
            Selection::Hook(on) => {
                // A hook's host may also be in a normal group: it gets its own entry.
                let host = match on {
                    HookOn::Host(id) => by_id.get(id.as_str()).copied().ok_or_else(|| {
                        src.err(&g.path.key("on"), format!("unknown host '{id}': not in the inventory"))
                    })?,
                    HookOn::Select(sel) => {
                        matching(sel).into_iter().min_by(|a, b| a.id.cmp(&b.id)).ok_or_else(|| {
                            src.err(
                                &g.path.key("on").key("select"),
                                format!("selector {} matches no host", show_selector(sel)),
                            )
                        })?
                    }
                };
                members.push(vec![host]);
                continue;
            }
            Selection::Labels(sel) => {
                let mut hosts: Vec<&InventoryHost> = matching(sel);
                hosts.sort_by(|a, b| a.id.cmp(&b.id));
                if hosts.is_empty() {
                    return Err(
                        src.err(&g.path.key("select"), format!("selector {} matches no host", show_selector(sel)))
                    );
                }
                (hosts, g.path.key("select"))
            }
            Selection::Hosts(ids) => {
                let mut hosts = Vec::with_capacity(ids.len());
                for (j, id) in ids.iter().enumerate() {
                    match by_id.get(id.as_str()) {
                        Some(h) => hosts.push(*h),
                        None => {
                            return Err(src.err(
                                &g.path.key("hosts").idx(j),
                                format!("unknown host '{id}': not in the inventory"),
                            ));
                        }
                    }
                }
                (hosts, g.path.key("hosts"))
            }
        };
        for h in &hosts {
            if let Some(&other) = owner.get(h.id.as_str()) {
                return Err(src.err(
                    &field,
                    format!(
                        "host {} is in both group '{}' and group '{}'; a host must belong to one group",
                        h.id, plan.groups[other].name, g.name
                    ),
                ));
            }
            owner.insert(&h.id, i);
        }
        if owner.len() > plan.limits.max_hosts {
            return Err(src.err(
                &field,
                format!("the rollout would cover more than the limit of {} hosts", plan.limits.max_hosts),
            ));
        }
        members.push(hosts);
    }

    let mut position = vec![0; plan.groups.len()];
    for (pos, &decl) in plan.order.iter().enumerate() {
        position[decl] = pos;
    }
    let mut groups = Vec::with_capacity(plan.groups.len());
    let mut hosts = Vec::new();
    let mut details = Vec::new();
    let mut hook_memo = AncestorWalk::new(plan.groups.len());
    // By position: a backup step runs in this group or in one it waits for.
    let mut backed_up = vec![false; plan.groups.len()];
    for (pos, &decl) in plan.order.iter().enumerate() {
        let g = &plan.groups[decl];
        let (members, canary) = pick_canaries(src, g, &members[decl])?;
        let (members, cluster_names) = match &g.cluster {
            Some(c) => clusters_of(src, g, c, members)?,
            None => (members, Vec::new()),
        };
        let mut indices = Vec::with_capacity(members.len());
        let backup_upstream = g.after.iter().any(|&d| backed_up[position[d]]);
        let mut backup_here = false;
        let from_hooks = match g.release {
            Some(_) => hook_captures_before(&plan.groups, decl, &mut hook_memo),
            None => Vec::new(),
        };
        for h in members {
            // The host's release path (catalog steps, each from its own file) first.
            let (mut items, path): (Vec<(Src<'_>, StepTemplate)>, _) = match &g.release {
                Some(name) => {
                    let (items, hops) = catalog_steps(src, plan, g, name, h)?;
                    (items, Some(hops))
                }
                None => (Vec::new(), None),
            };
            for t in &g.steps {
                if let Some((_, c)) = items.iter().find(|(_, c)| c.spec.name == t.spec.name) {
                    return Err(src.err(
                        &t.path.key("name"),
                        format!(
                            "step name '{}' is also a step of the release path of host {} ({})",
                            t.spec.name, h.id, c.path
                        ),
                    ));
                }
            }
            items.extend(g.steps.iter().map(|t| (src, t.clone())));
            if g.release.is_some() {
                check_path_captures(&items, &from_hooks, &h.id, &g.name)?;
            }
            details.push(HostDetail { path, declared: items.iter().map(|(_, t)| t.estimate).collect() });
            let mut steps = Vec::with_capacity(items.len());
            let mut undo = Vec::with_capacity(items.len());
            for (tsrc, t) in &items {
                let step = render_step(*tsrc, t, h, &plan.version, &g.name)?;
                undo.push(undo_step(*tsrc, t, &step, h, &plan.version, &g.name)?);
                steps.push(step);
            }
            if undo.iter().all(Option::is_none) {
                undo.clear();
            }
            if plan.require_backup && !backup_upstream {
                check_backup_before(&items, &h.id, &g.name)?;
            }
            backup_here |= steps.iter().any(|s| matches!(s.kind, StepKind::Backup(_)));
            let migrations: Vec<usize> =
                items.iter().enumerate().filter(|(_, (_, t))| t.migration.is_some()).map(|(k, _)| k).collect();
            let rollback_steps = g
                .rollback_steps
                .iter()
                .map(|t| render_step(src, t, h, &plan.version, &g.name))
                .collect::<Result<Vec<_>, _>>()?;
            indices.push(hosts.len());
            let leader_check = match g.cluster.as_ref().and_then(|c| c.leader.as_ref()) {
                Some(t) => Some(render_step(src, t, h, &plan.version, &g.name)?),
                None => None,
            };
            let switchover = g
                .cluster
                .iter()
                .flat_map(|c| c.switchover.iter())
                .map(|t| render_step(src, t, h, &plan.version, &g.name))
                .collect::<Result<Vec<_>, _>>()?;
            let mut switchover_captures: Vec<Option<CaptureSpec>> =
                g.cluster.iter().flat_map(|c| c.switchover.iter()).map(|t| t.capture.clone()).collect();
            if switchover_captures.iter().all(Option::is_none) {
                switchover_captures.clear();
            }
            let mut captures: Vec<Option<CaptureSpec>> = items.iter().map(|(_, t)| t.capture.clone()).collect();
            if captures.iter().all(Option::is_none) {
                captures.clear();
            }
            let mut installs = Vec::with_capacity(items.len());
            for (tsrc, t) in &items {
                installs.push(match &t.installs {
                    None => None,
                    Some((component, version)) => {
                        let ip = t.path.key("installs");
                        let Some(component) = component.clone().or_else(|| plan.component.clone()) else {
                            return Err(tsrc.err(&ip, "needs the plan's `component`: the version is that component's"));
                        };
                        let version = render(version, |var| lookup(var, h, &plan.version, &g.name))
                            .map_err(|m| tsrc.err(&ip, format!("{m} (group '{}')", g.name)))?;
                        Some((component, version))
                    }
                });
            }
            if installs.iter().all(Option::is_none) {
                installs.clear();
            }
            hosts.push(HostPlan {
                host: h.id.clone(),
                key: g.hook.then(|| format!("{}@{}", h.id, g.name)),
                group: pos,
                initial_version: plan.component.as_ref().and_then(|c| h.installed.get(c).cloned()),
                steps,
                undo,
                rollback_steps,
                captures,
                migrations,
                leader_check,
                switchover,
                switchover_captures,
                leader_answers: g.cluster.as_ref().and_then(|c| c.answers.clone()),
                installs,
            });
        }
        backed_up[pos] = backup_upstream || backup_here;
        let mut after: Vec<usize> = g.after.iter().map(|&d| position[d]).collect();
        after.sort_unstable();
        after.dedup();
        // A cluster group's window is per cluster: a share is of the largest.
        let window_of = match &g.cluster {
            Some(_) => cluster_names.iter().map(|(_, n)| *n).max().unwrap_or(0),
            None => indices.len(),
        };
        let cluster = g.cluster.as_ref().map(|c| {
            let mut start = 0;
            let clusters = cluster_names
                .iter()
                .map(|(name, n)| {
                    let hosts = indices[start..start + n].to_vec();
                    start += n;
                    ClusterMembers { name: name.clone(), hosts }
                })
                .collect();
            ClusterSpec { label: c.by.clone(), clusters, same_version: c.same_version }
        });
        groups.push(GroupSpec {
            name: g.name.clone(),
            after,
            strategy: g.strategy.resolve(window_of),
            hosts: indices,
            canary,
            on_failure: g.on_failure,
            hook: g.hook,
            cluster,
        });
    }

    // The rollout-wide budget counts the hosts being upgraded, not hook runs.
    let total = groups.iter().filter(|g| !g.hook).map(|g| g.hosts.len()).sum::<usize>();
    let spec = RolloutSpec {
        plan_name: plan.name.clone(),
        target_version: plan.version.clone(),
        component: plan.component.clone(),
        groups,
        hosts,
        host_lost_timeout: plan.host_lost_timeout,
        max_failures: plan.max_failures.map(|a| match a {
            Amount::Count(n) => n,
            Amount::Percent(p) => total.saturating_mul(p as usize) / 100,
        }),
        on_failure: plan.on_failure,
        require_backup: plan.require_backup,
    };
    Ok(Expansion { spec, hosts: details })
}

/// On one host's path (catalog steps, then the group's steps), every
/// `{{captured.NAME}}` needs a capture by an earlier step of the same entry
/// (its own, for its `rollback:`) or by a hook the group waits for: a
/// conditioned or skipped release may leave out the step that captures it.
fn check_path_captures(
    items: &[(Src<'_>, StepTemplate)],
    from_hooks: &[&str],
    host: &str,
    group: &str,
) -> Result<(), PlanError> {
    let mut captured: Vec<&str> = from_hooks.to_vec();
    for (tsrc, t) in items {
        let mut spec = t.spec.clone();
        let mut undo = t.undo.clone();
        let strings = strings_mut(&mut spec)
            .into_iter()
            .filter(|(rel, _)| *rel != FieldPath::default().key("name"))
            .map(|(rel, s)| (t.path.join(&rel), s, false))
            .chain(
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

/// With `require_backup: true`, for a host entry whose group waits for no
/// backup: every migration step needs a backup step before it in the entry.
fn check_backup_before(items: &[(Src<'_>, StepTemplate)], host: &str, group: &str) -> Result<(), PlanError> {
    let mut backed = false;
    for (tsrc, t) in items {
        if let Some(field) = &t.migration
            && !backed
        {
            return Err(tsrc.err(
                field,
                format!(
                    "step '{}' is a migration and the plan sets require_backup, but no backup runs before it on host {host} (group '{group}'): add a backup step before it, or in a group or hook that group runs after",
                    t.spec.name
                ),
            ));
        }
        backed |= matches!(t.spec.kind, StepKind::Backup(_));
    }
    Ok(())
}

/// Steps of a host's release path, each with the file it was written in.
type PathSteps<'p> = Vec<(Src<'p>, StepTemplate)>;

/// The steps of `host`'s path through the catalog `name` to the plan's
/// version: per hop, the applicable steps in phase order, named
/// `<hop>/<step>` ([`crate::catalog::Hop::qualified_name`]), each with the
/// catalog's file to report errors in; and the hops.
fn catalog_steps<'p>(
    src: Src<'_>,
    plan: &'p Plan,
    g: &PlanGroup,
    name: &str,
    host: &InventoryHost,
) -> Result<(PathSteps<'p>, Vec<HopDetail>), PlanError> {
    let rp = g.path.key("release");
    let pc = plan.catalogs.get(name).ok_or_else(|| src.err(&rp.key("catalog"), format!("unknown catalog '{name}'")))?;
    let hops = path_for_host(&pc.catalog, &HostContext::from_inventory(host), &pc.target)
        .map_err(|e| src.err(&rp, format!("{e} (catalog '{name}', group '{}')", g.name)))?;
    let mut out = Vec::new();
    let mut details = Vec::with_capacity(hops.len());
    for hop in &hops {
        let before = out.len();
        for cs in hop.steps() {
            let mut t = pc.steps.get(&cs.field).cloned().ok_or_else(|| {
                pc.src().err(&field_path_of(&cs.field), "internal error: catalog step not parsed with the plan")
            })?;
            t.spec.name = hop.qualified_name(cs);
            out.push((pc.src(), t));
        }
        // Once a hop's steps are done, the host runs the hop's release.
        if let Some((_, last)) = out.get_mut(before..).and_then(<[_]>::last_mut)
            && last.installs.is_none()
        {
            last.installs = Some((Some(pc.catalog.component.clone()), hop.to.to_string()));
        }
        details.push(HopDetail {
            from: hop.from.to_string(),
            to: hop.to.to_string(),
            skipped: hop.skipped.iter().map(ToString::to_string).collect(),
            downgrade: hop.direction == crate::catalog::Direction::Downgrade,
            steps: out.len() - before,
        });
    }
    Ok((out, details))
}

/// A cluster group's hosts in order, and each cluster's name and size.
type ClusterOrder<'h> = (Vec<&'h InventoryHost>, Vec<(String, usize)>);

/// A `type: cluster` group's hosts ordered cluster by cluster (clusters by
/// name, members by id), with each cluster's name and size. A host without
/// the label is an error naming it.
fn clusters_of<'h>(
    src: Src<'_>,
    g: &PlanGroup,
    c: &ClusterDef,
    members: Vec<&'h InventoryHost>,
) -> Result<ClusterOrder<'h>, PlanError> {
    let mut by_cluster: BTreeMap<&str, Vec<&'h InventoryHost>> = BTreeMap::new();
    for h in members {
        let Some(name) = h.labels.get(&c.by) else {
            return Err(src.err(
                &c.path.key("by"),
                format!(
                    "host {} of group '{}' has no label '{}', which names its cluster (type: cluster, by: {})",
                    h.id, g.name, c.by, c.by
                ),
            ));
        };
        by_cluster.entry(name.as_str()).or_default().push(h);
    }
    let mut ordered = Vec::new();
    let mut names = Vec::new();
    for (name, mut hosts) in by_cluster {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        names.push((name.to_string(), hosts.len()));
        ordered.extend(hosts);
    }
    Ok((ordered, names))
}

/// The group's hosts with its canaries first, and its canary phase. A count
/// or percentage takes the first hosts (at least one, at most all); a
/// selector moves the hosts it matches to the front, keeping their order.
fn pick_canaries<'h>(
    src: Src<'_>,
    g: &PlanGroup,
    members: &[&'h InventoryHost],
) -> Result<(Vec<&'h InventoryHost>, Option<CanarySpec>), PlanError> {
    let Some(def) = &g.canary else { return Ok((members.to_vec(), None)) };
    let n = members.len();
    let (ordered, hosts) = match &def.pick {
        CanaryPick::Count(c) => (members.to_vec(), (*c).min(n)),
        CanaryPick::Percent(p) => (members.to_vec(), (n.saturating_mul(*p as usize) / 100).max(1).min(n)),
        CanaryPick::Select(sel) => {
            let (mut first, rest): (Vec<_>, Vec<_>) = members.iter().partition(|h| selects(sel, h));
            if first.is_empty() {
                return Err(src.err(
                    &g.path.key("canary").key("select"),
                    format!("canary selector {} matches no host of group '{}'", show_selector(sel), g.name),
                ));
            }
            let k = first.len();
            first.extend(rest);
            (first, k)
        }
    };
    Ok((ordered, Some(CanarySpec { hosts, promote: def.promote })))
}

/// The undo of a rendered step: its explicit `rollback:` command, else for
/// an archive the switch back to the release the host had before.
fn undo_step(
    src: Src<'_>,
    t: &StepTemplate,
    step: &StepSpec,
    host: &InventoryHost,
    version: &str,
    group: &str,
) -> Result<Option<StepSpec>, PlanError> {
    let kind = match (&t.undo, &step.kind) {
        (Some(exec), _) => {
            let mut exec = exec.clone();
            let rp = t.path.key("rollback");
            for (rel, s) in exec_strings_mut(rp, &mut exec) {
                *s = render(s, |var| lookup(var, host, version, group))
                    .map_err(|m| src.err(&rel, format!("{m} (group '{group}')")))?;
            }
            StepKind::Exec(exec)
        }
        (None, StepKind::Archive(a)) => StepKind::ArchiveRollback(ArchiveRollbackSpec {
            component: a.component.clone(),
            to_version: host.installed.get(&a.component).cloned(),
            install_root: a.install_root.clone(),
        }),
        (None, StepKind::Apt(a)) => pkg_rollback(&a.package, PkgManager::Apt, host),
        (None, StepKind::Dpkg(d)) => pkg_rollback(&d.package, PkgManager::Dpkg, host),
        (None, StepKind::Rpm(r)) => pkg_rollback(&r.package, PkgManager::of_rpm(r.manager), host),
        (
            None,
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
            | StepKind::Backup(_),
        ) => return Ok(None),
    };
    Ok(Some(StepSpec { name: undo_name(&step.name), timeout: step.timeout, kind, rerun_safe: false }))
}

/// The implicit undo of a package step: back to the version the inventory
/// reported for the package (none: the agent's recorded previous version).
fn pkg_rollback(package: &str, manager: PkgManager, host: &InventoryHost) -> StepKind {
    StepKind::PkgRollback(PkgRollbackSpec {
        package: package.to_string(),
        manager,
        to_version: host.installed.get(package).cloned(),
    })
}

/// The value of a template variable for `host`.
fn lookup(var: Var<'_>, host: &InventoryHost, version: &str, group: &str) -> Result<String, String> {
    let id = &host.id;
    match var {
        Var::Host => Ok(id.clone()),
        Var::Version => Ok(version.to_string()),
        Var::Group => Ok(group.to_string()),
        Var::Label(k) => host.labels.get(k).cloned().ok_or_else(|| format!("host {id} has no label '{k}'")),
        Var::Installed(c) => {
            host.installed.get(c).cloned().ok_or_else(|| format!("host {id} has no installed component '{c}'"))
        }
        Var::Fact(f) => host.facts.get(f).cloned().ok_or_else(|| format!("host {id} has no fact '{f}'")),
        // Kept for the engine, which substitutes it at dispatch.
        Var::Captured(c) => Ok(format!("{{{{{}{c}}}}}", capture::PREFIX)),
    }
}

/// Every `key: value` must match; the key `host` matches the host id.
fn selects(sel: &BTreeMap<String, String>, host: &InventoryHost) -> bool {
    sel.iter().all(|(k, v)| if k == "host" { &host.id == v } else { host.labels.get(k) == Some(v) })
}

fn show_selector(sel: &BTreeMap<String, String>) -> String {
    if sel.is_empty() {
        return "{}".to_string();
    }
    sel.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn render_step(
    src: Src<'_>,
    t: &StepTemplate,
    host: &InventoryHost,
    version: &str,
    group: &str,
) -> Result<StepSpec, PlanError> {
    let mut spec = t.spec.clone();
    let id = &host.id;
    for (rel, s) in strings_mut(&mut spec) {
        *s = render(s, |var| lookup(var, host, version, group))
            .map_err(|m| src.err(&t.path.join(&rel), format!("{m} (group '{group}')")))?;
    }
    if let StepKind::Archive(a) = &mut spec.kind {
        check_sha256(&a.sha256).map_err(|m| {
            src.err(&t.path.key("archive").key("sha256"), format!("{m} for host {id} (group '{group}')"))
        })?;
        a.sha256.make_ascii_lowercase();
        for (field, value) in [("component", &a.component), ("version", &a.version)] {
            check_archive_name(value).map_err(|m| {
                src.err(&t.path.key("archive").key(field), format!("{m} for host {id} (group '{group}')"))
            })?;
        }
    }
    // Templated package fields are checked once rendered.
    let (kind, words, sha): (&str, Vec<(&str, &str)>, Option<&mut String>) = match &mut spec.kind {
        StepKind::Apt(a) => ("apt", vec![("package", a.package.as_str()), ("version", a.version.as_str())], None),
        StepKind::Dpkg(d) => {
            ("dpkg", vec![("package", d.package.as_str()), ("version", d.version.as_str())], Some(&mut d.sha256))
        }
        StepKind::Rpm(r) => {
            ("rpm", vec![("package", r.package.as_str()), ("version", r.version.as_str())], r.sha256.as_mut())
        }
        _ => ("", Vec::new(), None),
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
    Ok(spec)
}

// ---------------------------------------------------------------------------
// Views of an expanded rollout

/// The hosts of group `group` (an index into [`RolloutSpec::groups`]) in
/// upgrade order, chunked by `max_parallel`. The engine uses a sliding
/// window, so these are the batches of an undisturbed run, for display.
pub fn batches(spec: &RolloutSpec, group: usize) -> Vec<Vec<String>> {
    let Some(g) = spec.groups.get(group) else { return Vec::new() };
    let name = |h: &usize| spec.hosts[*h].host.clone();
    match &g.cluster {
        // Every member of every cluster at once.
        Some(c) if c.same_version => vec![g.hosts.iter().map(name).collect()],
        // Clusters side by side, `max_parallel` members of each at a time;
        // which member leads (and so goes last) is only known at run time.
        Some(c) => {
            let window = g.strategy.max_parallel.max(1);
            let rounds = c.clusters.iter().map(|m| m.hosts.len().div_ceil(window)).max().unwrap_or(0);
            (0..rounds)
                .map(|r| {
                    c.clusters.iter().flat_map(|m| m.hosts.iter().skip(r * window).take(window).map(name)).collect()
                })
                .collect()
        }
        None => {
            let ids: Vec<String> = g.hosts.iter().map(name).collect();
            ids.chunks(g.strategy.max_parallel.max(1)).map(<[String]>::to_vec).collect()
        }
    }
}

/// "cluster" for the cluster strategy, "parallel" when a group moves all
/// its hosts at once, "rolling" otherwise.
fn strategy_label(g: &GroupSpec) -> &'static str {
    if g.cluster.is_some() {
        "cluster"
    } else if g.hosts.len() > 1 && g.strategy.max_parallel >= g.hosts.len() {
        "parallel"
    } else {
        "rolling"
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A Graphviz digraph of the groups: one node per group labelled with its
/// name, host count and strategy; an edge from each group to those that wait
/// for it.
pub fn to_dot(spec: &RolloutSpec) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", dot_escape(&spec.plan_name));
    for g in &spec.groups {
        let n = g.hosts.len();
        let s = &g.strategy;
        out.push_str(&format!(
            "  \"{name}\" [label=\"{name}\\n{n} host{plural}\\n{kind}: max_parallel={mp} max_failures={mf} soak={soak}\"];\n",
            name = dot_escape(&g.name),
            plural = if n == 1 { "" } else { "s" },
            kind = strategy_label(g),
            mp = s.max_parallel,
            mf = s.max_failures,
            soak = format_duration(s.soak),
        ));
    }
    for g in &spec.groups {
        for &a in &g.after {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", dot_escape(&spec.groups[a].name), dot_escape(&g.name)));
        }
    }
    out.push_str("}\n");
    out
}

/// The rollout as JSON for `convoy plan --output json`: per group (in rollout
/// order) its name, the names it waits for, the resolved strategy, its hosts,
/// its batches and the steps each host runs.
pub fn summary_json(spec: &RolloutSpec) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = spec
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let steps: Vec<serde_json::Value> = g
                .hosts
                .first()
                .map(|&h| &spec.hosts[h].steps[..])
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "kind": s.kind.kind_name(),
                        "timeout": format_duration(s.timeout),
                    })
                })
                .collect();
            serde_json::json!({
                "name": g.name,
                "after": g.after.iter().map(|&a| spec.groups[a].name.clone()).collect::<Vec<_>>(),
                "strategy": {
                    "type": strategy_label(g),
                    "max_parallel": g.strategy.max_parallel,
                    "max_failures": g.strategy.max_failures,
                    "soak": format_duration(g.strategy.soak),
                    "soak_ms": u64::try_from(g.strategy.soak.as_millis()).unwrap_or(u64::MAX),
                },
                "hosts": g.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>(),
                "batches": batches(spec, i),
                "clusters": g.cluster.as_ref().map(|c| serde_json::json!({
                    "by": c.label,
                    "same_version": c.same_version,
                    "members": c
                        .clusters
                        .iter()
                        .map(|m| (m.name.clone(), serde_json::json!(m.hosts.iter().map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>())))
                        .collect::<serde_json::Map<String, serde_json::Value>>(),
                    "leader_check": g.hosts.first().and_then(|&h| spec.hosts[h].leader_check.as_ref()).map(|s| s.name.clone()),
                    "switchover": g.hosts.first().map(|&h| spec.hosts[h].switchover.iter().map(|s| s.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                })),
                "steps": steps,
                "on_failure": g.on_failure.as_str(),
                "hook": g.hook,
                "canary": g.canary.map(|c| serde_json::json!({
                    "hosts": g.hosts.iter().take(c.hosts).map(|&h| spec.hosts[h].host.clone()).collect::<Vec<_>>(),
                    "promote": match c.promote {
                        Promote::Manual => "manual".to_string(),
                        Promote::After(d) => format!("after {}", format_duration(d)),
                    },
                })),
                "host_steps": g
                    .hosts
                    .iter()
                    .map(|&h| {
                        let names: Vec<&str> = spec.hosts[h].steps.iter().map(|s| s.name.as_str()).collect();
                        (spec.hosts[h].host.clone(), serde_json::json!(names))
                    })
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
                "rollback_steps": g
                    .hosts
                    .first()
                    .map(|&h| spec.hosts[h].rollback_steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            })
        })
        .collect();
    serde_json::json!({
        "plan": spec.plan_name,
        "target_version": spec.target_version,
        "component": spec.component,
        "host_lost_timeout": format_duration(spec.host_lost_timeout),
        "max_failures": spec.max_failures,
        "on_failure": spec.on_failure.as_str(),
        "require_backup": spec.require_backup,
        "groups": groups,
    })
}

// ---------------------------------------------------------------------------

/// Finds the line of a field path in block-style YAML.
///
/// serde_norway does not report where values it parsed successfully came
/// from, so semantic errors need their own locator. This one reads lines,
/// not YAML: each line becomes its indentation column plus, for `- ` items,
/// one sequence marker per dash. A key is found among the entries at the
/// mapping's column; a sequence item is the N-th dash at the sequence's
/// column; a value's extent is everything indented deeper. Comments, blank
/// lines and block-scalar bodies (always indented deeper than their key) do
/// not disturb this. When a segment cannot be found (flow style, a missing
/// key) the deepest line found so far is the answer, and line 1 when nothing
/// matched (a missing top-level key).
pub(crate) mod locate {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ops::Range;
    use std::rc::Rc;

    use super::Seg;

    #[derive(Debug)]
    struct Token<'a> {
        line: usize,
        col: usize,
        /// A `- ` sequence-item marker rather than content.
        dash: bool,
        text: &'a str,
    }

    fn tokenize(source: &str) -> Vec<Token<'_>> {
        let mut tokens = Vec::new();
        for (n, raw) in source.lines().enumerate() {
            let content = raw.trim_start_matches(' ');
            let is_marker = |m: &str| content == m || content.starts_with(&format!("{m} "));
            if content.trim().is_empty() || content.starts_with('#') || is_marker("---") || is_marker("...") {
                continue;
            }
            let mut col = raw.len() - content.len();
            let mut rest = content;
            loop {
                if rest == "-" || rest.starts_with("- ") {
                    tokens.push(Token { line: n + 1, col, dash: true, text: "-" });
                    let after = &rest[1..];
                    let trimmed = after.trim_start_matches(' ');
                    col += 1 + after.len() - trimmed.len();
                    rest = trimmed;
                    if rest.is_empty() || rest.starts_with('#') {
                        break;
                    }
                } else {
                    tokens.push(Token { line: n + 1, col, dash: false, text: rest });
                    break;
                }
            }
        }
        tokens
    }

    /// The key of a `key: value` or `key:` line, unquoted.
    fn key_of(text: &str) -> Option<&str> {
        let (key, rest) = match text.chars().next()? {
            q @ ('"' | '\'') => {
                let close = text[1..].find(q)? + 1;
                (&text[1..close], &text[close + 1..])
            }
            _ => {
                let colon = text.find(": ").or_else(|| text.strip_suffix(':').map(str::len))?;
                (text[..colon].trim_end(), &text[colon..])
            }
        };
        let rest = rest.trim_start();
        (rest == ":" || rest.starts_with(": ")).then_some(key)
    }

    /// The 1-based line of `path` in `source` (see the module docs).
    pub(crate) fn line_of(source: &str, path: &[Seg]) -> usize {
        Locator::new(source).line_of(path)
    }

    /// The tokens directly inside a range (see [`Locator`]).
    type Children = Rc<Vec<usize>>;

    /// [`line_of`] for many paths of one document: the text is tokenized
    /// once, and each value's items and extent are found once, so locating
    /// every step of a large catalog stays linear in its size (times the
    /// nesting depth) instead of rescanning the whole text for each.
    pub(crate) struct Locator<'a> {
        tokens: Vec<Token<'a>>,
        /// Per range: the tokens at its first token's column and kind.
        children: RefCell<HashMap<(usize, usize), Children>>,
        /// Per token: the end of its value's extent.
        ends: RefCell<HashMap<usize, usize>>,
    }

    impl<'a> Locator<'a> {
        pub(crate) fn new(source: &'a str) -> Locator<'a> {
            Locator { tokens: tokenize(source), children: Default::default(), ends: Default::default() }
        }

        fn children(&self, range: &Range<usize>) -> Rc<Vec<usize>> {
            let key = (range.start, range.end);
            if let Some(c) = self.children.borrow().get(&key) {
                return Rc::clone(c);
            }
            let first = &self.tokens[range.start];
            let (col, dash) = (first.col, first.dash);
            let c: Rc<Vec<usize>> =
                Rc::new(range.clone().filter(|&t| self.tokens[t].col == col && self.tokens[t].dash == dash).collect());
            self.children.borrow_mut().insert(key, Rc::clone(&c));
            c
        }

        /// The end of token `t`'s value within `range`: the first later
        /// token that is not deeper (`key_seq`: a sequence may sit at its
        /// key's own column).
        fn end(&self, t: usize, range: &Range<usize>) -> usize {
            if let Some(&e) = self.ends.borrow().get(&t) {
                return e;
            }
            let tok = &self.tokens[t];
            let col = tok.col;
            let end = (t + 1..range.end)
                .find(|&u| {
                    let u = &self.tokens[u];
                    match (tok.dash, u.dash) {
                        (false, true) => u.col < col,
                        _ => u.col <= col,
                    }
                })
                .unwrap_or(range.end);
            self.ends.borrow_mut().insert(t, end);
            end
        }

        fn find_key(&self, range: Range<usize>, key: &str) -> Option<(usize, Range<usize>)> {
            let first = self.tokens.get(range.start).filter(|_| !range.is_empty())?;
            if first.dash {
                return None;
            }
            let kids = self.children(&range);
            let t = kids.iter().copied().find(|&t| key_of(self.tokens[t].text) == Some(key))?;
            Some((t, t + 1..self.end(t, &range)))
        }

        fn find_item(&self, range: Range<usize>, index: usize) -> Option<(usize, Range<usize>)> {
            let first = self.tokens.get(range.start).filter(|_| !range.is_empty())?;
            if !first.dash {
                return None;
            }
            let t = *self.children(&range).get(index)?;
            Some((t, t + 1..self.end(t, &range)))
        }

        /// The 1-based line of `path` (see the module docs).
        pub(crate) fn line_of(&self, path: &[Seg]) -> usize {
            let mut range = 0..self.tokens.len();
            let mut line = 1;
            for seg in path {
                let found = match seg {
                    Seg::Key(k) => self.find_key(range.clone(), k),
                    Seg::Index(i) => self.find_item(range.clone(), *i),
                };
                match found {
                    Some((t, inner)) => {
                        line = self.tokens[t].line;
                        range = inner;
                    }
                    None => break,
                }
            }
            line
        }
    }

    #[cfg(test)]
    mod tests {
        use super::key_of;

        #[test]
        fn keys() {
            assert_eq!(key_of("name: x"), Some("name"));
            assert_eq!(key_of("name:"), Some("name"));
            assert_eq!(key_of("name:   # comment"), Some("name"));
            assert_eq!(key_of("\"my key\": 1"), Some("my key"));
            assert_eq!(key_of("'k' : 1"), Some("k"));
            assert_eq!(key_of("\"http://a:80\""), None);
            assert_eq!(key_of("http://a:80"), None);
            assert_eq!(key_of("{ role: db }"), Some("{ role"));
            assert_eq!(key_of("plain scalar"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> FieldPath {
        let mut p = FieldPath::default();
        for part in s.split('.') {
            let (key, indices) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
            p = p.key(key);
            for idx in indices.split('[').filter(|x| !x.is_empty()) {
                p = p.idx(idx.trim_end_matches(']').parse().unwrap());
            }
        }
        p
    }

    const DOC: &str = "\
# a comment
name: demo
groups:
  - name: db          # line 4
    select: { role: db }
    steps:
      - exec: { command: sh }
      - name: write
        file:
          path: /tmp/x
          content: |
            - not: an item
            name: not a key
  # between groups
  -
    name: api         # line 16
    after: [db]
    checks:
    - http:
        url: http://x
      retries: 3
\"quoted\": 1
";

    #[test]
    fn field_path_display() {
        assert_eq!(path("groups[1].checks[0].http.url").to_string(), "groups[1].checks[0].http.url");
        assert_eq!(FieldPath::default().key("a").idx(2).idx(3).key("b").to_string(), "a[2][3].b");
    }

    #[test]
    fn locator_finds_block_style_fields() {
        let at = |p: &str| locate::line_of(DOC, &path(p).0);
        assert_eq!(at("name"), 2);
        assert_eq!(at("groups"), 3);
        assert_eq!(at("groups[0]"), 4);
        assert_eq!(at("groups[0].name"), 4);
        assert_eq!(at("groups[0].select"), 5);
        assert_eq!(at("groups[0].steps[0].exec"), 7);
        assert_eq!(at("groups[0].steps[1].name"), 8);
        assert_eq!(at("groups[0].steps[1].file.path"), 10);
        assert_eq!(at("groups[0].steps[1].file.content"), 11);
        assert_eq!(at("groups[1]"), 15);
        assert_eq!(at("groups[1].name"), 16);
        assert_eq!(at("groups[1].after"), 17);
        assert_eq!(at("groups[1].checks[0].http.url"), 20);
        assert_eq!(at("groups[1].checks[0].retries"), 21);
        assert_eq!(at("quoted"), 22);
    }

    #[test]
    fn locator_falls_back_to_the_deepest_match() {
        let at = |p: &str| locate::line_of(DOC, &path(p).0);
        // Flow style: the key holding the flow mapping.
        assert_eq!(at("groups[0].select.role"), 5);
        assert_eq!(at("groups[0].steps[0].exec.command"), 7);
        // Missing key: the enclosing item.
        assert_eq!(at("groups[1].strategy.soak"), 15);
        assert_eq!(at("groups[5].name"), 3);
        // Missing top-level key: the start of the document.
        assert_eq!(at("version"), 1);
        // Block-scalar bodies are not keys.
        assert_eq!(at("groups[0].name.not"), 4);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s500ms"), Ok(Duration::from_millis(90_500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "abc", "2x", "1.5s", "-1s", "s", "10 s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("2x").unwrap_err().contains("invalid duration '2x'"));
    }

    #[test]
    fn duration_formatting_round_trips() {
        for (d, s) in [(0, "0s"), (250, "250ms"), (2000, "2s"), (5_400_000, "1h30m"), (1500, "1s500ms")] {
            assert_eq!(format_duration(Duration::from_millis(d)), s);
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(d)));
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("2", 1), Ok(Amount::Count(2)));
        assert_eq!(parse_amount("25%", 1), Ok(Amount::Percent(25)));
        assert_eq!(parse_amount("100%", 1), Ok(Amount::Percent(100)));
        assert_eq!(parse_amount("0%", 0), Ok(Amount::Percent(0)));
        assert_eq!(parse_amount("0", 0), Ok(Amount::Count(0)));
        assert_eq!(parse_amount("0", 1), Err("must be at least 1".into()));
        assert!(parse_amount("0%", 1).unwrap_err().contains("between 1% and 100%"));
        assert!(parse_amount("150%", 0).unwrap_err().contains("between 0% and 100%"));
        for bad in ["abc%", "-5%", "-1", "2.5", "%", "x"] {
            assert!(parse_amount(bad, 0).unwrap_err().contains("expected an integer or a percentage"), "{bad}");
        }
    }

    #[test]
    fn resolving_strategies() {
        let def = |mp, mf| StrategyDef { max_parallel: mp, max_failures: mf, ..StrategyDef::default() };
        let s = def(Amount::Percent(25), Amount::Percent(10)).resolve(10);
        assert_eq!((s.max_parallel, s.max_failures), (2, 1));
        let s = def(Amount::Percent(25), Amount::Percent(10)).resolve(3);
        assert_eq!((s.max_parallel, s.max_failures), (1, 0));
        // A window wider than the group is clamped to it: nothing is sized
        // by the plan's number.
        let s = def(Amount::Count(4), Amount::Count(2)).resolve(3);
        assert_eq!((s.max_parallel, s.max_failures), (3, 2));
        let s = def(Amount::Count(100_000_000_000), Amount::Count(usize::MAX)).resolve(2);
        assert_eq!((s.max_parallel, s.max_failures), (2, 2));
        let s = StrategyDef { all_at_once: true, ..StrategyDef::default() }.resolve(7);
        assert_eq!(s.max_parallel, 7);
    }

    #[test]
    fn templates_render_and_reject() {
        let lookup = |v: Var<'_>| match v {
            Var::Host => Ok("h1".to_string()),
            Var::Label("port") => Ok("80".to_string()),
            Var::Label(k) => Err(format!("no label '{k}'")),
            _ => Ok("x".to_string()),
        };
        assert_eq!(render("a{{host}}b{{ label.port }}c", lookup), Ok("ah1b80c".to_string()));
        assert_eq!(render("no templates", lookup), Ok("no templates".to_string()));
        assert_eq!(render("{{label.zone}}", lookup), Err("no label 'zone'".to_string()));
        assert!(render("{{hots}}", lookup).unwrap_err().contains("unknown template variable '{{hots}}'"));
        assert!(render("{{label.}}", lookup).unwrap_err().contains("unknown template variable"));
        assert!(render("{{host", lookup).unwrap_err().contains("unterminated"));
        assert_eq!(parse_var("installed.demo"), Ok(Var::Installed("demo")));
    }

    #[test]
    fn serde_messages_are_split_into_field_and_message() {
        assert_eq!(strip_marks("x at line 3 column 5, while y at line 1 column 1"), "x, while y");
        assert_eq!(plain_type_names("expected struct RawStrategy here"), "expected a mapping here");
        let err = serde_norway::from_str::<RawPlan>("name: a\ndefaults:\n  strategy: fast\n").unwrap_err();
        let e = yaml_error("p.yaml", &err);
        assert_eq!((e.line, e.field.as_str()), (Some(3), "defaults.strategy"));
        assert_eq!(e.message, "invalid type: string \"fast\", expected a mapping");
        let err = serde_norway::from_str::<RawPlan>("name: a\nbogus: 1\n").unwrap_err();
        let e = yaml_error("p.yaml", &err);
        assert_eq!((e.line, e.field.as_str()), (Some(2), "bogus"));
        assert!(e.message.starts_with("unknown field `bogus`"), "{}", e.message);
    }
}

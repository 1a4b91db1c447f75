//! The validated, expanded rollout: what the engine runs and the agents execute.
//!
//! These types are produced by [`crate::plan`] from a YAML plan and an
//! inventory; templates such as `{{host}}` are already substituted, and
//! percentages are already resolved against the group's size.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identifier of a host, as its agent reports it (unique in a fleet).
pub type HostId = String;

/// Milliseconds since the Unix epoch. The engine never reads a clock: callers
/// pass `now` in, and the event log stores it so replays are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> UnixMillis {
        // `as u64` would wrap a duration of more than 584 million years.
        UnixMillis(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
    /// Milliseconds elapsed from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A host as the inventory knows it: what its agent reported in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InventoryHost {
    pub id: HostId,
    pub labels: BTreeMap<String, String>,
    /// Component or package name -> installed version.
    pub installed: BTreeMap<String, String>,
    /// Facts about the host: what its agent reported (`hostname`, `os`,
    /// `arch`, and the agent's `--fact KEY=VALUE`s), or an inventory file's
    /// `facts:`. Read by catalog conditions (`when: { facts: ... }`) and by
    /// `{{fact.NAME}}` templates.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

/// The rollout the engine runs: a DAG of groups, each with its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub plan_name: String,
    /// Version every host should end on.
    pub target_version: String,
    /// Component whose installed version is reported as the host's version.
    pub component: Option<String>,
    /// Groups in a topological order of the DAG.
    pub groups: Vec<GroupSpec>,
    /// Every host of the rollout, each in exactly one group.
    pub hosts: Vec<HostPlan>,
    /// How long a host whose agent is gone may stay in flight before it fails.
    pub host_lost_timeout: Duration,
    /// Failed hosts the whole rollout tolerates, counted over every group;
    /// one more halts it like a group budget does. `None`: no rollout-wide budget.
    #[serde(default)]
    pub max_failures: Option<usize>,
    /// What happens when the rollout-wide budget is exceeded (groups carry
    /// their own [`GroupSpec::on_failure`], which defaults to this).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The plan's `require_backup`: a migration step ([`HostPlan::migrations`])
    /// is dispatched only once a backup covering it succeeded (see
    /// [`crate::engine`]).
    #[serde(default)]
    pub require_backup: bool,
    /// Set on a rollout `convoy rollback` made to undo a finished one: the
    /// id of that rollout.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// Maintenance windows (the plan's `windows:`): `None` when no group
    /// has any, and hosts start whenever their strategy lets them.
    pub windows: Option<crate::schedule::RolloutWindows>,
}

impl RolloutSpec {
    /// The smallest rollout: one rolling group `web` of `hosts`, each
    /// running `steps`, `max_parallel` at once, halting on the first
    /// failure, hosts lost after 60 s. For tests, benchmarks and tools that
    /// build a spec by hand (change the fields they care about).
    pub fn one_group(
        hosts: impl IntoIterator<Item = String>,
        steps: Vec<StepSpec>,
        max_parallel: usize,
    ) -> RolloutSpec {
        let hosts: Vec<HostPlan> = hosts
            .into_iter()
            .map(|host| HostPlan { host, group: 0, steps: steps.clone(), ..HostPlan::default() })
            .collect();
        RolloutSpec {
            plan_name: "p".into(),
            target_version: "2".into(),
            component: Some("app".into()),
            groups: vec![GroupSpec {
                name: "web".into(),
                after: Vec::new(),
                strategy: crate::strategy::Strategy::rolling(max_parallel),
                max_failures: 0,
                soak: Duration::ZERO,
                hosts: (0..hosts.len()).collect(),
                canary: None,
                on_failure: OnFailure::Halt,
                hook: false,
            }],
            hosts,
            host_lost_timeout: Duration::from_secs(60),
            max_failures: None,
            on_failure: OnFailure::Halt,
            require_backup: false,
            rollback_of: None,
            windows: None,
        }
    }
}

/// What the engine does when hosts fail (see the engine's module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Exceeding a budget halts the rollout; nothing is rolled back.
    #[default]
    Halt,
    /// Every failed host is rolled back at once; exceeding a budget halts.
    RollbackHost,
    /// As `RollbackHost`, and a group that fails (budget exceeded or a
    /// canary failed) has every host it started rolled back.
    RollbackGroup,
    /// As `RollbackHost`, and a failed group rolls back every host the
    /// rollout started, in reverse DAG order.
    RollbackAll,
}

impl OnFailure {
    /// The spelling used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Halt => "halt",
            OnFailure::RollbackHost => "rollback_host",
            OnFailure::RollbackGroup => "rollback_group",
            OnFailure::RollbackAll => "rollback_all",
        }
    }

    /// True when a host that fails is rolled back by itself.
    pub fn rolls_back_hosts(self) -> bool {
        match self {
            OnFailure::Halt => false,
            OnFailure::RollbackHost | OnFailure::RollbackGroup | OnFailure::RollbackAll => true,
        }
    }
}

/// The canary phase of a group: its first `hosts` hosts run alone, then the
/// group waits to be promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// How many of the group's first hosts (in [`GroupSpec::hosts`] order) are
    /// canaries; at least 1, at most the group's size.
    pub hosts: usize,
    pub promote: Promote,
}

/// How a group whose canaries all passed goes on to its other hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promote {
    /// Wait for an operator's `Approve`.
    Manual,
    /// Go on by itself this long after the last canary passed (an `Approve`
    /// ends the wait early).
    After(Duration),
}

/// One group of hosts sharing a strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: String,
    /// Indices into [`RolloutSpec::groups`] that must succeed before this one starts.
    pub after: Vec<usize>,
    /// How the group moves through its hosts.
    pub strategy: Strategy,
    /// Failed hosts the group tolerates; one more fails it (and `on_failure` applies).
    pub max_failures: usize,
    /// Time a host that finished keeps its slot before the next host starts.
    pub soak: Duration,
    /// Indices into [`RolloutSpec::hosts`], in the order they are upgraded
    /// (canaries first).
    pub hosts: Vec<usize>,
    /// Canary phase, if the group has one.
    #[serde(default)]
    pub canary: Option<CanarySpec>,
    /// What happens when a host or the whole group fails.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A hook group (`before`, `after`, `<group>.before`, `<group>.after`):
    /// one host running the hook's steps once. Values its steps capture are
    /// visible rollout-wide (see [`crate::capture`]).
    #[serde(default)]
    pub hook: bool,
}

pub use crate::strategy::{Strategy, Window, WindowAt};

/// A group using the `cluster` strategy: its hosts are split into clusters
/// by a label. Clusters proceed in parallel. In a leader/follower cluster the
/// followers go first ([`Strategy::max_parallel`] at a time) and the leader
/// last, the leader being found by each host's [`HostPlan::leader_check`],
/// asked again before every step; with `same_version` every member runs
/// each step together (see the engine's module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The label whose value names a host's cluster (`cluster=mc1`).
    pub label: String,
    /// The clusters, by name, each with its members in their preferred
    /// upgrade order (indices into [`RolloutSpec::hosts`]); together they are
    /// exactly [`GroupSpec::hosts`].
    pub clusters: Vec<ClusterMembers>,
    /// Upgrade every member of a cluster together, step by step (stop all,
    /// upgrade all, start all), for products whose members must all run one
    /// version.
    #[serde(default)]
    pub same_version: bool,
}

/// One cluster of a [`ClusterSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMembers {
    /// The label's value shared by the members.
    pub name: String,
    /// Indices into [`RolloutSpec::hosts`].
    pub hosts: Vec<usize>,
    /// The labels of each member, aligned with `hosts`, for the run-time
    /// `{{cluster.target.label.KEY}}` (see [`crate::cluster_vars`]). Empty in
    /// specs stored before it existed, which cannot use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<BTreeMap<String, String>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The work for one host: its steps, then its checks, in order.
///
/// A host appears once per group it belongs to: a host chosen to run a hook
/// is also in its normal group. Each entry has its own [`HostPlan::key`]
/// (the host id, or `host@hook-group` for a hook entry); the engine keys its
/// state, timers, execution ids and `HostDone` by that key, and sends steps
/// to [`HostPlan::host`], the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostPlan {
    /// The agent that runs the steps.
    pub host: HostId,
    /// The entry's own key when it differs from `host` (hook entries); see
    /// [`HostPlan::key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub group: usize,
    /// Version of [`RolloutSpec::component`] the host reported before the rollout.
    pub initial_version: Option<String>,
    pub steps: Vec<StepSpec>,
    /// The undo of each step, by step index (`None`: nothing to undo); may be
    /// shorter than `steps`. A rollback runs the undos of the steps that
    /// succeeded, last first, then [`HostPlan::rollback_steps`].
    #[serde(default)]
    pub undo: Vec<Option<StepSpec>>,
    /// Extra steps a rollback runs after the undos (the group's `rollback_steps`).
    #[serde(default)]
    pub rollback_steps: Vec<StepSpec>,
    /// What each step captures from its output, by step index (`None`:
    /// nothing); may be shorter than `steps`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<Option<CaptureSpec>>,
    /// Indices of the steps that are migrations (`migration: true`, or the
    /// `migrate` phase of a release catalog), ascending. With
    /// [`RolloutSpec::require_backup`] the engine runs one only after a
    /// backup covering it succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<usize>,
    /// In a leader/follower cluster: the check that tells whether this host
    /// is its cluster's leader right now, asked before every step; its
    /// outcome is read with [`HostPlan::leader_answers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_check: Option<StepSpec>,
    /// In a leader/follower cluster: steps that hand the leadership over to
    /// an upgraded member, run on the leader before it is upgraded; the
    /// leader check must then fail on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switchover: Vec<StepSpec>,
    /// What each switchover step captures, by switchover index (`None`:
    /// nothing; may be shorter than `switchover`). Later switchover steps
    /// may use the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switchover_captures: Vec<Option<CaptureSpec>>,
    /// How many of `steps` (the first ones) are the group's `pre_checks`:
    /// checks that must pass before the host is touched. A host that fails
    /// in them has nothing to roll back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pre_checks: usize,
    /// How the leader check's answer is read: leader, follower or unknown.
    /// `None` only in specs stored before the three answers existed: there
    /// a passing check means leader and a failing one follower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_answers: Option<LeaderAnswers>,
    /// What each step installs, by step index (`None`: nothing declared; may
    /// be shorter than `steps`): `(component, version)` the host runs once
    /// the step succeeded, when the agent does not report it itself (an
    /// `exec` step's `installs:`, the last step of a catalog hop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installs: Vec<Option<(String, String)>>,
}

impl HostPlan {
    /// The entry's key in the rollout: unique among [`RolloutSpec::hosts`].
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.host)
    }

    /// What step `step` installs, if it declares it.
    pub fn installs(&self, step: usize) -> Option<(String, String)> {
        self.installs.get(step).cloned().flatten()
    }

    /// The capture of step `step`, if it declares one.
    pub fn capture(&self, step: usize) -> Option<&CaptureSpec> {
        self.captures.get(step).and_then(Option::as_ref)
    }

    /// The capture of switchover step `index`, if it declares one.
    pub fn switchover_capture(&self, index: usize) -> Option<&CaptureSpec> {
        self.switchover_captures.get(index).and_then(Option::as_ref)
    }

    /// Whether a host whose first `succeeded` steps succeeded (and which
    /// then failed or stopped) may have been changed: it got past its
    /// pre-checks.
    pub fn touched(&self, succeeded: usize) -> bool {
        succeeded >= self.pre_checks
    }

    /// What rolling this host back runs when its first `succeeded` steps
    /// succeeded: their undos in reverse order, then the rollback steps.
    pub fn rollback_plan(&self, succeeded: usize) -> Vec<StepSpec> {
        if !self.touched(succeeded) {
            return Vec::new();
        }
        let undos = self.undo.iter().take(succeeded).rev().flatten().cloned();
        undos.chain(self.rollback_steps.iter().cloned()).collect()
    }
}

/// How a leader check's outcome is read. An answer is `leader` when it
/// matches [`LeaderAnswers::leader`], `follower` when it matches
/// [`LeaderAnswers::follower`], and unknown otherwise (or when it matches
/// both): the engine asks again every `interval` until `deadline` (counted
/// from the first ask), then fails the host without running its step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAnswers {
    pub leader: RoleMatch,
    pub follower: RoleMatch,
    pub interval: Duration,
    pub deadline: Duration,
}

/// One answer of a leader check. Every condition given must hold; with
/// neither `exit_code` nor `status`, the check itself must pass (an exec
/// check exits 0, an http check gets its expected status). The output
/// conditions read the outcome's `stdout_tail` as [`OutputExpect`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoleMatch {
    /// Exec checks: the command's exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Http checks: the response status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the command's standard output (exec) or the body (http) contains.
    #[serde(default)]
    pub output_contains: Option<String>,
    /// Exec checks: what the standard output equals (trailing whitespace
    /// trimmed on both sides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_equals: Option<String>,
    /// Exec checks: a regex the standard output matches (validated by the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<String>,
}

impl RoleMatch {
    /// Does `outcome` (a leader check's) give this answer?
    pub fn matches(&self, outcome: &StepOutcome) -> bool {
        let code_ok = match (self.exit_code, self.status) {
            (None, None) => outcome.status == StepStatus::Succeeded,
            (code, status) => {
                code.is_none_or(|c| outcome.exit_code == Some(c))
                    && status.is_none_or(|s| outcome.http_status == Some(s))
            }
        };
        let expect = crate::output::Expect {
            equals: self.stdout_equals.as_deref(),
            contains: self.output_contains.as_deref(),
            matches: self.stdout_matches.as_deref(),
        };
        let text_ok = expect.check(&outcome.stdout_tail).is_ok();
        code_ok && text_ok && matches!(outcome.status, StepStatus::Succeeded | StepStatus::Failed)
    }
}

/// What a leader check said about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderAnswer {
    /// The member leads its cluster now.
    Leader,
    /// The member follows.
    Follower,
    /// The check could not tell (unreachable product, command error,
    /// timeout, an answer matching neither or both).
    Unknown,
}

impl LeaderAnswer {
    /// Read a leader check's `outcome` as `answers` says (the legacy rule,
    /// passing = leader and failing = follower, when `answers` is `None`).
    pub fn of(answers: Option<&LeaderAnswers>, outcome: &StepOutcome) -> LeaderAnswer {
        match (answers, outcome.status) {
            (_, StepStatus::Unsupported | StepStatus::TimedOut) => LeaderAnswer::Unknown,
            (None, StepStatus::Succeeded) => LeaderAnswer::Leader,
            (None, StepStatus::Failed) => LeaderAnswer::Follower,
            (Some(a), StepStatus::Succeeded | StepStatus::Failed) => {
                match (a.leader.matches(outcome), a.follower.matches(outcome)) {
                    (true, false) => LeaderAnswer::Leader,
                    (false, true) => LeaderAnswer::Follower,
                    (true, true) | (false, false) => LeaderAnswer::Unknown,
                }
            }
        }
    }
}

/// A value a step captures from its standard output when it succeeds,
/// available to later steps as `{{captured.NAME}}` (see [`crate::capture`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    pub name: String,
    pub from: CaptureFrom,
}

/// How a capture reads the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureFrom {
    /// The first match of a regular expression: its first capture group, or
    /// the whole match when it has none.
    Regex(String),
    /// A dot path into the output parsed as JSON (`spec.replicas`,
    /// `items.0.name`); strings are taken as they are, other values as JSON.
    Json(String),
}

/// One unit of work dispatched to an agent as a single execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    pub name: String,
    /// The agent kills the step after this long.
    pub timeout: Duration,
    pub kind: StepKind,
    /// The step may run again when the agent cannot tell how an earlier run
    /// of the same execution ended (it restarted while the step ran). Off by
    /// default: such an execution is reported "outcome unknown" instead.
    #[serde(default)]
    pub rerun_safe: bool,
}

/// What a step does on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Run a command.
    Exec(ExecSpec),
    /// Install a versioned tar.gz and switch the `current` symlink to it.
    Archive(ArchiveSpec),
    /// Write a file atomically.
    File(FileSpec),
    /// Poll an HTTP endpoint until it answers as expected.
    HttpCheck(HttpCheckSpec),
    /// Poll until a TCP connection succeeds.
    TcpCheck(TcpCheckSpec),
    /// Run a command until it exits 0.
    ExecCheck(ExecCheckSpec),
    /// Poll until a file exists and contains a string.
    FileCheck(FileCheckSpec),
    /// Poll a number (from a metrics endpoint or a command) until it is
    /// within a threshold, e.g. a queue backlog below 1,000.
    MetricCheck(MetricCheckSpec),
    /// Undo an `archive` step: switch the component's `current` symlink back
    /// to the release it pointed to before.
    ArchiveRollback(ArchiveRollbackSpec),
    /// Install an exact version of a Debian package from the host's
    /// repositories with `apt-get`.
    Apt(AptSpec),
    /// Install a staged `.deb` (checked by sha256) with `dpkg -i`.
    Dpkg(DpkgSpec),
    /// Install a version of an RPM package through dnf, yum or rpm.
    Rpm(RpmSpec),
    /// Start, stop, restart or check a service (systemd, or the agent's own
    /// supervision of a declared command).
    Service(ServiceSpec),
    /// Undo an `apt`, `dpkg` or `rpm` step: go back to the version the
    /// package had before its last change on the host.
    PkgRollback(PkgRollbackSpec),
    /// Run a command that produces a backup, then find the backup (a file
    /// or a directory, at [`BackupSpec::path`] or named by the last line of
    /// the command's output) and measure it: a missing or empty backup fails
    /// the step. The outcome's [`StepOutcome::backup`] says where and how
    /// large it is.
    Backup(BackupSpec),
    /// Replace the host's agent with another build of it (a signed
    /// artifact), switch to it and come back on it: the step succeeds only
    /// once the new agent has said hello with the new version; otherwise the
    /// host reverts to the previous build by itself (`docs/self-upgrade.md`).
    AgentUpgrade(AgentUpgradeSpec),
}

/// Declares [`StepKindName`] and its list from one table, so the list of
/// kinds cannot miss one: a new [`StepKind`] needs an arm in
/// [`StepKind::name`], hence a row here, hence a place in
/// [`StepKindName::ALL`].
macro_rules! step_kind_names {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The kind of a step without its fields: what Hello's capabilities,
        /// logs and status name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum StepKindName {
            $($variant),*
        }

        impl StepKindName {
            /// Every kind, in declaration order.
            pub const ALL: &'static [StepKindName] = &[$(StepKindName::$variant),*];

            /// Short name used in plans, logs, status and capabilities.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(StepKindName::$variant => $name),*
                }
            }
        }
    };
}

step_kind_names! {
    Exec => "exec",
    Archive => "archive",
    File => "file",
    HttpCheck => "http",
    TcpCheck => "tcp",
    ExecCheck => "exec_check",
    FileCheck => "file_check",
    MetricCheck => "metric",
    ArchiveRollback => "archive_rollback",
    Apt => "apt",
    Dpkg => "dpkg",
    Rpm => "rpm",
    Service => "service",
    PkgRollback => "pkg_rollback",
    Backup => "backup",
    AgentUpgrade => "agent_upgrade",
}

impl std::fmt::Display for StepKindName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepKind {
    /// Which kind this is.
    pub const fn name(&self) -> StepKindName {
        match self {
            StepKind::Exec(_) => StepKindName::Exec,
            StepKind::Archive(_) => StepKindName::Archive,
            StepKind::File(_) => StepKindName::File,
            StepKind::HttpCheck(_) => StepKindName::HttpCheck,
            StepKind::TcpCheck(_) => StepKindName::TcpCheck,
            StepKind::ExecCheck(_) => StepKindName::ExecCheck,
            StepKind::FileCheck(_) => StepKindName::FileCheck,
            StepKind::MetricCheck(_) => StepKindName::MetricCheck,
            StepKind::ArchiveRollback(_) => StepKindName::ArchiveRollback,
            StepKind::Apt(_) => StepKindName::Apt,
            StepKind::Dpkg(_) => StepKindName::Dpkg,
            StepKind::Rpm(_) => StepKindName::Rpm,
            StepKind::Service(_) => StepKindName::Service,
            StepKind::PkgRollback(_) => StepKindName::PkgRollback,
            StepKind::Backup(_) => StepKindName::Backup,
            StepKind::AgentUpgrade(_) => StepKindName::AgentUpgrade,
        }
    }

    /// Short name used in plans, logs and status.
    pub fn kind_name(&self) -> &'static str {
        self.name().as_str()
    }

    /// Who the step's command runs as, when its `run_as` says (exec, exec
    /// check, metric command, backup).
    pub fn run_as(&self) -> Option<&RunAs> {
        match self {
            StepKind::Exec(e) => e.run_as.as_ref(),
            StepKind::ExecCheck(c) => c.exec.run_as.as_ref(),
            StepKind::Backup(b) => b.command.run_as.as_ref(),
            StepKind::MetricCheck(m) => match &m.source {
                MetricSource::Command(e) => e.run_as.as_ref(),
                MetricSource::Http { .. } => None,
            },
            StepKind::Service(s) => s.command.as_ref().and_then(|c| c.run_as.as_ref()),
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
            | StepKind::AgentUpgrade(_) => None,
        }
    }
}

pub use crate::step_specs::*;

/// How one execution of a step ended, as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub message: String,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub duration_ms: u64,
    /// `(component, version)` when the step installed something.
    pub installed: Option<(String, String)>,
    /// What a `backup` step took, when it succeeded.
    #[serde(default)]
    pub backup: Option<BackupRecord>,
    /// Http checks: the status of the last response (for leader checks).
    #[serde(default)]
    pub http_status: Option<u16>,
}

impl StepOutcome {
    /// A successful outcome with no output, handy for fakes and tests.
    pub fn ok() -> StepOutcome {
        StepOutcome {
            status: StepStatus::Succeeded,
            exit_code: Some(0),
            message: String::new(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            duration_ms: 0,
            installed: None,
            backup: None,
            http_status: None,
        }
    }
    /// A failed outcome with `message`.
    pub fn failed(message: impl Into<String>) -> StepOutcome {
        StepOutcome { status: StepStatus::Failed, exit_code: None, message: message.into(), ..StepOutcome::ok() }
    }

    /// The outcome with every text field at most its cap
    /// ([`OUTCOME_MESSAGE_CAP`], [`OUTCOME_OUTPUT_CAP`]), keeping the end of
    /// each (where errors are) and saying what was cut. The agent trims
    /// before it sends and the coordinator again when it receives, so no
    /// peer can make a result, the event log or a status answer large.
    pub fn capped(mut self) -> StepOutcome {
        self.message = keep_tail(self.message, OUTCOME_MESSAGE_CAP);
        self.stdout_tail = keep_tail(self.stdout_tail, OUTCOME_OUTPUT_CAP);
        self.stderr_tail = keep_tail(self.stderr_tail, OUTCOME_OUTPUT_CAP);
        if let Some((c, v)) = &mut self.installed {
            *c = keep_tail(std::mem::take(c), 256);
            *v = keep_tail(std::mem::take(v), 256);
        }
        if let Some(b) = &mut self.backup {
            b.location = keep_tail(std::mem::take(&mut b.location), 4096);
        }
        self
    }
}

/// Most bytes of a result's message.
pub const OUTCOME_MESSAGE_CAP: usize = 8 * 1024;
/// Most bytes of a result's stdout (and of its stderr) tail.
pub const OUTCOME_OUTPUT_CAP: usize = 16 * 1024;

/// `text` if it fits in `cap` bytes, else a marker and its last bytes (cut
/// at a character boundary).
pub fn keep_tail(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let marker = format!("[{} bytes cut] ", text.len() - cap);
    let mut start = text.len() - cap.saturating_sub(marker.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{marker}{}", &text[start..])
}

/// Terminal status of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The step did what it should.
    Succeeded,
    /// The step ran and failed (non-zero exit, check never passed, bad checksum…).
    Failed,
    /// The agent does not know this step kind.
    Unsupported,
    /// The step did not finish within its timeout and was killed.
    TimedOut,
}

impl StepStatus {
    pub fn is_success(self) -> bool {
        match self {
            StepStatus::Succeeded => true,
            StepStatus::Failed | StepStatus::Unsupported | StepStatus::TimedOut => false,
        }
    }
}

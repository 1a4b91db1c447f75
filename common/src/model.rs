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
        UnixMillis(self.0.saturating_add(d.as_millis() as u64))
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
    pub strategy: Strategy,
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

/// How a group moves through its hosts. Percentages are already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    /// Hosts in flight at once (a sliding window); at least 1.
    pub max_parallel: usize,
    /// Failed hosts the group tolerates; one more halts the rollout.
    pub max_failures: usize,
    /// Time a host that finished keeps its slot before the next host starts.
    pub soak: Duration,
}

/// The work for one host: its steps, then its checks, in order.
///
/// A host appears once per group it belongs to: a host chosen to run a hook
/// is also in its normal group. Each entry has its own [`HostPlan::key`]
/// (the host id, or `host@hook-group` for a hook entry); the engine keys its
/// state, timers, execution ids and `HostDone` by that key, and sends steps
/// to [`HostPlan::host`], the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl HostPlan {
    /// The entry's key in the rollout: unique among [`RolloutSpec::hosts`].
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.host)
    }

    /// The capture of step `step`, if it declares one.
    pub fn capture(&self, step: usize) -> Option<&CaptureSpec> {
        self.captures.get(step).and_then(Option::as_ref)
    }

    /// What rolling this host back runs when its first `succeeded` steps
    /// succeeded: their undos in reverse order, then the rollback steps.
    pub fn rollback_plan(&self, succeeded: usize) -> Vec<StepSpec> {
        let undos = self.undo.iter().take(succeeded).rev().flatten().cloned();
        undos.chain(self.rollback_steps.iter().cloned()).collect()
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
    /// Undo an `archive` step: switch the component's `current` symlink back
    /// to the release it pointed to before.
    ArchiveRollback(ArchiveRollbackSpec),
}

impl StepKind {
    /// Short name used in plans, logs and status.
    pub fn kind_name(&self) -> &'static str {
        match self {
            StepKind::Exec(_) => "exec",
            StepKind::Archive(_) => "archive",
            StepKind::File(_) => "file",
            StepKind::HttpCheck(_) => "http",
            StepKind::TcpCheck(_) => "tcp",
            StepKind::ExecCheck(_) => "exec_check",
            StepKind::FileCheck(_) => "file_check",
            StepKind::ArchiveRollback(_) => "archive_rollback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSpec {
    /// Installed under `<install_root>/<component>/releases/<version>`.
    pub component: String,
    pub version: String,
    /// Path of the tar.gz on the host.
    pub source: String,
    /// Lower-case hex sha256 of the archive.
    pub sha256: String,
    /// Overrides the agent's install root.
    pub install_root: Option<String>,
}

/// Undo of an [`ArchiveSpec`]: the agent points `current` back at the
/// release it pointed to before the install (it records that target when it
/// switches), and reports `(component, version)` installed on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRollbackSpec {
    pub component: String,
    /// The version the host had before the rollout, when the inventory knew
    /// it: `<install_root>/<component>/releases/<to_version>` is the release
    /// to go back to. `None`: whatever `current` pointed to before.
    pub to_version: Option<String>,
    /// Overrides the agent's install root, as the archive step did.
    pub install_root: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub path: String,
    pub content: String,
}

/// Retry policy of a check, carried out by the agent. The check is polled
/// every `interval`; it passes once it has succeeded continuously for
/// `min_healthy` (zero: on the first success; any failed poll restarts that
/// clock). It fails once `retries` extra attempts have failed, or when
/// `deadline` (the plan's `healthy_deadline`) passes before it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckPolicy {
    pub retries: u32,
    pub interval: Duration,
    pub deadline: Duration,
    /// How long the check must keep succeeding before it passes.
    #[serde(default)]
    pub min_healthy: Duration,
}

impl Default for CheckPolicy {
    fn default() -> Self {
        CheckPolicy {
            retries: 0,
            interval: Duration::from_millis(500),
            deadline: Duration::from_secs(30),
            min_healthy: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheckSpec {
    pub url: String,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    pub policy: CheckPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCheckSpec {
    pub address: String,
    pub policy: CheckPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCheckSpec {
    pub exec: ExecSpec,
    pub policy: CheckPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckSpec {
    pub path: String,
    pub contains: Option<String>,
    pub policy: CheckPolicy,
}

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
        }
    }
    /// A failed outcome with `message`.
    pub fn failed(message: impl Into<String>) -> StepOutcome {
        StepOutcome { status: StepStatus::Failed, exit_code: None, message: message.into(), ..StepOutcome::ok() }
    }
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

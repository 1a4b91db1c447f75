//! The specs of each step kind: what an `exec`, `archive`, `apt`, `http`
//! check… step asks of an agent, as the plan validated it and the wire
//! carries it. [`crate::model::StepKind`] holds one of these per variant;
//! `crate::model` re-exports them all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Run the command as this user (and group) instead of the agent's own
    /// user; `None`: as the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
}

/// `run_as:` of a command: the agent switches to this user itself (user id,
/// group id, the user's supplementary groups, `HOME`, `USER`, `LOGNAME`)
/// before running it; see [`crate::run_as`] for the names accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunAs {
    /// A user name from the host's `/etc/passwd`, or a numeric user id.
    pub user: String,
    /// A group name from `/etc/group`, or a numeric group id, to run with
    /// instead of the user's primary group; `None`: the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl std::fmt::Display for RunAs {
    /// `postgres`, or `postgres:ssl-cert` with a group.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
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
    /// The artifact's signature and whether the plan requires one.
    #[serde(default, skip_serializing_if = "Signing::is_unset")]
    pub signing: Signing,
}

/// The signature of a staged artifact (see [`crate::signature`]) and
/// whether a valid one is required. Absent in specs stored before
/// signatures existed, which is the same as "not required, unsigned".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Signing {
    /// The plan's `require_signature: true` (on the step or its group): the
    /// agent installs the artifact only with a valid signature from a key
    /// it trusts. Agent builds always require one; an agent started with
    /// `--require-signatures` requires one for everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The signature file's text, filled in at submit time from the
    /// coordinator's artifact store (loaded with the artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Signing {
    /// Neither required nor signed.
    pub fn is_unset(&self) -> bool {
        !self.required && self.signature.is_none()
    }
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

/// `apt`: install an exact version of a package from the host's repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AptSpec {
    /// The Debian package name.
    pub package: String,
    /// Exact Debian version (`[epoch:]upstream[-revision]`), as `apt-cache policy` shows it.
    pub version: String,
    /// `Some(true)`: `apt-mark hold` after installing; `Some(false)`: `apt-mark
    /// unhold`; `None`: keep the hold the package had (a held package is
    /// upgraded with `--allow-change-held-packages` and held again).
    #[serde(default)]
    pub hold: Option<bool>,
    /// Pass `--allow-downgrades` (needed to go back to an older version).
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Run `apt-get update` first (a local repository just refreshed).
    #[serde(default)]
    pub update: bool,
}

/// `dpkg`: install a staged `.deb`, checked by sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpkgSpec {
    /// The Debian package name the `.deb` must contain.
    pub package: String,
    /// The version the `.deb` must contain (checked with `dpkg-deb` before
    /// installing, and with `dpkg-query` after).
    pub version: String,
    /// Path of the `.deb` on the host; relative paths are resolved against
    /// the agent's install root.
    pub source: String,
    /// Lower-case hex sha256 of the `.deb`.
    pub sha256: String,
    /// The `.deb`'s signature and whether the plan requires one.
    #[serde(default, skip_serializing_if = "Signing::is_unset")]
    pub signing: Signing,
}

/// Which package manager an [`RpmSpec`] goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RpmManager {
    /// `dnf install` (and `dnf downgrade` when allowed and needed).
    #[default]
    Dnf,
    /// `yum install` (and `yum downgrade` when allowed and needed).
    Yum,
    /// `rpm -U` of a staged file ([`RpmSpec::source`] required).
    Rpm,
}

impl RpmManager {
    /// The command run for this manager.
    pub fn command(self) -> &'static str {
        match self {
            RpmManager::Dnf => "dnf",
            RpmManager::Yum => "yum",
            RpmManager::Rpm => "rpm",
        }
    }
}

/// `rpm`: install a version of a package through dnf, yum or rpm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmSpec {
    /// The RPM package name.
    pub package: String,
    /// `VERSION-RELEASE` (e.g. `2.0.0-1.el9`) or just `VERSION`.
    pub version: String,
    /// The tool that installs it (default dnf).
    #[serde(default)]
    pub manager: RpmManager,
    /// A staged `.rpm` (required for `manager: rpm`; with dnf/yum it is
    /// installed as a local file instead of from the repositories).
    #[serde(default)]
    pub source: Option<String>,
    /// Lower-case hex sha256 of `source` (required with `source`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Allow going back to an older version (`--oldpackage`, `downgrade`).
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// What a [`ServiceSpec`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    /// Start the service; one already running is left alone.
    Start,
    /// Stop the service; one already stopped is fine.
    Stop,
    /// Stop it (when running), then start it.
    Restart,
    /// Succeeds when the service is running, fails otherwise.
    Status,
}

impl ServiceAction {
    /// The spelling used in plans and by `systemctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
            ServiceAction::Status => "status",
        }
    }
}

/// Who runs a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ServiceManager {
    /// systemd when it runs the host (`/run/systemd/system` exists), otherwise
    /// the agent's own supervision of [`ServiceSpec::command`].
    #[default]
    Auto,
    /// `systemctl`, whatever the host looks like.
    Systemd,
    /// The agent's supervision, even on a systemd host.
    Supervised,
}

impl ServiceManager {
    /// The spelling used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceManager::Auto => "auto",
            ServiceManager::Systemd => "systemd",
            ServiceManager::Supervised => "supervised",
        }
    }
}

/// `service`: start, stop, restart or check a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The systemd unit (`.service` may be left out), and the supervised
    /// service's name (a plain name: no `/`, not starting with `.`).
    pub name: String,
    /// What to do.
    pub action: ServiceAction,
    /// Who runs the service (default: detected).
    #[serde(default)]
    pub manager: ServiceManager,
    /// What the agent runs when it supervises the service itself; required
    /// then for `start` and `restart`. Relative `workdir`s are resolved
    /// against the install root.
    #[serde(default)]
    pub command: Option<ExecSpec>,
    /// Where the supervised service's pid is recorded; default
    /// `<install root>/.services/<name>/pid`.
    #[serde(default)]
    pub pidfile: Option<String>,
    /// Where the supervised service's stdout and stderr go (appended);
    /// default `<install root>/.services/<name>/output.log`.
    #[serde(default)]
    pub log: Option<String>,
    /// Between SIGTERM and SIGKILL when stopping a supervised service;
    /// `None`: the agent's default (10s).
    #[serde(default)]
    pub stop_grace: Option<Duration>,
}

/// The package manager a [`PkgRollbackSpec`] goes back through: the one of
/// the step it undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PkgManager {
    /// `apt-get install PKG=PREVIOUS --allow-downgrades`.
    Apt,
    /// `dpkg -i` of the `.deb` the previous version came from (recorded when
    /// a dpkg step installed it), else apt when the host has it.
    Dpkg,
    /// dnf (downgrade allowed).
    Dnf,
    /// yum (downgrade allowed).
    Yum,
    /// `rpm -U --oldpackage` of the recorded previous `.rpm`.
    Rpm,
}

impl PkgManager {
    /// The spelling used on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PkgManager::Apt => "apt",
            PkgManager::Dpkg => "dpkg",
            PkgManager::Dnf => "dnf",
            PkgManager::Yum => "yum",
            PkgManager::Rpm => "rpm",
        }
    }

    /// The inverse of [`PkgManager::as_str`].
    pub fn parse(s: &str) -> Option<PkgManager> {
        [PkgManager::Apt, PkgManager::Dpkg, PkgManager::Dnf, PkgManager::Yum, PkgManager::Rpm]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// The manager of an [`RpmSpec`].
    pub fn of_rpm(m: RpmManager) -> PkgManager {
        match m {
            RpmManager::Dnf => PkgManager::Dnf,
            RpmManager::Yum => PkgManager::Yum,
            RpmManager::Rpm => PkgManager::Rpm,
        }
    }
}

/// Undo of an [`AptSpec`], [`DpkgSpec`] or [`RpmSpec`]: the agent goes back
/// to the version the package had before its last change on the host (its
/// `.pkg-history` record), or to `to_version` when the inventory knew it.
///
/// The agent's rules: the version wanted already installed is success with
/// nothing done; no record and no `to_version` fails ("nothing to roll back
/// to"); a package that was **not installed** before is removed (`dpkg
/// --remove` / `rpm -e`: conffiles and data stay, and a package others depend
/// on is refused rather than taking them with it); a rollback that already
/// happened (the last record is a rollback) is not undone again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkgRollbackSpec {
    /// The package to roll back.
    pub package: String,
    /// Through which package manager.
    pub manager: PkgManager,
    /// The version the inventory reported for the package before the
    /// rollout; `None`: whatever the agent recorded as the previous version.
    #[serde(default)]
    pub to_version: Option<String>,
}

/// `backup`: run a command that writes a backup, then check and measure it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSpec {
    /// The command that takes the backup (relative `workdir`s are resolved
    /// against the agent's install root, as for `exec`).
    pub command: ExecSpec,
    /// Where the command writes the backup: a file, or a directory whose
    /// whole tree is the backup. Relative paths are resolved against the
    /// agent's install root. `None`: the last non-empty line of the
    /// command's standard output names it (relative to the command's
    /// `workdir` when it has one, else to the install root).
    #[serde(default)]
    pub path: Option<String>,
}

/// A backup a `backup` step took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Absolute path of the backup file or directory on the host.
    pub location: String,
    /// Its size: a file's length, or the sum of the regular files' lengths
    /// in a directory tree (symbolic links not followed). Never 0.
    pub size_bytes: u64,
}

/// `1536` -> `1.5 KiB`: a size for people (binary units, one decimal).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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
    /// A field of the JSON answer that must hold a value.
    #[serde(default)]
    pub json: Option<JsonExpect>,
    pub policy: CheckPolicy,
}

/// `path` (dots, array indices as numbers) must hold `equals`; strings are
/// compared as they are, other values as their JSON text (`true`, `3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonExpect {
    pub path: String,
    pub equals: String,
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
    /// What the command's standard output must be, besides exiting 0.
    #[serde(default, skip_serializing_if = "OutputExpect::is_empty")]
    pub output: OutputExpect,
}

/// What an exec check requires of its command's standard output (the last
/// 4 KiB the agent keeps). Every condition given must hold; see
/// [`crate::output`] for how each is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutputExpect {
    /// The output equals this text, trailing whitespace trimmed on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The output contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The output matches this regex (anywhere, unless anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

impl OutputExpect {
    /// No condition on the output.
    pub fn is_empty(&self) -> bool {
        self.equals.is_none() && self.contains.is_none() && self.matches.is_none()
    }

    /// `Ok` when `stdout` meets every condition, else what was expected and
    /// what was seen (see [`crate::output::Expect::check`]).
    pub fn check(&self, stdout: &str) -> Result<(), String> {
        crate::output::Expect {
            equals: self.equals.as_deref(),
            contains: self.contains.as_deref(),
            matches: self.matches.as_deref(),
        }
        .check(stdout)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckSpec {
    pub path: String,
    pub contains: Option<String>,
    pub policy: CheckPolicy,
}

/// A `metric` check: read a number and compare it with thresholds (strict:
/// `below: 1000` passes at 999). See [`crate::metric`] for how it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricCheckSpec {
    pub source: MetricSource,
    pub format: crate::metric::MetricFormat,
    pub below: Option<Threshold>,
    pub above: Option<Threshold>,
    pub policy: CheckPolicy,
}

/// Where a metric check reads its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSource {
    /// `GET` an `http://` URL (a 2xx answer is required).
    Http { url: String },
    /// Run a command; its stdout (last 4 KiB) is the text.
    Command(ExecSpec),
}

/// A finite threshold. Plans refuse NaN and infinities, which is what makes
/// `Eq` sound here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Threshold(pub f64);

impl Eq for Threshold {}

/// An `agent_upgrade` step: the agent build to install and how long the new
/// agent has to come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpgradeSpec {
    /// The version the new build must report (its `--self-check`, then its hello).
    pub version: String,
    /// The build: `artifact:NAME@VERSION` from the coordinator's artifact store.
    pub source: String,
    /// Lower-case hex sha256 of the build (filled in from the artifact store).
    pub sha256: String,
    /// The build's signature; an agent build always needs a valid one from
    /// a key the agent trusts, whatever `required` says.
    #[serde(default, skip_serializing_if = "Signing::is_unset")]
    pub signing: Signing,
    /// How long the new agent has, from the switch, to say hello with
    /// [`AgentUpgradeSpec::version`] before the host reverts.
    pub deadline: Duration,
    /// Install a version marked bad on this host by an earlier revert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

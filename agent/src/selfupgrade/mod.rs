//! Agent self-upgrade (`agent_upgrade` steps; `docs/self-upgrade.md`).
//!
//! - [`identity`]: the version this agent binary reports (Hello, `--self-check`).
//! - [`install`]: side-by-side installs under `<state>/versions/<version>/`,
//!   the atomic `current` link, and versions marked bad on this host.
//! - [`intent`]: the durable record the processes of a hand-over share.
//! - [`step`]: the step itself, in the old agent: signature, fetch, install,
//!   self-check, intent; then it asks for the hand-over.
//! - [`handover`]: what the old agent's `main` does then: start the
//!   watchdog, switch `current`, replace itself with the new build.
//! - [`watchdog`]: the process that outlives the switch and reverts when the
//!   new agent exits, hangs or is not welcomed by the deadline.
//!
//! [`SelfUpgrade`] is this process's part in it: how it was launched (so a
//! build can be started again) and the hand-over request the step raises.

pub mod handover;
pub mod identity;
pub mod install;
pub mod intent;
pub mod step;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convoy_common::model::StepOutcome;
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;
use intent::{Intent, Launch, Phase};

/// The intent's clock: it is shared by processes.
pub use crate::wallclock::now_unix_ms;

/// This agent process's part in self-upgrades.
#[derive(Debug)]
pub struct SelfUpgrade {
    pub(crate) state_dir: PathBuf,
    /// How this build is started (program and the arguments before the
    /// agent's own flags).
    pub(crate) launch: Launch,
    /// The agent's own flags, as given.
    pub(crate) agent_args: Vec<String>,
    /// A service manager restarts the agent (`--supervised`): after a
    /// revert the watchdog leaves the restart to it.
    pub(crate) supervised: bool,
    handover: CancellationToken,
    ready: Mutex<Option<Intent>>,
}

impl SelfUpgrade {
    pub fn new(state_dir: &Path, launch: Launch, agent_args: Vec<String>, supervised: bool) -> SelfUpgrade {
        SelfUpgrade {
            state_dir: state_dir.to_path_buf(),
            launch,
            agent_args,
            supervised,
            handover: CancellationToken::new(),
            ready: Mutex::new(None),
        }
    }

    /// This process as started: `program prefix… agent-flags…`, where the
    /// first `prefix_len` arguments select the agent (`convoy __agent`).
    /// Arguments that are not UTF-8 make self-upgrade unavailable (`None`).
    pub fn from_process(state_dir: &Path, prefix_len: usize, supervised: bool) -> Option<SelfUpgrade> {
        let program = std::env::current_exe().ok()?;
        let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.into_string().ok()).collect::<Option<_>>()?;
        let (prefix, agent_args) = args.split_at(prefix_len.min(args.len()));
        Some(SelfUpgrade::new(state_dir, Launch { program, prefix: prefix.to_vec() }, agent_args.to_vec(), supervised))
    }

    /// Cancelled once a hand-over is ready: the agent then stops its session
    /// and its `main` calls [`handover::replace_process`].
    pub fn handover_requested(&self) -> CancellationToken {
        self.handover.clone()
    }

    /// The intent to hand over with, once requested.
    pub fn take_handover(&self) -> Option<Intent> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn request_handover(&self, intent: Intent) {
        *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(intent);
        self.handover.cancel();
    }

    /// Called once a session is established: if this process is the new
    /// build of a pending self-upgrade, that is the success the step waited
    /// for. `record` stores the step's outcome durably and reports it; then
    /// the intent is marked acknowledged (the watchdog stands down).
    pub fn welcomed(&self, record: &mut dyn FnMut(&str, &StepOutcome) -> Result<(), AgentError>) {
        let mine = identity::agent_version();
        let mut i = match intent::read(&self.state_dir) {
            Ok(Some(i)) if i.phase == Phase::Pending && i.to_version == mine && i.agent_pid == std::process::id() => i,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!("cannot read the self-upgrade intent: {e}");
                return;
            }
        };
        let now = now_unix_ms();
        let took = now.saturating_sub(i.started_unix_ms);
        let outcome = StepOutcome {
            message: format!(
                "agent upgraded from {} to {} and welcomed back in {took} ms (previous build kept for a revert)",
                i.from_version, i.to_version
            ),
            exit_code: None,
            duration_ms: took,
            ..StepOutcome::ok()
        };
        if let Err(e) = record(&i.execution_id, &outcome) {
            // Not recorded: leave the intent pending; the watchdog decides.
            tracing::error!(execution_id = %i.execution_id, "self-upgrade outcome not recorded: {e}");
            return;
        }
        i.phase = Phase::Acked;
        i.ended_unix_ms = Some(now);
        intent::trial_note(&self.state_dir, &format!("hello acknowledged with version {mine}"));
        match intent::write(&self.state_dir, &i) {
            Ok(()) => {
                tracing::info!(from = %i.from_version, to = %i.to_version, took_ms = took, "self-upgrade acknowledged")
            }
            Err(e) => tracing::error!("self-upgrade acknowledged but not recorded: {e}"),
        }
    }

    /// Notes the start of this process in the trial log when it is the new
    /// build of a pending self-upgrade (evidence should it not come back).
    pub fn note_start(&self) {
        if let Ok(Some(i)) = intent::read(&self.state_dir)
            && i.phase == Phase::Pending
            && i.agent_pid == std::process::id()
        {
            intent::trial_note(
                &self.state_dir,
                &format!("agent {} started (pid {}), connecting", identity::agent_version(), std::process::id()),
            );
        }
    }
}

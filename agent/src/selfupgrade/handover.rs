//! The hand-over, in the old agent's `main` once its session has stopped:
//! start the watchdog (a process of the old build that outlives the
//! switch), point `current` at the new build, and replace this process with
//! it (`exec`: same pid, so a service manager or a parent keeps tracking the
//! agent; children of running steps stay children).
//!
//! Only the binaries' `main`s call [`replace_process`]: like `exit`, it does
//! not come back when it works.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::intent::Intent;
use super::{SelfUpgrade, install, watchdog};
use crate::error::AgentError;

/// Starts the watchdog, switches `current` and execs the new build. Returns
/// only on failure; the watchdog then finds the intent still pending and
/// reverts when this process exits or the deadline passes.
pub fn replace_process(up: &SelfUpgrade, intent: &Intent) -> AgentError {
    // Started through `sh … &` so it is not this process's child: the new
    // agent never waits for it, and it leaves no zombie behind.
    let mut w = Command::new("/bin/sh");
    w.arg("-c")
        .arg(r#""$0" "$@" &"#)
        .arg(&up.launch.program)
        .arg(watchdog::MODE)
        .arg(&up.state_dir)
        .arg(if up.supervised { "supervised" } else { "unsupervised" })
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match w.status() {
        Ok(s) if s.success() => {}
        Ok(s) => return AgentError::InvalidConfig { field: "watchdog", message: format!("/bin/sh exited with {s}") },
        Err(e) => return AgentError::io("/bin/sh")(e),
    }
    if let Err(e) = install::switch_current(&up.state_dir, &intent.to_version) {
        return e;
    }
    tracing::info!(binary = %intent.new_binary.display(), "replacing this process with the new agent build");
    let e = Command::new(&intent.new_binary).args(&intent.agent_args).env(FOLLOWED_ENV, "true").exec();
    AgentError::io(&intent.new_binary)(e)
}

/// Runs an agent process: the agent until `shutdown`, and the hand-over
/// when an `agent_upgrade` step asks for one. `prefix_len` arguments
/// select the agent in this binary (`convoy __agent`: 1; `convoy-agent`:
/// 0); `supervised`: a service manager restarts the agent. Returns when the
/// agent stops, or with the error of a hand-over that failed (the watchdog
/// then reverts).
pub async fn run_agent_process(
    config: crate::AgentConfig,
    prefix_len: usize,
    supervised: bool,
    followed_current: bool,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), AgentError> {
    let up = SelfUpgrade::from_process(&config.state_dir, prefix_len, supervised).map(std::sync::Arc::new);
    if let Some(up) = &up
        && !followed_current
        && let Some(build) = build_to_follow(&config.state_dir)
    {
        // Started as another build than the one upgraded to (a service
        // manager's unit names the packaged binary, e.g. after a reboot).
        tracing::info!(binary = %build.display(), "starting the agent build `current` points at");
        let e = Command::new(&build).args(&up.agent_args).env(FOLLOWED_ENV, "true").exec();
        return Err(AgentError::io(&build)(e));
    }
    if up.is_none() {
        tracing::warn!("arguments that are not UTF-8: this agent cannot upgrade itself");
    }
    crate::session::run_local_with(config, shutdown, up.clone()).await?;
    match up.as_deref().and_then(|up| up.take_handover().map(|i| (up, i))) {
        Some((up, intent)) => Err(replace_process(up, &intent)),
        None => Ok(()),
    }
}

/// The environment variable (`--followed-current`) that stops a build
/// started through `current` from following it again.
pub const FOLLOWED_ENV: &str = "CONVOY_FOLLOWED_CURRENT";

/// The build `<state>/current` points at, when this process should become
/// it: another version than this one, installed, not marked bad, and no
/// self-upgrade on trial (the watchdog decides that one).
pub fn build_to_follow(state: &std::path::Path) -> Option<std::path::PathBuf> {
    let version = install::current_version(state)?;
    if version == super::identity::agent_version() || install::bad_reason(state, &version).is_some() {
        return None;
    }
    if matches!(super::intent::read(state), Ok(Some(i)) if i.phase == super::intent::Phase::Pending) {
        return None;
    }
    let binary = install::binary_path(state, &version);
    binary.is_file().then_some(binary)
}

//! The `agent_upgrade` step in the old agent, up to the hand-over:
//!
//! 1. the build's signature, from a trusted key, always (before any byte is fetched);
//! 2. fetch (`artifact:NAME@VERSION`, sha256-checked) or a local file (sha256-checked here);
//! 3. install side by side in `<state>/versions/<V>/` (a version marked bad
//!    on this host is refused unless the step forces it);
//! 4. the new binary's `--self-check --expect-version V` with this agent's
//!    own flags: it must report V and accept the configuration;
//! 5. the intent, durably; then the hand-over is requested and the step
//!    never finishes in this process: the new agent (or the watchdog)
//!    records its outcome.
//!
//! A failure before 5 fails the step here, with nothing switched; a
//! self-check failure also marks the version bad (it would fail again).

use std::path::Path;
use std::time::Duration;

use convoy_common::model::{AgentUpgradeSpec, StepOutcome};
use tokio::time::Instant;

use super::intent::{self, Intent, Phase};
use super::{SelfUpgrade, identity, install, now_unix_ms};
use crate::driver::LocalDriver;

/// The self-check gets this long.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs an `agent_upgrade` step; returns only when it failed before the
/// hand-over (or had nothing to do).
pub async fn run(
    driver: &LocalDriver,
    up: Option<&SelfUpgrade>,
    execution_id: &str,
    spec: &AgentUpgradeSpec,
    deadline: Option<Instant>,
) -> StepOutcome {
    let Some(up) = up else {
        return StepOutcome::failed(
            "this agent cannot upgrade itself: it was not started as an agent process (convoy-agent or convoy __agent)",
        );
    };
    let running = identity::agent_version();
    if running == spec.version {
        return StepOutcome {
            message: format!("agent {running} is already running; nothing to do"),
            exit_code: None,
            ..StepOutcome::ok()
        };
    }
    let what = format!("agent build {} ({})", spec.version, spec.source);
    if let Err(refused) = driver.trust.check(crate::trust::Need::AgentBuild, &spec.signing, &spec.sha256, &what) {
        return StepOutcome::failed(refused);
    }
    if let Some(reason) = install::bad_reason(&up.state_dir, &spec.version)
        && !spec.force
    {
        let first = reason.lines().next().unwrap_or("no evidence recorded").to_string();
        return StepOutcome::failed(format!(
            "agent {} was marked bad on this host ({first}); not retried unless the step says force: true",
            spec.version
        ));
    }
    let fetched = match driver.resolve_source(&spec.source, &spec.sha256, deadline).await {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    // A fetched artifact was checked against the sha256 on the way in; a
    // file already on the host is checked here.
    let local = crate::fetch::parse_source(&spec.source).is_none();
    let (state, version, sha, force) = (up.state_dir.clone(), spec.version.clone(), spec.sha256.clone(), spec.force);
    let installed = tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf, String> {
        if local {
            let actual = crate::fetch::sha256_file(Path::new(&fetched)).map_err(|e| format!("read {fetched}: {e}"))?;
            if !actual.eq_ignore_ascii_case(&sha) {
                return Err(format!("{fetched}: sha256 is {actual}, the step says {sha}; nothing installed"));
            }
        }
        install::install(&state, &version, Path::new(&fetched), force).map_err(|e| e.to_string())
    })
    .await;
    let new_binary = match installed {
        Ok(Ok(p)) => p,
        Ok(Err(m)) => return StepOutcome::failed(m),
        Err(e) => return StepOutcome::failed(format!("install task failed: {e}")),
    };
    if let Err(why) = self_check(up, &new_binary, &spec.version).await {
        let evidence = format!("self-check failed: {why}");
        let _ = install::mark_bad(&up.state_dir, &spec.version, &evidence);
        return StepOutcome::failed(format!(
            "agent {}: {evidence}; nothing switched, {running} keeps running, {} marked bad on this host",
            spec.version, spec.version
        ));
    }
    let now = now_unix_ms();
    let intent = Intent {
        format: intent::FORMAT,
        execution_id: execution_id.to_string(),
        from_version: running.to_string(),
        to_version: spec.version.clone(),
        previous: up.launch.clone(),
        new_binary,
        agent_args: up.agent_args.clone(),
        agent_pid: std::process::id(),
        previous_current: install::current_version(&up.state_dir),
        started_unix_ms: now,
        deadline_unix_ms: now.saturating_add(u64::try_from(spec.deadline.as_millis()).unwrap_or(u64::MAX)),
        phase: Phase::Pending,
        evidence: None,
        ended_unix_ms: None,
    };
    let _ = std::fs::remove_file(intent::trial_log(&up.state_dir));
    if let Err(e) = intent::write(&up.state_dir, &intent) {
        return StepOutcome::failed(format!("cannot record the self-upgrade intent: {e}; nothing switched"));
    }
    tracing::info!(from = %running, to = %spec.version, deadline = ?spec.deadline, "self-check passed; handing over");
    up.request_handover(intent);
    // The process is replaced by the new build; its outcome is recorded
    // after the switch, under this execution id.
    std::future::pending().await
}

/// Runs `binary --self-check --expect-version V` with this agent's flags.
async fn self_check(up: &SelfUpgrade, binary: &Path, version: &str) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(&up.agent_args)
        .args(["--self-check", "--expect-version", version])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(SELF_CHECK_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("no answer within {SELF_CHECK_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot start {}: {e}", binary.display())),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("").trim().to_string();
    let report: Option<serde_json::Value> = serde_json::from_str(&line).ok();
    let version_ok = report.as_ref().and_then(|r| r["version_ok"].as_bool()) == Some(true);
    let config_ok = report.as_ref().and_then(|r| r["config_ok"].as_bool()) == Some(true);
    if out.status.success() && version_ok && config_ok {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    Err(format!(
        "{} ({}); report: {}; stderr: {}",
        binary.display(),
        out.status,
        if line.is_empty() { "none".to_string() } else { line },
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}

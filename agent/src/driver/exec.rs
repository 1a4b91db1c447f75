//! Running commands: the `exec` step and the attempts of an `exec_check`.
//!
//! The child gets its own process group so that a timeout kills everything it
//! started (a shell script's children included), not just the direct child:
//! a step that "timed out" must not keep running behind the coordinator's back.
//! The library forbids `unsafe`, so the group is signalled with the system's
//! `kill` command (`kill -s KILL -- -<pgid>`); the direct child is always also
//! killed through tokio, which covers hosts without a `kill` binary. The same
//! happens if the step's future is dropped (agent shutdown), via a drop guard.
//!
//! A command with `run_as` is started through the agent's trampoline
//! ([`crate::run_as`]), which switches user and then becomes the command
//! (same pid, so the process group and the kill on timeout are unchanged);
//! one whose user cannot be resolved is not started and fails
//! ([`Ended::Refused`]).
//!
//! Output is kept as the last 4 KiB of stdout and of stderr: enough to see why
//! something failed without shipping megabytes of logs through the session.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_common::model::{ExecSpec, StepOutcome, StepStatus};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Bytes of stdout and of stderr kept.
pub const TAIL_BYTES: usize = 4096;

/// How long to wait for the output pipes to close once the child has exited
/// (a daemon it left behind may hold them open forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How a command ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Exited(ExitStatus),
    /// Killed (with its process group) after this long.
    TimedOut(Duration),
    SpawnFailed(std::io::Error),
    WaitFailed(std::io::Error),
    /// Not started: its `run_as` cannot be honoured here (why, naming the
    /// user and the host).
    Refused(String),
}

#[derive(Debug)]
pub(crate) struct CommandRun {
    pub ended: Ended,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

impl CommandRun {
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match &self.ended {
            Ended::Exited(s) => s.code(),
            _ => None,
        }
    }
    pub(crate) fn success(&self) -> bool {
        matches!(&self.ended, Ended::Exited(s) if s.success())
    }
}

/// `` `command arg…` `` for messages, shortened if very long.
pub(crate) fn describe(spec: &ExecSpec) -> String {
    let mut s = spec.command.clone();
    for a in &spec.args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            let _ = write!(s, "{a:?}");
        } else {
            s.push_str(a);
        }
    }
    if s.chars().count() > 200 {
        s = s.chars().take(197).collect::<String>() + "...";
    }
    format!("`{s}`")
}

/// Sends `signal` (a name: `TERM`, `KILL`…) to every process of group `pgid`
/// with the system's `kill` command; true if `kill` reported success.
pub(crate) fn signal_group(pgid: u32, signal: &str) -> bool {
    send_signal(&format!("-{pgid}"), signal)
}

/// Sends `signal` to the single process `pid` (see [`signal_group`]).
pub(crate) fn signal_process(pid: u32, signal: &str) -> bool {
    send_signal(&pid.to_string(), signal)
}

fn send_signal(target: &str, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills a process group when dropped, unless disarmed (the child was reaped).
struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    fn kill_now(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            signal_group(pgid, "KILL");
        }
    }
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill_now();
    }
}

type Tail = Arc<Mutex<Vec<u8>>>;

async fn pump(mut reader: impl AsyncRead + Unpin, tail: Tail) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > 2 * TAIL_BYTES {
                    let cut = t.len() - TAIL_BYTES;
                    t.drain(..cut);
                }
            }
        }
    }
}

fn tail_string(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    let start = t.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&t[start..]).into_owned()
}

/// Runs `spec` (in `workdir`, already resolved) and kills it with its process
/// group after `limit`.
pub(crate) async fn run_command(spec: &ExecSpec, workdir: Option<PathBuf>, limit: Option<Duration>) -> CommandRun {
    let not_run = |ended| CommandRun { ended, stdout_tail: String::new(), stderr_tail: String::new() };
    let launch = match spec.run_as.as_ref().map(crate::run_as::prepare).transpose() {
        Ok(l) => l,
        Err(message) => return not_run(Ended::Refused(message)),
    };
    let mut cmd = match launch.as_ref().and_then(|l| l.trampoline.as_ref()) {
        Some((helper, before)) => {
            let mut cmd = Command::new(helper);
            cmd.args(before).arg(&spec.command);
            cmd
        }
        None => Command::new(&spec.command),
    };
    let workdir = workdir.or_else(|| launch.as_ref().map(|l| l.home.clone()));
    if let Some(l) = &launch {
        cmd.envs(l.env.iter().map(|(k, v)| (k, v)));
    }
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::orphans::tag(&mut cmd);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_run(Ended::SpawnFailed(e)),
    };
    let mut guard = GroupGuard { pgid: child.id() };
    let (out, err): (Tail, Tail) = Default::default();
    let mut pumps = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.spawn(pump(stdout, out.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.spawn(pump(stderr, err.clone()));
    }

    let waited = match limit {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let ended = match waited {
        Some(Ok(status)) => {
            guard.disarm();
            Ended::Exited(status)
        }
        Some(Err(e)) => {
            guard.kill_now();
            let _ = child.kill().await;
            Ended::WaitFailed(e)
        }
        None => {
            guard.kill_now();
            let _ = child.kill().await;
            Ended::TimedOut(limit.unwrap_or_default())
        }
    };
    // Let the pumps drain what is left in the pipes, but not forever.
    let _ = tokio::time::timeout(PIPE_GRACE, async { while pumps.join_next().await.is_some() {} }).await;
    pumps.abort_all();
    CommandRun { ended, stdout_tail: tail_string(&out), stderr_tail: tail_string(&err) }
}

/// One-line description of how a command ended.
pub(crate) fn ended_message(what: &str, ended: &Ended) -> String {
    match ended {
        Ended::Exited(s) => match (s.code(), s.signal()) {
            (Some(0), _) => format!("{what} exited with code 0"),
            (Some(code), _) => format!("{what} exited with code {code}"),
            (None, Some(sig)) => format!("{what} was killed by signal {sig}"),
            (None, None) => format!("{what} ended with {s}"),
        },
        Ended::TimedOut(d) => format!("{what} did not finish within {d:?} and was killed"),
        Ended::SpawnFailed(e) => format!("could not start {what}: {e}"),
        Ended::WaitFailed(e) => format!("waiting for {what} failed: {e}"),
        Ended::Refused(why) => format!("{what} not run: {why}"),
    }
}

/// The `exec` step.
pub(crate) async fn exec_step(spec: &ExecSpec, workdir: Option<PathBuf>, timeout: Option<Duration>) -> StepOutcome {
    let what = describe(spec);
    let run = run_command(spec, workdir, timeout).await;
    let status = match &run.ended {
        Ended::TimedOut(_) => StepStatus::TimedOut,
        _ if run.success() => StepStatus::Succeeded,
        _ => StepStatus::Failed,
    };
    StepOutcome {
        status,
        exit_code: run.exit_code(),
        message: ended_message(&what, &run.ended),
        stdout_tail: run.stdout_tail,
        stderr_tail: run.stderr_tail,
        duration_ms: 0,
        installed: None,
        backup: None,
        http_status: None,
    }
}

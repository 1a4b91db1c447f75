//! The watchdog: a process of the *old* build, started by the hand-over,
//! that outlives the switch and puts the previous build back by itself
//! when the new one does not come back. No coordinator is needed for that.
//!
//! It polls the intent and the agent's pid every [`POLL`]:
//! - `Acked`: the new agent was welcomed; the watchdog exits.
//! - the agent process is gone (the new build exited or crashed, or was
//!   killed during the hand-over): revert at once;
//! - the deadline passed (it hangs, cannot connect, or is refused): kill it, revert.
//!
//! Revert: `current` back to what it was, the version marked bad on this
//! host with the evidence (how it ended, its exit status when the kernel
//! still has it, its trial log, the time taken), the step's failed outcome
//! stored under its execution id, the intent marked `Reverted`; then,
//! unless a service manager restarts the agent (`--supervised`), the
//! watchdog becomes the previous build (`exec`) with the agent's flags.
//!
//! Synchronous and single-threaded on purpose: it must work when little else does.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use convoy_common::model::{StepOutcome, StepStatus};

use super::intent::{self, Intent, Phase};
use super::{install, now_unix_ms};
use crate::store::{ExecutionStore, FileStore};

/// The first argument that makes a binary the watchdog.
pub const MODE: &str = "__convoy-watchdog";

/// How often the intent and the agent are looked at.
pub const POLL: Duration = Duration::from_millis(20);

/// Call first in `main` (beside `run_as::hook`): when started as the
/// watchdog, watch and never return; otherwise return at once.
pub fn hook() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(MODE)) {
        return;
    }
    let state = args.next().map(PathBuf::from);
    let supervised = args.next().as_deref() == Some(OsStr::new("supervised"));
    let code = match state {
        Some(state) => match watch(&state, supervised) {
            Ok(()) => 0,
            Err(m) => {
                eprintln!("convoy-agent watchdog: {m}");
                1
            }
        },
        None => {
            eprintln!("usage: {MODE} STATE_DIR [supervised|unsupervised]");
            2
        }
    };
    std::process::exit(code);
}

/// How the new agent's trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Welcomed by the coordinator with the new version.
    Acked,
    /// Someone else already reverted.
    AlreadyReverted,
    /// Reverted; the evidence.
    Reverted(String),
}

/// Watches until the trial ends; reverts when it failed. Returns after the
/// revert only under a supervisor (otherwise it becomes the previous build).
pub fn watch(state: &Path, supervised: bool) -> Result<(), String> {
    // Who watches (and, after a revert, who the agent becomes): recorded so
    // an operator, or a test harness cleaning up, can find the process.
    let pid_file = intent::watchdog_pid_file(state);
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    match judge(state, &mut |pid| kill(pid))? {
        Verdict::Acked | Verdict::AlreadyReverted => Ok(()),
        Verdict::Reverted(evidence) => {
            eprintln!("convoy-agent watchdog: reverted: {evidence}");
            let Some(i) = intent::read(state).map_err(|e| e.to_string())? else { return Ok(()) };
            if supervised {
                return Ok(());
            }
            let e = Command::new(&i.previous.program).args(&i.previous.prefix).args(&i.agent_args).exec();
            Err(format!("cannot start the previous build {}: {e}", i.previous.program.display()))
        }
    }
}

/// Polls until the trial ends and reverts a failed one; `kill` stops the
/// agent process when the deadline passes.
pub fn judge(state: &Path, kill: &mut dyn FnMut(u32)) -> Result<Verdict, String> {
    loop {
        let Some(i) = intent::read(state).map_err(|e| e.to_string())? else {
            return Err("no self-upgrade intent to watch".into());
        };
        match i.phase {
            Phase::Acked => return Ok(Verdict::Acked),
            Phase::Reverted => return Ok(Verdict::AlreadyReverted),
            Phase::Pending => {}
        }
        let now = now_unix_ms();
        let took = now.saturating_sub(i.started_unix_ms);
        let ending = match process_state(i.agent_pid) {
            ProcState::Gone => Some(format!("the new agent exited after {took} ms without being welcomed")),
            ProcState::Zombie(status) => Some(format!(
                "the new agent exited after {took} ms without being welcomed ({})",
                describe_status(status)
            )),
            ProcState::Alive if now >= i.deadline_unix_ms => {
                kill(i.agent_pid);
                wait_gone(i.agent_pid, Duration::from_secs(5));
                Some(format!(
                    "the new agent was not welcomed within its deadline of {} ms (killed after {took} ms)",
                    i.deadline_unix_ms.saturating_sub(i.started_unix_ms)
                ))
            }
            ProcState::Alive => None,
        };
        if let Some(how) = ending {
            let evidence = revert(state, i, &how)?;
            return Ok(Verdict::Reverted(evidence));
        }
        std::thread::sleep(POLL);
    }
}

/// Puts the previous build back and records why; returns the evidence.
pub fn revert(state: &Path, mut i: Intent, how: &str) -> Result<String, String> {
    let started = Instant::now();
    match &i.previous_current {
        Some(v) => install::switch_current(state, v).map_err(|e| e.to_string())?,
        None => match std::fs::remove_file(install::current_link(state)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", install::current_link(state).display())),
        },
    }
    let tail = intent::trial_tail(state, 5);
    let log = if tail.is_empty() {
        "the new agent wrote no trial log line".to_string()
    } else {
        format!("its trial log: {}", tail.join(" | "))
    };
    let evidence = format!("{how}; {log}; reverted to {} by the watchdog", i.from_version);
    let _ = install::mark_bad(state, &i.to_version, &evidence);
    let now = now_unix_ms();
    let outcome = StepOutcome {
        status: StepStatus::Failed,
        exit_code: None,
        message: format!(
            "agent {} reverted to {}: {evidence}; {} marked bad on this host",
            i.to_version, i.from_version, i.to_version
        ),
        duration_ms: now.saturating_sub(i.started_unix_ms),
        ..StepOutcome::ok()
    };
    let store = FileStore::open(crate::config::executions_dir(state)).map_err(|e| e.to_string())?;
    store.put(&i.execution_id, &outcome).map_err(|e| e.to_string())?;
    i.phase = Phase::Reverted;
    i.evidence = Some(evidence.clone());
    i.ended_unix_ms = Some(now);
    intent::write(state, &i).map_err(|e| e.to_string())?;
    tracing::debug!(took = ?started.elapsed(), "reverted");
    Ok(evidence)
}

/// What the kernel says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    Alive,
    /// Exited, not yet reaped by its parent: the wait status is known.
    Zombie(Option<i32>),
    Gone,
}

/// From `/proc/PID/stat`: the state letter, and field 52 (the exit status
/// in `waitpid` form) for a zombie.
fn process_state(pid: u32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return ProcState::Gone };
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return ProcState::Gone };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match fields.first() {
        Some(&"Z") | Some(&"X") | Some(&"x") => {
            // Field 3 is fields[0]; field 52 is fields[49].
            ProcState::Zombie(fields.get(49).and_then(|f| f.parse().ok()))
        }
        Some(_) => ProcState::Alive,
        None => ProcState::Gone,
    }
}

fn describe_status(status: Option<i32>) -> String {
    match status {
        None => "exit status unknown".into(),
        Some(s) if s & 0x7f == 0 => format!("exit code {}", (s >> 8) & 0xff),
        Some(s) => format!("killed by signal {}", s & 0x7f),
    }
}

fn kill(pid: u32) {
    if let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

fn wait_gone(pid: u32, at_most: Duration) {
    let until = Instant::now() + at_most;
    while Instant::now() < until && process_state(pid) == ProcState::Alive {
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfupgrade::intent::Launch;

    fn intent_for(pid: u32, deadline_ms: u64) -> Intent {
        let now = now_unix_ms();
        Intent {
            format: intent::FORMAT,
            execution_id: "r/g/h/0/1".into(),
            from_version: "0.1.0".into(),
            to_version: "0.2.0".into(),
            previous: Launch { program: "/bin/true".into(), prefix: vec![] },
            new_binary: "/nonexistent".into(),
            agent_args: vec![],
            agent_pid: pid,
            previous_current: Some("0.1.0".into()),
            started_unix_ms: now,
            deadline_unix_ms: now + deadline_ms,
            phase: Phase::Pending,
            evidence: None,
            ended_unix_ms: None,
        }
    }

    fn installed_both(state: &Path) {
        let build = state.join("b");
        std::fs::write(&build, "#!/bin/sh\n").unwrap();
        install::install(state, "0.1.0", &build, false).unwrap();
        install::install(state, "0.2.0", &build, false).unwrap();
        install::switch_current(state, "0.2.0").unwrap();
    }

    #[test]
    fn an_exited_agent_is_reverted_with_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        installed_both(state);
        // A child that exits 7 and is not reaped: a zombie with its status.
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = child.id();
        while process_state(pid) == ProcState::Alive {
            std::thread::sleep(POLL);
        }
        intent::write(state, &intent_for(pid, 30_000)).unwrap();
        let verdict = judge(state, &mut |_| panic!("nothing to kill")).unwrap();
        let Verdict::Reverted(evidence) = verdict else { panic!("{verdict:?}") };
        assert!(evidence.contains("exit code 7"), "{evidence}");
        assert_eq!(install::current_version(state).as_deref(), Some("0.1.0"));
        assert!(install::bad_reason(state, "0.2.0").unwrap().contains("exit code 7"));
        let stored = FileStore::open(crate::config::executions_dir(state)).unwrap().get("r/g/h/0/1").unwrap().unwrap();
        assert_eq!(stored.status, StepStatus::Failed);
        assert!(stored.message.contains("reverted to 0.1.0"), "{}", stored.message);
        assert_eq!(intent::read(state).unwrap().unwrap().phase, Phase::Reverted);
        drop(child);
    }

    #[test]
    fn a_hung_agent_is_killed_at_the_deadline_and_an_acked_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        installed_both(state);
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        intent::write(state, &intent_for(pid, 200)).unwrap();
        intent::trial_note(state, "agent 0.2.0 started, connecting");
        let mut killed = Vec::new();
        let verdict = judge(state, &mut |p| {
            killed.push(p);
            kill(p);
        })
        .unwrap();
        let _ = child.wait();
        assert_eq!(killed, vec![pid]);
        let Verdict::Reverted(evidence) = verdict else { panic!("{verdict:?}") };
        assert!(evidence.contains("not welcomed within its deadline of 200 ms"), "{evidence}");
        assert!(evidence.contains("connecting"), "the trial log is evidence: {evidence}");

        let mut acked = intent_for(std::process::id(), 200);
        acked.phase = Phase::Acked;
        intent::write(state, &acked).unwrap();
        assert_eq!(judge(state, &mut |_| panic!("acked: nothing to kill")).unwrap(), Verdict::Acked);
    }
}

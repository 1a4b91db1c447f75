//! The `service` step: start, stop, restart or check a service.
//!
//! **systemd hosts** (`/run/systemd/system` exists, or `manager: systemd`):
//! `systemctl start|stop|restart NAME`, then `systemctl is-active NAME` must
//! say `active` after a start or restart (and not after a stop); `status` is
//! `systemctl is-active NAME`.
//!
//! **Elsewhere** (containers, minimal hosts, or `manager: supervised`) the
//! agent supervises the spec's `command` itself:
//! - *start* spawns it detached in its own process group, stdin closed,
//!   stdout and stderr appended to the log file, and records its pid in the
//!   pidfile (plus its kernel start time in `<pidfile>.starttime`, so a
//!   recycled pid is never mistaken for the service). A command that exits
//!   within [`STARTUP_CHECK`] fails the step, with its exit code and the
//!   log's tail. A running service is left alone ("already running");
//! - *stop* sends SIGTERM to the process group, waits up to the grace period
//!   (the spec's `stop_grace`, default [`DEFAULT_STOP_GRACE`], never past the
//!   step's deadline) for every process of the group to go, then SIGKILLs the
//!   group. A service that is not running is "already stopped";
//! - *restart* is stop (when running) then start: the pid changes;
//! - *status* succeeds when the recorded pid is alive: `/proc/<pid>` exists,
//!   is not a zombie, and has the recorded start time.
//!
//! Defaults: pidfile `<install root>/.services/<name>/pid`, log
//! `<install root>/.services/<name>/output.log`.
//!
//! The agent reaps the children it started while it runs. A service outlives
//! an agent restart (it has its own process group), and the new agent finds
//! it through the pidfile. In a container whose PID 1 is the agent, a service
//! that dies after the agent restarted stays a zombie, which status reports
//! as not running; run such containers with an init (`docker run --init`).
//! Signals go through the system's `kill` command (no `unsafe` here).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use convoy_common::model::{StepOutcome, StepStatus};
use tokio::time::Instant;

use super::exec;
use super::pkg::{self, Budget, PkgEnv, ServiceAction, ServiceManager, ServiceSpec, run_tool, tail_note};
use crate::fsutil;

/// Between SIGTERM and SIGKILL when the spec does not say.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a freshly started command must stay up for the start to count.
pub const STARTUP_CHECK: Duration = Duration::from_millis(300);

/// Bytes of the service log shown in a failed outcome.
const LOG_TAIL_BYTES: u64 = 4096;

/// How often stop looks whether the processes are gone.
const POLL: Duration = Duration::from_millis(50);

fn check_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.starts_with('-')
        || name.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if bad { Err(format!("invalid service name {name:?}: must be a plain name")) } else { Ok(()) }
}

/// The `service` step. A zero `timeout` means [`pkg::DEFAULT_TIMEOUT`].
pub async fn run_service(spec: &ServiceSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
    let budget = Budget::new(timeout);
    if let Err(e) = check_name(&spec.name) {
        return pkg::refuse(format!("service step: {e}"));
    }
    let systemd = match spec.manager {
        ServiceManager::Systemd => true,
        ServiceManager::Supervised => false,
        ServiceManager::Auto => env.systemd(),
    };
    if systemd {
        systemctl(spec, env, &budget).await
    } else {
        Supervisor::new(spec, env).run(spec.action, &budget).await
    }
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

async fn systemctl(spec: &ServiceSpec, env: &PkgEnv, budget: &Budget) -> StepOutcome {
    let name = &spec.name;
    let is_active = || async {
        let args = vec!["is-active".to_string(), "--".into(), name.clone()];
        run_tool(env, "systemctl", &args, &[], budget, Some(pkg::QUERY_CAP)).await
    };
    let active_word = |ran: &pkg::Ran| {
        let w = ran.run.stdout_tail.trim();
        if w.is_empty() { "unknown".to_string() } else { w.to_string() }
    };
    if spec.action == ServiceAction::Status {
        let ran = is_active().await;
        return if ran.success() {
            StepOutcome { message: format!("service {name} is active (systemd)"), ..StepOutcome::ok() }
        } else if ran.not_found() || ran.timed_out() {
            ran.failure(format!("service {name}: {}", ran.ended()))
        } else {
            ran.failure(format!("service {name} is {} (systemd; {})", active_word(&ran), ran.ended()))
        };
    }
    let action = spec.action.as_str();
    let args = vec![action.to_string(), "--".into(), name.clone()];
    let ran = run_tool(env, "systemctl", &args, &[], budget, None).await;
    if !ran.success() {
        return ran.failure(format!("service {name}: {action} failed: {}{}", ran.ended(), tail_note(&ran)));
    }
    let check = is_active().await;
    let word = active_word(&check);
    let want_active = spec.action != ServiceAction::Stop;
    if check.success() != want_active {
        return StepOutcome {
            exit_code: ran.exit_code(),
            ..check.failure(format!(
                "service {name}: {} succeeded but the unit is {word} afterwards{}",
                ran.shown,
                tail_note(&check)
            ))
        };
    }
    StepOutcome {
        message: format!("service {name}: {action} done (systemd; now {word})"),
        stdout_tail: ran.run.stdout_tail,
        stderr_tail: ran.run.stderr_tail,
        ..StepOutcome::ok()
    }
}

// ---------------------------------------------------------------------------
// The agent's own supervision
// ---------------------------------------------------------------------------

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: u32,
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat` (the command name may contain spaces and parentheses).
pub fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5): state; pgrp is field 5, starttime 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn is_live(stat: &ProcStat) -> bool {
    !matches!(stat.state, 'Z' | 'X' | 'x')
}

/// Whether any live process belongs to group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(proc_stat)
            .is_some_and(|s| s.pgrp == pgid && is_live(&s))
    })
}

/// The last bytes of a log file.
fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

struct Supervisor<'a> {
    name: &'a str,
    spec: &'a ServiceSpec,
    env: &'a PkgEnv,
    pidfile: PathBuf,
    startfile: PathBuf,
    log: PathBuf,
}

/// A supervised service found running.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: u32,
    pgrp: u32,
}

impl<'a> Supervisor<'a> {
    fn new(spec: &'a ServiceSpec, env: &'a PkgEnv) -> Supervisor<'a> {
        let dir = env.state_root.join(".services").join(&spec.name);
        let pidfile = spec.pidfile.as_deref().map(|p| env.resolve(p)).unwrap_or_else(|| dir.join("pid"));
        let mut startfile = pidfile.clone().into_os_string();
        startfile.push(".starttime");
        let log = spec.log.as_deref().map(|p| env.resolve(p)).unwrap_or_else(|| dir.join("output.log"));
        Supervisor { name: &spec.name, spec, env, pidfile, startfile: startfile.into(), log }
    }

    async fn run(&self, action: ServiceAction, budget: &Budget) -> StepOutcome {
        match action {
            ServiceAction::Start => self.start(budget, None).await,
            ServiceAction::Stop => self.stop(budget).await,
            ServiceAction::Restart => {
                let stopped = self.stop(budget).await;
                if stopped.status != StepStatus::Succeeded {
                    return stopped;
                }
                self.start(budget, Some(stopped.message)).await
            }
            ServiceAction::Status => self.status(),
        }
    }

    /// The recorded process, if it is still the one we started and alive.
    fn running(&self) -> Option<Running> {
        let pid: u32 = std::fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()?;
        let stat = proc_stat(pid)?;
        let recorded: Option<u64> = std::fs::read_to_string(&self.startfile).ok().and_then(|s| s.trim().parse().ok());
        if !is_live(&stat) || recorded.is_some_and(|t| t != stat.starttime) {
            return None;
        }
        Some(Running { pid, pgrp: stat.pgrp })
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.pidfile);
        let _ = std::fs::remove_file(&self.startfile);
    }

    fn status(&self) -> StepOutcome {
        match self.running() {
            Some(r) => StepOutcome {
                message: format!("service {} is running (pid {}, supervised by the agent)", self.name, r.pid),
                exit_code: None,
                ..StepOutcome::ok()
            },
            None => {
                let tail = log_tail(&self.log);
                let recorded = std::fs::read_to_string(&self.pidfile).ok().map(|p| p.trim().to_string());
                let why = match recorded {
                    Some(p) => format!("recorded pid {p} is gone"),
                    None => format!("no pid recorded in {}", self.pidfile.display()),
                };
                StepOutcome {
                    stderr_tail: tail.clone(),
                    ..pkg::refuse(format!("service {} is not running ({why}){}", self.name, log_note(&self.log, &tail)))
                }
            }
        }
    }

    async fn start(&self, budget: &Budget, before: Option<String>) -> StepOutcome {
        let name = self.name;
        let prefix = before.map(|b| format!("{b}; ")).unwrap_or_default();
        if let Some(r) = self.running() {
            return StepOutcome {
                message: format!("{prefix}service {name} already running (pid {})", r.pid),
                exit_code: None,
                ..StepOutcome::ok()
            };
        }
        let Some(command) = &self.spec.command else {
            return pkg::refuse(format!(
                "{prefix}service {name}: no systemd on this host and the step declares no command to supervise"
            ));
        };
        let shown = exec::describe(command);
        let log = match self.open_log() {
            Ok(f) => f,
            Err(e) => {
                return pkg::refuse(format!("{prefix}service {name}: cannot open its log {}: {e}", self.log.display()));
            }
        };
        let (out, err) = match (log.try_clone(), log.try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => return pkg::refuse(format!("{prefix}service {name}: log file: {e}")),
        };
        let mut cmd = tokio::process::Command::new(&command.command);
        cmd.args(&command.args)
            .envs(&command.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(false)
            .process_group(0);
        if let Some(dir) = &command.workdir {
            cmd.current_dir(self.env.resolve(dir));
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return pkg::refuse(format!("{prefix}service {name}: could not start {shown}: {e}")),
        };
        let Some(pid) = child.id() else {
            return pkg::refuse(format!("{prefix}service {name}: {shown} exited at once"));
        };
        let starttime = proc_stat(pid).map(|s| s.starttime);
        if let Err(e) = self.record(pid, starttime).await {
            exec::signal_group(pid, "KILL");
            let _ = child.kill().await;
            return pkg::refuse(format!("{prefix}service {name}: started {shown} but {e}; killed it again"));
        }
        let check = STARTUP_CHECK.min(budget.remaining());
        match tokio::time::timeout(check, child.wait()).await {
            Ok(status) => {
                self.forget();
                let code = status_code(&status);
                let how = match status {
                    Ok(s) => exec::ended_message(&shown, &exec::Ended::Exited(s)),
                    Err(e) => format!("waiting for {shown} failed: {e}"),
                };
                let tail = log_tail(&self.log);
                StepOutcome {
                    exit_code: code,
                    stderr_tail: tail.clone(),
                    ..pkg::refuse(format!(
                        "{prefix}service {name} did not stay up: {how} within {check:?} of starting{}",
                        log_note(&self.log, &tail)
                    ))
                }
            }
            Err(_) => {
                // Reap it whenever it ends, as long as this agent runs.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                StepOutcome {
                    message: format!(
                        "{prefix}service {name} started (pid {pid}, supervised by the agent): {shown}, output in {}",
                        self.log.display()
                    ),
                    exit_code: None,
                    ..StepOutcome::ok()
                }
            }
        }
    }

    fn open_log(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).open(&self.log)
    }

    async fn record(&self, pid: u32, starttime: Option<u64>) -> Result<(), String> {
        let pidfile = self.pidfile.clone();
        let startfile = self.startfile.clone();
        let job = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match starttime {
                Some(t) => fsutil::write_atomic(&startfile, format!("{t}\n").as_bytes(), None)?,
                None => {
                    let _ = std::fs::remove_file(&startfile);
                }
            }
            fsutil::write_atomic(&pidfile, format!("{pid}\n").as_bytes(), None)
        });
        match job.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("could not write {}: {e}", self.pidfile.display())),
            Err(e) => Err(format!("could not write {}: {e}", self.pidfile.display())),
        }
    }

    async fn stop(&self, budget: &Budget) -> StepOutcome {
        let name = self.name;
        let Some(r) = self.running() else {
            self.forget();
            return StepOutcome {
                message: format!("service {name} was not running"),
                exit_code: None,
                ..StepOutcome::ok()
            };
        };
        // We start every service as the leader of its own group; signal the
        // group, or just the process if it moved itself elsewhere.
        let own_group = r.pgrp == r.pid;
        let signal =
            |sig: &str| if own_group { exec::signal_group(r.pid, sig) } else { exec::signal_process(r.pid, sig) };
        let gone = || if own_group { !group_alive(r.pid) } else { proc_stat(r.pid).is_none_or(|s| !is_live(&s)) };
        let started = Instant::now();
        let grace = self.spec.stop_grace.unwrap_or(DEFAULT_STOP_GRACE).min(budget.remaining());
        signal("TERM");
        if wait_until(&gone, started + grace).await {
            self.forget();
            return StepOutcome {
                message: format!("service {name} stopped (pid {}, SIGTERM, {:?})", r.pid, started.elapsed()),
                exit_code: None,
                ..StepOutcome::ok()
            };
        }
        signal("KILL");
        let killed = wait_until(&gone, Instant::now() + Duration::from_secs(5)).await;
        if killed {
            self.forget();
            return StepOutcome {
                message: format!(
                    "service {name} (pid {}) did not stop within {grace:?} of SIGTERM; killed with SIGKILL",
                    r.pid
                ),
                exit_code: None,
                ..StepOutcome::ok()
            };
        }
        let status = if budget.expired() { StepStatus::TimedOut } else { StepStatus::Failed };
        StepOutcome {
            status,
            ..pkg::refuse(format!("service {name} (pid {}) is still running after SIGTERM and SIGKILL", r.pid))
        }
    }
}

async fn wait_until(done: &impl Fn() -> bool, deadline: Instant) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_code(status: &std::io::Result<std::process::ExitStatus>) -> Option<i32> {
    status.as_ref().ok().and_then(|s| s.code())
}

fn log_note(log: &Path, tail: &str) -> String {
    let t = pkg::short_tail(tail);
    if t.is_empty() { format!("; its log {} is empty", log.display()) } else { format!("; log {}: {t}", log.display()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let stat = "4242 (my (odd) svc) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_proc_stat(stat).unwrap();
        assert_eq!(s, ProcStat { state: 'S', pgrp: 4242, starttime: 987654 });
        let zombie = "77 (sleep) Z 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5555 0 0 0\n";
        assert!(!is_live(&parse_proc_stat(zombie).unwrap()));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_live() {
        let me = proc_stat(std::process::id()).unwrap();
        assert!(is_live(&me));
        assert!(group_alive(me.pgrp));
    }

    #[test]
    fn names() {
        assert!(check_name("demo-api").is_ok());
        assert!(check_name("demo@1.service").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}

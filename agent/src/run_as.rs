//! Running a command as another user (`run_as:`), without `unsafe` and
//! without `su`/`runuser`.
//!
//! std's `CommandExt::uid`/`gid` drop every supplementary group (a
//! `postgres` user would lose `ssl-cert`), and setting them between `fork`
//! and `exec` needs `unsafe` (`pre_exec`). So the agent starts **itself** as
//! a trampoline: `<agent binary> __run-as UID GID GROUPS -- COMMAND ARGS…`.
//! Before any thread or runtime exists, [`hook`] (the first line of the
//! binary's `main`) sees that mode, sets the supplementary groups, the group
//! and the user of its (only) thread with rustix (`setgroups`, `setgid`,
//! `setuid`, in that order, each checked), and `exec`s the command, which
//! thus keeps the trampoline's pid, process group, environment and working
//! directory. A command that cannot be started there exits 127 with the
//! reason on stderr (where the step's output tail shows it).
//!
//! The binary is `/proc/self/exe` (the running agent's own file, even after
//! a self-upgrade replaced it on disk) unless [`set_helper`] names another
//! one: a program embedding the agent library must call [`hook`] first in
//! its `main` (`convoy-agent` and `convoy` do), and tests point at such a
//! binary.
//!
//! What the child gets besides the ids (see [`crate::users`] for how they
//! are resolved): `HOME`, `USER`, `LOGNAME` and (when the user has one)
//! `SHELL` of the user, before the step's own `env` (which wins); and the
//! user's home as working directory when the step gives no `workdir` (`/`
//! if the home is not a directory).
//!
//! An agent not running as root cannot switch: `run_as` naming its own user
//! runs the command directly (with the environment above), any other user
//! fails the step saying so.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use convoy_common::model::RunAs;

use crate::users::{self, Identity};

/// The first argument that selects the trampoline.
pub const MODE: &str = "__run-as";

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Use `path` (a binary whose `main` calls [`hook`] first) as the
/// trampoline instead of the running binary. Only the first call counts;
/// false if another path was set before.
pub fn set_helper(path: impl Into<PathBuf>) -> bool {
    let path = path.into();
    HELPER.get_or_init(|| path.clone()) == &path
}

fn helper() -> &'static Path {
    HELPER.get().map(PathBuf::as_path).unwrap_or(Path::new("/proc/self/exe"))
}

/// Call first in `main`, before any thread starts: when the process was
/// started as the trampoline, switch user and `exec` the command (never
/// returns); otherwise return at once.
pub fn hook() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(MODE)) {
        return;
    }
    let code = match trampoline(args.collect()) {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("convoy-agent {MODE}: {message}");
            127
        }
    };
    std::process::exit(code);
}

/// `UID GID GROUPS -- COMMAND ARGS…`: switch, then exec; only returns an error.
fn trampoline(args: Vec<OsString>) -> Result<std::convert::Infallible, String> {
    let text = |i: usize| {
        args.get(i).and_then(|a| a.to_str()).ok_or_else(|| format!("usage: {MODE} UID GID GROUPS -- COMMAND ARGS..."))
    };
    let id = |i: usize| text(i)?.parse::<u32>().map_err(|e| format!("bad id {:?}: {e}", text(i).unwrap_or_default()));
    let (uid, gid) = (id(0)?, id(1)?);
    let groups = text(2)?
        .split(',')
        .filter(|g| !g.is_empty())
        .map(|g| g.parse::<u32>().map(rustix::process::Gid::from_raw).map_err(|e| format!("bad group {g:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if text(3)? != "--" || args.len() < 5 {
        return Err(format!("usage: {MODE} UID GID GROUPS -- COMMAND ARGS..."));
    }
    // Per-thread calls, and this process has one thread: nothing runs yet.
    rustix::thread::set_thread_groups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(gid)).map_err(|e| format!("setgid({gid}): {e}"))?;
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid)).map_err(|e| format!("setuid({uid}): {e}"))?;
    let program = &args[4];
    let err = std::process::Command::new(program).args(&args[5..]).exec();
    Err(format!("cannot run {}: {err}", program.to_string_lossy()))
}

/// How to start a command as `run_as` on this host: the program and the
/// arguments that go before the command's own, the environment to add, and
/// the working directory when the step gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `None`: run the command directly (the agent already is that user).
    pub trampoline: Option<(PathBuf, Vec<String>)>,
    pub env: Vec<(&'static str, String)>,
    pub home: PathBuf,
}

/// Resolve `run_as` on this host into a [`Launch`], or say why it cannot
/// run (naming the user and the host).
pub fn prepare(run_as: &RunAs) -> Result<Launch, String> {
    let host = crate::facts::hostname().unwrap_or_else(|| "this host".into());
    let fail = |m: String| format!("run_as {run_as} on {host}: {m}");
    let id = users::resolve_on_host(run_as).map_err(fail)?;
    let me = rustix::process::geteuid().as_raw();
    let trampoline = if me == 0 {
        Some((helper().to_path_buf(), trampoline_args(&id)))
    } else if id.uid == me && id.gid == rustix::process::getegid().as_raw() {
        None
    } else {
        return Err(fail(format!("the agent runs as uid {me}, not root, and cannot switch to uid {}", id.uid)));
    };
    let home = Path::new(&id.home);
    let home = if home.is_dir() { home.to_path_buf() } else { PathBuf::from("/") };
    let mut env = vec![("HOME", id.home.clone()), ("USER", id.user.clone()), ("LOGNAME", id.user.clone())];
    if let Some(shell) = &id.shell {
        env.push(("SHELL", shell.clone()));
    }
    Ok(Launch { trampoline, env, home })
}

/// `__run-as UID GID GROUPS --`.
fn trampoline_args(id: &Identity) -> Vec<String> {
    let groups = id.groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    vec![MODE.to_string(), id.uid.to_string(), id.gid.to_string(), groups, "--".to_string()]
}

//! Finding the processes of an execution the agent lost track of.
//!
//! Every command a step starts carries `CONVOY_EXECUTION_ID=<id>` in its
//! environment (set from [`EXECUTION_ID`], the task-local the session sets
//! around a driver), and so do its children. When the agent is killed while a
//! step runs, the step's processes live on in their own process group; the
//! restarted agent finds them by that variable in `/proc/*/environ` and waits
//! for them to end before it answers for the execution, so the step never
//! runs twice side by side. Long-lived daemons a `service` step starts under
//! the agent's supervision are not tagged (they are meant to outlive it).

use std::time::Duration;

/// The environment variable that tags a step's processes.
pub const ENV: &str = "CONVOY_EXECUTION_ID";

tokio::task_local! {
    /// The execution a driver is running, for tagging the commands it starts.
    pub static EXECUTION_ID: String;
}

/// Tags `cmd` with the current execution id, if a driver is running one.
pub fn tag(cmd: &mut tokio::process::Command) {
    if let Ok(id) = EXECUTION_ID.try_with(|id| id.clone()) {
        cmd.env(ENV, id);
    }
}

/// The pids of live processes tagged with `execution_id`.
pub fn processes_of(execution_id: &str) -> Vec<u32> {
    let needle = format!("{ENV}={execution_id}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Zombies have an empty environ; unreadable ones are not ours.
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| !is_zombie(*pid))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Waits until no process of `execution_id` is left, at most `limit`;
/// returns how many were found at first and whether they all ended.
pub async fn wait_gone(execution_id: &str, limit: Duration) -> (usize, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let first = processes_of(execution_id).len();
    loop {
        if processes_of(execution_id).is_empty() {
            return (first, true);
        }
        if tokio::time::Instant::now() >= deadline {
            return (first, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

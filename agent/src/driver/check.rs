//! Checks: poll something until it answers as expected, under a [`CheckPolicy`].
//!
//! The first attempt runs at once. After a failed attempt the check sleeps
//! `interval` and tries again, at most `retries` more times, and never past its
//! `deadline` (measured from the first attempt; zero means no deadline of its
//! own) nor past the step's timeout. Each attempt is bounded as well, by
//! [`ATTEMPT_CAP`] and by whatever time is left, so one hung connection cannot
//! eat the whole budget. A check stopped by the *step* timeout reports
//! `TimedOut`; one that ran out of retries or of its own deadline is `Failed`.
//! Messages say what the last attempt saw and how many attempts were made.
//!
//! With `min_healthy` set, one success is not enough: the check keeps polling
//! every `interval` and passes once it has succeeded without a break for that
//! long. A failed poll restarts the clock and counts against `retries`;
//! successful polls do not.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use convoy_common::model::{CheckPolicy, ExecSpec, OutputExpect, StepOutcome, StepStatus};
use tokio::time::Instant;

use super::exec;

/// Longest a single attempt may take.
pub const ATTEMPT_CAP: Duration = Duration::from_secs(10);

/// What one attempt saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Observed {
    pub detail: String,
    pub exit_code: Option<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Http checks: the response's status, when one came.
    pub http_status: Option<u16>,
}

impl Observed {
    pub(crate) fn detail(detail: impl Into<String>) -> Observed {
        Observed { detail: detail.into(), ..Observed::default() }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

enum Stop {
    Retries,
    Deadline,
}

/// Runs `attempt` under `policy`. `attempt` receives its time budget and
/// should honour it (the loop also enforces it, with a little grace, so an
/// attempt that can clean up after itself — killing a process — gets to).
pub(crate) async fn run_check<F, Fut>(
    what: &str,
    policy: &CheckPolicy,
    step_deadline: Option<Instant>,
    mut attempt: F,
) -> StepOutcome
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<Observed, Observed>>,
{
    let start = Instant::now();
    let own_deadline = (!policy.deadline.is_zero()).then(|| start + policy.deadline);
    let overall = earliest(own_deadline, step_deadline);
    let mut attempts: u32 = 0;
    let mut failures: u32 = 0;
    let mut healthy_since: Option<Instant> = None;
    let mut last = Observed::detail("no attempt made");
    let stopped_by;
    loop {
        let now = Instant::now();
        let budget = match overall {
            Some(d) if d <= now => {
                stopped_by = Stop::Deadline;
                break;
            }
            Some(d) => ATTEMPT_CAP.min(d - now),
            None => ATTEMPT_CAP,
        };
        attempts += 1;
        let grace = Duration::from_secs(1);
        let attempt_start = Instant::now();
        match tokio::time::timeout(budget + grace, attempt(budget)).await {
            Ok(Ok(seen))
                if attempt_start.duration_since(*healthy_since.get_or_insert(attempt_start)) < policy.min_healthy =>
            {
                last = seen;
            }
            Ok(Ok(seen)) => {
                let s = if attempts == 1 { "" } else { "s" };
                let held = match healthy_since {
                    Some(t) if !policy.min_healthy.is_zero() => format!(", healthy for {:?}", attempt_start - t),
                    _ => String::new(),
                };
                return StepOutcome {
                    status: StepStatus::Succeeded,
                    exit_code: seen.exit_code,
                    message: format!("{what}: passed ({}) after {attempts} attempt{s}{held}", seen.detail),
                    stdout_tail: seen.stdout_tail,
                    stderr_tail: seen.stderr_tail,
                    duration_ms: 0,
                    installed: None,
                    backup: None,
                    http_status: seen.http_status,
                };
            }
            Ok(Err(seen)) => {
                last = seen;
                failures += 1;
                healthy_since = None;
            }
            Err(_) => {
                last = Observed::detail(format!("attempt timed out after {budget:?}"));
                failures += 1;
                healthy_since = None;
            }
        }
        if failures > policy.retries {
            stopped_by = Stop::Retries;
            break;
        }
        let next = Instant::now() + policy.interval;
        if overall.is_some_and(|d| next >= d) {
            stopped_by = Stop::Deadline;
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    let (status, why) = match stopped_by {
        Stop::Retries => (StepStatus::Failed, "retries exhausted"),
        // The step's timeout was the binding limit: the step timed out.
        Stop::Deadline if step_deadline.is_some() && overall == step_deadline => {
            (StepStatus::TimedOut, "step timeout reached")
        }
        Stop::Deadline => (StepStatus::Failed, "check deadline reached"),
    };
    let s = if attempts == 1 { "" } else { "s" };
    StepOutcome {
        status,
        exit_code: last.exit_code,
        message: format!("{what}: {} ({attempts} attempt{s}, {why})", last.detail),
        stdout_tail: last.stdout_tail,
        stderr_tail: last.stderr_tail,
        duration_ms: 0,
        installed: None,
        backup: None,
        http_status: last.http_status,
    }
}

/// One attempt of a TCP check: can a connection be opened?
pub(crate) async fn tcp_attempt(address: &str, budget: Duration) -> Result<Observed, Observed> {
    match tokio::time::timeout(budget, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(Observed::detail(format!("connected to {address}"))),
        Ok(Err(e)) => Err(Observed::detail(format!("connect to {address}: {e}"))),
        Err(_) => Err(Observed::detail(format!("connect to {address}: no answer within {budget:?}"))),
    }
}

/// One attempt of a file check: does the file exist (and contain the text)?
pub(crate) async fn file_attempt(path: &PathBuf, contains: Option<&str>) -> Result<Observed, Observed> {
    let shown = path.display();
    match tokio::fs::read(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Observed::detail(format!("{shown} does not exist"))),
        Err(e) => Err(Observed::detail(format!("{shown}: {e}"))),
        Ok(bytes) => match contains {
            None => Ok(Observed::detail(format!("{shown} exists"))),
            Some(needle) if String::from_utf8_lossy(&bytes).contains(needle) => {
                Ok(Observed::detail(format!("{shown} contains {needle:?}")))
            }
            Some(needle) => Err(Observed::detail(format!("{shown} does not contain {needle:?}"))),
        },
    }
}

/// One attempt of an exec check: does the command exit 0 within the budget,
/// its stdout meeting `output` (see [`convoy_common::output`])?
pub(crate) async fn exec_attempt(
    spec: &ExecSpec,
    output: &OutputExpect,
    workdir: Option<PathBuf>,
    budget: Duration,
) -> Result<Observed, Observed> {
    let run = exec::run_command(spec, workdir, Some(budget)).await;
    let mut seen = Observed {
        detail: exec::ended_message(&exec::describe(spec), &run.ended),
        exit_code: run.exit_code(),
        stdout_tail: run.stdout_tail.clone(),
        stderr_tail: run.stderr_tail.clone(),
        http_status: None,
    };
    if !run.success() {
        return Err(seen);
    }
    match output.check(&run.stdout_tail) {
        Ok(()) => Ok(seen),
        Err(why) => {
            seen.detail = format!("{}, but {why}", seen.detail);
            Err(seen)
        }
    }
}

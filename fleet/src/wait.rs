//! Waiting on a condition with a deadline: poll it until it gives a value,
//! or fail naming what was awaited. Every wait of the harness (and of the
//! tests using it) is one of these, never a sleep as synchronisation.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::FleetError;

/// How often the waits poll unless told otherwise.
pub const POLL: Duration = Duration::from_millis(10);

/// Poll the async `f` every [`POLL`] until it returns `Some`, or fail after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T, FleetError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(timed_out(what, timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Poll the blocking `f` every [`POLL`] until it returns `Some`, or fail after `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> Result<T, FleetError> {
    poll_every(POLL, timeout, what, f)
}

/// [`poll`], waiting `every` between two calls (for conditions costly to ask,
/// such as a `docker exec`).
pub fn poll_every<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, FleetError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(timed_out(what, timeout));
        }
        std::thread::sleep(every);
    }
}

fn timed_out(what: &str, after: Duration) -> FleetError {
    FleetError::TimedOut { what: what.to_string(), after }
}

//! Giving the heap's free memory back to the system after a burst of
//! connections.
//!
//! Thousands of agents connecting at once (a fleet starting, a coordinator
//! restarting) allocate a lot for a short time: TLS handshakes, HTTP/2
//! set-up, first messages. glibc's `malloc` keeps what they free inside its
//! heaps, where it still counts as the process's memory: with 10,000
//! agents idle after connecting, `malloc_trim(0)` took the coordinator from
//! 517 to 468 MiB (docs/benchmark.md). So the coordinator trims once a burst
//! is over: when TLS handshakes have happened since the last trim but none
//! during the last [`TRIM_CHECK`]. Not during a burst, whose next
//! connections would only fault the pages back in.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the trimmer looks, and how long handshakes must have stopped.
pub const TRIM_CHECK: Duration = Duration::from_secs(5);

/// When to trim, from a count of handshakes that only grows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrimPolicy {
    /// The count at the previous look.
    last_seen: u64,
    /// The count at the last trim.
    at_last_trim: u64,
}

impl TrimPolicy {
    /// One look at the count `handshakes`: true if it should trim now
    /// (handshakes since the last trim, none since the previous look).
    pub fn look(&mut self, handshakes: u64) -> bool {
        let quiet = handshakes == self.last_seen;
        self.last_seen = handshakes;
        if quiet && handshakes != self.at_last_trim {
            self.at_last_trim = handshakes;
            return true;
        }
        false
    }
}

/// Returns the heap's free pages to the system; false where the C library
/// has no way to (only glibc does).
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::trim();
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    unsafe extern "C" {
        /// glibc's `malloc_trim(3)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim takes the allocator's own locks and only
        // releases pages no allocation uses; it has no preconditions, and
        // its result (whether anything was released) is not needed.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Looks at `handshakes()` every [`TRIM_CHECK`] until `stop` and trims
/// (off the runtime's threads) when [`TrimPolicy`] says so.
pub fn spawn_trimmer(
    handshakes: impl Fn() -> u64 + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut policy = TrimPolicy::default();
        let mut every = tokio::time::interval(TRIM_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {
                    if policy.look(handshakes()) {
                        let started = std::time::Instant::now();
                        match tokio::task::spawn_blocking(trim).await {
                            Ok(true) => tracing::debug!(elapsed = ?started.elapsed(), "free heap memory returned"),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "heap trim failed"),
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_burst_is_over_and_not_during_it_or_when_idle() {
        let mut p = TrimPolicy::default();
        assert!(!p.look(0), "nothing ever happened");
        assert!(!p.look(500), "a burst is under way");
        assert!(!p.look(9_000), "still under way");
        assert!(p.look(9_000), "quiet for one look: trim");
        assert!(!p.look(9_000), "already trimmed, nothing since");
        assert!(!p.look(9_000));
        assert!(!p.look(9_001), "one reconnect");
        assert!(p.look(9_001), "then quiet: trim again");
    }

    #[test]
    fn trimming_runs_here() {
        // glibc on the machines this is built on: the call is there and returns.
        assert_eq!(trim(), cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}

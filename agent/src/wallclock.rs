//! The wall clock in Unix milliseconds, for what is written down and read
//! by other processes or later runs (records, intents, package history):
//! a monotonic clock would mean nothing there.

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

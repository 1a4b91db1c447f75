//! Captures the `tracing` output of this process (an in-process coordinator
//! and agents, see [`crate::inprocess`]) so a test can assert that a refusal
//! was logged (with who and from where).
//!
//! nextest runs every test in its own process, so the global subscriber this
//! installs belongs to one test. Wait on a line with [`LogCapture::wait_for`]
//! (a deadline, never a sleep): logging may happen on another task.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::FleetError;
use crate::wait::wait_until;

/// Everything logged since [`LogCapture::install`], as text lines.
#[derive(Clone, Debug, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs the capturing subscriber (info and above) for this process;
    /// later calls return the same capture.
    pub fn install() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                let buf = capture.buf.clone();
                let subscriber = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                    .with_ansi(false)
                    .with_writer(move || Writer(buf.clone()))
                    .finish();
                // Another subscriber may already be set (a test that set its
                // own): then nothing is captured, and wait_for says so.
                let _ = tracing::subscriber::set_global_default(subscriber);
                capture
            })
            .clone()
    }

    /// The text logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Lines that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text().lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string).collect()
    }

    /// Waits until a line contains every one of `needles`, and returns it.
    pub async fn wait_for(&self, needles: &[&str], timeout: Duration) -> Result<String, FleetError> {
        let what = format!("a log line with {needles:?}");
        wait_until(timeout, &what, || async { self.lines_with(needles).into_iter().next() })
            .await
            .map_err(|e| FleetError::NotReady(format!("{e}; the log was:\n{}", self.text())))
    }
}

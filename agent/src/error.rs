//! The agent's one error type.
//!
//! Every variant carries the context an operator needs to act on it (the
//! path, the coordinator, the host or execution id) so a log line or a CLI
//! error is self-explanatory without a backtrace. Step failures are *not*
//! errors: they are [`convoy_common::model::StepOutcome`]s reported to the
//! coordinator. `AgentError` is for the agent itself failing.

use std::path::PathBuf;

/// Why the agent (not a step) failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A configuration value is invalid (from flags, environment or a caller).
    #[error("invalid {field}: {message}")]
    InvalidConfig { field: &'static str, message: String },

    /// A `--label` is not of the form `key=value`.
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },

    /// Generating the key or the CSR, or loading TLS material, failed.
    #[error("TLS ({what}): {message}")]
    Tls { what: String, message: String },

    /// The agent has no certificate yet and nothing to enrol with.
    #[error(
        "host {host_id} has no certificate under {tls_dir} and no join token was given \
         (pass --join-token or CONVOY_JOIN_TOKEN, created with `convoy token create`)"
    )]
    MissingJoinToken { host_id: String, tls_dir: PathBuf },

    /// The coordinator refused the enrolment (bad or expired token, host id taken…).
    #[error("enrolment of host {host_id} at {coordinator} refused: {message}")]
    EnrollRefused { host_id: String, coordinator: String, message: String },

    /// The coordinator could not be reached or the call failed in transit.
    /// Retryable: the session loop backs off and tries again.
    #[error("coordinator {coordinator}: {message}")]
    Transport { coordinator: String, message: String },

    /// An artifact a step names (`artifact:NAME@VERSION`) could not be fetched
    /// from the coordinator: unknown, refused, or not complete before the deadline.
    #[error("artifact {artifact}: {message}")]
    Artifact { artifact: String, message: String },

    /// A fetched artifact's content is not the sha256 the step expects; the
    /// download was discarded.
    #[error(
        "artifact {artifact}: sha256 mismatch: expected {expected}, actual {actual} \
         (corrupted or truncated download, discarded)"
    )]
    ArtifactMismatch { artifact: String, expected: String, actual: String },

    /// The local execution store could not be read or written.
    #[error("execution store {path} (execution {execution_id}): {message}")]
    Store { path: PathBuf, execution_id: String, message: String },
}

impl AgentError {
    /// Whether retrying later can succeed (network trouble) as opposed to a
    /// problem an operator has to fix (bad token, bad config, unreadable files).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AgentError::Transport { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { path, source }
    }
}

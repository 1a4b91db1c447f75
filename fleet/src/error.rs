//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    // The cause is the error's source: `{:#}` prints it once after the path.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("timed out after {after:?} waiting for {what}")]
    TimedOut { what: String, after: Duration },
    #[error(transparent)]
    Coordinator(#[from] convoy_coordinator::CoordinatorError),
    #[error(transparent)]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("bad operator token: {0}")]
    Token(#[from] tonic::metadata::errors::InvalidMetadataValue),
    /// A plain HTTP GET that did not get an answer.
    #[error("{0}")]
    Http(String),
    /// A `docker` command (or a container) that did not do what was asked.
    #[error("{0}")]
    Docker(String),
    /// The fleet did not reach the state waited for; the message says what
    /// was seen and where the logs are.
    #[error("{0}")]
    NotReady(String),
    /// A status naming a state this harness does not know.
    #[error("coordinator: {0}")]
    State(#[from] convoy_common::engine::state::UnknownState),
}

impl FleetError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FleetError {
        let path = path.into();
        move |source| FleetError::Io { path, source }
    }
}

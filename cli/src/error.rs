//! The CLI's error type and its exit codes.

use std::path::PathBuf;

use convoy_common::engine::RolloutState;
use convoy_common::engine::state::UnknownState;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: a plan that does not validate, bad flags. Exit code 2.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Usage(String),
    // The cause is the error's source: `{:#}` prints it once after the path.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot reach the coordinator at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("coordinator: {0}")]
    Rpc(String),
    /// The rollout ended, but not successfully. Exit code 1.
    #[error("rollout {id} ended {state}")]
    RolloutFailed { id: String, state: RolloutState },
    #[error("demo: {0}")]
    Demo(String),
    /// `convoy verify`: the stored log breaks an invariant. Exit code 3.
    #[error("rollout {rollout}: {message}")]
    Violation { rollout: String, message: String },
    /// An example (`convoy example`) whose rollouts or end state were not as expected. Exit code 1.
    #[error("example: {0}")]
    Example(String),
    /// `convoy __agent --self-check` did not pass (the JSON line says why). Exit code 3, as `convoy-agent`'s.
    #[error("self-check failed")]
    SelfCheck,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Invalid(_) | CliError::Usage(_) => 2,
            CliError::Violation { .. } | CliError::SelfCheck => 3,
            CliError::Io { .. }
            | CliError::Connect { .. }
            | CliError::Rpc(_)
            | CliError::RolloutFailed { .. }
            | CliError::Demo(_)
            | CliError::Example(_) => 1,
        }
    }
}

/// The local fleets of the demo, the examples and the benchmark fail as the
/// demo does, except for I/O and coordinator answers (and the states in them), which
/// keep their kind.
impl From<convoy_fleet::FleetError> for CliError {
    fn from(e: convoy_fleet::FleetError) -> Self {
        match e {
            convoy_fleet::FleetError::Io { path, source } => CliError::Io { path, source },
            convoy_fleet::FleetError::Rpc(s) => s.into(),
            convoy_fleet::FleetError::State(e) => e.into(),
            other => CliError::Demo(other.to_string()),
        }
    }
}

/// A status naming a state this CLI does not know (a newer coordinator).
impl From<UnknownState> for CliError {
    fn from(e: UnknownState) -> Self {
        CliError::Rpc(e.to_string())
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument => CliError::Invalid(s.message().to_string()),
            _ => CliError::Rpc(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

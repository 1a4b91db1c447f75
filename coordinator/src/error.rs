//! The coordinator's error type; mapped to `tonic::Status` in one place
//! ([`crate::grpc::to_status`]).

use std::path::PathBuf;

use convoy_common::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: in use by another coordinator process (stop it first)", path.display())]
    InUse { path: PathBuf },
    #[error("{}: store format {found} is newer than this coordinator understands ({known}); upgrade the coordinator", path.display())]
    StoreTooNew { path: PathBuf, found: u32, known: u32 },
    #[error("store: {op}: {message}")]
    Store { op: &'static str, message: String },
    #[error("tls: {what}: {message}")]
    Tls { what: String, message: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("bad request: {field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("unknown rollout '{id}'")]
    UnknownRollout { id: String },
    #[error("no rollout yet")]
    NoRollout,
    #[error("host {host}: {message}")]
    PermissionDenied { host: String, message: String },
    #[error("{name}: {message}")]
    Forbidden { name: String, message: String },
    #[error("unauthenticated: {message}")]
    Unauthenticated { message: String },
    #[error("rollout {id}: {message}")]
    Conflict { id: String, message: String },
    #[error("unknown artifact {what}")]
    UnknownArtifact { what: String },
    #[error("artifact {what}: {message}")]
    ArtifactRefused { what: String, message: String },
    /// A plan's artifact step whose digest the artifact store cannot give
    /// (the artifact is not loaded) or contradicts.
    #[error("host {host}, step '{step}': {message}")]
    ArtifactDigest { host: String, step: String, message: String },
    #[error("{0}")]
    AgentLacksStepKind(Box<AgentLacksStepKind>),
    #[error("{file}: planning took longer than {limit:?}; the plan is too large or too complex")]
    PlanTooSlow { file: String, limit: std::time::Duration },
    #[error("internal error while {what}: {message}")]
    Internal { what: String, message: String },
    #[error("the coordinator's runtime stopped unexpectedly: {0}")]
    RuntimeDied(String),
    #[error("coordinator is shutting down")]
    ShuttingDown,
    #[error("bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server: {0}")]
    Transport(String),
}

/// A message with no valid domain form is a bad request naming its field.
impl From<convoy_wire::WireError> for CoordinatorError {
    fn from(e: convoy_wire::WireError) -> CoordinatorError {
        CoordinatorError::BadRequest { field: e.field.to_string(), message: e.problem.to_string() }
    }
}

/// A plan would send a host a step kind its agent does not run.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: host {host} runs agent {agent_version}, which does not support '{needed}' (step '{step}' of group \
     '{group}' needs it); upgrade that agent first or leave the host out"
)]
pub struct AgentLacksStepKind {
    pub file: String,
    pub host: String,
    pub agent_version: String,
    /// A step kind or a [`convoy_common::step_kinds::StepFeature`], as Hello names it.
    pub needed: String,
    pub step: String,
    pub group: String,
}

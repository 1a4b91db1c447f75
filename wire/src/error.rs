//! Why a protocol message cannot become a domain value: always the field
//! at fault, and what is wrong with it.

/// A message (or part of one) that has no valid domain form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WireError {
    /// The field at fault, as a path in the proto (`archive.component`,
    /// `step_result.status`).
    pub field: &'static str,
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required field or message is absent or empty.
    #[error("is empty")]
    Empty,
    /// The field holds a value the domain has no meaning for.
    #[error("{0}")]
    Invalid(String),
    /// The step's `kind` oneof is empty: a newer peer sent a kind this build
    /// does not know.
    #[error("step {step:?} has a kind this agent (version {version}) does not know")]
    UnknownKind { step: String, version: &'static str },
}

impl WireError {
    pub(crate) fn empty(field: &'static str) -> WireError {
        WireError { field, problem: Problem::Empty }
    }

    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> WireError {
        WireError { field, problem: Problem::Invalid(problem.into()) }
    }
}

/// `Err(empty)` when `value` is empty: proto3 sends a missing string as "".
pub(crate) fn required(field: &'static str, value: &str) -> Result<(), WireError> {
    if value.is_empty() { Err(WireError::empty(field)) } else { Ok(()) }
}

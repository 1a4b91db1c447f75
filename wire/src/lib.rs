//! Every conversion between Convoy's protocol messages (`convoy-proto`) and
//! its domain types (`convoy-common`), for both transport edges: the agent
//! decodes steps and encodes results and its Hello; the coordinator the
//! reverse, plus the status answers operators read. A message is mapped
//! here once, and nowhere else: drivers, the engine and the runtime only see
//! domain types, and the gRPC services only call these functions.
//!
//! A message that has no valid domain form is a [`WireError`] naming the
//! field at fault, never a panic: the agent answers such a step
//! "unsupported", the coordinator refuses such a request.
//!
//! Proto3 has no "unset" for scalars, so empty strings map to `None` for
//! optional fields and zero durations mean "none".
//!
//! The modules, one message family each:
//! - [`step`]: a `StepSpec` and each step kind, and the `RunStep` carrying
//!   one; the private `check` (health checks) and `package` (package and
//!   service steps) hold the per-kind mappings too big to inline there.
//! - [`outcome`]: `StepResult` and `HostOutput`, with their size caps.
//! - [`agent`]: the Hello (identity, capabilities, facts and inventory,
//!   replayed results) and `AgentInfo`.
//! - [`status`]: a rollout's `RolloutStatus`.
//! - [`control`]: an operator's control action.
//! - [`log`]: a rollout's stored event log (`convoy verify`, `convoy events`).
//! - [`ops`]: holds on hosts and audit entries.
//! - [`error`]: [`WireError`], what is wrong and in which field.

use std::time::Duration;

pub mod agent;
mod check;
pub mod control;
pub mod error;
pub mod log;
pub mod ops;
pub mod outcome;
mod package;
pub mod status;
pub mod step;

pub use error::{Problem, WireError};

/// `None` for an empty string: proto3 cannot tell unset from "".
fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() { None } else { Some(s.to_string()) }
}

/// Milliseconds of `d` as the protocol carries them (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

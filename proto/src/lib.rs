//! Convoy's wire protocol, generated from `proto/convoy.proto`.
//!
//! Only generated code lives here. Every conversion between these types and
//! the domain types of `convoy-common` lives in `convoy-wire`, for both the
//! agent's and the coordinator's edge: not here, not in the domain, not in
//! the services.

/// Protocol version spoken by this build. Bumped only when a new field changes
/// what a peer may rely on; old values stay supported.
pub const PROTOCOL_VERSION: u32 = 1;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("convoy.v1");
}

pub use v1::*;

pub mod codec;

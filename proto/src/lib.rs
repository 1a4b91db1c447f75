//! Convoy's wire protocol, generated from `proto/convoy.proto`.
//!
//! Only generated code lives here. Conversions between these types and the
//! domain types of `convoy-common` live in `convoy-wire` (both edges), with
//! the coordinator's request checks in its `convert` module; never in the
//! domain.

/// Protocol version spoken by this build. Bumped only when a new field changes
/// what a peer may rely on; old values stay supported.
pub const PROTOCOL_VERSION: u32 = 1;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("convoy.v1");
}

pub use v1::*;

//! Convoy's coordinator: holds rollouts, drives agents over gRPC and stores
//! every event before acting on it.
//!
//! A tour of the modules, from the domain edge inwards:
//! - [`cli`]: the `convoy-coordinator` command line (`init`, `serve`), turned
//!   into a validated [`server::ServerConfig`] once.
//! - [`server`]: wiring; `run(listener, config, shutdown)` serves gRPC over
//!   mTLS until the shutdown token is cancelled.
//! - [`grpc`]: thin tonic services (agent sessions, enrolment, operator API);
//!   messages become domain types through `convoy-wire` (every conversion
//!   lives there), and domain errors become `tonic::Status` in one place.
//! - [`connections`]: the connection cap, handshake timeout, keepalive and
//!   open-file limit.
//! - [`handshakes`]: the listeners' rustls configurations, and TLS
//!   handshakes run a bounded number at a time before a server sees them.
//! - [`planning`]: plans parsed, validated and expanded on blocking
//!   threads under a time limit, never in the runtime task.
//! - [`runtime`]: the single task that owns the engines, the agent sessions
//!   and the timers, and group-commits events before acting on them.
//! - [`store`]: the [`store::Store`] trait and its embedded sled implementation,
//!   with the store's format version and its stored record types.
//! - [`timings`]: measured step durations, for `convoy plan`'s estimates.
//! - [`tls`]: the CA and certificates for enrolled agents.
//! - [`tickets`]: TLS session ticket keys kept across restarts, so a
//!   reconnecting fleet resumes instead of making full handshakes.
//! - [`enrolment`]: join tokens, the certificate each host id is bound to, and
//!   the check every agent call passes.
//! - [`operators`]: named operator tokens with roles, checked on every
//!   operator call.
//! - [`metrics`]: the Prometheus instruments and the scrape-time gauges.
//! - [`http`]: the optional HTTPS listener: web dashboard and `/metrics`.
//! - [`artifacts`]: the offline artifact store and its gRPC service.
//! - [`ops`]: `OpsService`: rollout logs, holds on hosts, the audit trail.
//! - [`audit`]: recording operator actions and refusals ([`audit::record`]).
//! - `ha` (feature `etcd`): several coordinators on one etcd store, one
//!   leader elected, followers redirecting to it (docs/ha.md).
//! - [`error`]: the crate's error enum.

pub mod artifacts;
pub mod audit;
pub mod cli;
pub mod connections;
pub mod enrolment;
pub mod error;
pub mod grpc;
#[cfg(feature = "etcd")]
pub mod ha;
pub mod handshakes;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod operators;
pub mod ops;
pub mod planning;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tickets;
pub mod timings;
pub mod tls;

pub use error::CoordinatorError;

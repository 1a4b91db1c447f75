//! The fleet harness: one coordinator and its agents, started for a demo, an
//! example, a benchmark or a test, in one of three flavours:
//!
//! - [`inprocess`]: the coordinator and the agents as tasks of the caller's
//!   tokio runtime (real gRPC over mTLS on 127.0.0.1:0, real sled store, the
//!   real agent session code with any driver, typically [`inprocess::FakeDriver`]).
//!   Fast and inspectable: the tests of the coordinator–agent protocol.
//! - [`processes`]: the real `convoy` binary re-executed as a coordinator and
//!   agent child processes, each with its own data directory and log file,
//!   which can be SIGKILLed and restarted. The demo, the examples, the
//!   benchmark and the process-level tests.
//! - [`docker`]: the real `convoy-coordinator` and `convoy-agent` binaries in
//!   Docker containers on a private network, one host per container. The
//!   layer-4 tests (apt upgrades, host restarts, network cuts).
//!
//! Shared by all three: [`operator`] (an operator client and the waits on
//! agents and rollouts), [`wait`] (polling a condition with a deadline, never
//! a sleep as synchronisation), [`net`] (a free port, a plain HTTP GET),
//! [`https`] (requests to the coordinator's dashboard listener),
//! [`replay`] (a rollout's stored events replayed for the invariant checker),
//! [`logs`] (this process's tracing output, captured) and [`FleetError`].
//! [`swarm`] is the swarm benchmark: thousands of simulated agents (real
//! sessions, fake driver) in one process against a coordinator process.

mod error;

pub mod docker;
pub mod https;
pub mod inprocess;
pub mod logs;
pub mod net;
pub mod operator;
pub mod processes;
pub mod replay;
pub mod swarm;
pub mod wait;

pub use error::FleetError;

//! Convoy's agent: one per host. It opens a session to the coordinator, runs
//! the steps it is sent, and reports results, heartbeats and facts.
//!
//! A tour of the modules, outside in:
//! - [`cli`]: the command-line flags (`CONVOY_*` environment variables too),
//!   in the library so the `convoy` CLI can embed the agent as a subcommand.
//! - [`config`]: the validated [`AgentConfig`] and its defaults.
//! - [`coordinators`]: several coordinator URLs (HA): which one to dial,
//!   following a follower's redirect to the leader.
//! - [`session`]: the session loop ([`run`], [`run_local`]): enrol, connect,
//!   Hello/Welcome, heartbeats, reconnect with backoff; and the [`Executor`]
//!   that guarantees an execution id never runs twice.
//! - [`enroll`] and [`tls`]: the join-token enrolment (key generated locally,
//!   CSR with CN = host id) and the mTLS client configuration.
//! - [`driver`]: the [`Driver`] seam and the [`LocalDriver`] doing the work on
//!   this host (commands, verified archive installs, files, health checks).
//! - [`fetch`]: offline artifacts: `artifact:NAME@VERSION` sources fetched from
//!   the coordinator in resumable chunks, verified, and kept in a small cache.
//! - [`selfupgrade`]: the agent's reported version (sidecar test device),
//!   `--self-check`, side-by-side installs of agent builds (the rest of
//!   self-upgrade is not built yet: `docs/self-upgrade.md`).
//! - [`trust`]: which artifacts need a signature from a trusted key, and the check.
//! - [`store`]: the durable local record of started and finished executions.
//! - [`orphans`]: finding the processes of an execution an earlier run of
//!   the agent started, by the tag in their environment.
//! - [`facts`]: hostname, OS and arch reported in Hello.
//! - [`run_as`] and [`users`]: commands run as another user (`run_as:`),
//!   through the agent binary itself as a trampoline ([`run_as::hook`] is
//!   the first line of `main`), with users and groups from `/etc/passwd` and
//!   `/etc/group`.
//! - [`error`]: [`AgentError`], the one error type.
//!
//! Protocol messages become domain types (and back) in `convoy-wire`, shared
//! with the coordinator; a step this agent cannot understand is answered
//! "unsupported", never a panic.
//!
//! Failures of *steps* are not errors: they are outcomes reported to the
//! coordinator. `AgentError` is for the agent itself failing.

pub mod cli;
pub mod config;
pub mod coordinators;
pub mod driver;
pub mod enroll;
pub mod error;
pub mod facts;
pub mod fetch;
mod fsutil;
pub mod orphans;
pub mod run_as;
pub mod selfupgrade;
pub mod session;
pub mod store;
pub mod tls;
pub mod trust;
pub mod users;
pub mod wallclock;

pub use cli::AgentArgs;
pub use config::AgentConfig;
pub use driver::{Driver, LocalDriver};
pub use error::AgentError;
pub use session::{Executor, run, run_local};
pub use store::{ExecutionStore, FileStore, MemoryStore};

/// The runtime an agent process runs on: one thread. An agent's work is
/// waiting on its coordinator and on the processes its steps start, and its
/// heavy work (hashing, unpacking) goes to the blocking pool; worker threads
/// would cost every start their creation and every message a wake-up across
/// threads (`bench/rolling.sh`'s 200 agents used about 14 % less CPU on one
/// thread, docs/benchmark.md).
pub fn agent_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

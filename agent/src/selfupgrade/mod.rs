//! Agent self-upgrade: the pieces that exist so far (see `docs/self-upgrade.md`
//! for the whole design and for what is still missing).
//!
//! - [`identity`]: the version this agent binary reports (Hello, `--self-check`).
//! - [`install`]: side-by-side installs under `<state>/versions/<version>/`,
//!   the atomic `current` link, and versions marked bad on this host.
//!
//! Not here yet: the `agent_upgrade` step kind, the durable intent, the
//! hand-over by re-exec under a watchdog, and the revert.

pub mod identity;
pub mod install;

//! Invariants every test layer checks over a rollout's event log.

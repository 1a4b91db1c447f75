//! The agent's transport edge: proto <-> domain conversions come from
//! `convoy-wire`, shared with the coordinator so each step kind is mapped once.

pub use convoy_wire::*;

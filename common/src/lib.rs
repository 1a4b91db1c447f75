//! Convoy's domain, free of I/O, async runtimes and wire types.
//!
//! A tour of the modules:
//! - [`model`]: the expanded, validated shapes everything else works on:
//!   hosts, groups, strategies and step specifications.
//! - [`plan`]: the YAML plan format, its validation (errors name file, line
//!   and field) and its expansion against an inventory into a [`model::RolloutSpec`].
//! - [`artifact_ref`]: `artifact:NAME@VERSION` step sources and the steps
//!   whose sha256 the coordinator's artifact store fills in.
//! - [`catalog`]: release catalogs (YAML, one per product) and the multi-hop
//!   upgrade path of each host through them.
//! - [`capture`]: values steps capture from their output (`{{captured.NAME}}`).
//! - [`output`]: what a check requires of a command's output (equals, contains, matches).
//! - [`run_as`]: the user and group names a command's `run_as:` accepts.
//! - `step_strings`: every templated string of a step, walked in one place
//!   for the plan's templates and the engine's captured values.
//! - [`limits`]: bounds on plans (bytes, nesting, groups, hosts, steps,
//!   durations and numbers), checked before the work they bound.
//! - [`strategy`]: how a group moves through its hosts (rolling windows and
//!   their ramps, parallel, cluster).
//! - [`host_order`]: the order a rolling group starts its hosts in (listed,
//!   or balanced from estimated durations so the window's slots finish together).
//! - [`schedule`]: maintenance windows as calendars: when a host may start
//!   (time zones, daylight saving, blackouts), pure calendar logic.
//! - [`dag`]: dependency ordering and cycle detection over groups.
//! - [`estimate`]: estimated durations of steps, groups and rollouts (`convoy plan`).
//! - [`version`]: version parsing and ordering.
//! - [`engine`]: the rollout state machine, `handle(now, event) -> actions`
//!   (its module docs list its rooms: events, states, window, budgets, ...).
//! - [`view`]: read-only summaries of a rollout for status displays.
//! - [`undo`]: planning a rollback rollout from a finished one.
//! - [`invariants`]: checks every test layer runs over an event log.
//! - [`verify`]: `convoy verify`, the invariants over a stored log replayed.
//! - [`timeline`]: a rollout's timeline from its replayed log (`convoy events`).
//! - [`hold`]: hosts held out of rollouts by an operator.
//! - [`audit`]: the audit trail's entries (who did what, from where, how it ended).
//! - [`signature`]: ed25519 artifact signatures (key and signature files, verification).
//! - [`metric`]: reading a number from metrics text or JSON and judging it (`metric` checks).

pub mod artifact_ref;
pub mod audit;
pub mod calendar_estimate;
pub mod capture;
pub mod catalog;
pub mod cluster_vars;
pub mod dag;
pub mod engine;
pub mod estimate;
pub mod hold;
pub mod host_order;
pub mod invariants;
pub mod limits;
pub mod metric;
pub mod model;
pub mod output;
pub mod plan;
pub mod run_as;
pub mod schedule;
pub mod signature;
pub mod step_kinds;
pub mod step_specs;
mod step_strings;
pub mod strategy;
pub mod timeline;
pub mod undo;
pub mod verify;
pub mod version;
pub mod view;

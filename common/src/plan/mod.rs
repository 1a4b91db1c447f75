//! The YAML plan format: parsing, validation and expansion.
//!
//! A plan is what an operator writes and reviews; a [`RolloutSpec`] is what the
//! engine runs. Getting from one to the other happens in two stages so that
//! `convoy plan` can reject a broken file before any host is involved:
//!
//! 1. [`parse_plan`] checks everything that does not depend on the fleet:
//!    YAML syntax, unknown fields (a typo such as `max_paralel` must not be
//!    silently ignored), required fields, group names, `after:` references,
//!    cycles, durations, percentages, step shapes and template syntax.
//! 2. [`expand`] matches the groups against an inventory, substitutes the
//!    templates per host and resolves percentages against each group's size.
//!
//! Every error is a [`PlanError`] naming the file, the line and the field
//! path (`groups[1].checks[0].http.url`), because "invalid plan" is useless on
//! a 300-line file. serde_norway reports lines for its own errors; for the
//! semantic ones a small block-YAML locator (module `locate`) finds the line
//! of a field path in the source, falling back to the closest enclosing
//! field it can find (flow style such as `{ role: db }` sits on one line, so
//! the enclosing key's line is then exactly right).
//!
//! Format decisions, beyond the reference in the project docs:
//! - `defaults` are inherited **per key, wholesale**: a group that sets
//!   `strategy` replaces the whole default strategy (no field-by-field merge),
//!   so what a group does can be read from the group alone plus at most one
//!   default block.
//! - `type: parallel` upgrades every host of the group at once; setting
//!   `max_parallel` as well is an error rather than a silent override.
//! - Hosts matched by a selector are upgraded in host-id order (deterministic
//!   whatever order the inventory arrives in). An explicit `hosts:` list keeps
//!   the order written, because that order is the operator's intent (canary
//!   first, a cluster leader last).
//! - `select: {}` matches every host of the inventory; the "one group per
//!   host" rule still applies (hooks aside), so it only makes sense in a
//!   one-group plan.
//! - Steps and checks of a group run as one list, steps first. A step without
//!   a name is called `<kind>-<position>` (1-based over that list, the kind as
//!   in [`StepKind::kind_name`]: `exec-1`, `archive-2`, `http-3`,
//!   `exec_check-4`), so default names never collide; names must be unique
//!   inside a group because status and logs refer to steps by name.
//! - Templates are checked for syntax and known variables at parse time;
//!   labels, installed components and facts (`{{fact.NAME}}`: what the
//!   host's agent reports, or an inventory file's `facts:`) are looked up
//!   per host at expand time; a host without one is an error naming it.
//!   There is no escape for a literal `{{`.
//! - `vars:` and `env:` (plan, and group over it per name) are applied at
//!   parse time, in one pass: `{{vars.NAME}}` is replaced in every templated
//!   string of the group's steps (a var's value may use host templates but
//!   not another var; an unknown var is an error at the string using it),
//!   and the env is merged under every exec-like spec's own `env`. Release
//!   catalogs see neither. Merge keys (`<<:`) are applied by reading the
//!   document a second way when it contains one (`raw::read`).
//! - Any step or check may say `estimate: DURATION` (positive): how long it
//!   usually takes, for `convoy plan`'s estimates ([`crate::estimate`]);
//!   it changes nothing at run time. [`expand_detailed`] keeps it, with each
//!   host's release path, beside the [`RolloutSpec`].
//! - Timeouts, check intervals, check deadlines and `host_lost_timeout` must
//!   be positive; soak may be zero. A check's step timeout is its deadline
//!   plus 5s so the agent's own deadline handling always fires first.
//! - A group with neither steps nor checks (after defaults) is an error: it
//!   would mark hosts upgraded without touching them.
//! - `on_failure` is written at the plan level (the default of every group
//!   and what the rollout-wide `max_failures` does) and may be overridden per
//!   group; it defaults to `halt`. The rollout-wide `max_failures` is a count
//!   or a percentage of every host of the rollout (rounded down); without
//!   it there is no rollout-wide budget.
//! - `canary:` takes exactly one of `count` (at least 1, capped at the
//!   group's size), `percent` (of the group, rounded down, at least one host)
//!   or `select` (labels; the matching hosts of the group go first, in their
//!   order; matching none is an expansion error). `promote` is `manual`
//!   (the default: a missing promote never lets canaries through on their
//!   own) or `{ after: DURATION }`.
//! - Undo: a step's `rollback:` (an exec spec, templated like the step)
//!   replaces its default undo; an `archive` step without one is undone by
//!   an `archive_rollback` of the same component, back to the version the
//!   inventory reported for it (none: the agent's recorded previous release).
//!   An `apt`, `dpkg` or `rpm` step without one is undone by a `pkg_rollback`
//!   of the same package and manager, to the version the inventory reported
//!   for the package (none: the agent's recorded previous version, or removal
//!   when it was not installed before; see `PkgRollbackSpec`).
//!   Other steps (`service` included) and all checks have no undo.
//! - Package steps: `apt: { package, version, hold?, allow_downgrade?,
//!   update? }`, `dpkg: { package, version, source, sha256 }` (like an
//!   `archive`'s, its `sha256` may be left out when `source` is
//!   `artifact:NAME@VERSION`: the coordinator's artifact store fills it in
//!   at submit time, see `crate::artifact_ref`), `rpm: {
//!   package, version, manager?: dnf|yum|rpm, source?, sha256?,
//!   allow_downgrade? }` (`manager: rpm` needs `source`; a `source` needs its
//!   `sha256`), `service: { name, action: start|stop|restart|status,
//!   manager?: auto|systemd|supervised, command?: EXEC, pidfile?, log?,
//!   stop_grace? }` (`supervised` start/restart need `command`). Every string
//!   is templated; package names and versions must not start with `-` nor
//!   contain spaces, `/` or `=` (checked at parse time, or after rendering
//!   when templated). An undo is named
//!   `rollback-<step>` and has its step's timeout. `rollback_steps:` (group,
//!   or inherited wholesale from `defaults`) run after the undos; unnamed
//!   ones are `rollback-<kind>-<n>`, and they may not declare a rollback.
//! - Checks: `healthy_deadline` is another name for `deadline` (giving both
//!   is an error); `min_healthy_time` (default 0) must be shorter than it.
//! - Backups: `backup: { command, args?, env?, workdir?, path? }` (every
//!   string templated; `path` may not be empty; no undo, no capture). Any
//!   step may say `migration: true`; so are the steps of a catalog's
//!   `migrate` phase ([`HostPlan::migrations`]). With the plan's
//!   `require_backup: true`, expansion refuses a host entry's migration step
//!   unless a backup step comes before it in the entry, or some group (or
//!   hook) its group waits for, directly or not, has a backup step on any of
//!   its hosts; the error names the `migration` field (for a catalog step,
//!   the step) and the host. The engine checks again at run time.
//!
//! Hooks (an expansion transform: the engine only sees more groups):
//! - `hooks: { before: HOOK, after: HOOK }` at the plan level and on any
//!   group, `HOOK` being `{ on: HOST_ID | { select: {LABELS} }, steps: [...],
//!   checks: [...] }`. The key is `hooks:` on both levels because a group's
//!   `after:` already lists its dependencies. `select` takes the first
//!   matching host by id; no match (or an unknown id) is an expansion error.
//! - Each hook becomes a one-host group (`max_parallel: 1`, `max_failures: 0`,
//!   no soak, `on_failure: halt`, so a failed hook halts the rollout) named
//!   `before`, `after`, `<group>.before` or `<group>.after`; a clash with a
//!   declared group's name is an error. Wiring: the plan's `before` precedes
//!   every group that would otherwise have no dependency; the plan's `after`
//!   follows every group nothing depends on; a group's `before` takes over
//!   the group's `after:` list and the group waits for it; a group's `after`
//!   waits for the group, and every group that waited for the group waits
//!   for the hook instead. Groups are listed `before`, then each group
//!   between its own hooks, then `after` (ties in the topological order go
//!   to that listing).
//! - The hook's host may also be in a normal group: it gets a second host
//!   entry with key `host@hook-group` (see [`HostPlan::key`]); the "one group
//!   per host" rule is about normal groups only. Templates in hook steps use
//!   the hook's host and `{{group}}` is the hook group's name. Hook steps may
//!   declare `rollback:` like any step (run if a `rollback_all` reaches
//!   them); `defaults` do not apply to hooks.
//! - Hooks run on an agent. Hooks run by the coordinator itself (a webhook
//!   call without a host) are not supported: put the call on a host.
//!
//! Captured values (see [`crate::capture`] for the extraction rules):
//! - An exec step may declare `capture: { name: N, regex: '...' }` or
//!   `capture: { name: N, json: a.b.0 }` (exactly one of the two; names are
//!   `A-Z a-z 0-9 _ -`; regexes and paths are checked at parse time).
//! - `{{captured.N}}` may appear in any templated string but a step name. It
//!   is left in place at expansion and filled by the engine at dispatch. It
//!   must name a capture of an earlier step of the same group (for a step's
//!   `rollback:`, also the step itself; for `rollback_steps`, any step of the
//!   group) or of a hook the group waits for, directly or not; otherwise it
//!   is a parse error at that string. Hook capture names are rollout-wide, so
//!   two hooks may not capture the same name, nor may a group step capture a
//!   name a hook captures; a group may not capture one name twice.
//! - Release catalog steps capture and use captured values too (see
//!   "Captured values" in [`crate::catalog`]): in catalog order at parse
//!   time (the error names the catalog's file and line), then per host at
//!   expansion, over the host's path followed by the group's steps, which
//!   may use what the path captured. A catalog capture may not reuse a
//!   hook's name, and a group step may not recapture a name its catalog
//!   captures.
//!
//! The submodules:
//! - `errors`: [`PlanError`] and where it points (field paths, the file
//!   being read, serde's messages split into field and message).
//! - `locate`: the line of a field path in block-style YAML.
//! - `raw`: the document as written (serde types, unknown fields refused).
//! - `parse`: [`parse_plan`] and friends, the entry of static validation.
//! - `steps`: one step (exec, archive, file, package, service, backup),
//!   and what steps and checks share (lists, kinds, names, template syntax).
//! - `checks`: one check (http, tcp, exec, file, metric) and a cluster's
//!   leader check.
//! - `strategies`: strategies, amounts, canaries and `type: cluster`.
//! - `hooks`: hooks as one-host groups wired into the DAG.
//! - `captures`: where `{{captured.NAME}}` may be used.
//! - `catalogs`: release catalogs read through the plan's step grammar,
//!   and a host's path through one.
//! - `validated`: the validated plan ([`Plan`]) between parsing and expansion.
//! - `template`: template variables and their rendering per host.
//! - `windows`: `windows:` (maintenance windows), read at parse time and
//!   resolved per host (time zone) at expansion; see [`crate::schedule`].
//! - `vars`: `vars:` and `env:` (plan and group), substituted and merged
//!   into a group's steps at parse time.
//! - `expansion`: [`expand`] against an inventory (members, canaries,
//!   clusters, undos).
//! - [`summary`]: what `convoy plan` shows of an expanded rollout, typed
//!   ([`PlanSummary`], [`batches`], [`summary_json`]).
//! - `dot`: the groups as a Graphviz graph ([`to_dot`]).
//! - `duration`: [`parse_duration`] and [`format_duration`].
//!
//! [`RolloutSpec`]: crate::model::RolloutSpec
//! [`StepKind::kind_name`]: crate::model::StepKind::kind_name
//! [`HostPlan::migrations`]: crate::model::HostPlan::migrations
//! [`HostPlan::key`]: crate::model::HostPlan::key

mod captures;
mod catalogs;
mod checks;
mod dot;
mod duration;
mod errors;
mod expansion;
mod hooks;
pub(crate) mod locate;
mod parse;
mod raw;
mod run_as;
mod steps;
mod strategies;
pub mod summary;
mod template;
mod validated;
mod vars;
mod windows;

#[cfg(test)]
mod tests;

pub use dot::to_dot;
pub use duration::{format_duration, parse_duration};
pub use errors::PlanError;
pub(crate) use errors::{FieldPath, Src};
pub use expansion::{Expansion, HopDetail, HostDetail, expand, expand_detailed};
pub use parse::{parse_plan, parse_plan_with_catalogs, parse_plan_with_limits};
pub use summary::{PlanSummary, batches, summary_json};
pub use template::INSTALL_ROOT_FACT;
pub use validated::Plan;

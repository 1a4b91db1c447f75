//! The rollout engine: a pure, deterministic state machine.
//!
//! `Engine::handle(now, event) -> Vec<Action>` is the only way state changes.
//! It reads no clock, does no I/O and spawns nothing: the coordinator's runtime
//! appends each event to its store, calls `handle`, and carries out the
//! actions (send a step to an agent, arm a timer, tell watchers). Replaying the
//! stored events into a fresh engine rebuilds exactly the same state, and
//! [`Engine::resume_actions`] then re-arms what was in flight.
//!
//! Decisions (see the README for the operator's view):
//! - A group starts when every group in its `after` list has finished without
//!   exceeding its failure budget. Independent groups run in parallel. A group
//!   whose dependencies finish while the rollout is paused is marked running
//!   but starts no host until the rollout resumes.
//! - Inside a group hosts move through a sliding window of
//!   `strategy.max_parallel`, in the group's host order; a host is *in flight*
//!   while it is running a step, soaking or rolling back, so a finished host
//!   keeps its slot for `soak`. A host with no steps succeeds at once, without
//!   a soak.
//! - A host fails at its first failed step (checks retry on the agent), with
//!   the agent's message as its reason. A step with no result within its
//!   timeout plus [`STEP_GRACE`] fails the host with "no result within timeout".
//! - A host that has started runs all its steps even when the rollout is
//!   paused, halting, aborting or rolling back: stopping between, say, "drain"
//!   and "undrain" would leave it worse off than either end. Pause, halt,
//!   abort and rollback only stop *new* hosts from starting.
//! - **Budgets.** More than `max_failures` failed hosts in a group fails the
//!   group at once; more than the rollout's `max_failures` failed hosts over
//!   all groups (counted over the whole rollout, never per batch) does the
//!   same for the rollout. Either one then acts on `on_failure` (the group's
//!   for a group budget, the plan's for the rollout budget): `halt` and
//!   `rollback_host` halt the rollout — nothing new starts, in-flight steps
//!   finish, then the rollout is `Failed`; `rollback_group` halts and also
//!   rolls back every host the failed group started; `rollback_all` rolls
//!   back every host the rollout started (the rollout is `RollingBack`).
//!   A failure while aborting keeps it aborting unless it asks for
//!   `rollback_all`.
//! - **Canaries.** A group with a canary phase starts as `Canary`: only its
//!   first `canary.hosts` hosts (the plan puts the canaries first) move
//!   through the window. Any canary failure fails the group at once, whatever
//!   its budget, before any other host is touched, and `on_failure` applies.
//!   Once every canary succeeded (soak included), the group waits in
//!   `AwaitingApproval` for an operator's `Approve`, or in `CanarySoak` until
//!   its [`Timer::PromoteCanaries`] fires (`promote: { after }`; an `Approve`
//!   ends that wait early), then runs its other hosts as usual. `Approve`
//!   promotes every group waiting; it is recorded only in the message when
//!   nothing waits. A group whose canaries pass while the rollout is stopping
//!   is not promoted (it is skipped at the end).
//! - **Rollback.** A host's rollback runs the undos of the steps that
//!   succeeded (see [`HostPlan::rollback_plan`]), last first, then its group's
//!   rollback steps, through the same dispatch mechanism
//!   ([`Action::DispatchRollback`], execution ids `rollout/host/rbN/attempt`),
//!   with the same step deadline and lost-agent rules. It stops at the first
//!   failed rollback step: the host ends `RollbackFailed`, otherwise
//!   `RolledBack`. A host is rolled back at most once, only if it started
//!   (a host that never ran a step has nothing to undo), and not at all when
//!   its rollback list is empty (its state stays, its message says there was
//!   nothing to roll back).
//! - Under any `rollback_*` mode a host that fails is rolled back at once,
//!   keeping the slot it was using; its failure still counts in the budgets.
//! - A group rollback (`rollback_group`, or every started group under
//!   `rollback_all` or the operator's `Rollback`) walks the group's started
//!   hosts in reverse order through the same `max_parallel` window, waiting
//!   for hosts still running their steps to finish first; the group is then
//!   `RolledBack` (or `RollbackFailed` if any host's rollback failed). Under a
//!   whole-rollout rollback a group starts rolling back only once every group
//!   that depends on it has finished rolling back (reverse DAG order).
//! - The operator's `Rollback` rolls back everything started so far, as
//!   `rollback_all` does, from any state that is not terminal or already
//!   rolling back. The rollout ends `RolledBack` once every rollback is done,
//!   or `Failed` if one of them failed. A rollback cannot be paused or
//!   aborted: pause, resume and abort are ignored while rolling back. A
//!   finished rollout ignores every event, `Rollback` included.
//! - When the rollout starts halting, aborting or rolling back, hosts that are
//!   only soaking succeed at once: the soak guards the next host, and none
//!   will start.
//! - When nothing is in flight and no rollback is waiting any more: halting
//!   ends `Failed`, aborting ends `Aborted`, rolling back ends `RolledBack`
//!   (or `Failed`), and running (or paused) with every group finished ends
//!   `Succeeded` (a host rolled back within its budget does not prevent that).
//!   Hosts that never started are then `Skipped` (each with its own
//!   [`Action::HostDone`]), and so is every group that did not finish. A
//!   paused rollout with work left, or a group waiting to be promoted, keeps
//!   the rollout open. [`Action::Finished`] is emitted exactly once; after it
//!   every event is ignored.
//! - [`Action::HostDone`] is emitted when a host's upgrade ends (`Succeeded`,
//!   `Failed`, `Skipped`) and again when a rollback of it ends (`RolledBack`,
//!   `RollbackFailed`): a rollback is the only thing that reopens a host.
//! - A host whose agent is lost stays in flight for `host_lost_timeout`; if the
//!   agent comes back its in-flight execution is sent again under the same id
//!   (the agent answers a known id from its store), otherwise the host fails
//!   with "agent lost" (or its rollback fails). Connectivity is tracked for
//!   every host, so a host that starts while its agent is known to be gone
//!   gets the same deadline, counted from its start. Any reconnect of a
//!   running host re-sends its execution: the agent deduplicates by id, and a
//!   new session may have missed it.
//! - Timers are never cancelled. A timer that no longer matches the state is
//!   ignored: a soak for a host no longer soaking, a step deadline for an
//!   execution no longer current, a lost deadline for a host that reconnected
//!   or whose current outage started later, a promotion for a group no longer
//!   waiting. Runtimes fire a timer at or after its `at`; the lost deadline
//!   relies on that to tell outages apart.
//! - Operator commands that do not apply in the current state (pausing a
//!   paused rollout, resuming a running one, aborting one already aborting,
//!   approving when nothing waits) change nothing but the view's message,
//!   which says why.
//! - Execution ids are `rollout/host/step/attempt` (rollback steps:
//!   `rollout/host/rbN/attempt`) and never reused: attempts are counted per
//!   host and step, starting at 1.
//! - A spec whose dependencies can never be met (a cycle that validation
//!   missed) ends `Failed` rather than running forever.
//! - **Host entries.** A host is one entry of [`RolloutSpec::hosts`] per
//!   group it is in: a host that runs a hook (a `hook` group, see
//!   [`crate::plan`]) also has its normal group's entry. Entries are keyed by
//!   [`HostPlan::key`] (the host id, or `host@group` for a hook entry):
//!   execution ids (`rollout/KEY/step/attempt`), `SoakOver`/`LostDeadline`
//!   timers, [`Action::HostDone`], [`Engine::host_state`] and
//!   [`RolloutView`]'s `key` use it. Dispatches name the agent
//!   ([`HostPlan::host`]), and so does [`Engine::execution_host`];
//!   `AgentConnected`/`AgentLost` name the agent and apply to each of its
//!   entries. Entries of one agent are independent: each holds its own slot
//!   in its own group. The final "N hosts upgraded" does not count hook runs.
//! - **Captured values.** When a step that declares a capture
//!   ([`HostPlan::captures`]) succeeds, the value is read from the outcome's
//!   `stdout_tail` ([`capture::extract`]) and kept for that entry (and, for a
//!   hook group's entry, rollout-wide); a capture that does not match fails
//!   the host at that step, with the capture's message. Every dispatch (and
//!   re-send) of a step or rollback step carries the step with
//!   `{{captured.NAME}}` substituted: the entry's own value first, else a
//!   hook's. Values come only from stored `StepFinished` events, so a replay
//!   rebuilds them and re-sends identical steps. A step whose value is
//!   missing (a spec the plan did not check, or a rollback step needing a
//!   value whose step never succeeded) is not sent: the host fails (or its
//!   rollback fails) saying which value is missing. Values show in
//!   [`HostView::captured`].
//! - **Backups.** A `backup` step that succeeds must report its backup
//!   ([`StepOutcome::backup`], never empty): the engine keeps it (entry,
//!   step, location, size, time), so a replay of the stored `StepFinished`
//!   events rebuilds the list, shown in [`RolloutView::backups`]. A
//!   successful backup step reporting none, or an empty one, fails the host.
//!   With [`RolloutSpec::require_backup`], a migration step
//!   ([`HostPlan::migrations`]) is dispatched only when a backup covering it
//!   has succeeded: an earlier one of the same entry, or any one taken in a
//!   group the entry's group runs after (directly or not). Otherwise the
//!   host fails at that step without it being sent, saying why; the plan
//!   refuses such rollouts already, so this guards specs built otherwise
//!   and backups that never happened.
//! - **Clusters** (a group with [`GroupSpec::cluster`]). The group's hosts
//!   are split into clusters that proceed in parallel, each with its own
//!   window of `strategy.max_parallel`. In a leader/follower cluster every
//!   step of a member is preceded by its leader check
//!   ([`Action::DispatchCluster`], ids `rollout/KEY/lcSTEP/attempt`),
//!   whose outcome reads as leader, follower or unknown
//!   ([`crate::model::LeaderAnswer::of`] with the host's
//!   [`HostPlan::leader_answers`]; a spec without them, stored before the
//!   three answers, reads success as leader and failure as follower). An
//!   unknown answer runs nothing: the host keeps its slot in
//!   [`HostState::LeaderUnknown`] and is asked again after the check's
//!   interval ([`Timer::LeaderRecheck`]) until its deadline, counted from
//!   the first ask, then fails at that step without it being sent (an
//!   unsupported check fails it at once). A follower runs the step, unless
//!   no member of its cluster ever answered "leader" and no other member
//!   can still answer (all ended or on their last step): then it fails
//!   untouched ("no member claims the leadership"). A switchover step's
//!   capture is kept like a step's, for the later switchover steps. A leader
//!   clears every other member's leader mark (a cluster has one leader) and,
//!   while any other member is pending or in flight and the rollout is not
//!   stopping, gives its slot back: to `Pending` (and out of the started
//!   hosts) before its first step, to [`HostState::Held`] after. Otherwise it
//!   runs its switchover steps once (ids `rollout/KEY/swN/attempt`), then its
//!   leader check again, which must now fail, and its step. A member is
//!   started in cluster order, the first one not marked leader; a member
//!   marked leader only when nothing else of its cluster is in flight. More
//!   than twice the cluster's size of leaders sent back with no step done in
//!   between fails the host (several members claim the leadership). A check
//!   answered while the rollout is paused sends a member that has not
//!   started back to `Pending` (it is asked again on resume). Once the
//!   rollout stops starting hosts, held hosts go on (a started host finishes
//!   its steps); a rollout that ends while paused fails them. In a
//!   `same_version` cluster every member starts at once and runs each step in
//!   lock-step: a member that finished step N waits in
//!   [`HostState::AtBarrier`] (keeping its slot) until every member still
//!   upgrading finished it; a member's failure fails the members at the
//!   barrier and those that reach it later.
//!
//! Cost: each event costs time in proportion to the work it triggers
//! (dispatches, groups started), not to the fleet's size (a cluster group
//! scans one cluster's members to pick the next one); hosts and
//! executions are found through hash maps, and groups keep their own counters.
//! Only the transitions to halting/aborting/rolling back, the final skip and
//! [`Engine::view`] walk the hosts.
//!
//! ## Where things are
//!
//! - [`events`]: what goes into and out of the engine: events, operator commands, timers, actions and execution ids.
//! - [`state`]: the states a rollout, a group and a host go through, as the engine reports them.
//! - [`tracking`]: what the engine keeps per host, group and cluster beyond their public states.
//! - [`dispatch`]: sending executions to agents: ids, attempts, deadlines, captured values substituted, re-sends.
//! - [`agents`]: agents coming and going: in-flight work re-sent on reconnect, lost deadlines armed on loss.
//! - [`results`]: step results: what a finished execution does to its host (next step, failure, installed version).
//! - [`backups`]: backups: recording the ones `backup` steps took, and the guard that keeps migrations behind one.
//! - [`timers`]: timers firing: soaks, step deadlines, lost agents, canary promotion and leader re-checks.
//! - [`operator`]: operator commands: pause, resume, abort, approve and rollback.
//! - [`cluster`]: the cluster strategy: leader checks, followers first, the switchover, and same-version barriers.
//! - [`window`]: the window: groups starting in DAG order, hosts started within `max_parallel`, soaks and canary promotion.
//! - [`calendar`]: maintenance windows: which pending host may start now, waiting for the next opening.
//! - [`budget`]: failure budgets: a failed host, its group's and the rollout's budgets, and what `on_failure` does.
//! - [`rollback`]: rolling back in place: a host's undo list, group rollbacks in reverse order, rolling back everything.
//! - [`finish`]: the end of a rollout: when it is over, the hosts and groups it skips, the final message.
//! - [`snapshot`]: the engine's state as a versioned snapshot, and restoring an engine from one.
//!
//! Outside the state machine: [`crate::view`] (status summaries) and
//! [`crate::undo`] (planning a rollback of a finished rollout).

pub mod agents;
pub mod backups;
pub mod budget;
pub mod calendar;
pub mod cluster;
pub mod dispatch;
pub mod events;
pub mod execution_id;
pub mod finish;
mod host_table;
pub mod operator;
pub mod results;
pub mod rollback;
pub mod snapshot;
pub mod state;
pub mod timers;
pub mod tracking;
pub mod window;

pub use events::{Action, ClusterPurpose, Event, OperatorCommand, STEP_GRACE, Timer};
pub use execution_id::{BadExecutionId, ExecutionId, ExecutionPart};
pub use snapshot::{EngineSnapshot, SNAPSHOT_FORMAT, SnapshotError};
pub use state::{GroupState, HostState, RolloutState};

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::engine::host_table::HostTable;
use crate::engine::state::Role;
use crate::engine::tracking::{ClusterRt, GroupRt, HostRt};
use crate::model::{BackupRecord, HostId, HostPlan, RolloutSpec, UnixMillis};

/// The state machine of one rollout. See the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) rollout_id: String,
    pub(crate) spec: RolloutSpec,
    pub(crate) state: RolloutState,
    pub(crate) message: String,
    /// Why the rollout halted, kept for the final message (a later ignored
    /// command may overwrite `message` meanwhile).
    pub(crate) halt_reason: Option<String>,
    /// Who aborted the rollout, for the same reason.
    pub(crate) aborted_by: Option<String>,
    /// Why the whole rollout is being rolled back.
    pub(crate) rollback_reason: Option<String>,
    /// Per host entry; records which entries were touched ([`Engine::take_changed_hosts`]).
    pub(crate) hosts: HostTable,
    pub(crate) groups: Vec<GroupRt>,
    /// Host entries by [`HostPlan::key`].
    pub(crate) by_name: HashMap<String, usize>,
    /// Host entries by agent ([`HostPlan::host`]): several when the host
    /// also runs a hook.
    pub(crate) by_agent: HashMap<HostId, Vec<usize>>,
    pub(crate) group_by_name: HashMap<String, usize>,
    /// Values captured by hook steps, visible to every host entry.
    pub(crate) hook_captured: BTreeMap<String, String>,
    /// Every execution id this rollout issued, with its host.
    pub(crate) executions: HashMap<ExecutionId, usize>,
    /// Hosts running, soaking or rolling back, over all groups.
    pub(crate) in_flight: usize,
    /// Groups not yet succeeded, failed, skipped or rolling back.
    pub(crate) open_groups: usize,
    /// Hosts whose upgrade failed, over all groups.
    pub(crate) failed_total: usize,
    /// The rollout-wide budget was exceeded (it acts once).
    pub(crate) rollout_budget_exceeded: bool,
    /// Hosts waiting in some group's rollback queue.
    pub(crate) rollback_queued: usize,
    /// Host rollbacks that ended, by outcome.
    pub(crate) rolled_back: usize,
    pub(crate) rollback_failed: usize,
    /// Groups to look at on the next [`Engine::progress`].
    pub(crate) wake: Vec<usize>,
    /// Backups taken, in order: (host entry, step index, what, when).
    pub(crate) backups: Vec<(usize, usize, BackupRecord, UnixMillis)>,
    /// Who lifted the maintenance windows, if anyone did.
    pub(crate) windows_overridden: Option<String>,
}

impl Engine {
    /// A fresh engine in [`RolloutState::Pending`]. The spec is expected to be
    /// validated (see [`crate::plan`]): group and host indices in range, each
    /// host in exactly one group.
    pub fn new(rollout_id: impl Into<String>, spec: RolloutSpec) -> Engine {
        let mut hosts: Vec<HostRt> = spec
            .hosts
            .iter()
            .map(|h| HostRt {
                state: HostState::Pending,
                group: h.group,
                installed: None,
                message: String::new(),
                attempts: vec![0; h.steps.len()],
                steps_ok: 0,
                rollback: Vec::new(),
                rollback_attempts: Vec::new(),
                rollback_considered: false,
                step_deadline: UnixMillis(0),
                lost_deadline: None,
                agent_lost_since: None,
                captured: BTreeMap::new(),
                cluster: None,
                role: Role::Unknown,
                check_attempts: if h.leader_check.is_some() { vec![0; h.steps.len()] } else { Vec::new() },
                switchover_attempts: vec![0; h.switchover.len()],
                switched_over: false,
                asked_since: None,
            })
            .collect();
        let mut groups: Vec<GroupRt> = spec
            .groups
            .iter()
            .map(|g| GroupRt {
                state: GroupState::Waiting,
                next: 0,
                in_flight: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
                // A cluster group picks its own order: no canary phase.
                canaries: match (g.cluster(), g.canary) {
                    (None, Some(c)) => c.hosts.max(1).min(g.hosts.len()),
                    (Some(_), _) | (None, None) => 0,
                },
                promote_at: None,
                rollback_queue: VecDeque::new(),
                rollback_failed: 0,
                dependents: Vec::new(),
                order: g.hosts.clone(),
                clusters: g.cluster().map_or_else(Vec::new, |c| vec![ClusterRt::default(); c.clusters.len()]),
                held: 0,
                window_wait: None,
            })
            .collect();
        for (gi, g) in spec.groups.iter().enumerate() {
            for &dep in &g.after {
                if let Some(d) = groups.get_mut(dep) {
                    d.dependents.push(gi);
                }
            }
            // The group's host list is what the window walks, so it decides
            // which counters a host moves.
            for &h in &g.hosts {
                if let Some(rt) = hosts.get_mut(h) {
                    rt.group = gi;
                }
            }
            for (ci, c) in g.cluster().iter().flat_map(|c| c.clusters.iter()).enumerate() {
                for &h in &c.hosts {
                    if let Some(rt) = hosts.get_mut(h) {
                        rt.cluster = Some(ci);
                    }
                }
            }
        }
        let by_name = spec.hosts.iter().enumerate().map(|(i, h)| (h.key().to_string(), i)).collect();
        let mut by_agent: HashMap<HostId, Vec<usize>> = HashMap::new();
        for (i, h) in spec.hosts.iter().enumerate() {
            by_agent.entry(h.host.clone()).or_default().push(i);
        }
        let group_by_name = spec.groups.iter().enumerate().map(|(i, g)| (g.name.clone(), i)).collect();
        let open_groups = groups.len();
        Engine {
            rollout_id: rollout_id.into(),
            spec,
            state: RolloutState::Pending,
            message: "waiting to start".to_string(),
            halt_reason: None,
            aborted_by: None,
            rollback_reason: None,
            hosts: HostTable::new(hosts),
            groups,
            by_name,
            by_agent,
            group_by_name,
            hook_captured: BTreeMap::new(),
            executions: HashMap::new(),
            in_flight: 0,
            open_groups,
            failed_total: 0,
            rollout_budget_exceeded: false,
            rollback_queued: 0,
            rolled_back: 0,
            rollback_failed: 0,
            wake: Vec::new(),
            backups: Vec::new(),
            windows_overridden: None,
        }
    }

    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    pub fn state(&self) -> RolloutState {
        self.state
    }

    /// True once the rollout reached a terminal state ([`Action::Finished`] was emitted).
    pub fn is_finished(&self) -> bool {
        self.state.is_terminal()
    }

    /// The rollout's status line, as shown in [`RolloutView::message`].
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Hosts of group `group` (an index into [`RolloutSpec::groups`]) running,
    /// soaking or rolling back; 0 for an unknown group.
    pub fn in_flight(&self, group: usize) -> usize {
        self.groups.get(group).map_or(0, |g| g.in_flight)
    }

    /// Hosts running, soaking or rolling back over the whole rollout.
    pub fn in_flight_total(&self) -> usize {
        self.in_flight
    }

    /// Hosts whose upgrade failed, over the whole rollout.
    pub fn failed_total(&self) -> usize {
        self.failed_total
    }

    /// State of group `group` (an index into [`RolloutSpec::groups`]).
    pub fn group_state(&self, group: usize) -> Option<GroupState> {
        self.groups.get(group).map(|g| g.state)
    }

    /// The host's version of the rollout's component: the last one a step
    /// reported installing, else the one it had before the rollout. `host` is
    /// an entry key ([`HostPlan::key`]), which for a normal group's host is
    /// its id.
    pub fn host_version(&self, host: &str) -> Option<&str> {
        let &i = self.by_name.get(host)?;
        self.version_of(i)
    }

    /// Apply one event at time `now` and return what the runtime must do.
    pub fn handle(&mut self, now: UnixMillis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            return out;
        }
        match event {
            Event::Started => self.on_started(now, &mut out),
            Event::AgentConnected { host } => self.on_connected(&host, &mut out),
            Event::AgentLost { host } => self.on_lost(now, &host, &mut out),
            Event::StepFinished { execution_id, outcome } => {
                self.on_step_finished(now, &execution_id, outcome, &mut out)
            }
            Event::TimerFired { timer } => self.on_timer(now, timer, &mut out),
            Event::Operator { command, by } => self.on_operator(now, command, &by, &mut out),
        }
        out
    }

    /// After a replay: dispatches (with `resend: true`) for every in-flight
    /// execution and schedules for every timer still pending, at the times
    /// first asked for (a runtime fires one already past at once). `now` is
    /// not needed for that; it is taken so callers need not special-case it.
    pub fn resume_actions(&self, _now: UnixMillis) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            return out;
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let host = &self.spec.hosts[i];
            match &h.state {
                HostState::Running { .. }
                | HostState::RollingBack { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. } => {
                    out.push(self.send_current(i, true).expect("a running host has an execution"));
                    if let Some((_, _, execution_id, _)) = h.state.current() {
                        out.push(Action::Schedule {
                            at: h.step_deadline,
                            timer: Timer::StepDeadline { execution_id: execution_id.clone() },
                        });
                    }
                    if let Some(at) = h.lost_deadline {
                        out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: host.key().to_string() } });
                    }
                }
                HostState::Soaking { until } => {
                    out.push(Action::Schedule { at: *until, timer: Timer::SoakOver { host: host.key().to_string() } });
                }
                HostState::LeaderUnknown { retry_at, .. } => {
                    out.push(Action::Schedule {
                        at: *retry_at,
                        timer: Timer::LeaderRecheck { host: host.key().to_string() },
                    });
                }
                HostState::Held { .. }
                | HostState::AtBarrier { .. }
                | HostState::Pending
                | HostState::Succeeded
                | HostState::Failed { .. }
                | HostState::Skipped
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => {}
            }
        }
        for (g, rt) in self.groups.iter().enumerate() {
            if let (GroupState::CanarySoak, Some(at)) = (rt.state, rt.promote_at) {
                out.push(Action::Schedule {
                    at,
                    timer: Timer::PromoteCanaries { group: self.spec.groups[g].name.clone() },
                });
            }
            if let Some(at) = rt.window_wait {
                out.push(Action::Schedule {
                    at,
                    timer: Timer::WindowOpens { group: self.spec.groups[g].name.clone() },
                });
            }
        }
        out
    }

    /// The host entry (an index into the spec's hosts) waiting for the
    /// result of `execution_id`: the rollout is unfinished and that
    /// execution is the one the entry runs now. A result for anything else
    /// changes nothing — a duplicate, a report the host has moved past, a
    /// finished rollout's — so it need not be logged.
    pub fn awaiting(&self, execution_id: &ExecutionId) -> Option<usize> {
        self.awaited(execution_id).map(|(i, _, _)| i)
    }

    /// [`Engine::awaiting`], with what the entry runs: the kind of
    /// execution and its step index.
    pub(crate) fn awaited(&self, execution_id: &ExecutionId) -> Option<(usize, state::Exec, usize)> {
        if self.state.is_terminal() {
            return None;
        }
        let &i = self.executions.get(execution_id)?;
        match self.hosts[i].state.current() {
            Some((exec, index, current, _)) if current == execution_id => Some((i, exec, index)),
            Some(_) | None => None,
        }
    }

    /// The host (agent id) an execution id belongs to, if this rollout issued it.
    pub fn execution_host(&self, execution_id: &ExecutionId) -> Option<&HostId> {
        self.executions.get(execution_id).map(|&i| &self.spec.hosts[i].host)
    }

    /// The execution ids this rollout issued to agent `host`, in id order.
    pub fn executions_of(&self, host: &str) -> Vec<ExecutionId> {
        let mut ids: Vec<ExecutionId> = self
            .executions
            .iter()
            .filter(|(_, i)| self.spec.hosts[**i].host == host)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The plan of the host entry with key `host` ([`HostPlan::key`]).
    pub fn host_plan(&self, host: &str) -> Option<&HostPlan> {
        self.by_name.get(host).map(|&i| &self.spec.hosts[i])
    }

    /// State of the host entry with key `host` ([`HostPlan::key`]).
    pub fn host_state(&self, host: &str) -> Option<&HostState> {
        self.by_name.get(host).map(|&i| &self.hosts[i].state)
    }

    /// The host entries (indices into [`RolloutSpec::hosts`]) whose
    /// [`crate::view::HostView`] may have changed since the last call (or
    /// since the engine was created or restored), ascending, each once.
    /// Every mutation of a host's tracking state marks it (see
    /// `host_table`), so a watcher that applies the views of these hosts to
    /// its last full view holds the current one. O(hosts touched).
    pub fn take_changed_hosts(&mut self) -> Vec<usize> {
        self.hosts.take_changed()
    }

    pub(crate) fn version_of(&self, i: usize) -> Option<&str> {
        self.hosts[i].installed.as_deref().or(self.spec.hosts[i].initial_version.as_deref())
    }

    pub(crate) fn host_index(&self, key: &str) -> Option<usize> {
        self.by_name.get(key).copied()
    }

    /// Host entry `i`'s key ([`HostPlan::key`]).
    pub(crate) fn key(&self, i: usize) -> String {
        self.spec.hosts[i].key().to_string()
    }
}

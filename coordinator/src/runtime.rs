//! The coordinator's runtime: one task that owns every engine and every agent
//! session, fed by a command channel.
//!
//! Why a single task: the engines are synchronous state machines, so one owner
//! needs no locks and gives a total order of events, which is exactly what the
//! event log records. The task works in batches: it takes every command that
//! is waiting (up to a bound), applies each resulting event to its engine,
//! appends the events to the store, flushes once (group commit) and only then
//! carries out the actions and answers the callers. So an action is never
//! visible to an agent or an operator before the event that caused it is
//! durable, and a busy coordinator pays one fsync per batch, not per event.
//!
//! Timers live in a sorted map inside the task (no task per timer), agent
//! liveness is checked on a fixed tick, and time comes from [`Clock`], which
//! follows tokio's clock so tests can pause it.
//!
//! Beside this file: `recovery` (loading a store, snapshot + tail, taking
//! snapshots) and `sessions` (agent sessions: connect, heartbeat intervals,
//! liveness, loss).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use convoy_common::engine::{Action, Engine, Event, ExecutionId, OperatorCommand, Timer};
use convoy_common::model::{HostId, InventoryHost, StepOutcome, StepSpec, UnixMillis};
use convoy_common::view::RolloutView;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::planning::Planned;
use crate::store::{AgentRecord, RolloutRecord, Store, StoredEvent};

/// Wall-clock milliseconds that advance with tokio's clock (so a paused
/// tokio clock pauses it too).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_unix: u64,
    base: tokio::time::Instant,
}

impl Clock {
    /// A clock starting at the current system time.
    pub fn system() -> Clock {
        let base_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock { base_unix, base: tokio::time::Instant::now() }
    }
    /// A clock starting at `at`: a test resuming a stored rollout runs it in
    /// the time it was stored in, so its deadlines mean what they meant.
    pub fn starting_at(at: UnixMillis) -> Clock {
        Clock { base_unix: at.0, base: tokio::time::Instant::now() }
    }
    pub fn now(&self) -> UnixMillis {
        UnixMillis(self.base_unix + self.base.elapsed().as_millis() as u64)
    }
    /// The instant of `at`; a time too far away to represent is a year out
    /// (plans bound their durations; this keeps a bad one from panicking).
    fn instant_at(&self, at: UnixMillis) -> tokio::time::Instant {
        let offset = Duration::from_millis(at.0.saturating_sub(self.base_unix));
        self.base
            .checked_add(offset)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }
}

/// Runtime settings, validated by the binary's config.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How often agents send heartbeats (told to them in the welcome).
    pub heartbeat_interval: Duration,
    /// An agent silent for this long is considered lost (at the base
    /// heartbeat interval; scaled with the interval an agent is given).
    pub agent_timeout: Duration,
    /// Heartbeats per second the whole fleet may send: an agent connecting
    /// to a fleet of N is told to beat every max(heartbeat_interval,
    /// N / this), and is lost after `agent_timeout` scaled the same way
    /// (Nomad's rule). See [`MAX_HEARTBEATS_PER_S`] for the bounds.
    pub max_heartbeats_per_s: u32,
    /// Most commands handled in one batch (one flush).
    pub max_batch: usize,
    /// Group commit: a batch that brings events within this long of the
    /// previous flush waits out the rest of it, taking the commands that
    /// arrive meanwhile into the same flush. See [`COMMIT_WINDOW`].
    pub commit_window: Duration,
    /// How long parsing, validating and expanding one plan may take.
    pub plan_time_limit: Duration,
    /// Snapshot a rollout's engine every this many events appended to its
    /// log (and once when it finishes); 0 takes none. See
    /// [`SNAPSHOT_EVERY`] for the bounds the binary accepts.
    pub snapshot_every: u64,
    /// Changes a rollout's watcher may fall behind by before it starts
    /// again from a full snapshot (see `runtime::watch`).
    pub watch_capacity: usize,
    /// Delete the events a durable snapshot covers (off by default: the
    /// full log is what `convoy verify`, host outputs and the dashboard's
    /// timelines read; docs/ha.md, "Snapshots").
    pub compact_events: bool,
}

/// The values `--max-heartbeats-per-second` takes.
pub const MAX_HEARTBEATS_PER_S: std::ops::RangeInclusive<u32> = 10..=1_000_000;

/// The fleet's heartbeat budget by default: 1,000 agents at the 2 s base
/// interval; 10,000 agents beat every 20 s and are lost after a minute.
/// Every heartbeat costs the coordinator a TLS record each way and a wake-up
/// (about 0.1 ms of CPU), so this is what an idle fleet costs: at 1,000 per
/// second, a tenth of a core for 10,000 idle agents (Nomad's budget is 50).
pub const DEFAULT_MAX_HEARTBEATS_PER_S: u32 = 500;

/// The longest heartbeat interval a large fleet gets.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// The values `--commit-window-ms` takes.
pub const COMMIT_WINDOW: std::ops::RangeInclusive<Duration> = Duration::ZERO..=Duration::from_millis(100);

/// At most 200 event-log flushes a second while events keep coming.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_millis(5);

/// The values `--snapshot-every` takes besides 0 (no snapshots).
pub const SNAPSHOT_EVERY: std::ops::RangeInclusive<u64> = 10..=1_000_000;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(6),
            max_heartbeats_per_s: DEFAULT_MAX_HEARTBEATS_PER_S,
            max_batch: 4096,
            commit_window: DEFAULT_COMMIT_WINDOW,
            plan_time_limit: Duration::from_secs(10),
            snapshot_every: 1000,
            compact_events: false,
            watch_capacity: 1024,
        }
    }
}

/// What an agent said in its hello, as domain types.
#[derive(Debug, Clone, Default)]
pub struct AgentHello {
    pub id: HostId,
    pub version: String,
    pub protocol_version: u32,
    pub capabilities: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub installed: BTreeMap<String, String>,
    /// The facts the operator gave the agent (`--fact KEY=VALUE`).
    pub facts: BTreeMap<String, String>,
    /// The agent's install root; empty from agents that predate it.
    pub install_root: String,
    /// Results the agent finished while it was disconnected.
    pub replayed: Vec<(ExecutionId, StepOutcome)>,
}

/// A message for an agent; the gRPC layer turns it into wire types.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAgent {
    /// Run one step under a unique execution id. Boxed: a session's channel
    /// allocates a block of 32 messages up front, and a fleet has
    /// thousands of sessions, nearly always idle.
    RunStep { execution_id: ExecutionId, step: Box<StepSpec> },
    /// Heartbeat at this interval from now on (the fleet grew).
    Pace { heartbeat: Duration },
}

/// A rollout as operators see it.
#[derive(Debug, Clone)]
pub struct RolloutSnapshot {
    pub id: String,
    pub plan_name: String,
    pub target_version: String,
    pub created: UnixMillis,
    pub updated: UnixMillis,
    pub view: RolloutView,
}

/// A session the runtime admitted ([`RuntimeHandle::connect`]).
#[derive(Debug)]
pub struct AgentSession {
    /// Its number: later calls about it name it.
    pub id: u64,
    /// The heartbeat interval the agent is asked for.
    pub heartbeat: Duration,
    /// What the runtime sends the agent; closed when it drops the session.
    pub to_agent: mpsc::UnboundedReceiver<ToAgent>,
    /// Where its heartbeats are stamped.
    pub beats: Beats,
}

/// Stamps a session's heartbeats (cloneable: whatever task reads the
/// agent's stream).
#[derive(Debug, Clone)]
pub struct Beats {
    pulse: Pulse,
    clock: Clock,
}

impl Beats {
    /// The agent's heartbeat arrived: stamped here, in the session's task,
    /// and read by the runtime's liveness check. Heartbeats never queue
    /// behind the runtime's work, and at 10,000 agents they no longer wake
    /// it a thousand times a second.
    pub fn beat(&self) {
        self.pulse.beat(self.clock.now());
    }
}

/// When an agent's session last heard from it (ms since the epoch), shared
/// by the session's task (which stamps it) and the runtime (which reads it).
#[derive(Debug, Clone)]
pub(crate) struct Pulse(Arc<std::sync::atomic::AtomicU64>);

impl Pulse {
    pub(crate) fn new(now: UnixMillis) -> Pulse {
        Pulse(Arc::new(std::sync::atomic::AtomicU64::new(now.0)))
    }

    pub(crate) fn beat(&self, at: UnixMillis) {
        self.0.fetch_max(at.0, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> UnixMillis {
        UnixMillis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// An agent as operators see it.
#[derive(Debug, Clone)]
pub struct AgentSnapshot {
    pub record: AgentRecord,
    pub connected: bool,
}

/// The answer to a plan submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Empty for a dry run.
    pub rollout_id: String,
    pub summary: serde_json::Value,
    /// The group DAG in Graphviz format.
    pub dot: String,
    /// Hosts the plan selects that are held out of rollouts.
    pub held: Vec<convoy_common::hold::Hold>,
}

type Reply<T> = oneshot::Sender<Result<T, CoordinatorError>>;

enum Command {
    Connect {
        hello: AgentHello,
        session: u64,
        tx: mpsc::UnboundedSender<ToAgent>,
        /// Stamped by the session's task at each heartbeat.
        pulse: Pulse,
        /// The heartbeat interval the agent is told in its welcome.
        reply: Reply<Duration>,
    },
    /// The host's certificate was revoked: end its session.
    Revoke {
        host: HostId,
    },
    /// The execution ids a rollout (resolved) issued to a host.
    ExecutionsOf {
        rollout_id: Option<String>,
        host: HostId,
        reply: Reply<(String, Vec<ExecutionId>)>,
    },
    Result {
        host: HostId,
        session: u64,
        execution_id: ExecutionId,
        outcome: StepOutcome,
    },
    Disconnect {
        host: HostId,
        session: u64,
    },
    /// The live inventory, for a plan expanded outside the actor.
    Inventory {
        reply: Reply<crate::planning::Inventory>,
    },
    /// Create a rollout from a spec validated outside the actor.
    Create {
        planned: Box<Planned>,
        by: String,
        reply: Reply<Submitted>,
    },
    Control {
        rollout_id: Option<String>,
        command: OperatorCommand,
        by: String,
        reply: Reply<RolloutSnapshot>,
    },
    Get {
        rollout_id: Option<String>,
        reply: Reply<RolloutSnapshot>,
    },
    /// Subscribe to a rollout's changes (see `runtime::watch`).
    Watch {
        rollout_id: Option<String>,
        reply: Reply<watch::WatchStart>,
    },
    ListRollouts {
        reply: Reply<Vec<RolloutSnapshot>>,
    },
    ListAgents {
        reply: Reply<Vec<AgentSnapshot>>,
    },
}

/// A cheap, cloneable handle to the runtime task.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    tx: mpsc::UnboundedSender<Command>,
    /// Stamps heartbeats on arrival.
    clock: Clock,
    next_session: Arc<std::sync::atomic::AtomicU64>,
    planner: crate::planning::Planner,
    store: Arc<dyn Store>,
    /// Where plans' artifact steps get the digests they leave out.
    artifacts: Arc<crate::artifacts::ArtifactStore>,
}

impl RuntimeHandle {
    fn send(&self, cmd: Command) -> Result<(), CoordinatorError> {
        self.tx.send(cmd).map_err(|_| CoordinatorError::ShuttingDown)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| CoordinatorError::ShuttingDown)?
    }

    /// Register an agent session; returns its session number and the stream
    /// of messages for the agent. The session ends when the receiver closes.
    /// Refused while another session of the same host is live and working
    /// (heard from within two heartbeat intervals): a second holder of a
    /// host's identity never takes over a working session. A stale one (the
    /// agent lost it and reconnected before the coordinator noticed; it
    /// missed a heartbeat) is replaced.
    pub async fn connect(&self, hello: AgentHello) -> Result<AgentSession, CoordinatorError> {
        let id = self.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, to_agent) = mpsc::unbounded_channel();
        let pulse = Pulse::new(self.clock.now());
        let p = pulse.clone();
        let heartbeat = self.ask(|reply| Command::Connect { hello, session: id, tx, pulse: p, reply }).await?;
        Ok(AgentSession { id, heartbeat, to_agent, beats: Beats { pulse, clock: self.clock } })
    }
    /// The rollout (the latest if `None`) and the execution ids it issued to `host`.
    pub async fn executions_of(
        &self,
        rollout_id: Option<String>,
        host: &str,
    ) -> Result<(String, Vec<ExecutionId>), CoordinatorError> {
        let host = host.to_string();
        self.ask(|reply| Command::ExecutionsOf { rollout_id, host, reply }).await
    }
    /// End the session of a host whose certificate was revoked.
    pub fn revoke(&self, host: &str) -> Result<(), CoordinatorError> {
        self.send(Command::Revoke { host: host.to_string() })
    }
    pub fn step_result(
        &self,
        host: &str,
        session: u64,
        execution_id: ExecutionId,
        outcome: StepOutcome,
    ) -> Result<(), CoordinatorError> {
        self.send(Command::Result { host: host.to_string(), session, execution_id, outcome })
    }
    pub fn disconnect(&self, host: &str, session: u64) -> Result<(), CoordinatorError> {
        self.send(Command::Disconnect { host: host.to_string(), session })
    }
    /// Parse, validate and expand a plan (outside the runtime task, under
    /// [`RuntimeConfig::plan_time_limit`]) and, unless `dry_run`, start it.
    /// The runtime task only ever receives a validated spec, so no plan can
    /// stall agents' heartbeats or other operators.
    pub async fn submit(
        &self,
        file: &str,
        source: &str,
        catalogs: BTreeMap<String, String>,
        dry_run: bool,
        by: &str,
    ) -> Result<Submitted, CoordinatorError> {
        let inventory = self.ask(|reply| Command::Inventory { reply }).await?;
        let request = crate::planning::PlanRequest { file: file.to_string(), source: source.to_string(), catalogs };
        let planned = self.planner.plan(request, inventory, self.store.clone(), self.artifacts.clone()).await?;
        if dry_run {
            return Ok(Submitted {
                rollout_id: String::new(),
                summary: planned.summary,
                dot: planned.dot,
                held: planned.held,
            });
        }
        let by = by.to_string();
        self.ask(|reply| Command::Create { planned: Box::new(planned), by, reply }).await
    }
    pub async fn control(
        &self,
        rollout_id: Option<String>,
        command: OperatorCommand,
        by: &str,
    ) -> Result<RolloutSnapshot, CoordinatorError> {
        let by = by.to_string();
        self.ask(|reply| Command::Control { rollout_id, command, by, reply }).await
    }
    pub async fn get(&self, rollout_id: Option<String>) -> Result<RolloutSnapshot, CoordinatorError> {
        self.ask(|reply| Command::Get { rollout_id, reply }).await
    }
    pub async fn list_rollouts(&self) -> Result<Vec<RolloutSnapshot>, CoordinatorError> {
        self.ask(|reply| Command::ListRollouts { reply }).await
    }
    pub async fn list_agents(&self) -> Result<Vec<AgentSnapshot>, CoordinatorError> {
        self.ask(|reply| Command::ListAgents { reply }).await
    }
}

struct RolloutRun {
    record: RolloutRecord,
    engine: Engine,
    next_seq: u64,
    /// Events covered by the latest snapshot stored (or tried).
    snapshot_seq: u64,
    /// An append failed: the engine holds events the log lacks, so it is
    /// never snapshotted again (a snapshot must match the log).
    diverged: bool,
    updated: UnixMillis,
    /// Its watchers' channel and change tracker.
    publisher: watch::Publisher,
    /// Events were applied in this batch: publish its change.
    dirty: bool,
}

impl RolloutRun {
    fn snapshot(&self) -> RolloutSnapshot {
        RolloutSnapshot {
            id: self.record.id.clone(),
            plan_name: self.record.spec.plan_name.clone(),
            target_version: self.record.spec.target_version.clone(),
            created: self.record.created,
            updated: self.updated,
            view: self.engine.view_at(self.updated),
        }
    }
}

/// A rollout's engine rebuilt from the store ([`Actor::rebuild`]).
struct Rebuilt {
    engine: Engine,
    /// The sequence number of the next event appended.
    next_seq: u64,
    /// Events covered by the snapshot it was restored from (0: none).
    snapshot_seq: u64,
    /// When the last event it holds was handled (the rollout's creation if none).
    updated: UnixMillis,
}

struct AgentConn {
    record: AgentRecord,
    /// Whether the store holds `record` as it is here (false after a failed
    /// write, so the next connection writes it whatever it says).
    stored: bool,
    session: Option<(u64, mpsc::UnboundedSender<ToAgent>)>,
    /// The heartbeat interval its session was given.
    heartbeat: Duration,
    /// When it was last heard from (a fresh one per session, starting when
    /// it connected): its heartbeats, stamped by the session, and its results.
    pulse: Pulse,
}

impl AgentConn {
    /// When it was last heard from. `record.last_seen` is what was stored
    /// when it connected; the pulse is the live value.
    fn last_seen(&self) -> UnixMillis {
        self.pulse.last()
    }
}

/// Work that must wait until the batch is durable (answers to callers).
type AfterCommit = Box<dyn FnOnce(&Actor) + Send>;

/// The runtime task's state.
struct Actor {
    store: Arc<dyn Store>,
    clock: Clock,
    config: RuntimeConfig,
    rollouts: HashMap<String, RolloutRun>,
    /// Rollout ids in creation order.
    order: Vec<String>,
    agents: HashMap<HostId, AgentConn>,
    /// How many of `agents` have a session, kept by `connect` and `lose`
    /// so a reconnect storm does not count them all per connection.
    connected: usize,
    /// `connected` when agents' heartbeat intervals were last spread out.
    paced_at: usize,
    /// Hosts -> rollouts not yet finished that contain them.
    active: HashMap<HostId, Vec<String>>,
    timers: BTreeMap<(UnixMillis, u64), (String, Timer)>,
    timer_seq: u64,
    // The current batch.
    events: Vec<(String, StoredEvent)>,
    actions: Vec<(String, Action)>,
    after_commit: Vec<AfterCommit>,
    /// A write was refused because another coordinator leads now (etcd
    /// store): act on nothing more and stop the task.
    deposed: bool,
    /// When events were last made durable (see [`RuntimeConfig::commit_window`]).
    last_flush: Option<tokio::time::Instant>,
    /// Step durations, event-log latencies and the queue depth are recorded here.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Start the runtime task: load agents and rollouts from `store`, rebuild
/// every unfinished rollout from its event log, and serve commands until
/// `shutdown` is cancelled. Submitted plans take the digests of their
/// artifact steps from `artifacts`.
pub fn spawn(
    store: Arc<dyn Store>,
    artifacts: Arc<crate::artifacts::ArtifactStore>,
    config: RuntimeConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(RuntimeHandle, tokio::task::JoinHandle<()>), CoordinatorError> {
    spawn_with_metrics(store, artifacts, config, clock, Arc::default(), shutdown)
}

/// [`spawn`], recording into `metrics`.
pub fn spawn_with_metrics(
    store: Arc<dyn Store>,
    artifacts: Arc<crate::artifacts::ArtifactStore>,
    config: RuntimeConfig,
    clock: Clock,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<(RuntimeHandle, tokio::task::JoinHandle<()>), CoordinatorError> {
    let mut actor = Actor::new(store, config, clock, metrics);
    let started = std::time::Instant::now();
    actor.recover()?;
    tracing::info!(
        agents = actor.agents.len(),
        rollouts = actor.rollouts.len(),
        elapsed = ?started.elapsed(),
        "recovered from the store"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = RuntimeHandle {
        tx,
        clock,
        next_session: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        planner: crate::planning::Planner::new(actor.config.plan_time_limit),
        store: actor.store.clone(),
        artifacts,
    };
    let join = tokio::spawn(actor.run(rx, shutdown));
    Ok((handle, join))
}

impl Actor {
    fn new(store: Arc<dyn Store>, config: RuntimeConfig, clock: Clock, metrics: Arc<crate::metrics::Metrics>) -> Actor {
        Actor {
            store,
            clock,
            config,
            rollouts: HashMap::new(),
            order: Vec::new(),
            agents: HashMap::new(),
            connected: 0,
            paced_at: 0,
            active: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            events: Vec::new(),
            actions: Vec::new(),
            after_commit: Vec::new(),
            deposed: false,
            last_flush: None,
            metrics,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, shutdown: CancellationToken) {
        let mut liveness = tokio::time::interval(self.config.heartbeat_interval);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| self.clock.instant_at(*at));
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.metrics.queue_depth(rx.len());
                    self.command(cmd);
                    let mut n = 1;
                    while n < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(cmd) => { self.command(cmd); n += 1; }
                            Err(_) => break,
                        }
                    }
                    // Group commit. A flush costs the same for one event as
                    // for a thousand; when they come faster than flushes,
                    // waiting out the window after the previous one gathers
                    // them. Quiet times commit at once.
                    if let Some(due) = self.last_flush.map(|at| at + self.config.commit_window)
                        && !self.events.is_empty()
                    {
                        while n < self.config.max_batch {
                            match tokio::time::timeout_at(due, rx.recv()).await {
                                Ok(Some(cmd)) => { self.command(cmd); n += 1; }
                                Ok(None) | Err(_) => break,
                            }
                        }
                    }
                }
                _ = sleep => self.fire_timers(),
                _ = liveness.tick() => self.on_liveness_tick(&mut rx),
            }
            self.commit();
            if self.deposed {
                tracing::error!("another coordinator leads now: engines stopped, nothing more is dispatched");
                break;
            }
        }
        // Close every agent session so their streams end with the server.
        for a in self.agents.values_mut() {
            a.session = None;
        }
        self.connected = 0;
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { hello, session, tx, pulse, reply } => {
                let now = self.clock.now();
                // Live and working: its stream is open and it was heard from
                // within two of its heartbeat intervals. A stale session (a
                // missed heartbeat) is replaced.
                let live = self
                    .agents
                    .get(&hello.id)
                    .filter(|a| now.since(a.last_seen()) <= 2 * a.heartbeat.as_millis() as u64)
                    .and_then(|a| a.session.as_ref())
                    .filter(|(_, t)| !t.is_closed());
                if let Some((current, _)) = live {
                    let _ = reply.send(Err(CoordinatorError::PermissionDenied {
                        host: hello.id.clone(),
                        message: format!(
                            "a session for this host is already live (session {current}); a second one is refused"
                        ),
                    }));
                } else {
                    let heartbeat = self.heartbeat_for_next();
                    self.connect(hello, session, tx, pulse, heartbeat);
                    let _ = reply.send(Ok(heartbeat));
                }
            }
            Command::ExecutionsOf { rollout_id, host, reply } => {
                let r = self.resolve(rollout_id).and_then(|id| {
                    let run =
                        self.rollouts.get(&id).ok_or_else(|| CoordinatorError::UnknownRollout { id: id.clone() })?;
                    let ids = run.engine.executions_of(&host);
                    Ok((id, ids))
                });
                let _ = reply.send(r);
            }
            Command::Revoke { host } => {
                if self.agents.get(&host).is_some_and(|a| a.session.is_some()) {
                    self.lose(&host);
                }
            }
            Command::Result { host, session, execution_id, outcome } => {
                let now = self.clock.now();
                if let Some(a) = self.agents.get_mut(&host)
                    && a.session.as_ref().is_some_and(|(s, _)| *s == session)
                {
                    a.pulse.beat(now);
                }
                self.result(&host, execution_id, outcome);
            }
            Command::Disconnect { host, session } => {
                let current =
                    self.agents.get(&host).and_then(|a| a.session.as_ref()).is_some_and(|(s, _)| *s == session);
                if current {
                    tracing::info!(%host, "agent session ended");
                    self.lose(&host);
                }
            }
            Command::Inventory { reply } => {
                let mut hosts: Vec<InventoryHost> = self.agents.values().map(|a| a.record.inventory_host()).collect();
                hosts.sort_by(|a, b| a.id.cmp(&b.id));
                let abilities = self
                    .agents
                    .iter()
                    .map(|(id, a)| {
                        let abilities = crate::planning::AgentAbilities {
                            version: a.record.version.clone(),
                            capabilities: a.record.capabilities.iter().cloned().collect(),
                        };
                        (id.clone(), abilities)
                    })
                    .collect();
                let _ = reply.send(Ok(crate::planning::Inventory { hosts, abilities }));
            }
            Command::Create { planned, by, reply } => {
                let Planned { spec, file, source, summary, dot, held } = *planned;
                match self.create(spec, &file, &source, &by) {
                    Ok(id) => {
                        // Durable with the batch that starts the rollout.
                        if let Err(e) = self.store.put_rollout_holds(&id, &held) {
                            tracing::error!(rollout = %id, error = %e, "cannot store the rollout's held hosts");
                        }
                        self.after_commit.push(Box::new(move |_| {
                            let _ = reply.send(Ok(Submitted { rollout_id: id, summary, dot, held }));
                        }))
                    }
                    Err(e) => {
                        self.deposed |= matches!(e, CoordinatorError::Deposed { .. });
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Control { rollout_id, command, by, reply } => match self.resolve(rollout_id) {
                Ok(id)
                    if command == OperatorCommand::Rollback
                        && self.rollouts.get(&id).is_some_and(|r| r.engine.state().is_terminal()) =>
                {
                    match self.rollback_finished(&id, &by) {
                        Ok(new_id) => self.after_commit.push(Box::new(move |actor: &Actor| {
                            let _ = reply.send(actor.snapshot(&new_id));
                        })),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Ok(id) => {
                    self.event(&id, Event::Operator { command, by });
                    self.after_commit.push(Box::new(move |actor: &Actor| {
                        let _ = reply.send(actor.snapshot(&id));
                    }));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Get { rollout_id, reply } => {
                let _ = reply.send(self.resolve(rollout_id).and_then(|id| self.snapshot(&id)));
            }
            Command::Watch { rollout_id, reply } => self.watch_command(rollout_id, reply),
            Command::ListRollouts { reply } => {
                let list = self.order.iter().filter_map(|id| self.rollouts.get(id)).map(|r| r.snapshot()).collect();
                let _ = reply.send(Ok(list));
            }
            Command::ListAgents { reply } => {
                let mut list: Vec<AgentSnapshot> = self
                    .agents
                    .values()
                    .map(|a| AgentSnapshot {
                        record: AgentRecord { last_seen: a.last_seen(), ..a.record.clone() },
                        connected: a.session.is_some(),
                    })
                    .collect();
                list.sort_by(|a, b| a.record.id.cmp(&b.record.id));
                let _ = reply.send(Ok(list));
            }
        }
    }

    fn resolve(&self, rollout_id: Option<String>) -> Result<String, CoordinatorError> {
        match rollout_id.filter(|s| !s.is_empty()) {
            Some(id) if self.rollouts.contains_key(&id) => Ok(id),
            Some(id) => Err(CoordinatorError::UnknownRollout { id }),
            None => self.order.last().cloned().ok_or(CoordinatorError::NoRollout),
        }
    }

    fn snapshot(&self, id: &str) -> Result<RolloutSnapshot, CoordinatorError> {
        self.rollouts
            .get(id)
            .map(|r| r.snapshot())
            .ok_or_else(|| CoordinatorError::UnknownRollout { id: id.to_string() })
    }

    /// Store a new rollout for `spec`, start its engine and return its id.
    fn create(
        &mut self,
        spec: convoy_common::model::RolloutSpec,
        file: &str,
        source: &str,
        by: &str,
    ) -> Result<String, CoordinatorError> {
        for h in &spec.hosts {
            if let Some(others) = self.active.get(&h.host).filter(|l| !l.is_empty()) {
                return Err(CoordinatorError::Conflict {
                    id: others[0].clone(),
                    message: format!("host {} is already in unfinished rollout {}", h.host, others[0]),
                });
            }
        }
        let id = format!("r{}", self.order.len() + 1);
        let now = self.clock.now();
        let record = RolloutRecord {
            id: id.clone(),
            file: file.to_string(),
            plan_source: source.to_string(),
            spec: spec.clone(),
            created: now,
            created_by: by.to_string(),
        };
        self.store.put_rollout(&record)?;
        let mut engine = Engine::new(id.clone(), spec.clone());
        let run = RolloutRun {
            publisher: watch::Publisher::new(&mut engine, now, self.config.watch_capacity),
            record,
            engine,
            next_seq: 0,
            snapshot_seq: 0,
            diverged: false,
            updated: now,
            dirty: true,
        };
        self.rollouts.insert(id.clone(), run);
        self.order.push(id.clone());
        for host in agents_of(&spec) {
            self.active.entry(host).or_default().push(id.clone());
        }
        tracing::info!(rollout = %id, plan = %spec.plan_name, hosts = spec.hosts.len(), "rollout created");
        // Hosts whose agents are away now are known lost from the start, so
        // the engine arms their lost deadlines instead of waiting forever.
        for host in agents_of(&spec) {
            let connected = self.agents.get(&host).is_some_and(|a| a.session.is_some());
            if !connected {
                self.event(&id, Event::AgentLost { host });
            }
        }
        self.event(&id, Event::Started);
        Ok(id)
    }

    /// `convoy rollback` on a rollout that has ended: a new rollout that
    /// undoes what it upgraded (a running rollout rolls back in place).
    fn rollback_finished(&mut self, id: &str, by: &str) -> Result<String, CoordinatorError> {
        if let Some(done) = self.rollouts.values().find(|r| r.record.spec.rollback_of.as_deref() == Some(id)) {
            return Err(CoordinatorError::Conflict {
                id: id.to_string(),
                message: format!("already rolled back by rollout {}", done.record.id),
            });
        }
        let run = self.rollouts.get(id).ok_or_else(|| CoordinatorError::UnknownRollout { id: id.to_string() })?;
        let spec = convoy_common::undo::undo_spec(&run.engine)
            .map_err(|message| CoordinatorError::Conflict { id: id.to_string(), message })?;
        self.create(spec, &format!("rollback of {id}"), "", by)
    }
}

/// The agents of a rollout, each once, in spec order (a host that runs a
/// hook has several entries in the spec).
fn agents_of(spec: &convoy_common::model::RolloutSpec) -> Vec<HostId> {
    let mut seen = std::collections::HashSet::new();
    spec.hosts.iter().filter(|h| seen.insert(h.host.as_str())).map(|h| h.host.clone()).collect()
}

mod batch;
mod recovery;
mod sessions;
mod watch;
pub use watch::{RolloutWatch, Watched};

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod snapshot_tests;

//! The agent's session with the coordinator, and what it does with steps.
//!
//! The agent dials out (hosts open no port) and keeps one bidirectional
//! stream: it sends Hello first, waits for Welcome, then sends heartbeats every
//! interval and a StepResult whenever an execution finishes; the coordinator
//! sends RunStep messages down. When the stream ends or fails the agent
//! reconnects with exponential backoff and full jitter between
//! `reconnect_min` and `reconnect_max` (never less than `reconnect_min`, so a
//! refused connection cannot spin).
//!
//! Executions belong to the agent, not to a stream: a step keeps running when
//! the connection drops, and its result is delivered on whichever stream is up
//! when it finishes, or in the next Hello's `replayed_results`. Because a
//! message handed to a stream that then breaks may never reach the coordinator,
//! results sent in the last [`RESEND_WINDOW`] of a lost stream are offered
//! again (marked `replayed`) in the next Hello; the coordinator deduplicates
//! by execution id, so a duplicate is harmless and a loss is not.
//!
//! [`Executor`] holds the "no execution runs twice" rule, independent of the
//! transport so it can be tested alone: a RunStep whose id has a recorded
//! outcome is answered from the store; one whose id is running is ignored (its
//! result comes when it finishes); only an unknown id starts the step. An
//! outcome is recorded durably before it is reported.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use convoy_common::model::{StepOutcome, StepSpec};
use convoy_proto::v1::agent_message::Kind as UpKind;
use convoy_proto::v1::agent_service_client::AgentServiceClient;
use convoy_proto::v1::coordinator_message::Kind as DownKind;
use convoy_proto::v1::{AgentMessage, CoordinatorMessage, Heartbeat, RunStep, StepResult};
use convoy_wire::agent::{AgentIntro, HostFacts, hello_to_proto};
use convoy_wire::outcome::{outcome_to_result, unsupported_outcome};
use convoy_wire::step::step_from_run_step;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::driver::{Driver, LocalDriver};
use crate::error::AgentError;
use crate::store::{ExecutionStore, FileStore};
use crate::tls::AgentIdentity;
use crate::{enroll, facts, tls};

/// Results sent this long before a stream was lost are offered again.
pub const RESEND_WINDOW: Duration = Duration::from_secs(60);
/// At most this many results are remembered for re-sending.
const RESEND_CAP: usize = 1024;
/// Outbound messages buffered for the stream.
const OUTBOUND_BUFFER: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------ executor

/// Runs a step with the driver in its own task (so a panicking driver is
/// reported, not lost), its commands tagged with the execution id.
async fn run_driver(id: &str, step: &StepSpec, driver: Arc<dyn Driver>) -> StepOutcome {
    let (run_id, step) = (id.to_string(), step.clone());
    let work = crate::orphans::EXECUTION_ID.scope(run_id.clone(), async move { driver.run(&run_id, &step).await });
    let mut work = AbortOnDrop(tokio::spawn(work));
    match (&mut work.0).await {
        Ok(outcome) => outcome,
        Err(e) => StepOutcome::failed(format!("the agent's driver failed: {e}")),
    }
}

/// The message of an execution whose outcome the agent cannot know.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown: the agent restarted while the step ran";

/// An execution an earlier run of this agent started and never finished:
/// its processes, if still running, are waited for (at most the step's
/// timeout); then it runs again if the step is `rerun_safe`, and otherwise
/// fails as [`OUTCOME_UNKNOWN`]. It is never run twice side by side.
async fn recover_interrupted(id: &str, step: &StepSpec, driver: Arc<dyn Driver>) -> StepOutcome {
    let (found, ended) = crate::orphans::wait_gone(id, step.timeout).await;
    tracing::warn!(execution_id = %id, step = %step.name, still_running = found, ended, rerun_safe = step.rerun_safe,
        "execution interrupted by an agent restart");
    if !ended {
        return StepOutcome::failed(format!(
            "{OUTCOME_UNKNOWN}; {found} of its processes were still running after the step's timeout and were left alone"
        ));
    }
    if step.rerun_safe {
        return run_driver(id, step, driver).await;
    }
    let detail = match found {
        0 => "it was no longer running".to_string(),
        n => format!("the agent waited for its {n} running process(es) to end; their exit status is not known"),
    };
    StepOutcome::failed(format!(
        "{OUTCOME_UNKNOWN} ({detail}); it is not run again (mark the step rerun_safe to allow that)"
    ))
}

/// What to do with a RunStep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Already finished: answer with this outcome, do not run again.
    Replay(StepOutcome),
    /// Running now: its result will be sent when it finishes.
    AlreadyRunning,
    /// Unknown: run it (the id is now marked running; the caller records it
    /// as started with [`Executor::mark_started`] before running it).
    Start,
    /// Started by an earlier run of this agent, which ended before the step
    /// did: its outcome is unknown. The id is now marked running; it runs
    /// again only if its step is `rerun_safe`.
    Interrupted,
}

#[derive(Debug, Default)]
struct ExecState {
    running: BTreeSet<String>,
    /// Outcomes the store failed to record; still never run twice while the
    /// agent lives.
    unsaved: HashMap<String, StepOutcome>,
}

/// Decides, per execution id, whether a step runs; records outcomes.
pub struct Executor {
    store: Arc<dyn ExecutionStore>,
    state: Mutex<ExecState>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("state", &*lock(&self.state)).finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(store: Arc<dyn ExecutionStore>) -> Executor {
        Executor { store, state: Mutex::new(ExecState::default()) }
    }

    /// Decides what to do with `execution_id`; `Start` marks it running.
    /// The check and the marking happen under one lock, and [`Self::finish`]
    /// records before it unmarks, so no interleaving starts an id twice.
    pub fn admit(&self, execution_id: &str) -> Result<Admission, AgentError> {
        let mut state = lock(&self.state);
        if state.running.contains(execution_id) {
            return Ok(Admission::AlreadyRunning);
        }
        if let Some(outcome) = state.unsaved.get(execution_id) {
            return Ok(Admission::Replay(outcome.clone()));
        }
        if let Some(outcome) = self.store.get(execution_id)? {
            return Ok(Admission::Replay(outcome));
        }
        if self.store.was_started(execution_id)? {
            state.running.insert(execution_id.to_string());
            return Ok(Admission::Interrupted);
        }
        state.running.insert(execution_id.to_string());
        Ok(Admission::Start)
    }

    /// Records, durably, that an admitted execution is about to run; called
    /// right before anything is spawned, so a crash from then on leaves a
    /// record that stops the step from starting a second time.
    pub fn mark_started(&self, execution_id: &str) -> Result<(), AgentError> {
        self.store.mark_started(execution_id)
    }

    /// Records the outcome of a started execution durably, then unmarks it.
    /// On a store error the outcome is kept in memory (so the id is still not
    /// run again by this process) and the error is returned for reporting.
    pub fn finish(&self, execution_id: &str, outcome: &StepOutcome) -> Result<(), AgentError> {
        let stored = self.store.put(execution_id, outcome);
        let mut state = lock(&self.state);
        if stored.is_err() {
            state.unsaved.insert(execution_id.to_string(), outcome.clone());
        }
        state.running.remove(execution_id);
        stored
    }

    /// Unmarks a started execution that was never run (it could not be converted).
    pub fn abandon(&self, execution_id: &str) {
        lock(&self.state).running.remove(execution_id);
    }

    /// Ids running now, for heartbeats.
    pub fn running(&self) -> Vec<String> {
        lock(&self.state).running.iter().cloned().collect()
    }
}

// -------------------------------------------------------------------- outbox

#[derive(Debug, Default)]
struct OutboxState {
    sender: Option<mpsc::Sender<AgentMessage>>,
    /// Results not yet handed to a stream (or to re-offer), one per id.
    pending: Vec<StepResult>,
    /// Results handed to the current stream, with when.
    sent: VecDeque<(Instant, StepResult)>,
}

/// Routes finished results to the current stream, or keeps them for the next.
#[derive(Debug, Default)]
struct Outbox {
    state: Mutex<OutboxState>,
}

fn step_message(result: StepResult) -> AgentMessage {
    AgentMessage { kind: Some(UpKind::StepResult(result)) }
}

impl OutboxState {
    fn record_sent(&mut self, result: StepResult) {
        self.sent.push_back((Instant::now(), result));
        while self.sent.len() > RESEND_CAP {
            self.sent.pop_front();
        }
    }

    fn keep(&mut self, result: StepResult) {
        self.pending.retain(|r| r.execution_id != result.execution_id);
        self.pending.push(result);
        if self.pending.len() > RESEND_CAP {
            self.pending.remove(0);
        }
    }

    /// Hands `result` to the stream; gives it back if there is none (or it is full).
    fn try_send(&mut self, result: StepResult) -> Option<StepResult> {
        let Some(tx) = &self.sender else { return Some(result) };
        match tx.try_send(step_message(result.clone())) {
            Ok(()) => {
                self.record_sent(result);
                None
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.sender = None;
                Some(result)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Some(result),
        }
    }
}

impl Outbox {
    fn deliver(&self, result: StepResult) {
        let mut state = lock(&self.state);
        if let Some(result) = state.try_send(result) {
            tracing::debug!(execution_id = %result.execution_id, "no stream; result kept for the next session");
            state.keep(result);
        }
    }

    fn pending_snapshot(&self) -> Vec<StepResult> {
        lock(&self.state).pending.clone()
    }

    /// A stream is up and the coordinator has the Hello that carried
    /// `in_hello`: those are delivered; the rest go down the stream.
    fn attach(&self, tx: mpsc::Sender<AgentMessage>, in_hello: &[StepResult]) {
        let mut state = lock(&self.state);
        for r in in_hello {
            if let Some(i) = state.pending.iter().position(|p| p == r) {
                let r = state.pending.remove(i);
                state.record_sent(r);
            }
        }
        state.sender = Some(tx);
        Self::flush_locked(&mut state);
    }

    fn flush(&self) {
        Self::flush_locked(&mut lock(&self.state));
    }

    fn flush_locked(state: &mut OutboxState) {
        let pending = std::mem::take(&mut state.pending);
        for r in pending {
            if let Some(r) = state.try_send(r) {
                state.keep(r);
            }
        }
    }

    /// The stream is gone: re-offer what was sent on it recently.
    fn detach(&self) {
        let mut state = lock(&self.state);
        state.sender = None;
        let horizon = Instant::now().checked_sub(RESEND_WINDOW);
        let sent = std::mem::take(&mut state.sent);
        for (at, mut r) in sent {
            if horizon.is_none_or(|h| at >= h) && !state.pending.iter().any(|p| p.execution_id == r.execution_id) {
                r.replayed = true;
                state.keep(r);
            }
        }
    }
}

// ------------------------------------------------------------------- backoff

/// Exponential backoff with full jitter, floored at `min`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), attempt: 0 }
    }

    /// The next delay: uniform in `[min, min(max, min * 2^(attempt+1))]`,
    /// so even the first retry is jittered (in `[min, 2 min]`): after a
    /// coordinator restart the fleet's first reconnects are spread out
    /// instead of all landing `min` after the loss.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`Backoff::next_delay`] drawing from `rng` (seeded in tests).
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let cap = self.min.saturating_mul(1u32 << self.attempt.saturating_add(1).min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if cap <= self.min {
            return self.min;
        }
        let ms = rng.random_range(self.min.as_millis()..=cap.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

// ------------------------------------------------------------------- session

/// Aborts a task when dropped (a step's driver task dies with its owner).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Agent {
    config: AgentConfig,
    driver: Arc<dyn Driver>,
    executor: Arc<Executor>,
    outbox: Arc<Outbox>,
    heartbeat_seq: AtomicU64,
    /// How often the next session's channel sends HTTP/2 pings, in ms: a
    /// coordinator that acks heartbeats proves it is there with every ack,
    /// so pings are only a backstop ([`tls::SESSION_KEEPALIVE`]); one that
    /// does not is pinged every [`tls::KEEPALIVE_INTERVAL`].
    ping_every_ms: AtomicU64,
    /// Kept across sessions: reconnects resume the TLS session.
    tls: tls::SessionTls,
}

/// Why a session ended (when it was not an error before it was established).
struct SessionEnd {
    reason: String,
}

impl Agent {
    fn hello(&self, replayed_results: Vec<StepResult>) -> AgentMessage {
        let agent = AgentIntro {
            id: self.config.host_id.clone(),
            version: crate::selfupgrade::identity::agent_version().to_string(),
            protocol_version: convoy_proto::PROTOCOL_VERSION,
            labels: self.config.labels.clone(),
            facts: HostFacts {
                hostname: facts::hostname().unwrap_or_default(),
                os: facts::os_pretty_name(),
                arch: std::env::consts::ARCH.to_string(),
                installed: self.driver.installed(),
                custom: self.config.facts.clone(),
                install_root: self.config.install_root.display().to_string(),
            },
        };
        AgentMessage { kind: Some(UpKind::Hello(hello_to_proto(agent, self.driver.capabilities(), replayed_results))) }
    }

    fn transport(&self, message: impl Into<String>) -> AgentError {
        AgentError::Transport { coordinator: self.config.coordinator_url.clone(), message: message.into() }
    }

    fn handle(&self, message: CoordinatorMessage, tasks: &mut JoinSet<()>) {
        match message.kind {
            Some(DownKind::RunStep(run)) => self.handle_run_step(run, tasks),
            Some(DownKind::Welcome(_)) => tracing::debug!("ignoring a repeated Welcome"),
            // The session loop acts on these; one arriving before the Welcome is moot.
            Some(DownKind::HeartbeatAck(_)) | Some(DownKind::Pace(_)) => {
                tracing::debug!("ignoring a heartbeat ack before the Welcome or an empty pace")
            }
            None => tracing::debug!("ignoring a coordinator message of a kind this agent does not know"),
        }
    }

    fn handle_run_step(&self, run: RunStep, tasks: &mut JoinSet<()>) {
        let id = run.execution_id.clone();
        if id.is_empty() {
            tracing::warn!(step = %run.step_name, "ignoring a RunStep without an execution id");
            return;
        }
        match self.executor.admit(&id) {
            Err(e) => {
                // Without its record the agent cannot tell whether the step
                // already ran; refusing is safer than running it twice.
                tracing::error!(execution_id = %id, "{e}");
                let outcome = StepOutcome::failed(format!("agent could not read its execution record: {e}"));
                self.outbox.deliver(outcome_to_result(&id, &outcome, false));
            }
            Ok(Admission::Replay(outcome)) => {
                tracing::info!(execution_id = %id, "execution already finished; replaying its result");
                self.outbox.deliver(outcome_to_result(&id, &outcome, true));
            }
            Ok(Admission::AlreadyRunning) => {
                tracing::debug!(execution_id = %id, "execution already running");
            }
            Ok(admission @ (Admission::Start | Admission::Interrupted)) => match step_from_run_step(&run) {
                Err(why) => {
                    tracing::warn!(execution_id = %id, step = %run.step_name, "unsupported step: {why}");
                    self.executor.abandon(&id);
                    let outcome = unsupported_outcome(&why);
                    self.outbox.deliver(outcome_to_result(&id, &outcome, false));
                }
                Ok(step) => {
                    let driver = self.driver.clone();
                    let executor = self.executor.clone();
                    let outbox = self.outbox.clone();
                    let interrupted = admission == Admission::Interrupted;
                    tasks.spawn(async move {
                        let run_id = id.clone();
                        let mut outcome = if interrupted {
                            recover_interrupted(&run_id, &step, driver).await
                        } else {
                            let (exec, mark_id) = (executor.clone(), run_id.clone());
                            match tokio::task::spawn_blocking(move || exec.mark_started(&mark_id)).await {
                                Ok(Ok(())) => run_driver(&run_id, &step, driver).await,
                                // Without the record a crash could run it twice: do not start it.
                                Ok(Err(e)) => StepOutcome::failed(format!("not started: {e}")),
                                Err(e) => StepOutcome::failed(format!("not started: {e}")),
                            }
                        };
                        let (exec, rec_id, rec) = (executor.clone(), id.clone(), outcome.clone());
                        let stored =
                            tokio::task::spawn_blocking(move || exec.finish(&rec_id, &rec)).await.unwrap_or_else(|e| {
                                executor.abandon(&id);
                                Err(AgentError::Store {
                                    path: Default::default(),
                                    execution_id: id.clone(),
                                    message: e.to_string(),
                                })
                            });
                        if let Err(e) = stored {
                            tracing::error!(execution_id = %id, "result not recorded: {e}");
                            outcome
                                .message
                                .push_str(&format!(" (warning: the agent could not record this result: {e})"));
                        }
                        outbox.deliver(outcome_to_result(&id, &outcome, false));
                    });
                }
            },
        }
    }

    /// One session: connect, Hello, Welcome, then serve until the stream ends.
    /// `Err` means it was never established.
    async fn session(&self, identity: &AgentIdentity, tasks: &mut JoinSet<()>) -> Result<SessionEnd, AgentError> {
        let config = &self.config;
        let ca = tls::read_ca(&config.ca_file)?;
        let keepalive = Duration::from_millis(self.ping_every_ms.load(Ordering::Relaxed));
        let channel = self.tls.connect(config, &ca, identity, keepalive).await?;
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let in_hello = self.outbox.pending_snapshot();
        tx.send(self.hello(in_hello.clone())).await.map_err(|_| self.transport("outbound stream closed"))?;

        let wait = config.connect_timeout;
        let response = match tokio::time::timeout(wait, client.session(ReceiverStream::new(rx))).await {
            Ok(Ok(r)) => r,
            Ok(Err(status)) => {
                crate::coordinators::follow(config, &status);
                return Err(self.transport(format!("session refused: {:?}: {}", status.code(), status.message())));
            }
            Err(_) => return Err(self.transport(format!("session not opened within {wait:?}"))),
        };
        let mut inbound = response.into_inner();
        let first = match tokio::time::timeout(wait, inbound.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(status))) => {
                crate::coordinators::follow(config, &status);
                return Err(self.transport(format!(
                    "session failed before Welcome: {:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
            Ok(None) => return Err(self.transport("session closed before Welcome")),
            Err(_) => return Err(self.transport(format!("no Welcome within {wait:?}"))),
        };
        let mut interval = config.heartbeat_interval;
        let mut early = None;
        let mut acks = false;
        match &first.kind {
            Some(DownKind::Welcome(w)) => {
                if w.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(w.heartbeat_interval_ms).min(MAX_HEARTBEAT_INTERVAL);
                }
                acks = w.acks_heartbeats;
                let ping = if acks { tls::SESSION_KEEPALIVE } else { tls::KEEPALIVE_INTERVAL };
                self.ping_every_ms.store(ping.as_millis() as u64, Ordering::Relaxed);
                tracing::info!(
                    coordinator = %crate::coordinators::current(config),
                    coordinator_version = %w.coordinator_version,
                    protocol_version = w.protocol_version,
                    heartbeat_ms = interval.as_millis() as u64,
                    replayed = in_hello.len(),
                    "session established"
                );
            }
            _ => {
                // Any message proves the Hello arrived; be lenient and go on.
                tracing::warn!("first coordinator message was not a Welcome");
                early = Some(first);
            }
        }
        self.outbox.attach(tx.clone(), &in_hello);
        // An execution that finishes by this agent coming back (a
        // self-upgrade) is recorded now, before any re-sent step is answered.
        self.driver.welcomed(&mut |id, outcome| {
            self.executor.finish(id, outcome)?;
            self.outbox.deliver(outcome_to_result(id, outcome, false));
            Ok(())
        });
        if let Some(m) = early {
            self.handle(m, tasks);
        }

        let mut ticker = heartbeat_ticker(interval).await;
        // When the coordinator was last heard from (any message).
        let mut heard = tokio::time::Instant::now();
        let reason = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let silent = heard.elapsed();
                    if acks && silent > silence_allowed(interval, config.connect_timeout) {
                        break format!("coordinator silent for {silent:?} (no heartbeat acknowledged)");
                    }
                    while tasks.try_join_next().is_some() {}
                    self.outbox.flush();
                    let heartbeat = Heartbeat {
                        sequence: self.heartbeat_seq.fetch_add(1, Ordering::Relaxed) + 1,
                        running: self.executor.running(),
                    };
                    match tx.try_send(AgentMessage { kind: Some(UpKind::Heartbeat(heartbeat)) }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => tracing::debug!("outbound buffer full; heartbeat skipped"),
                        Err(mpsc::error::TrySendError::Closed(_)) => break "outbound stream closed".to_string(),
                    }
                }
                message = inbound.next() => match message {
                    Some(Ok(m)) => {
                        heard = tokio::time::Instant::now();
                        match m.kind {
                            Some(DownKind::HeartbeatAck(_)) => {}
                            Some(DownKind::Pace(p)) if p.heartbeat_interval_ms > 0 => {
                                interval = Duration::from_millis(p.heartbeat_interval_ms).min(MAX_HEARTBEAT_INTERVAL);
                                tracing::debug!(heartbeat_ms = interval.as_millis() as u64, "heartbeat interval changed");
                                ticker = heartbeat_ticker(interval).await;
                            }
                            kind => self.handle(CoordinatorMessage { kind }, tasks),
                        }
                    }
                    Some(Err(status)) => break format!("session error: {:?}: {}", status.code(), status.message()),
                    None => break "coordinator closed the session".to_string(),
                },
            }
        };
        self.outbox.detach();
        Ok(SessionEnd { reason })
    }
}

/// The longest interval a coordinator may ask for (it asks for at most a minute).
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(600);

/// A heartbeat ticker whose first tick is one `interval` from now.
async fn heartbeat_ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    ticker
}

/// How long a coordinator that acks heartbeats may stay silent before the
/// session is given up: two missed acks and the connect timeout.
fn silence_allowed(interval: Duration, connect_timeout: Duration) -> Duration {
    interval * 2 + connect_timeout
}

/// Sleeps `d` unless shut down first; true if shut down.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Runs the agent until `shutdown` is cancelled: enrol if needed, then keep a
/// session up, reconnecting as needed. Returns an error only for problems
/// retrying cannot fix (invalid config, refused enrolment, unreadable files).
pub async fn run(
    config: AgentConfig,
    driver: Arc<dyn Driver>,
    store: Arc<dyn ExecutionStore>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate()?;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let agent = Agent {
        config,
        driver,
        executor: Arc::new(Executor::new(store)),
        outbox: Arc::new(Outbox::default()),
        heartbeat_seq: AtomicU64::new(0),
        ping_every_ms: AtomicU64::new(tls::SESSION_KEEPALIVE.as_millis() as u64),
        tls: tls::SessionTls::default(),
    };
    // Step tasks live here, across sessions; dropping the set aborts them.
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut identity: Option<AgentIdentity> = None;
    loop {
        while tasks.try_join_next().is_some() {}
        let id = match &identity {
            Some(id) => id.clone(),
            None => {
                let enrolled = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = enroll::ensure_identity(&agent.config) => r,
                };
                match enrolled {
                    Ok(id) => identity.insert(id).clone(),
                    Err(e) if e.is_retryable() => {
                        let delay = backoff.next_delay();
                        tracing::warn!("enrolment failed, retrying in {delay:?}: {e}");
                        if sleep_or_shutdown(delay, &shutdown).await {
                            break;
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let ended = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = agent.session(&id, &mut tasks) => r,
        };
        match ended {
            Ok(end) => {
                backoff.reset();
                let delay = backoff.next_delay();
                tracing::warn!("session ended ({}); reconnecting in {delay:?}", end.reason);
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
            }
            Err(e) if e.is_retryable() => {
                if crate::coordinators::take_redirected(&agent.config) {
                    // Sent to the leader: that is progress, not a failure.
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!("{e}; retrying in {delay:?}");
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!(running = agent.executor.running().len(), "agent stopping");
    tasks.shutdown().await;
    Ok(())
}

/// [`run`] with the [`LocalDriver`] (installing under the configured root,
/// fetching `artifact:` sources from the coordinator into `<state_dir>/cache`)
/// and the [`FileStore`] under `<state_dir>/executions`.
pub async fn run_local(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_local_with(config, shutdown, None).await
}

/// [`run_local`] for an agent process that can replace itself with another
/// build (`agent_upgrade` steps): when `up` asks for a hand-over, the
/// session stops and this returns; the caller then calls
/// [`crate::selfupgrade::handover::replace_process`].
pub async fn run_local_with(
    config: AgentConfig,
    shutdown: CancellationToken,
    up: Option<Arc<crate::selfupgrade::SelfUpgrade>>,
) -> Result<(), AgentError> {
    config.validate()?;
    let stop = shutdown.child_token();
    if let Some(up) = &up {
        up.note_start();
        let (handover, stop) = (up.handover_requested(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = handover.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let store = FileStore::open(config.executions_dir())?;
    let artifacts = Arc::new(crate::fetch::CoordinatorArtifacts::new(config.clone()));
    let driver = LocalDriver::new(config.install_root.clone())
        .with_artifacts(artifacts)
        .with_max_unpacked_bytes(config.max_unpacked_bytes)
        .with_trust(crate::trust::Trust::new(config.trusted_keys.clone(), config.require_signatures));
    let driver = match up {
        Some(up) => driver.with_self_upgrade(up),
        None => driver,
    };
    run(config, Arc::new(driver), Arc::new(store), stop).await
}

#[cfg(test)]
mod tests {
    use convoy_common::model::StepStatus;

    use super::*;
    use crate::store::MemoryStore;

    struct FailingStore;
    impl ExecutionStore for FailingStore {
        fn get(&self, _: &str) -> Result<Option<StepOutcome>, AgentError> {
            Ok(None)
        }
        fn put(&self, id: &str, _: &StepOutcome) -> Result<(), AgentError> {
            Err(AgentError::Store { path: "/x".into(), execution_id: id.into(), message: "disk full".into() })
        }
        fn mark_started(&self, _: &str) -> Result<(), AgentError> {
            Ok(())
        }
        fn was_started(&self, _: &str) -> Result<bool, AgentError> {
            Ok(false)
        }
    }

    #[test]
    fn an_execution_started_by_an_earlier_agent_is_interrupted_not_started() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The agent that started it dies before recording an outcome.
            let ex = Executor::new(Arc::new(crate::store::FileStore::open(dir.path()).unwrap()));
            assert_eq!(ex.admit("r1/h/s/1").unwrap(), Admission::Start);
            ex.mark_started("r1/h/s/1").unwrap();
        }
        let ex = Executor::new(Arc::new(crate::store::FileStore::open(dir.path()).unwrap()));
        assert_eq!(ex.admit("r1/h/s/1").unwrap(), Admission::Interrupted);
        assert_eq!(ex.admit("r1/h/s/1").unwrap(), Admission::AlreadyRunning);
        ex.finish("r1/h/s/1", &StepOutcome::failed(OUTCOME_UNKNOWN)).unwrap();
        assert!(matches!(ex.admit("r1/h/s/1").unwrap(), Admission::Replay(o) if o.message == OUTCOME_UNKNOWN));
        assert_eq!(ex.admit("r1/h/s/2").unwrap(), Admission::Start);
    }

    #[test]
    fn executor_dedups_by_execution_id() {
        let store = Arc::new(MemoryStore::new());
        let ex = Executor::new(store.clone());
        assert_eq!(ex.admit("e1").unwrap(), Admission::Start);
        assert_eq!(ex.admit("e1").unwrap(), Admission::AlreadyRunning);
        assert_eq!(ex.running(), vec!["e1".to_string()]);
        assert_eq!(ex.admit("e2").unwrap(), Admission::Start);
        let outcome = StepOutcome::failed("exit 1");
        ex.finish("e1", &outcome).unwrap();
        assert_eq!(ex.admit("e1").unwrap(), Admission::Replay(outcome.clone()));
        assert_eq!(ex.running(), vec!["e2".to_string()]);
        // Recorded durably: a new executor over the same store replays too.
        let again = Executor::new(store);
        assert_eq!(again.admit("e1").unwrap(), Admission::Replay(outcome));
        // An abandoned (never run) id can start later.
        ex.abandon("e2");
        assert_eq!(ex.admit("e2").unwrap(), Admission::Start);
    }

    #[test]
    fn executor_keeps_unsaved_outcomes() {
        let ex = Executor::new(Arc::new(FailingStore));
        assert_eq!(ex.admit("e").unwrap(), Admission::Start);
        assert!(ex.finish("e", &StepOutcome::ok()).is_err());
        assert_eq!(ex.admit("e").unwrap(), Admission::Replay(StepOutcome::ok()));
        assert!(ex.running().is_empty());
    }

    fn result(id: &str) -> StepResult {
        outcome_to_result(id, &StepOutcome::ok(), false)
    }

    #[tokio::test]
    async fn outbox_routes_keeps_and_resends() {
        let outbox = Outbox::default();
        outbox.deliver(result("a"));
        outbox.deliver(result("a")); // one per id
        outbox.deliver(result("b"));
        let hello = outbox.pending_snapshot();
        assert_eq!(hello.len(), 2);
        outbox.deliver(result("c")); // finished after the Hello was built

        let (tx, mut rx) = mpsc::channel(8);
        outbox.attach(tx, &hello);
        // Only "c" goes down the stream; "a" and "b" went in the Hello.
        let Some(AgentMessage { kind: Some(UpKind::StepResult(r)) }) = rx.recv().await else { panic!() };
        assert_eq!(r.execution_id, "c");
        outbox.deliver(result("d"));
        let Some(AgentMessage { kind: Some(UpKind::StepResult(r)) }) = rx.recv().await else { panic!() };
        assert_eq!(r.execution_id, "d");
        assert!(outbox.pending_snapshot().is_empty());

        // The stream is lost: recent results are offered again, marked replayed.
        drop(rx);
        outbox.detach();
        let mut again: Vec<_> = outbox.pending_snapshot().into_iter().map(|r| (r.execution_id, r.replayed)).collect();
        again.sort();
        let expected: Vec<_> = ["a", "b", "c", "d"].iter().map(|s| (s.to_string(), true)).collect();
        assert_eq!(again, expected);

        // A closed sender does not lose results either.
        let (tx, rx) = mpsc::channel(8);
        outbox.attach(tx, &[]);
        drop(rx);
        outbox.deliver(result("e"));
        assert!(outbox.pending_snapshot().iter().any(|r| r.execution_id == "e"));
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min && first <= min * 2, "{first:?}");
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert!(b.attempt > 10);
        b.reset();
        let again = b.next_delay();
        assert!(again >= min && again <= min * 2, "{again:?}");
        // min == max: no room to jitter, exactly min.
        assert_eq!(Backoff::new(min, min).next_delay(), min);
    }

    /// After a lost session every agent's first retry used to be exactly
    /// `min`: a fleet reconnected in one burst. Now the first retries of
    /// 1,000 agents (seeded) spread over `[min, 2 min]`.
    #[test]
    fn first_retries_are_jittered_across_a_fleet() {
        use rand::SeedableRng;
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let firsts: Vec<Duration> = (0..1_000).map(|_| Backoff::new(min, max).next_delay_with(&mut rng)).collect();
        assert!(firsts.iter().all(|d| *d >= min && *d <= min * 2));
        let distinct: std::collections::BTreeSet<_> = firsts.iter().collect();
        assert!(distinct.len() > 100, "only {} distinct first delays", distinct.len());
        let early = firsts.iter().filter(|d| **d < min + Duration::from_millis(100)).count();
        assert!((300..=700).contains(&early), "{early} of 1000 in the first half of the window");
    }

    #[test]
    fn unsupported_status_reported() {
        let why = convoy_wire::WireError { field: "x", problem: convoy_wire::Problem::Empty };
        let o = unsupported_outcome(&why);
        assert_eq!(o.status, StepStatus::Unsupported);
    }
}

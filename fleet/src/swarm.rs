//! The swarm benchmark behind `bench/swarm.sh`: one process simulates N
//! agents against a coordinator running as its own process.
//!
//! Each simulated agent is the real agent session ([`convoy_agent::session::run`]):
//! it enrols with the join token (its own key and certificate), opens its own
//! mTLS gRPC session, says Hello with its facts, heartbeats at the interval
//! the coordinator asks for, and answers steps with [`SwarmDriver`], which
//! does no work and reports success. Only the driver and the execution store
//! (in memory) are fakes.
//!
//! Measured, in order (see docs/benchmark.md):
//! - `connect_s`: from starting the N agents until all N are enrolled and
//!   connected (as the coordinator's `ListAgents` reports);
//! - `idle_rss_mb`, `idle_cpu_pct`: the coordinator's resident memory at the
//!   end, and its CPU time as a percentage of one core, over `idle` seconds
//!   with the N agents connected and idle;
//! - `rollout_s`: a no-op rolling upgrade of all N (one `exec` step per
//!   host, `max_parallel: 500`), from submitting the plan until the watch
//!   stream reports it succeeded;
//! - `resume_s`: a second such rollout; once half its hosts are done the
//!   coordinator is SIGKILLed and started again over the same data and
//!   address: the time from the kill until every agent is connected again
//!   and the rollout has moved past where the restarted coordinator found it.
//!   The rollout must then succeed with no execution run twice.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convoy_agent::config::AgentConfig;
use convoy_agent::driver::Driver;
use convoy_agent::store::MemoryStore;
use convoy_common::engine::RolloutState;
use convoy_common::model::{StepOutcome, StepSpec};
use convoy_coordinator::enrolment::JoinScope;
use convoy_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::FleetError;
use crate::operator::{self, Operator, connect_operator};
use crate::wait::poll;

/// What the swarm is asked to do.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Simulated agents, 1..=[`MAX_AGENTS`].
    pub agents: usize,
    /// The `convoy-coordinator` binary run as the coordinator.
    pub coordinator_exe: PathBuf,
    /// Working directory (the coordinator's data, the agents' state).
    pub dir: PathBuf,
    /// How long the idle fleet is measured.
    pub idle: Duration,
    /// `--heartbeat-ms` for the coordinator (what it asks of agents).
    pub heartbeat_ms: u64,
    /// `max_parallel` of the rollouts.
    pub max_parallel: usize,
    /// How long each phase may take before the benchmark gives up.
    pub phase_timeout: Duration,
}

/// The most agents one swarm simulates.
pub const MAX_AGENTS: usize = 50_000;

/// What the swarm measured.
#[derive(Debug, Clone, Default)]
pub struct SwarmReport {
    pub agents: usize,
    pub connect_s: f64,
    pub idle_rss_mb: f64,
    pub idle_cpu_pct: f64,
    pub rollout_s: f64,
    pub resume_s: f64,
    /// From the kill until every agent was connected again.
    pub reconnect_s: f64,
    /// Executions the agents ran (two rollouts: 2 N when none ran twice).
    pub executions: u64,
    /// The coordinator's peak RSS over the whole run (MiB).
    pub peak_rss_mb: f64,
    /// CPU seconds the restarted coordinator used until every agent was
    /// back (its start included): what the resume costs the coordinator
    /// alone, whoever else shares the machine.
    pub resume_coordinator_cpu_s: f64,
    /// CPU seconds this process (the simulated agents) used over the same time.
    pub resume_agents_cpu_s: f64,
}

impl SwarmReport {
    /// The benchmark's last line.
    pub fn line(&self) -> String {
        format!(
            "swarm N={} connect_s={:.2} idle_rss_mb={:.1} idle_cpu_pct={:.1} rollout_s={:.2} resume_s={:.2}",
            self.agents, self.connect_s, self.idle_rss_mb, self.idle_cpu_pct, self.rollout_s, self.resume_s
        )
    }
}

/// A driver that does nothing and succeeds, and remembers every execution id
/// it ran (a second run of one is counted as a duplicate).
#[derive(Debug, Default)]
pub struct SwarmDriver {
    seen: Mutex<HashSet<String>>,
    runs: AtomicU64,
    duplicates: AtomicU64,
    /// When each session was welcomed: the agents' side of "connected",
    /// read without asking the coordinator for its whole agent list (which
    /// at 10,000 agents would load the coordinator the benchmark measures).
    welcomes: Mutex<Vec<Instant>>,
}

impl SwarmDriver {
    /// Sessions welcomed at or after `since`, as seconds after it, sorted.
    fn welcomed_since(&self, since: Instant) -> Vec<f64> {
        let all = self.welcomes.lock().unwrap_or_else(|p| p.into_inner());
        let mut after: Vec<f64> =
            all.iter().filter(|&&t| t >= since).map(|t| t.duration_since(since).as_secs_f64()).collect();
        after.sort_by(f64::total_cmp);
        after
    }
}

impl Driver for SwarmDriver {
    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        _step: &'a StepSpec,
    ) -> Pin<Box<dyn std::future::Future<Output = StepOutcome> + Send + 'a>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::Relaxed);
            let fresh = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(execution_id.to_string());
            if !fresh {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            StepOutcome::ok()
        })
    }

    fn installed(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("svc".to_string(), "1.0".to_string())])
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["exec".into()]
    }

    fn welcomed(&self, _record: &mut dyn FnMut(&str, &StepOutcome) -> Result<(), convoy_agent::AgentError>) {
        self.welcomes.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
    }
}

/// The coordinator process.
struct Coordinator {
    exe: PathBuf,
    data_dir: PathBuf,
    heartbeat_ms: u64,
    max_connections: usize,
    child: Child,
    addr: String,
}

impl Coordinator {
    fn spawn(&mut self) -> Result<(), FleetError> {
        self.child =
            spawn_coordinator(&self.exe, &self.data_dir, &self.addr, self.heartbeat_ms, self.max_connections)?.0;
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_coordinator(
    exe: &Path,
    data_dir: &Path,
    listen: &str,
    heartbeat_ms: u64,
    max_connections: usize,
) -> Result<(Child, String), FleetError> {
    let addr_file = data_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let log = data_dir.join("coordinator.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(FleetError::io(&log))?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", listen, "--heartbeat-ms", &heartbeat_ms.to_string()])
        .args(["--max-connections", &max_connections.to_string()])
        // `/metrics` for the handshake counts (its address is in the log).
        .args(["--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        // An allocator preloaded into the swarm (bench/swarm.sh) is for the
        // simulated agents only: the coordinator runs as users run it.
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(FleetError::io(exe))?;
    match poll(Duration::from_secs(60), "the coordinator to listen", || {
        std::fs::read_to_string(&addr_file).ok().filter(|s| !s.trim().is_empty())
    }) {
        Ok(addr) => Ok((child, addr.trim().to_string())),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Resident and peak resident memory (KiB) and CPU seconds of a process, from /proc.
pub fn usage(pid: u32) -> Option<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    let (rss, hwm) = (field("VmRSS:")?, field("VmHWM:")?);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((rss, hwm, ticks / 100.0))
}

/// The plan of the benchmark's rollouts: every agent, one no-op step.
pub fn plan(version: &str, max_parallel: usize) -> String {
    format!(
        "name: swarm\nversion: \"{version}\"\ngroups:\n  - name: all\n    select: {{ swarm: \"yes\" }}\n    \
         strategy: {{ type: rolling, max_parallel: {max_parallel} }}\n    steps:\n      - name: noop\n        \
         exec: {{ command: \"true\" }}\n"
    )
}

/// What the restarted coordinator's `/metrics` says about the resume.
struct ResumeCounts {
    /// TLS handshakes since it (re)started that were full.
    full: u64,
    /// ... and that resumed a session.
    resumed: u64,
    /// Event-log flushes (each one a write to disk) and their total time.
    flushes: u64,
    flush_s: f64,
}

/// [`ResumeCounts`] from `/metrics` at the address the coordinator's latest
/// start logged.
async fn resume_counts(data_dir: &Path, ca_pem: &str, token: &str) -> Result<ResumeCounts, FleetError> {
    let log = data_dir.join("coordinator.log");
    let text = std::fs::read_to_string(&log).map_err(FleetError::io(&log))?;
    const MARK: &str = "dashboard and /metrics: ";
    let base = text
        .lines()
        .rev()
        .find_map(|l| l.split_once(MARK).map(|(_, url)| url.trim().trim_end_matches('/').to_string()))
        .ok_or_else(|| FleetError::NotReady(format!("no metrics address in {}", log.display())))?;
    let auth = format!("Bearer {token}");
    let scraped =
        crate::https::request("GET", &format!("{base}/metrics"), ca_pem, &[("Authorization", &auth)], "").await?;
    let sample = |series: &str| crate::https::sample(&scraped.body, series).unwrap_or(0.0);
    let count = |kind: &str| sample(&format!("convoy_tls_handshakes_total{{kind=\"{kind}\"}}")) as u64;
    Ok(ResumeCounts {
        full: count("full"),
        resumed: count("resumed"),
        flushes: sample("convoy_event_log_flush_seconds_count") as u64,
        flush_s: sample("convoy_event_log_flush_seconds_sum"),
    })
}

/// Enrolments in flight at once. A late answer no longer strands an agent
/// (its retry uses the same key and is admitted as the same enrolment), so
/// this only bounds the connections opened for enrolment at once; the
/// coordinator serialises enrolments anyway.
pub const ENROLMENTS_AT_ONCE: usize = 1024;

/// How long one status call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The simulated agents.
struct Swarm {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    driver: Arc<SwarmDriver>,
}

impl Swarm {
    fn start(url: &str, ca_file: &Path, token: &str, dir: &Path, n: usize) -> Swarm {
        let shutdown = CancellationToken::new();
        let driver = Arc::new(SwarmDriver::default());
        let mut tasks = JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(ENROLMENTS_AT_ONCE));
        for k in 0..n {
            let id = format!("swarm-{k:05}");
            let mut config = AgentConfig::new(url, ca_file, &id, dir.join("agents").join(&id));
            config.join_token = Some(token.to_string());
            config.labels = BTreeMap::from([("swarm".to_string(), "yes".to_string())]);
            config.facts = BTreeMap::from([("rack".to_string(), format!("r{}", k % 40))]);
            // A loaded coordinator answers late: give it the whole handshake timeout.
            config.connect_timeout = Duration::from_secs(10);
            let (driver, s): (Arc<dyn Driver>, _) = (driver.clone(), shutdown.clone());
            let store = Arc::new(MemoryStore::default());
            let gate = gate.clone();
            tasks.spawn(async move {
                // Enrol first (the real enrolment, what `run` would do), a
                // bounded number at a time: see ENROLMENTS_AT_ONCE.
                match gate.acquire().await {
                    Ok(_permit) => {
                        if let Err(e) = convoy_agent::enroll::ensure_identity(&config).await {
                            tracing::warn!(agent = %id, "enrolment failed, the session will retry it: {e}");
                        }
                    }
                    Err(_) => return,
                }
                if let Err(e) = convoy_agent::session::run(config, driver, store, s).await {
                    tracing::error!(agent = %id, "agent stopped: {e}");
                }
            });
        }
        Swarm { shutdown, tasks, driver }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let _ =
            tokio::time::timeout(Duration::from_secs(30), async { while self.tasks.join_next().await.is_some() {} })
                .await;
    }
}

/// Agents the coordinator reports connected (0 if it does not answer within [`CALL_TIMEOUT`]).
async fn connected(op: &Operator) -> usize {
    match tokio::time::timeout(CALL_TIMEOUT, op.clone().list_agents(pb::ListAgentsRequest {})).await {
        Ok(Ok(r)) => operator::connected(&r.into_inner().agents),
        Ok(Err(_)) | Err(_) => 0,
    }
}

/// Poll (every 250 ms) until `n` agents are connected.
async fn wait_connected(op: &Operator, n: usize, timeout: Duration) -> Result<(), FleetError> {
    let deadline = Instant::now() + timeout;
    loop {
        let up = connected(op).await;
        if up >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(FleetError::NotReady(format!("only {up}/{n} agents connected within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Hosts of the rollout done so far.
fn done(s: &pb::RolloutStatus) -> u32 {
    s.groups.iter().map(|g| g.done + g.failed).sum()
}

fn state(s: &pb::RolloutStatus) -> Result<RolloutState, FleetError> {
    Ok(s.state.parse::<RolloutState>()?)
}

/// Submit the plan; follow it on the watch stream until it finishes, or
/// (with `stop_at`) until that many hosts are done. Returns the last status.
async fn follow(
    op: &Operator,
    rollout: &str,
    stop_at: Option<u32>,
    timeout: Duration,
) -> Result<pb::RolloutStatus, FleetError> {
    let watch = async {
        // Changes only after the first status, merged here: at 10,000
        // agents a full status per batch would be most of what the
        // coordinator sends (and the harness parses).
        let req = pb::GetRolloutRequest { rollout_id: rollout.into(), changes_only: true };
        let mut stream = op.clone().watch_rollout(req).await?.into_inner();
        let mut last: Option<pb::RolloutStatus> = None;
        while let Some(next) = stream.message().await? {
            let s = match last.take() {
                Some(mut held) => {
                    convoy_wire::status::merge_status(&mut held, next);
                    held
                }
                None => next,
            };
            let stop = stop_at.is_some_and(|n| done(&s) >= n) || state(&s)?.is_terminal();
            last = Some(s);
            if stop {
                break;
            }
        }
        last.ok_or_else(|| FleetError::NotReady("watch ended without a status".into()))
    };
    tokio::time::timeout(timeout, watch)
        .await
        .map_err(|_| FleetError::NotReady(format!("rollout {rollout} not done within {timeout:?}")))?
}

/// Follows `rollout` on a changes-only watch (opened again until the
/// restarted coordinator answers) and sets `moved` to the seconds after
/// `since` at which more of its hosts were done than when first seen
/// (`first`), or it ended.
async fn watch_until_moved(
    op: Operator,
    rollout: String,
    since: Instant,
    moved: Arc<std::sync::OnceLock<f64>>,
    first: Arc<std::sync::OnceLock<u32>>,
) {
    loop {
        let req = pb::GetRolloutRequest { rollout_id: rollout.clone(), changes_only: true };
        if let Ok(Ok(stream)) = tokio::time::timeout(CALL_TIMEOUT, op.clone().watch_rollout(req)).await {
            let mut stream = stream.into_inner();
            let mut held: Option<pb::RolloutStatus> = None;
            while let Ok(Some(next)) = stream.message().await {
                let s = match held.take() {
                    Some(mut h) => {
                        convoy_wire::status::merge_status(&mut h, next);
                        h
                    }
                    None => next,
                };
                let d = done(&s);
                let start = *first.get_or_init(|| d);
                if d > start || state(&s).is_ok_and(|st| st.is_terminal()) {
                    let _ = moved.set(since.elapsed().as_secs_f64());
                    return;
                }
                held = Some(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run the whole benchmark.
pub async fn run(config: &SwarmConfig) -> Result<SwarmReport, FleetError> {
    let n = config.agents;
    if !(1..=MAX_AGENTS).contains(&n) {
        return Err(FleetError::NotReady(format!("--agents {n} is not in 1..={MAX_AGENTS}")));
    }
    let data_dir = config.dir.join("coordinator");
    let scope =
        JoinScope { uses: u32::try_from(n).unwrap_or(u32::MAX), hosts: None, ttl: Duration::from_secs(24 * 3600) };
    let init = convoy_coordinator::cli::init(&data_dir, &[], Some(scope))?;
    let token = init.join_token.ok_or_else(|| FleetError::NotReady("init made no join token".into()))?;
    let ca_pem = std::fs::read_to_string(&init.ca_file).map_err(FleetError::io(&init.ca_file))?;
    // Every agent holds one connection; operators and enrolments need a few more.
    let max_connections = n + 256;
    let (child, addr) =
        spawn_coordinator(&config.coordinator_exe, &data_dir, "127.0.0.1:0", config.heartbeat_ms, max_connections)?;
    let mut coordinator = Coordinator {
        exe: config.coordinator_exe.clone(),
        data_dir: data_dir.clone(),
        heartbeat_ms: config.heartbeat_ms,
        max_connections,
        child,
        addr: addr.clone(),
    };
    let url = format!("https://{addr}");
    let op = connect_operator(&url, &ca_pem, &init.operator_token).await?;
    let mut report = SwarmReport { agents: n, ..SwarmReport::default() };

    let t = Instant::now();
    let swarm = Swarm::start(&url, &init.ca_file, &token, &config.dir, n);
    wait_connected(&op, n, config.phase_timeout).await?;
    report.connect_s = t.elapsed().as_secs_f64();
    eprintln!("swarm: {n} agents enrolled and connected in {:.2}s", report.connect_s);

    let before = usage(coordinator.pid()).ok_or_else(|| FleetError::NotReady("coordinator gone".into()))?;
    let t = Instant::now();
    tokio::time::sleep(config.idle).await;
    let after = usage(coordinator.pid()).ok_or_else(|| FleetError::NotReady("coordinator gone".into()))?;
    report.idle_rss_mb = after.0 as f64 / 1024.0;
    report.idle_cpu_pct = (after.2 - before.2) / t.elapsed().as_secs_f64() * 100.0;
    eprintln!(
        "swarm: idle {:.0}s: coordinator RSS {:.1} MiB, CPU {:.1}% of a core",
        t.elapsed().as_secs_f64(),
        report.idle_rss_mb,
        report.idle_cpu_pct
    );
    let still = connected(&op).await;
    if still < n {
        return Err(FleetError::NotReady(format!("only {still}/{n} agents still connected after the idle period")));
    }

    let t = Instant::now();
    let id = operator::submit(&op, "swarm.yaml", &plan("2", config.max_parallel)).await?;
    let last = follow(&op, &id, None, config.phase_timeout).await?;
    report.rollout_s = t.elapsed().as_secs_f64();
    if state(&last)? != RolloutState::Succeeded {
        return Err(FleetError::NotReady(format!("rollout {id} ended {}: {}", last.state, last.message)));
    }
    eprintln!("swarm: rollout of {n} hosts in {:.2}s", report.rollout_s);

    let id = operator::submit(&op, "swarm.yaml", &plan("3", config.max_parallel)).await?;
    let half = u32::try_from(n / 2).unwrap_or(u32::MAX);
    let at_kill = follow(&op, &id, Some(half), config.phase_timeout).await?;
    let killed = Instant::now();
    if let Some((_, hwm, _)) = usage(coordinator.pid()) {
        report.peak_rss_mb = hwm as f64 / 1024.0;
    }
    let agents_cpu_at_kill = usage(std::process::id()).map_or(0.0, |u| u.2);
    coordinator.kill();
    coordinator.spawn()?;
    let listening = killed.elapsed().as_secs_f64();
    eprintln!(
        "swarm: coordinator killed at {}/{n} hosts done and restarted; listening again after {listening:.2}s",
        done(&at_kill)
    );
    let op = connect_operator(&url, &ca_pem, &init.operator_token).await?;
    // The rollout is followed on a changes-only watch, as an operator would:
    // polling full statuses (10,000 hosts each) would load both sides of
    // the very resume being measured.
    let moved_at = Arc::new(std::sync::OnceLock::new());
    let first = Arc::new(std::sync::OnceLock::new());
    // Aborted when the set drops, whichever way this function returns.
    let mut watcher = JoinSet::new();
    watcher.spawn(watch_until_moved(op.clone(), id.clone(), killed, moved_at.clone(), first.clone()));
    let mut reconnected = None;
    while reconnected.is_none() || moved_at.get().is_none() {
        if killed.elapsed() > config.phase_timeout {
            return Err(FleetError::NotReady(format!("the rollout did not resume within {:?}", config.phase_timeout)));
        }
        // Welcomes are counted per session, not per agent: the
        // coordinator's list confirms, asked only once they add up.
        if reconnected.is_none() && swarm.driver.welcomed_since(killed).len() >= n && connected(&op).await >= n {
            reconnected = Some(killed.elapsed().as_secs_f64());
            report.resume_coordinator_cpu_s = usage(coordinator.pid()).map_or(0.0, |u| u.2);
            report.resume_agents_cpu_s = usage(std::process::id()).map_or(0.0, |u| u.2 - agents_cpu_at_kill);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = moved_at.get().copied();
    let first = first.get().copied();
    let back = swarm.driver.welcomed_since(killed);
    let at = |q: f64| back.get(((back.len() as f64 * q) as usize).min(back.len().saturating_sub(1))).copied();
    eprintln!(
        "swarm: sessions welcomed after the kill: {} (10% {:.2}s, median {:.2}s, 90% {:.2}s, last {:.2}s)",
        back.len(),
        at(0.1).unwrap_or_default(),
        at(0.5).unwrap_or_default(),
        at(0.9).unwrap_or_default(),
        back.last().copied().unwrap_or_default()
    );
    match resume_counts(&data_dir, &ca_pem, &init.operator_token).await {
        Ok(c) => {
            eprintln!(
                "swarm: since the restart: TLS handshakes {} full, {} resumed; event-log flushes {} ({:.2}s)",
                c.full, c.resumed, c.flushes, c.flush_s
            );
        }
        Err(e) => eprintln!("swarm: handshake counts unavailable: {e}"),
    }
    report.reconnect_s = reconnected.unwrap_or_default();
    report.resume_s = report.reconnect_s.max(moved.unwrap_or_default());
    eprintln!(
        "swarm: CPU until every agent was back: coordinator {:.2}s ({:.2} ms per agent), simulated agents {:.2}s \
         ({:.2} ms per agent), {:.1} of this machine's {} cores busy with the two",
        report.resume_coordinator_cpu_s,
        report.resume_coordinator_cpu_s * 1000.0 / n as f64,
        report.resume_agents_cpu_s,
        report.resume_agents_cpu_s * 1000.0 / n as f64,
        (report.resume_coordinator_cpu_s + report.resume_agents_cpu_s) / report.reconnect_s.max(1e-3),
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    eprintln!(
        "swarm: all agents back {:.2}s after the kill; rollout moving again after {:.2}s (from {} done)",
        report.reconnect_s,
        moved.unwrap_or_default(),
        first.unwrap_or_default()
    );
    let last = follow(&op, &id, None, config.phase_timeout).await?;
    if state(&last)? != RolloutState::Succeeded {
        return Err(FleetError::NotReady(format!("rollout {id} ended {}: {}", last.state, last.message)));
    }
    if let Some((_, hwm, _)) = usage(coordinator.pid()) {
        report.peak_rss_mb = report.peak_rss_mb.max(hwm as f64 / 1024.0);
    }
    report.executions = swarm.driver.runs.load(Ordering::Relaxed);
    let duplicates = swarm.driver.duplicates.load(Ordering::Relaxed);
    swarm.stop().await;
    if duplicates > 0 || report.executions != 2 * n as u64 {
        return Err(FleetError::NotReady(format!(
            "{} executions for 2 rollouts of {n} hosts, {duplicates} of them run twice",
            report.executions
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_plan_is_valid_and_rolls_500_at_a_time() {
        let yaml = plan("2", 500);
        convoy_common::plan::parse_plan("swarm.yaml", &yaml).expect("valid plan");
        assert!(yaml.contains("max_parallel: 500"), "{yaml}");
    }

    #[test]
    fn the_last_line_has_the_documented_fields() {
        let r = SwarmReport { agents: 10, connect_s: 1.0, rollout_s: 2.0, ..SwarmReport::default() };
        let line = r.line();
        assert!(line.starts_with("swarm N=10 connect_s=1.00 idle_rss_mb="), "{line}");
        for field in ["idle_cpu_pct=", "rollout_s=2.00", "resume_s="] {
            assert!(line.contains(field), "{line} lacks {field}");
        }
    }

    #[tokio::test]
    async fn the_driver_counts_a_second_run_of_an_execution_as_a_duplicate() {
        let d = SwarmDriver::default();
        let step = StepSpec {
            name: "noop".into(),
            timeout: Duration::from_secs(1),
            kind: convoy_common::model::StepKind::Exec(Default::default()),
            rerun_safe: false,
        };
        assert!(d.run("r/h/0/1", &step).await.status.is_success());
        d.run("r/h/0/1", &step).await;
        d.run("r/h/0/2", &step).await;
        assert_eq!(d.runs.load(Ordering::Relaxed), 3);
        assert_eq!(d.duplicates.load(Ordering::Relaxed), 1);
    }
}

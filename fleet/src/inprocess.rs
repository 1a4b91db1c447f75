//! The in-process flavour: a coordinator (real gRPC over mTLS on
//! 127.0.0.1:0, real sled store in a temp dir) and agents (the real agent
//! session code, with any [`Driver`]) as tasks of the caller's tokio runtime.
//!
//! - [`Cluster`]: the coordinator, restartable over the same data, and its
//!   agents, each killable. [`Cluster::resume`] does the same over a
//!   directory a cluster left, such as an unpacked fixture store, on a clock
//!   set to when it was left.
//!   The coordinator also serves its HTTPS listener (dashboard, `/metrics`)
//!   on another ephemeral port, [`Cluster::http_url`].
//! - [`FakeDriver`]: records every execution, can fail chosen hosts, reports
//!   an installed version for archive steps, and answers an exec step whose
//!   command is `echo` with its arguments (joined by spaces) on stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_agent::config::AgentConfig;
use convoy_agent::driver::Driver;
use convoy_agent::store::MemoryStore;
use convoy_common::invariants::LogEntry;
use convoy_common::model::{RolloutSpec, StepKind, StepOutcome, StepSpec, UnixMillis};
use convoy_coordinator::enrolment::JoinScope;
use convoy_coordinator::runtime::{Clock, RuntimeConfig};
use convoy_coordinator::server::ServerConfig;
use convoy_proto::v1 as pb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::operator::{self, Operator, connect_operator};
use crate::{FleetError, replay};

/// One execution the fake driver ran.
#[derive(Debug, Clone)]
pub struct Run {
    pub host: String,
    pub execution_id: String,
    pub step: String,
    /// The arguments of an exec step as the agent received them.
    pub args: Vec<String>,
}

/// A driver that does no real work: it records executions and succeeds,
/// except for hosts listed in `fail_hosts` (they fail their first step).
#[derive(Debug, Default)]
pub struct FakeDriver {
    pub host: String,
    pub runs: Arc<Mutex<Vec<Run>>>,
    pub fail_hosts: Arc<Mutex<BTreeSet<String>>>,
    /// How long each step takes (tokio time).
    pub delay: Duration,
    pub installed: Mutex<BTreeMap<String, String>>,
}

impl Driver for FakeDriver {
    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        step: &'a StepSpec,
    ) -> Pin<Box<dyn std::future::Future<Output = StepOutcome> + Send + 'a>> {
        Box::pin(async move {
            self.runs.lock().unwrap().push(Run {
                host: self.host.clone(),
                execution_id: execution_id.to_string(),
                step: step.name.clone(),
                args: if let StepKind::Exec(e) = &step.kind { e.args.clone() } else { Vec::new() },
            });
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fail_hosts.lock().unwrap().contains(&self.host) {
                return StepOutcome::failed(format!("{} is set to fail", self.host));
            }
            let mut out = StepOutcome::ok();
            if let StepKind::Exec(e) = &step.kind
                && e.command == "echo"
            {
                out.stdout_tail = format!("{}\n", e.args.join(" "));
            }
            if let StepKind::Archive(a) = &step.kind {
                self.installed.lock().unwrap().insert(a.component.clone(), a.version.clone());
                out.installed = Some((a.component.clone(), a.version.clone()));
            }
            // Like the real agent: an archive rollback reports the version it went back to.
            if let StepKind::ArchiveRollback(a) = &step.kind
                && let Some(v) = &a.to_version
            {
                self.installed.lock().unwrap().insert(a.component.clone(), v.clone());
                out.installed = Some((a.component.clone(), v.clone()));
            }
            out
        })
    }

    fn installed(&self) -> BTreeMap<String, String> {
        self.installed.lock().unwrap().clone()
    }

    /// It succeeds at every kind of step, so it says it runs them all.
    fn capabilities(&self) -> Vec<String> {
        convoy_common::model::StepKindName::ALL.iter().map(|k| k.as_str().to_string()).collect()
    }
}

struct AgentTask {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// A coordinator and in-process agents.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub url: String,
    /// The coordinator's HTTPS listener (dashboard, `/metrics`): `https://127.0.0.1:PORT`.
    pub http_url: String,
    pub ca_file: PathBuf,
    pub join_token: String,
    pub operator_token: String,
    /// Shared record of every execution by every fake driver.
    pub runs: Arc<Mutex<Vec<Run>>>,
    pub fail_hosts: Arc<Mutex<BTreeSet<String>>>,
    /// The connection limits the coordinator is (re)started with.
    pub connections: convoy_coordinator::connections::Limits,
    /// The coordinator's clock: the system's unless [`Cluster::resume`] set one.
    clock: Option<Clock>,
    coordinator: Option<(CancellationToken, JoinHandle<()>)>,
    agents: BTreeMap<String, AgentTask>,
}

/// Fast heartbeats so lost agents are noticed quickly in tests.
pub fn fast_runtime() -> RuntimeConfig {
    RuntimeConfig {
        heartbeat_interval: Duration::from_millis(100),
        agent_timeout: Duration::from_millis(600),
        ..RuntimeConfig::default()
    }
}

impl Cluster {
    /// Initialise a data dir and start a coordinator on 127.0.0.1:0.
    pub async fn start(runtime: RuntimeConfig) -> Result<Cluster, FleetError> {
        Cluster::start_with(runtime, Default::default()).await
    }

    /// [`Cluster::start`] with these connection limits.
    pub async fn start_with(
        runtime: RuntimeConfig,
        connections: convoy_coordinator::connections::Limits,
    ) -> Result<Cluster, FleetError> {
        let dir = tempfile::tempdir().map_err(FleetError::io(std::env::temp_dir()))?;
        let data_dir = dir.path().join("coordinator");
        // One token for all the test's agents; tests of join-token scopes
        // make their own.
        let scope = JoinScope { uses: 1000, ..JoinScope::default() };
        let init = convoy_coordinator::cli::init(&data_dir, &[], Some(scope))?;
        let mut c = Cluster {
            url: String::new(),
            http_url: String::new(),
            ca_file: init.ca_file,
            join_token: init.join_token.ok_or_else(|| FleetError::NotReady("init made no join token".into()))?,
            operator_token: init.operator_token,
            data_dir,
            dir,
            runs: Arc::default(),
            fail_hosts: Arc::default(),
            connections,
            clock: None,
            coordinator: None,
            agents: BTreeMap::new(),
        };
        c.start_coordinator(runtime).await?;
        Ok(c)
    }

    /// A cluster over `dir` as [`Cluster::start`] laid it out (`coordinator/`
    /// the data directory, `agents/ID/` each agent's state with its
    /// certificate), e.g. an unpacked fixture store: its coordinator starts
    /// on a clock at `clock_start`, its agents use the certificates they
    /// have. There is no join token (a stored one is only a digest).
    pub async fn resume(
        dir: tempfile::TempDir,
        runtime: RuntimeConfig,
        clock_start: UnixMillis,
    ) -> Result<Cluster, FleetError> {
        let data_dir = dir.path().join("coordinator");
        let token_path = convoy_coordinator::tls::operator_token_path(&data_dir);
        let operator_token =
            std::fs::read_to_string(&token_path).map_err(FleetError::io(token_path))?.trim().to_string();
        let mut c = Cluster {
            url: String::new(),
            http_url: String::new(),
            ca_file: convoy_coordinator::tls::PkiPaths::new(&data_dir).ca_cert(),
            join_token: "no-join-token-in-a-resumed-cluster".into(),
            operator_token,
            data_dir,
            dir,
            runs: Arc::default(),
            fail_hosts: Arc::default(),
            connections: Default::default(),
            clock: Some(Clock::starting_at(clock_start)),
            coordinator: None,
            agents: BTreeMap::new(),
        };
        c.start_coordinator(runtime).await?;
        Ok(c)
    }

    /// (Re)start the coordinator on a new ephemeral port over the same data.
    pub async fn start_coordinator(&mut self, runtime: RuntimeConfig) -> Result<(), FleetError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(FleetError::io("127.0.0.1:0"))?;
        self.serve_on(listener, runtime).await
    }

    /// Stop the coordinator and start it again on the same gRPC address, so
    /// running agents reconnect by themselves (as after a real restart).
    pub async fn restart_coordinator(&mut self, runtime: RuntimeConfig) -> Result<(), FleetError> {
        let addr = self.url.trim_start_matches("https://").to_string();
        self.stop_coordinator().await?;
        // The old listener is closed once the server has stopped; the port
        // is free unless another process took it in between (then: an error).
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(FleetError::io(addr.clone()))?;
        self.serve_on(listener, runtime).await
    }

    async fn serve_on(&mut self, listener: tokio::net::TcpListener, runtime: RuntimeConfig) -> Result<(), FleetError> {
        self.url = format!("https://{}", listener.local_addr().map_err(FleetError::io("127.0.0.1:0"))?);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(FleetError::io("127.0.0.1:0"))?;
        self.http_url = format!("https://{}", http.local_addr().map_err(FleetError::io("127.0.0.1:0"))?);
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            data_dir: self.data_dir.clone(),
            runtime,
            connections: self.connections,
            artifacts: Default::default(),
            audit_retention: None,
        };
        let s = shutdown.clone();
        let clock = self.clock.unwrap_or_else(Clock::system);
        let task = tokio::spawn(async move {
            if let Err(e) = convoy_coordinator::server::serve(listener, Some(http), config, clock, s).await {
                panic!("coordinator failed: {e}");
            }
        });
        self.coordinator = Some((shutdown, task));
        Ok(())
    }

    /// Stop the coordinator and wait for it (and its store) to close.
    pub async fn stop_coordinator(&mut self) -> Result<(), FleetError> {
        if let Some((token, task)) = self.coordinator.take() {
            token.cancel();
            let stopped = tokio::time::timeout(Duration::from_secs(20), task).await;
            if !matches!(stopped, Ok(Ok(()))) {
                return Err(FleetError::NotReady(format!("coordinator did not stop: {stopped:?}")));
            }
        }
        Ok(())
    }

    /// Start an in-process agent with a fake driver.
    pub fn add_fake_agent(&mut self, id: &str, labels: &[(&str, &str)], delay: Duration) -> Result<(), FleetError> {
        let driver = Arc::new(FakeDriver {
            host: id.to_string(),
            runs: self.runs.clone(),
            fail_hosts: self.fail_hosts.clone(),
            delay,
            installed: Mutex::new(BTreeMap::from([("svc".to_string(), "1.0.0".to_string())])),
        });
        self.add_agent(id, labels, driver)
    }

    /// Start an in-process agent with this driver.
    pub fn add_agent(&mut self, id: &str, labels: &[(&str, &str)], driver: Arc<dyn Driver>) -> Result<(), FleetError> {
        self.start_agent(self.agent_config(id, labels), driver)
    }

    /// The configuration [`Cluster::add_agent`] gives agent `id`: enrolling
    /// with the cluster's join token, its state in `<dir>/agents/<id>`, quick
    /// heartbeats and reconnects. Change it and hand it to [`Cluster::start_agent`].
    pub fn agent_config(&self, id: &str, labels: &[(&str, &str)]) -> AgentConfig {
        let state = self.dir.path().join("agents").join(id);
        let mut config = AgentConfig::new(self.url.clone(), self.ca_file.clone(), id, state);
        config.join_token = Some(self.join_token.clone());
        config.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config.heartbeat_interval = Duration::from_millis(100);
        config.reconnect_min = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        config
    }

    /// Start an in-process agent with this configuration and driver.
    pub fn start_agent(&mut self, config: AgentConfig, driver: Arc<dyn Driver>) -> Result<(), FleetError> {
        let id = config.host_id.clone();
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let store = Arc::new(MemoryStore::default());
        let task = tokio::spawn(async move {
            let _ = convoy_agent::session::run(config, driver, store, s).await;
        });
        self.agents.insert(id, AgentTask { shutdown, task });
        Ok(())
    }

    /// Start an in-process agent with the real [`LocalDriver`], installing
    /// under `<dir>/agents/<id>/install` and fetching `artifact:` sources from
    /// this coordinator into `<dir>/agents/<id>/cache`. Returns its state dir.
    pub fn add_local_agent(&mut self, id: &str, labels: &[(&str, &str)]) -> Result<PathBuf, FleetError> {
        let config = self.agent_config(id, labels);
        let state = config.state_dir.clone();
        let fetcher = Arc::new(convoy_agent::fetch::CoordinatorArtifacts::new(config.clone()));
        let driver = convoy_agent::LocalDriver::new(config.install_root.clone()).with_artifacts(fetcher);
        self.start_agent(config, Arc::new(driver))?;
        Ok(state)
    }

    /// Stop an agent (its session drops; the coordinator sees it lost).
    pub async fn kill_agent(&mut self, id: &str) {
        if let Some(a) = self.agents.remove(id) {
            a.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
        }
    }

    pub async fn operator(&self) -> Result<Operator, FleetError> {
        let ca = std::fs::read_to_string(&self.ca_file).map_err(FleetError::io(&self.ca_file))?;
        connect_operator(&self.url, &ca, &self.operator_token).await
    }

    /// A client of the operator tools' service (logs, holds, audit).
    pub async fn ops(&self) -> Result<operator::Ops, FleetError> {
        let ca = std::fs::read_to_string(&self.ca_file).map_err(FleetError::io(&self.ca_file))?;
        operator::connect_ops(&self.url, &ca, &self.operator_token).await
    }

    /// Wait until `n` agents are connected.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) -> Result<(), FleetError> {
        let op = self.operator().await?;
        operator::wait_agents(&op, timeout, "agents to connect", |list| operator::connected(list) >= n).await?;
        Ok(())
    }

    /// Submit a plan (named `test.yaml`); returns the rollout id.
    pub async fn submit(&self, yaml: &str) -> Result<String, FleetError> {
        Ok(operator::submit(&self.operator().await?, "test.yaml", yaml).await?)
    }

    /// Follow a rollout until it reaches a terminal state.
    pub async fn wait_finished(&self, rollout: &str, timeout: Duration) -> Result<pb::RolloutStatus, FleetError> {
        let op = self.operator().await?;
        operator::known_state(operator::wait_rollout(&op, rollout, timeout, "rollout state", operator::finished).await?)
    }

    /// The execution log as the coordinator stored it, replayed to actions.
    /// Stops the coordinator first (the store is single-process).
    pub async fn event_log(&mut self, rollout: &str) -> Result<(RolloutSpec, Vec<LogEntry>), FleetError> {
        self.stop_coordinator().await?;
        replay::event_log(&self.data_dir, rollout)
    }

    pub async fn shutdown(mut self) {
        for (_, a) in std::mem::take(&mut self.agents) {
            a.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
        }
        let _ = self.stop_coordinator().await;
    }
}

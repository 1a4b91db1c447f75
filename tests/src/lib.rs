//! Shared harness for Convoy's cross-component tests.
//!
//! - [`Cluster`]: a coordinator (real gRPC over mTLS on 127.0.0.1:0, real sled
//!   store in a temp dir) and in-process agents (the real agent session code)
//!   with any [`Driver`], typically the [`FakeDriver`] here.
//! - [`FakeDriver`]: records every execution, can fail chosen hosts or steps,
//!   reports an installed version for archive steps, and answers an exec step
//!   whose command is `echo` with its arguments (joined by spaces) on stdout.
//! - [`Cluster::resume`]: the same over a directory a cluster left, such as
//!   an unpacked fixture store, on a clock set to when it was left.
//! - [`event_log`]: reads a rollout's stored events after the coordinator has
//!   stopped and replays them through a fresh engine, giving the
//!   `(now, event, actions)` log the invariant checker reads.
//!
//! - [`logs::LogCapture`]: the tracing output of the test's process, to assert
//!   that a refusal was logged.
//!
//! Tests wait on conditions with deadlines, never on sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use convoy_agent::driver::Driver;
use convoy_agent::store::MemoryStore;
use convoy_common::engine::Engine;
use convoy_common::invariants::LogEntry;
use convoy_common::model::{StepKind, StepOutcome, StepSpec, UnixMillis};
use convoy_coordinator::enrolment::JoinScope;
use convoy_coordinator::runtime::{Clock, RuntimeConfig};
use convoy_coordinator::server::{ServerConfig, open_store};
use convoy_coordinator::store::Store;
use convoy_proto::v1 as pb;
use convoy_proto::v1::operator_service_client::OperatorServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub mod docker;
pub mod logs;

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
                args: match &step.kind {
                    StepKind::Exec(e) => e.args.clone(),
                    _ => Vec::new(),
                },
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

    fn capabilities(&self) -> Vec<String> {
        vec!["exec".into(), "archive".into(), "file".into()]
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

pub type Operator = OperatorServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        req.metadata_mut().insert("x-convoy-user", "test".parse().expect("ascii"));
        Ok(req)
    }
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
    pub async fn start(runtime: RuntimeConfig) -> anyhow::Result<Cluster> {
        Cluster::start_with(runtime, Default::default()).await
    }

    /// [`Cluster::start`] with these connection limits.
    pub async fn start_with(
        runtime: RuntimeConfig,
        connections: convoy_coordinator::connections::Limits,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("coordinator");
        // One token for all the test's agents; tests of join-token scopes
        // make their own.
        let scope = JoinScope { uses: 1000, ..JoinScope::default() };
        let init = convoy_coordinator::cli::init(&data_dir, &[], Some(scope))?;
        let mut c = Cluster {
            url: String::new(),
            ca_file: init.ca_file,
            join_token: init.join_token.context("init made no join token")?,
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
    ) -> anyhow::Result<Cluster> {
        let data_dir = dir.path().join("coordinator");
        let operator_token = std::fs::read_to_string(convoy_coordinator::tls::operator_token_path(&data_dir))
            .context("the data directory has no operator token")?
            .trim()
            .to_string();
        let mut c = Cluster {
            url: String::new(),
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
    pub async fn start_coordinator(&mut self, runtime: RuntimeConfig) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.url = format!("https://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            data_dir: self.data_dir.clone(),
            runtime,
            connections: self.connections,
            artifacts: Default::default(),
        };
        let s = shutdown.clone();
        let clock = self.clock.unwrap_or_else(Clock::system);
        let task = tokio::spawn(async move {
            if let Err(e) = convoy_coordinator::server::run_with_clock(listener, config, clock, s).await {
                panic!("coordinator failed: {e}");
            }
        });
        self.coordinator = Some((shutdown, task));
        Ok(())
    }

    /// Stop the coordinator and wait for it (and its store) to close.
    pub async fn stop_coordinator(&mut self) -> anyhow::Result<()> {
        if let Some((token, task)) = self.coordinator.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(20), task).await.context("coordinator did not stop")??;
        }
        Ok(())
    }

    /// Start an in-process agent with a fake driver.
    pub fn add_fake_agent(&mut self, id: &str, labels: &[(&str, &str)], delay: Duration) -> anyhow::Result<()> {
        let driver = Arc::new(FakeDriver {
            host: id.to_string(),
            runs: self.runs.clone(),
            fail_hosts: self.fail_hosts.clone(),
            delay,
            installed: Mutex::new(BTreeMap::from([("svc".to_string(), "1.0.0".to_string())])),
        });
        self.add_agent(id, labels, driver)
    }

    pub fn add_agent(&mut self, id: &str, labels: &[(&str, &str)], driver: Arc<dyn Driver>) -> anyhow::Result<()> {
        let state = self.dir.path().join("agents").join(id);
        let mut config = convoy_agent::config::AgentConfig::new(self.url.clone(), self.ca_file.clone(), id, state);
        config.join_token = Some(self.join_token.clone());
        config.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config.heartbeat_interval = Duration::from_millis(100);
        config.reconnect_min = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let store = Arc::new(MemoryStore::default());
        let task = tokio::spawn(async move {
            let _ = convoy_agent::session::run(config, driver, store, s).await;
        });
        self.agents.insert(id.to_string(), AgentTask { shutdown, task });
        Ok(())
    }

    /// Start an in-process agent with the real [`LocalDriver`], installing
    /// under `<dir>/agents/<id>/install` and fetching `artifact:` sources from
    /// this coordinator into `<dir>/agents/<id>/cache`. Returns its state dir.
    pub fn add_local_agent(&mut self, id: &str, labels: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
        let state = self.dir.path().join("agents").join(id);
        let config = convoy_agent::config::AgentConfig::new(self.url.clone(), self.ca_file.clone(), id, state.clone());
        let fetcher = Arc::new(convoy_agent::fetch::CoordinatorArtifacts::new(config.clone()));
        let driver = convoy_agent::LocalDriver::new(config.install_root.clone()).with_artifacts(fetcher);
        self.add_agent(id, labels, Arc::new(driver))?;
        Ok(state)
    }

    /// Stop an agent (its session drops; the coordinator sees it lost).
    pub async fn kill_agent(&mut self, id: &str) {
        if let Some(a) = self.agents.remove(id) {
            a.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
        }
    }

    pub async fn operator(&self) -> anyhow::Result<Operator> {
        let ca = std::fs::read_to_string(&self.ca_file)?;
        connect_operator(&self.url, &ca, &self.operator_token).await
    }

    /// Wait until `n` agents are connected.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut op = self.operator().await?;
        wait_until(timeout, "agents to connect", || {
            let mut op = op.clone();
            async move {
                let list = op.list_agents(pb::ListAgentsRequest {}).await.ok()?.into_inner().agents;
                (list.iter().filter(|a| a.connected).count() >= n).then_some(())
            }
        })
        .await?;
        let _ = &mut op;
        Ok(())
    }

    /// Submit a plan; returns the rollout id.
    pub async fn submit(&self, yaml: &str) -> anyhow::Result<String> {
        let mut op = self.operator().await?;
        let r = op
            .submit_plan(pb::SubmitPlanRequest {
                catalogs: Default::default(),
                file_name: "test.yaml".into(),
                plan_yaml: yaml.into(),
                dry_run: false,
            })
            .await?
            .into_inner();
        Ok(r.rollout_id)
    }

    /// Follow a rollout until it reaches a terminal state.
    pub async fn wait_finished(&self, rollout: &str, timeout: Duration) -> anyhow::Result<pb::RolloutStatus> {
        wait_state(self, rollout, timeout, |s| matches!(s, "succeeded" | "failed" | "aborted" | "rolled_back")).await
    }

    /// The execution log as the coordinator stored it, replayed to actions.
    /// Stops the coordinator first (the store is single-process).
    pub async fn event_log(
        &mut self,
        rollout: &str,
    ) -> anyhow::Result<(convoy_common::model::RolloutSpec, Vec<LogEntry>)> {
        self.stop_coordinator().await?;
        event_log(&self.data_dir, rollout)
    }

    pub async fn shutdown(mut self) {
        for (_, a) in std::mem::take(&mut self.agents) {
            a.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
        }
        let _ = self.stop_coordinator().await;
    }
}

/// An operator client for the coordinator at `url` (https), checked against
/// the CA certificate `ca_pem`, sending `token` as its bearer token.
pub async fn connect_operator(url: &str, ca_pem: &str, token: &str) -> anyhow::Result<Operator> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(convoy_coordinator::tls::DEFAULT_SERVER_NAME);
    let channel = Channel::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    Ok(OperatorServiceClient::with_interceptor(channel, bearer))
}

/// Poll a status until `done(state)` holds.
pub async fn wait_state(
    c: &Cluster,
    rollout: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<pb::RolloutStatus> {
    let op = c.operator().await?;
    wait_until(timeout, "rollout state", || {
        let mut op = op.clone();
        let done = &done;
        async move {
            let s = op.get_rollout(pb::GetRolloutRequest { rollout_id: rollout.to_string() }).await.ok()?.into_inner();
            done(&s.state).then_some(s)
        }
    })
    .await
}

/// Poll `f` every 10ms until it returns `Some`, or fail after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Read a rollout's stored events and replay them into a fresh engine.
pub fn event_log(data_dir: &Path, rollout: &str) -> anyhow::Result<(convoy_common::model::RolloutSpec, Vec<LogEntry>)> {
    let store = open_store(data_dir)?;
    let record = store.rollouts()?.into_iter().find(|r| r.id == rollout).context("rollout not stored")?;
    let mut engine = Engine::new(rollout, record.spec.clone());
    let mut log = Vec::new();
    for e in store.events(rollout)? {
        let actions = engine.handle(e.now, e.event.clone());
        log.push(LogEntry { now: e.now, event: e.event, actions });
    }
    Ok((record.spec, log))
}

/// The configuration of a hand-made agent peer for `host`, with its own
/// state directory `state` under the cluster's directory, enrolling with `token`.
pub fn raw_agent_config(c: &Cluster, host: &str, state: &str, token: &str) -> convoy_agent::config::AgentConfig {
    let mut cfg = convoy_agent::config::AgentConfig::new(
        c.url.clone(),
        c.ca_file.clone(),
        host,
        c.dir.path().join("raw").join(state),
    );
    cfg.join_token = Some(token.to_string());
    cfg
}

/// A hand-made agent peer: a client holding the certificate enrolled (once,
/// then kept in its state directory) for `cfg`'s host.
pub async fn raw_agent_client(
    cfg: &convoy_agent::config::AgentConfig,
) -> anyhow::Result<pb::agent_service_client::AgentServiceClient<Channel>> {
    let identity = convoy_agent::enroll::ensure_identity(cfg).await?;
    let ca = convoy_agent::tls::read_ca(&cfg.ca_file)?;
    let tls = convoy_agent::tls::client_tls(cfg, &ca, Some(&identity));
    let channel = convoy_agent::tls::connect(cfg, tls).await?;
    Ok(pb::agent_service_client::AgentServiceClient::new(channel))
}

/// A Hello from `id` with these labels.
pub fn hello(id: &str, labels: &[(&str, &str)]) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            agent_id: id.into(),
            agent_version: "test".into(),
            protocol_version: convoy_proto::PROTOCOL_VERSION,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })),
    }
}

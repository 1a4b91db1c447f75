//! The process flavour: a local fleet of real processes, one coordinator and
//! N agents, each the `convoy` binary re-executed (`convoy __coordinator
//! serve`, `convoy __agent`), on 127.0.0.1 under one directory:
//!
//! ```text
//! coordinator/          the coordinator's data (init'ed here; coordinator.addr)
//! join-token            the one join token every agent reads (never on a command line)
//! hosts/ID/agent/       each agent's state (its certificate, execution records)
//! logs/coordinator.log  with `keep_logs`: each process's stderr (kept
//! logs/agent-ID.log     across restarts)
//! ```
//!
//! Any process can be SIGKILLed and started again over the same state.
//! Everything is stopped when the [`LocalFleet`] drops: agents first (SIGTERM,
//! then SIGKILL after 5 s), then what [`LocalFleet::at_teardown`] registered,
//! then the coordinator.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use convoy_coordinator::enrolment::JoinScope;

use crate::FleetError;
use crate::operator::{self, Operator, connect_operator};
use crate::wait::poll;

/// One agent process: its host id, labels, and how it runs.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub id: String,
    pub labels: Vec<(String, String)>,
    /// Where it installs archives (the agent's default, `<state>/install`, if `None`).
    pub install_root: Option<PathBuf>,
    /// Extra environment for the agent (and so for every command its steps run).
    pub env: Vec<(String, String)>,
    /// A `convoy-agent` binary to run instead of the fleet's `exe __agent`
    /// (another release of the agent, for compatibility tests).
    pub binary: Option<PathBuf>,
}

impl AgentSpec {
    pub fn new<K: Into<String>, V: Into<String>>(id: &str, labels: impl IntoIterator<Item = (K, V)>) -> AgentSpec {
        AgentSpec {
            id: id.to_string(),
            labels: labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            install_root: None,
            env: Vec::new(),
            binary: None,
        }
    }

    /// Run this `convoy-agent` binary rather than the fleet's own.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> AgentSpec {
        self.binary = Some(path.into());
        self
    }

    pub fn install_root(mut self, root: impl Into<PathBuf>) -> AgentSpec {
        self.install_root = Some(root.into());
        self
    }

    pub fn env(mut self, env: Vec<(String, String)>) -> AgentSpec {
        self.env = env;
        self
    }
}

type Teardown = Box<dyn FnOnce() + Send>;

pub struct LocalFleet {
    /// The `convoy` binary every process runs.
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// The coordinator's data directory (`convoy --data-dir` reaches it).
    pub data_dir: PathBuf,
    /// https://127.0.0.1:PORT
    pub url: String,
    pub ca_file: PathBuf,
    pub ca_pem: String,
    pub operator_token: String,
    /// The file agents read their join token from.
    pub join_token_file: PathBuf,
    heartbeat_ms: u64,
    keep_logs: bool,
    coordinator: Child,
    /// In start order; a restarted agent keeps its place.
    agents: Vec<(AgentSpec, Child)>,
    teardown: Vec<Teardown>,
}

impl LocalFleet {
    /// Initialise a coordinator data directory under `dir` and start the
    /// coordinator (`exe __coordinator serve`) on an ephemeral port, asking
    /// agents for a heartbeat every `heartbeat_ms`. With `keep_logs` each
    /// process's stderr goes to `dir/logs/` (else it is discarded).
    pub fn start(exe: &Path, dir: &Path, heartbeat_ms: u64, keep_logs: bool) -> Result<LocalFleet, FleetError> {
        let data_dir = dir.join("coordinator");
        // One token for the whole local fleet, handed to agents in a file
        // (never on their command lines).
        let scope = JoinScope { uses: 10_000, hosts: None, ttl: Duration::from_secs(24 * 3600) };
        let init = convoy_coordinator::cli::init(&data_dir, &[], Some(scope))?;
        let join_token_file = dir.join("join-token");
        let token = init.join_token.clone().unwrap_or_default();
        std::fs::write(&join_token_file, token).map_err(FleetError::io(&join_token_file))?;
        let ca_pem = std::fs::read_to_string(&init.ca_file).map_err(FleetError::io(&init.ca_file))?;
        let logs = Logs { keep: keep_logs, fresh: true };
        let (coordinator, addr) = spawn_coordinator(exe, dir, &data_dir, "127.0.0.1:0", heartbeat_ms, logs)?;
        Ok(LocalFleet {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            data_dir,
            url: format!("https://{addr}"),
            ca_file: init.ca_file,
            ca_pem,
            operator_token: init.operator_token,
            join_token_file,
            heartbeat_ms,
            keep_logs,
            coordinator,
            agents: Vec::new(),
            teardown: Vec::new(),
        })
    }

    /// [`LocalFleet::start`] with the running binary as `exe` (the `convoy`
    /// binary's own demo, examples and benchmark).
    pub fn start_this_binary(dir: &Path, heartbeat_ms: u64, keep_logs: bool) -> Result<LocalFleet, FleetError> {
        let exe = std::env::current_exe().map_err(FleetError::io("/proc/self/exe"))?;
        LocalFleet::start(&exe, dir, heartbeat_ms, keep_logs)
    }

    /// The directory of host `id`; its agent's state is `agent/` in it.
    pub fn host_dir(&self, id: &str) -> PathBuf {
        self.dir.join("hosts").join(id)
    }

    /// Where the coordinator's stderr goes (with `keep_logs`).
    pub fn coordinator_log(&self) -> PathBuf {
        self.dir.join("logs").join("coordinator.log")
    }

    /// Where agent `id`'s stderr goes (with `keep_logs`).
    pub fn agent_log(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("agent-{id}.log"))
    }

    /// Start one agent process (`exe __agent`).
    pub fn spawn_agent(&mut self, spec: AgentSpec) -> Result<(), FleetError> {
        let child = self.spawn(&spec, true)?;
        self.agents.push((spec, child));
        Ok(())
    }

    /// Start `spec`'s agent; its log starts afresh if `fresh`, else it is a
    /// restart and the log goes on.
    fn spawn(&self, spec: &AgentSpec, fresh: bool) -> Result<Child, FleetError> {
        let mut cmd = match &spec.binary {
            Some(binary) => Command::new(binary),
            None => {
                let mut cmd = Command::new(&self.exe);
                cmd.arg("__agent");
                cmd
            }
        };
        cmd.args(["--coordinator", &self.url, "--host-id", &spec.id])
            .arg("--join-token-file")
            .arg(&self.join_token_file)
            .arg("--ca-file")
            .arg(&self.ca_file)
            .arg("--state-dir")
            .arg(self.host_dir(&spec.id).join("agent"));
        if let Some(root) = &spec.install_root {
            cmd.arg("--install-root").arg(root);
        }
        for (k, v) in &spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Logs { keep: self.keep_logs, fresh }.open(&self.agent_log(&spec.id))?)
            .spawn()
            .map_err(FleetError::io(&self.exe))
    }

    /// The pid of agent `id`'s process as this fleet started it.
    pub fn agent_pid(&self, id: &str) -> Option<u32> {
        self.agents.iter().find(|(s, _)| s.id == id).map(|(_, c)| c.id())
    }

    /// SIGKILL agent `id` (what its steps started lives on) and start it
    /// again over the same state.
    pub fn kill_and_restart_agent(&mut self, id: &str) -> Result<(), FleetError> {
        let i = self
            .agents
            .iter()
            .position(|(s, _)| s.id == id)
            .ok_or_else(|| FleetError::NotReady(format!("no agent {id} in this fleet")))?;
        let child = &mut self.agents[i].1;
        let _ = child.kill();
        let _ = child.wait();
        self.agents[i].1 = self.spawn(&self.agents[i].0, false)?;
        Ok(())
    }

    /// SIGKILL the coordinator and start it again over the same data, on the
    /// same address.
    pub fn kill_and_restart_coordinator(&mut self) -> Result<(), FleetError> {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        let addr = self.url.trim_start_matches("https://").to_string();
        let logs = Logs { keep: self.keep_logs, fresh: false };
        let (child, _) = spawn_coordinator(&self.exe, &self.dir, &self.data_dir, &addr, self.heartbeat_ms, logs)?;
        self.coordinator = child;
        Ok(())
    }

    pub async fn operator(&self) -> Result<Operator, FleetError> {
        connect_operator(&self.url, &self.ca_pem, &self.operator_token).await
    }

    /// Wait until `n` agents are connected.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> Result<(), FleetError> {
        let op = self.operator().await?;
        if operator::wait_agents(&op, timeout, "agents to connect", |list| operator::connected(list) >= n).await.is_ok()
        {
            return Ok(());
        }
        let up = op
            .clone()
            .list_agents(convoy_proto::v1::ListAgentsRequest {})
            .await
            .map(|r| operator::connected(&r.into_inner().agents))
            .unwrap_or(0);
        Err(FleetError::NotReady(format!(
            "only {up}/{n} agents connected within {timeout:?}; logs in {}",
            self.dir.join("logs").display()
        )))
    }

    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.id()
    }

    /// Run `f` when the fleet drops, after its agents have stopped and before
    /// the coordinator does (to stop what the fleet's steps started).
    pub fn at_teardown(&mut self, f: impl FnOnce() + Send + 'static) {
        self.teardown.push(Box::new(f));
    }
}

/// Start `exe __coordinator serve` over `data_dir`, listening on `listen`;
/// returns it and the address it listens on, once it does.
fn spawn_coordinator(
    exe: &Path,
    dir: &Path,
    data_dir: &Path,
    listen: &str,
    heartbeat_ms: u64,
    logs: Logs,
) -> Result<(Child, String), FleetError> {
    let addr_file = data_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut child = Command::new(exe)
        .args(["__coordinator", "serve", "--listen", listen, "--heartbeat-ms", &heartbeat_ms.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::null())
        .stderr(logs.open(&dir.join("logs").join("coordinator.log"))?)
        .spawn()
        .map_err(FleetError::io(exe))?;
    match poll(Duration::from_secs(30), "the coordinator to listen", || {
        std::fs::read_to_string(&addr_file).ok().filter(|s| !s.trim().is_empty())
    }) {
        Ok(addr) => Ok((child, addr.trim().to_string())),
        Err(e) => {
            stop(&mut child);
            Err(e)
        }
    }
}

/// Where a process's stderr goes: nowhere unless logs are kept; a log file
/// starts afresh with the fleet and goes on across restarts.
#[derive(Debug, Clone, Copy)]
struct Logs {
    keep: bool,
    fresh: bool,
}

impl Logs {
    fn open(self, path: &Path) -> Result<Stdio, FleetError> {
        if !self.keep {
            return Ok(Stdio::null());
        }
        if let Some(logs) = path.parent() {
            std::fs::create_dir_all(logs).map_err(FleetError::io(logs))?;
        }
        let mut options = OpenOptions::new();
        options.create(true);
        if self.fresh {
            options.write(true).truncate(true)
        } else {
            options.append(true)
        };
        let file = options.open(path).map_err(FleetError::io(path))?;
        Ok(Stdio::from(file))
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        for (spec, a) in &self.agents {
            terminate(a);
            // A self-upgrade's watchdog, and the previous build it became
            // after a revert, are not this fleet's children.
            let state = self.host_dir(&spec.id).join("agent");
            if let Some(pid) = convoy_agent::selfupgrade::intent::watchdog_pid(&state) {
                let _ = Command::new("kill").arg(pid.to_string()).stderr(Stdio::null()).status();
            }
        }
        for (_, a) in &mut self.agents {
            reap(a);
        }
        for f in self.teardown.drain(..) {
            f();
        }
        stop(&mut self.coordinator);
    }
}

/// SIGTERM, then [`reap`].
fn stop(child: &mut Child) {
    terminate(child);
    reap(child);
}

fn terminate(child: &Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
}

/// Wait briefly for a child told to stop (SIGTERM); then SIGKILL it.
fn reap(child: &mut Child) {
    if poll(Duration::from_secs(5), "a child to exit", || child.try_wait().ok().flatten()).is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Peak resident memory (KiB) and CPU seconds of a process, from /proc.
pub fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((hwm, ticks / 100.0))
}

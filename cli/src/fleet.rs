//! A local fleet of real processes: one coordinator and N agents, each the
//! `convoy` binary re-executed (`__coordinator`, `__agent`). Used by the demo
//! and the benchmark. Everything is killed when the [`LocalFleet`] drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use convoy_coordinator::enrolment::JoinScope;
use convoy_proto::v1 as pb;

use crate::client::{Client, Target, connect};
use crate::error::CliError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

pub struct LocalFleet {
    pub exe: PathBuf,
    pub dir: PathBuf,
    pub target: Target,
    /// The file agents read their join token from.
    pub join_token_file: PathBuf,
    pub ca_file: PathBuf,
    pub coordinator: Child,
    pub agents: Vec<Child>,
    /// Roots of demo services to stop on drop.
    pub service_roots: Vec<PathBuf>,
    /// Send agent and coordinator logs to files under `dir/logs` (else discard).
    pub keep_logs: bool,
}

impl LocalFleet {
    /// Initialise a coordinator data directory under `dir` and start the
    /// coordinator on an ephemeral port.
    pub fn start(dir: &Path, heartbeat_ms: u64, keep_logs: bool) -> Result<LocalFleet, CliError> {
        let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
        let data = dir.join("coordinator");
        // One token for the whole local fleet, handed to agents in a file
        // (never on their command lines).
        let scope = JoinScope { uses: 10_000, hosts: None, ttl: Duration::from_secs(24 * 3600) };
        let init = convoy_coordinator::cli::init(&data, &[], Some(scope))
            .map_err(|e| CliError::Demo(format!("init coordinator: {e}")))?;
        let join_token_file = dir.join("join-token");
        let token = init.join_token.clone().unwrap_or_default();
        std::fs::write(&join_token_file, token).map_err(io(&join_token_file))?;
        let addr_file = data.join("coordinator.addr");
        let _ = std::fs::remove_file(&addr_file);
        let coordinator = Command::new(&exe)
            .args(["__coordinator", "serve", "--listen", "127.0.0.1:0", "--heartbeat-ms", &heartbeat_ms.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log(dir, "coordinator.log", keep_logs)?)
            .spawn()
            .map_err(io(&exe))?;
        let mut fleet = LocalFleet {
            exe,
            dir: dir.to_path_buf(),
            target: Target {
                url: String::new(),
                ca_pem: std::fs::read_to_string(&init.ca_file).map_err(io(&init.ca_file))?,
                token: init.operator_token.clone(),
                server_name: convoy_coordinator::tls::DEFAULT_SERVER_NAME.to_string(),
            },
            join_token_file,
            ca_file: init.ca_file,
            coordinator,
            agents: Vec::new(),
            service_roots: Vec::new(),
            keep_logs,
        };
        let addr = wait_for("the coordinator to listen", Duration::from_secs(30), || {
            std::fs::read_to_string(&addr_file).ok().filter(|s| !s.trim().is_empty())
        })?;
        fleet.target.url = format!("https://{}", addr.trim());
        Ok(fleet)
    }

    /// Start one agent process for `host_id` with `labels`.
    pub fn spawn_agent(
        &mut self,
        host_id: &str,
        labels: &[(String, String)],
        install_root: &Path,
    ) -> Result<(), CliError> {
        self.spawn_agent_env(host_id, labels, install_root, &[])
    }

    /// [`LocalFleet::spawn_agent`] with extra environment variables for the
    /// agent (and so for every command its steps run).
    pub fn spawn_agent_env(
        &mut self,
        host_id: &str,
        labels: &[(String, String)],
        install_root: &Path,
        env: &[(String, String)],
    ) -> Result<(), CliError> {
        let state = self.dir.join("hosts").join(host_id).join("agent");
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__agent")
            .args(["--coordinator", &self.target.url, "--host-id", host_id])
            .arg("--join-token-file")
            .arg(&self.join_token_file)
            .arg("--ca-file")
            .arg(&self.ca_file)
            .arg("--state-dir")
            .arg(&state)
            .arg("--install-root")
            .arg(install_root);
        for (k, v) in labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log(&self.dir, &format!("agent-{host_id}.log"), self.keep_logs)?)
            .spawn()
            .map_err(io(&self.exe))?;
        self.agents.push(child);
        Ok(())
    }

    pub async fn client(&self) -> Result<Client, CliError> {
        connect(&self.target).await
    }

    /// Wait until `n` agents are connected.
    pub async fn wait_connected(&self, client: &mut Client, n: usize, timeout: Duration) -> Result<(), CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            let agents = client.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
            let up = agents.iter().filter(|a| a.connected).count();
            if up >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CliError::Demo(format!(
                    "only {up}/{n} agents connected within {timeout:?}; logs in {}",
                    self.dir.join("logs").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.id()
    }
}

fn log(dir: &Path, name: &str, keep: bool) -> Result<Stdio, CliError> {
    if !keep {
        return Ok(Stdio::null());
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let p = logs.join(name);
    Ok(Stdio::from(std::fs::File::create(&p).map_err(io(&p))?))
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = Command::new("kill").arg(a.id().to_string()).status();
        }
        for a in &mut self.agents {
            reap(a);
        }
        for root in &self.service_roots {
            let _ = Command::new(&self.exe)
                .args(["__demo-service", "stop", "--root"])
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("kill").arg(self.coordinator.id().to_string()).status();
        reap(&mut self.coordinator);
    }
}

/// Wait briefly for a child told to stop (SIGTERM); then SIGKILL it.
fn reap(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Poll `f` until it gives a value or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(CliError::Demo(format!("timed out after {timeout:?} waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// A free port on 127.0.0.1, for a demo or example service to bind a moment
/// later (the local fleets only: tests bind port 0 themselves).
pub fn free_port() -> Result<u16, CliError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr().map_err(io(Path::new("127.0.0.1:0")))?.port())
}

/// A plain HTTP GET of `http://HOST:PORT/PATH` with a 2 s timeout: the
/// status line and the body.
pub fn http_get(url: &str) -> Result<(String, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(authority).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    // One write: the demo service reads the request with a single read.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("{url}: {e}"))?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
}

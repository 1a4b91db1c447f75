//! The Docker flavour: a fleet of real hosts as Docker containers, for the
//! layer-4 tests (`tests/tests/containers.rs`).
//!
//! Shells out to the `docker` CLI (no extra crates). The images come from
//! `tests/containers/build-image.sh` (a debootstrapped Debian base plus the
//! Convoy binaries and the demo apt repository, cached by a hash of their
//! inputs); [`fleet_image`] runs it once per test process, after making sure
//! the binaries are built.
//!
//! A [`Fleet`] owns one private Docker network and its containers, all named
//! `convoy-t<pid>-<n>-<test>-…` so tests can run in parallel, and removes them
//! on drop. Containers are labelled with the test process id; a later fleet
//! removes what a killed test process left behind.
//!
//! The coordinator runs in a container with hostname and network alias
//! `coordinator`, listening on 0.0.0.0:7443, published to 127.0.0.1 on an
//! ephemeral port so the test (on the host) reaches it over loopback. Agents
//! connect to `https://coordinator:7443` and check its certificate against
//! the name `convoy-coordinator`, which `init` puts in it by default.
//!
//! Every wait is a poll with a deadline; every `docker` call has a timeout.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use convoy_proto::v1 as pb;

use crate::FleetError;
use crate::operator::{self, Operator, connect_operator};
use crate::wait::{poll_every, wait_until};

/// Label put on every container and network a fleet creates.
const PID_LABEL: &str = "convoy.test.pid";
/// Where the fleet image keeps the coordinator's data.
pub const COORDINATOR_DATA: &str = "/var/lib/convoy";
/// Where agents find the CA certificate.
const AGENT_CA: &str = "/etc/convoy-ca.pem";

/// What a command run in a container (or `docker` itself) produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run a command with a deadline; on timeout it is killed and an error returned.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, FleetError> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FleetError::Docker(format!("spawning {what}: {e}")))?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| FleetError::Docker(format!("waiting for {what}: {e}")))? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FleetError::Docker(format!("timed out after {timeout:?}: {what}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Ok(Output { code: status.code(), stdout, stderr })
}

/// `docker ARGS`, with a timeout; the output whatever the exit code.
pub fn docker_raw(args: &[&str], timeout: Duration) -> Result<Output, FleetError> {
    run_with_timeout(Command::new("docker").args(args), timeout)
}

/// `docker ARGS`, which must succeed; returns its trimmed stdout.
pub fn docker(args: &[&str]) -> Result<String, FleetError> {
    let out = docker_raw(args, Duration::from_secs(120))?;
    if !out.ok() {
        return Err(FleetError::Docker(format!(
            "docker {} failed ({:?}): {}{}",
            args.join(" "),
            out.code,
            out.stderr.trim(),
            out.stdout.trim()
        )));
    }
    Ok(out.stdout.trim().to_string())
}

/// Why Docker cannot be used here, if it cannot.
pub fn docker_unusable() -> Option<String> {
    match docker_raw(&["version", "--format", "{{.Server.Version}}"], Duration::from_secs(20)) {
        Ok(o) if o.ok() => None,
        Ok(o) => Some(format!("`docker version` failed: {}", o.stderr.trim())),
        Err(e) => Some(format!("docker is not usable: {e:#}")),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The fleet image's tag, building what is missing (once per process):
/// `CONVOY_FLEET_IMAGE` if set; otherwise `cargo build --workspace --bins` (the
/// same feature set as CI, so nothing flips; skipped when `CONVOY_BIN_DIR` points at prebuilt
/// ones), then `tests/containers/build-image.sh`.
pub fn fleet_image() -> Result<String, String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE.get_or_init(build_fleet_image).clone()
}

fn build_fleet_image() -> Result<String, String> {
    if let Ok(tag) = std::env::var("CONVOY_FLEET_IMAGE") {
        return Ok(tag);
    }
    if let Some(why) = docker_unusable() {
        return Err(why);
    }
    let root = repo_root();
    let started = Instant::now();
    if std::env::var_os("CONVOY_BIN_DIR").is_none() && !binaries_fresh(&root) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = run_with_timeout(
            Command::new(cargo).current_dir(&root).args(["build", "--workspace", "--bins"]),
            Duration::from_secs(1200),
        )
        .map_err(|e| format!("{e:#}"))?;
        if !out.ok() {
            return Err(format!("cargo build of the binaries failed: {}", out.stderr));
        }
    }
    let out = run_with_timeout(
        Command::new("bash").arg(root.join("tests/containers/build-image.sh")).current_dir(&root),
        Duration::from_secs(1800),
    )
    .map_err(|e| format!("{e:#}"))?;
    eprint!("{}", out.stderr);
    if !out.ok() {
        return Err(format!("tests/containers/build-image.sh failed ({:?})", out.code));
    }
    let tag = out.stdout.lines().last().unwrap_or_default().trim().to_string();
    if tag.is_empty() {
        return Err("build-image.sh printed no tag".into());
    }
    eprintln!("fleet image {tag} ready in {:.1}s", started.elapsed().as_secs_f64());
    Ok(tag)
}

/// True when the debug binaries exist and are newer than every source file
/// they are built from (so a `cargo build` would do nothing).
fn binaries_fresh(root: &Path) -> bool {
    fn newest(path: &Path, acc: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n == ".git") {
                return;
            }
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    newest(&e.path(), acc);
                }
            }
        } else if let Ok(m) = meta.modified() {
            *acc = (*acc).max(m);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let mut oldest_bin = None;
    for b in ["convoy-agent", "convoy-coordinator"] {
        match std::fs::metadata(target.join("debug").join(b)).and_then(|m| m.modified()) {
            Ok(m) => oldest_bin = Some(oldest_bin.map_or(m, |o: std::time::SystemTime| o.min(m))),
            Err(_) => return false,
        }
    }
    let mut src = std::time::UNIX_EPOCH;
    for d in ["agent", "coordinator", "common", "proto", "Cargo.toml", "Cargo.lock"] {
        newest(&root.join(d), &mut src);
    }
    oldest_bin.is_some_and(|b| b >= src)
}

/// The image to test with, or `None` after printing why the test is skipped.
/// With `CONVOY_REQUIRE_DOCKER=1` (set by `.ci/run`) a missing Docker is a
/// failure, not a skip.
pub fn image_or_skip(test: &str) -> Option<String> {
    match fleet_image() {
        Ok(tag) => Some(tag),
        Err(why) if std::env::var("CONVOY_REQUIRE_DOCKER").is_ok_and(|v| v == "1") => {
            panic!("{test}: Docker is required (CONVOY_REQUIRE_DOCKER=1) but: {why}")
        }
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// Poll `f` every 100ms (each call is typically a `docker exec`) until it
/// returns `Some`, or fail after `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> Result<T, FleetError> {
    poll_every(Duration::from_millis(100), timeout, what, f)
}

/// Timing knobs of a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Heartbeat interval the coordinator asks of agents.
    pub heartbeat_ms: u64,
    /// Missed heartbeats before an agent is lost.
    pub missed_heartbeats: u32,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions { heartbeat_ms: 500, missed_heartbeats: 3 }
    }
}

/// A coordinator container and agent containers on a private network.
pub struct Fleet {
    /// Prefix of every name this fleet creates.
    pub name: String,
    pub network: String,
    pub image: String,
    pub options: FleetOptions,
    /// The coordinator's container.
    pub coordinator: String,
    /// https://127.0.0.1:PORT, the coordinator as published on loopback.
    pub url: String,
    pub ca_pem: String,
    pub operator_token: String,
    pub join_token: String,
    /// host id -> container name
    agents: BTreeMap<String, String>,
    ca_file: tempfile::NamedTempFile,
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove containers and networks left by test processes that no longer run.
fn remove_leftovers() {
    let filter = format!("label={PID_LABEL}");
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    if let Ok(list) = docker(&["ps", "-a", "--filter", &filter, "--format", &fmt]) {
        for line in list.lines() {
            if let Some((id, pid)) = line.split_once(' ')
                && pid.parse::<u32>().is_ok_and(|p| !process_alive(p))
            {
                let _ = docker_raw(&["rm", "-f", id], Duration::from_secs(60));
            }
        }
    }
    if let Ok(list) = docker(&["network", "ls", "--filter", &filter, "--format", &fmt]) {
        for line in list.lines() {
            if let Some((id, pid)) = line.split_once(' ')
                && pid.parse::<u32>().is_ok_and(|p| !process_alive(p))
            {
                let _ = docker_raw(&["network", "rm", id], Duration::from_secs(60));
            }
        }
    }
}

impl Fleet {
    /// Create the network and start the coordinator; returns once it serves
    /// and its CA, operator token and join token have been read.
    pub async fn start(test: &str, image: &str, options: FleetOptions) -> Result<Fleet, FleetError> {
        static N: AtomicUsize = AtomicUsize::new(0);
        remove_leftovers();
        let slug: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(24)
            .collect();
        let name = format!("convoy-t{}-{}-{slug}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let network = format!("{name}-net");
        let pid_label = format!("{PID_LABEL}={}", std::process::id());
        docker(&["network", "create", "--label", &pid_label, &network])?;
        let mut fleet = Fleet {
            coordinator: format!("{name}-coordinator"),
            name,
            network,
            image: image.to_string(),
            options,
            url: String::new(),
            ca_pem: String::new(),
            operator_token: String::new(),
            join_token: String::new(),
            agents: BTreeMap::new(),
            ca_file: tempfile::NamedTempFile::new().map_err(FleetError::io(std::env::temp_dir()))?,
        };
        let serve = format!(
            "convoy-coordinator init --join-token-uses 100 --data-dir {COORDINATOR_DATA} > {COORDINATOR_DATA}/init.txt && \
             exec convoy-coordinator serve --data-dir {COORDINATOR_DATA} --listen 0.0.0.0:7443 \
             --heartbeat-ms {} --missed-heartbeats {}",
            fleet.options.heartbeat_ms, fleet.options.missed_heartbeats
        );
        docker(&[
            "run",
            "-d",
            "--init",
            "--name",
            &fleet.coordinator,
            "--hostname",
            "coordinator",
            "--network",
            &fleet.network,
            "--network-alias",
            "coordinator",
            "--label",
            &pid_label,
            "-p",
            "127.0.0.1::7443",
            "-e",
            "RUST_LOG=info",
            &fleet.image,
            "sh",
            "-c",
            &serve,
        ])?;
        let init = poll(Duration::from_secs(60), "coordinator init", || {
            let out = fleet.exec("coordinator", &["cat", &format!("{COORDINATOR_DATA}/init.txt")]).ok()?;
            out.stdout.contains("join token").then_some(out.stdout)
        })
        .map_err(|e| fleet.with_logs(e, &fleet.coordinator))?;
        for line in init.lines() {
            if let Some(t) = line.strip_prefix("operator token: ") {
                fleet.operator_token = t.trim().to_string();
            } else if line.starts_with("join token")
                && let Some((_, t)) = line.split_once(": ")
            {
                fleet.join_token = t.trim().to_string();
            }
        }
        if fleet.operator_token.is_empty() || fleet.join_token.is_empty() {
            return Err(FleetError::Docker(format!("could not read the tokens from init's output:\n{init}")));
        }
        fleet.ca_pem = fleet.sh("coordinator", &format!("cat {COORDINATOR_DATA}/tls/ca.pem"))?;
        std::fs::write(fleet.ca_file.path(), &fleet.ca_pem).map_err(FleetError::io(fleet.ca_file.path()))?;
        fleet.refresh_url()?;
        fleet
            .wait_serving("the coordinator to answer operators")
            .await
            .map_err(|e| fleet.with_logs(e, &fleet.coordinator))?;
        Ok(fleet)
    }

    /// Wait until the coordinator at [`Fleet::url`] answers an operator call.
    async fn wait_serving(&self, what: &str) -> Result<(), FleetError> {
        let (url, ca, token) = (&self.url, &self.ca_pem, &self.operator_token);
        wait_until(Duration::from_secs(60), what, || async move {
            let mut op = connect_operator(url, ca, token).await.ok()?;
            op.list_agents(pb::ListAgentsRequest {}).await.ok().map(|_| ())
        })
        .await
    }

    /// Re-read the published port (it changes when the coordinator restarts).
    pub fn refresh_url(&mut self) -> Result<(), FleetError> {
        let ports = poll(Duration::from_secs(30), "the coordinator's published port", || {
            docker(&["port", &self.coordinator, "7443/tcp"]).ok().filter(|s| !s.is_empty())
        })?;
        let addr = ports
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .ok_or_else(|| FleetError::Docker(format!("no 127.0.0.1 port in {ports:?}")))?;
        self.url = format!("https://{}", addr.trim());
        Ok(())
    }

    /// Container name of a host id (`coordinator` names the coordinator).
    pub fn container(&self, host: &str) -> String {
        if host == "coordinator" {
            return self.coordinator.clone();
        }
        self.agents.get(host).cloned().unwrap_or_else(|| format!("{}-{host}", self.name))
    }

    /// Host ids of the agents started so far.
    pub fn hosts(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// Start an agent container: hostname and host id `host`, these labels.
    pub fn add_agent(&mut self, host: &str, labels: &[(&str, &str)]) -> Result<(), FleetError> {
        let container = format!("{}-{host}", self.name);
        let pid_label = format!("{PID_LABEL}={}", std::process::id());
        let join = format!("CONVOY_JOIN_TOKEN={}", self.join_token);
        let hb = self.options.heartbeat_ms.to_string();
        let mut args: Vec<String> = [
            "create",
            "--init",
            "--name",
            &container,
            "--hostname",
            host,
            "--network",
            &self.network,
            "--network-alias",
            host,
            "--label",
            &pid_label,
            "-e",
            &join,
            "-e",
            "RUST_LOG=info",
            &self.image,
            "convoy-agent",
            "--coordinator",
            "https://coordinator:7443",
            "--ca-file",
            AGENT_CA,
            "--host-id",
            host,
            "--state-dir",
            "/var/lib/convoy-agent",
            "--heartbeat-ms",
            &hb,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)?;
        self.agents.insert(host.to_string(), container.clone());
        let ca = self.ca_file.path().display().to_string();
        docker(&["cp", &ca, &format!("{container}:{AGENT_CA}")])?;
        docker(&["start", &container])?;
        Ok(())
    }

    pub async fn operator(&self) -> Result<Operator, FleetError> {
        connect_operator(&self.url, &self.ca_pem, &self.operator_token).await
    }

    /// The agents the coordinator knows.
    pub async fn agents(&self) -> Result<Vec<pb::AgentInfo>, FleetError> {
        Ok(self.operator().await?.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents)
    }

    /// Wait until these hosts are all connected.
    pub async fn wait_connected(&self, hosts: &[String], timeout: Duration) -> Result<(), FleetError> {
        let op = self.operator().await?;
        let all = |list: &[pb::AgentInfo]| hosts.iter().all(|h| list.iter().any(|a| &a.agent_id == h && a.connected));
        if operator::wait_agents(&op, timeout, "agents to connect", all).await.is_ok() {
            return Ok(());
        }
        let list = self.agents().await.unwrap_or_default();
        let connected: Vec<_> = list.iter().filter(|a| a.connected).map(|a| a.agent_id.clone()).collect();
        let missing: Vec<_> = hosts.iter().filter(|h| !connected.contains(h)).collect();
        let logs: Vec<String> = missing.iter().take(2).map(|h| self.logs(h)).collect();
        Err(FleetError::NotReady(format!("agents not connected after {timeout:?}: {missing:?}\n{}", logs.join("\n"))))
    }

    /// Wait until the coordinator reports this host disconnected.
    pub async fn wait_disconnected(&self, host: &str, timeout: Duration) -> Result<(), FleetError> {
        let op = self.operator().await?;
        let gone = |list: &[pb::AgentInfo]| list.iter().any(|a| a.agent_id == host && !a.connected);
        operator::wait_agents(&op, timeout, "agent to be seen as gone", gone).await.map(drop)
    }

    /// Submit a plan; returns the rollout id.
    pub async fn submit(&self, file_name: &str, yaml: &str) -> Result<String, FleetError> {
        operator::submit(&self.operator().await?, file_name, yaml)
            .await
            .map_err(|s| FleetError::NotReady(format!("submit {file_name}: {}", s.message())))
    }

    pub async fn status(&self, rollout: &str) -> Result<pb::RolloutStatus, FleetError> {
        operator::status(&self.operator().await?, rollout).await
    }

    /// Poll the rollout until `done(status)` holds.
    pub async fn wait_status(
        &self,
        rollout: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&pb::RolloutStatus) -> bool,
    ) -> Result<pb::RolloutStatus, FleetError> {
        let op = self.operator().await?;
        match operator::wait_rollout(&op, rollout, timeout, what, done).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let s = self.status(rollout).await.ok();
                Err(FleetError::NotReady(format!(
                    "{e}; last status: {s:#?}\ncoordinator log tail:\n{}",
                    self.logs("coordinator")
                )))
            }
        }
    }

    /// Wait for a terminal state (succeeded, failed, aborted or rolled back).
    pub async fn wait_finished(&self, rollout: &str, timeout: Duration) -> Result<pb::RolloutStatus, FleetError> {
        operator::known_state(self.wait_status(rollout, timeout, "the rollout to finish", operator::finished).await?)
    }

    /// Run a command in a host's container (`docker exec`), whatever its exit code.
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Result<Output, FleetError> {
        let container = self.container(host);
        let mut args = vec!["exec", container.as_str()];
        args.extend_from_slice(cmd);
        docker_raw(&args, Duration::from_secs(120))
    }

    /// `sh -c SCRIPT` in a host's container; must succeed; its stdout.
    pub fn sh(&self, host: &str, script: &str) -> Result<String, FleetError> {
        let out = self.exec(host, &["sh", "-c", script])?;
        if !out.ok() {
            return Err(FleetError::Docker(format!(
                "on {host}: `{script}` exited {:?}: {}{}",
                out.code,
                out.stderr.trim(),
                out.stdout.trim()
            )));
        }
        Ok(out.stdout)
    }

    /// The installed version of a Debian package on a host, if installed.
    pub fn dpkg_version(&self, host: &str, package: &str) -> Result<Option<String>, FleetError> {
        let out = self.exec(host, &["dpkg-query", "-W", "-f=${Status} ${Version}", package])?;
        let text = out.stdout.trim();
        Ok(text.strip_prefix("install ok installed ").map(str::to_string))
    }

    /// GET http://127.0.0.1:PORT/health inside a host (the services listen there).
    pub fn health(&self, host: &str, port: u16) -> Result<String, FleetError> {
        self.sh(host, &format!("busybox wget -q -O - http://127.0.0.1:{port}/health"))
    }

    /// `docker stop` (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&self, host: &str, grace: Duration) -> Result<(), FleetError> {
        docker(&["stop", "-t", &grace.as_secs().to_string(), &self.container(host)]).map(drop)
    }

    /// `docker kill` (SIGKILL): the host vanishes without closing anything.
    pub fn kill(&self, host: &str) -> Result<(), FleetError> {
        docker(&["kill", &self.container(host)]).map(drop)
    }

    pub fn start_container(&self, host: &str) -> Result<(), FleetError> {
        docker(&["start", &self.container(host)]).map(drop)
    }

    pub fn restart(&self, host: &str, grace: Duration) -> Result<(), FleetError> {
        docker(&["restart", "-t", &grace.as_secs().to_string(), &self.container(host)]).map(drop)
    }

    /// Cut a host off the fleet's network (its processes keep running).
    pub fn disconnect(&self, host: &str) -> Result<(), FleetError> {
        docker(&["network", "disconnect", &self.network, &self.container(host)]).map(drop)
    }

    /// Reconnect a host cut off by [`Fleet::disconnect`], under the same alias.
    pub fn reconnect(&self, host: &str) -> Result<(), FleetError> {
        docker(&["network", "connect", "--alias", host, &self.network, &self.container(host)]).map(drop)
    }

    /// Stop the coordinator's container (SIGTERM: it closes its store).
    pub fn stop_coordinator(&self) -> Result<(), FleetError> {
        docker(&["stop", "-t", "20", &self.coordinator]).map(drop)
    }

    /// Start the coordinator's container again (same data) and re-read its port.
    pub async fn start_coordinator(&mut self) -> Result<(), FleetError> {
        docker(&["start", &self.coordinator])?;
        self.refresh_url()?;
        self.wait_serving("the restarted coordinator").await
    }

    /// Copy the coordinator's data directory out (stop the coordinator
    /// first: the sled store is single-process). Returns `dest/convoy`.
    pub fn copy_coordinator_data(&self, dest: &Path) -> Result<PathBuf, FleetError> {
        let d = dest.display().to_string();
        docker(&["cp", &format!("{}:{COORDINATOR_DATA}", self.coordinator), &d])?;
        Ok(dest.join("convoy"))
    }

    /// `e`, followed by the last lines `container` logged.
    fn with_logs(&self, e: FleetError, container: &str) -> FleetError {
        FleetError::NotReady(format!("{e}\n{}", self.logs_of(container)))
    }

    fn logs_of(&self, container: &str) -> String {
        match docker_raw(&["logs", "--tail", "40", container], Duration::from_secs(30)) {
            Ok(o) => format!("--- logs of {container}:\n{}{}", o.stdout, o.stderr),
            Err(e) => format!("--- no logs of {container}: {e:#}"),
        }
    }

    /// The last lines a host's container logged.
    pub fn logs(&self, host: &str) -> String {
        self.logs_of(&self.container(host))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::env::var_os("CONVOY_KEEP_FLEET").is_some() {
            eprintln!("CONVOY_KEEP_FLEET: keeping network {} and its containers", self.network);
            return;
        }
        let mut names: Vec<&str> = self.agents.values().map(String::as_str).collect();
        names.push(&self.coordinator);
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(names);
        let _ = docker_raw(&args, Duration::from_secs(120));
        let _ = docker_raw(&["network", "rm", &self.network], Duration::from_secs(60));
    }
}

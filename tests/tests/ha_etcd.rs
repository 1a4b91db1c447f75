//! Coordinators in HA on a real etcd (docs/ha.md): three coordinator
//! processes on one etcd (Debian's `/usr/bin/etcd`, started here on loopback
//! ports picked by binding port 0), agents given all three addresses.
//!
//! - the leader SIGKILLed mid-rollout: another takes over, the rollout
//!   finishes with every execution run once (one line per host in the runs
//!   file) and the invariant checker passes on the log stored in etcd; the
//!   time from the kill to the rollout moving again is printed;
//! - the leader SIGSTOPped past its lease, another takes over, SIGCONT: the
//!   old leader's writes are refused, it dispatches nothing and follows;
//! - etcd killed for a while mid-rollout: the coordinators wait and recover,
//!   no event is lost (invariants and runs-once hold).
//!
//! Needs the `etcd` feature (`--all-features`) and `/usr/bin/etcd`; without
//! them the tests print SKIPPED, unless `CONVOY_REQUIRE_ETCD=1`.
//!
//! The coordinator and agent processes are this test binary run again with
//! `CONVOY_HA_CHILD` set (the test `ha_child_process` then runs the
//! coordinator or agent command line): that way they are built with the
//! same features as the test.

/// Not a test: the body of the processes the HA tests start.
#[test]
fn ha_child_process() {
    let Ok(role) = std::env::var("CONVOY_HA_CHILD") else { return };
    let args: Vec<String> = serde_json::from_str(&std::env::var("CONVOY_HA_ARGS").unwrap_or_default()).unwrap();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async move {
        use clap::Parser;
        match role.as_str() {
            "coordinator" => {
                let args = convoy_coordinator::cli::CoordinatorArgs::try_parse_from(args).unwrap();
                match convoy_coordinator::cli::run(args, convoy_coordinator::cli::shutdown_on_signal()).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("coordinator: {e}");
                        1
                    }
                }
            }
            _ => {
                let config = convoy_agent::AgentArgs::try_parse_from(args).unwrap().into_config().unwrap();
                let shutdown = tokio_util::sync::CancellationToken::new();
                let s = shutdown.clone();
                tokio::spawn(async move {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
                    term.recv().await;
                    s.cancel();
                });
                match convoy_agent::run_local(config, shutdown).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("agent: {e}");
                        1
                    }
                }
            }
        }
    });
    std::process::exit(code);
}

#[cfg(not(feature = "etcd"))]
#[test]
fn ha_needs_the_etcd_feature() {
    if std::env::var("CONVOY_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
        panic!("CONVOY_REQUIRE_ETCD=1 but the tests were built without the `etcd` feature (use --all-features)");
    }
    println!("SKIPPED ha_etcd: built without the `etcd` feature (cargo nextest run --all-features)");
}

#[cfg(feature = "etcd")]
mod ha {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use convoy_common::engine::Engine;
    use convoy_common::invariants::{self, LogEntry};
    use convoy_coordinator::store::{EtcdIdentity, EtcdStore, EtcdTarget, EtcdTls, Store};
    use convoy_fleet::operator::{Operator, connect_operator};
    use convoy_proto::v1 as pb;

    const ETCD: &str = "/usr/bin/etcd";
    const LEASE_TTL_S: u64 = 3;
    const HOSTS: usize = 6;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// True when the test must skip (after printing why).
    fn skip(test: &str) -> bool {
        if Path::new(ETCD).exists() {
            return false;
        }
        if std::env::var("CONVOY_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
            panic!("{test}: CONVOY_REQUIRE_ETCD=1 but {ETCD} is missing (apt-get install etcd-server)");
        }
        println!("SKIPPED {test}: {ETCD} is missing (apt-get install etcd-server)");
        true
    }

    /// A child process killed when dropped.
    struct Proc(Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Proc {
        fn signal(&self, sig: &str) {
            let _ = Command::new("kill").args([&format!("-{sig}"), &self.0.id().to_string()]).status();
        }
    }

    struct Etcd {
        proc: Option<Proc>,
        data: PathBuf,
        client_port: u16,
        peer_port: u16,
        log: PathBuf,
        /// Clients over TLS with certificates (`--client-cert-auth`), if set.
        pki: Option<EtcdPki>,
    }

    /// A CA, etcd's certificate for 127.0.0.1 and a client certificate, as
    /// files in a directory.
    struct EtcdPki {
        dir: PathBuf,
        tls: EtcdTls,
    }

    impl EtcdPki {
        fn create(dir: &Path) -> anyhow::Result<EtcdPki> {
            use rcgen::{
                BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
            };
            let dir = dir.join("etcd-pki");
            std::fs::create_dir_all(&dir)?;
            let ca_key = KeyPair::generate()?;
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "etcd test CA");
            let ca_cert = ca.self_signed(&ca_key)?;
            let issuer = Issuer::new(ca, &ca_key);
            let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
                let key = KeyPair::generate()?;
                let mut p = CertificateParams::new(vec![name.to_string()])?;
                p.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
                p.distinguished_name.push(DnType::CommonName, name);
                p.extended_key_usages = vec![usage];
                Ok((p.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
            };
            let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
            let (client_cert, client_key) = leaf("convoy-coordinator", ExtendedKeyUsagePurpose::ClientAuth)?;
            for (name, pem) in [
                ("ca.pem", ca_cert.pem()),
                ("server.pem", server_cert),
                ("server-key.pem", server_key),
                ("client.pem", client_cert.clone()),
                ("client-key.pem", client_key.clone()),
            ] {
                std::fs::write(dir.join(name), pem)?;
            }
            let identity = Some(EtcdIdentity { cert_pem: client_cert, key_pem: client_key });
            Ok(EtcdPki { dir, tls: EtcdTls { ca_pem: ca_cert.pem(), identity } })
        }

        fn file(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }
    }

    impl Etcd {
        fn start(dir: &Path) -> anyhow::Result<Etcd> {
            Etcd::start_with(dir, None)
        }

        /// An etcd that takes clients only over TLS with a certificate from `pki`.
        fn start_tls(dir: &Path) -> anyhow::Result<Etcd> {
            Etcd::start_with(dir, Some(EtcdPki::create(dir)?))
        }

        fn start_with(dir: &Path, pki: Option<EtcdPki>) -> anyhow::Result<Etcd> {
            let mut e = Etcd {
                proc: None,
                data: dir.join("etcd-data"),
                client_port: free_port(),
                peer_port: free_port(),
                log: dir.join("etcd.log"),
                pki,
            };
            // A port picked by binding 0 and released can be taken again
            // (an outgoing connection's source port) before etcd binds it:
            // then pick new ones.
            for _ in 0..5 {
                match e.restart() {
                    Err(err) if err.to_string().contains("address already in use") => {
                        e.client_port = free_port();
                        e.peer_port = free_port();
                    }
                    r => return r.map(|()| e),
                }
            }
            bail!("etcd could not bind free ports 5 times; see {}", e.log.display())
        }

        fn url(&self) -> String {
            format!("etcd://127.0.0.1:{}/convoy-test", self.client_port)
        }

        /// The store's target, over TLS with the client certificate if this
        /// etcd wants one.
        fn target(&self) -> anyhow::Result<EtcdTarget> {
            let target = EtcdTarget::parse(&self.url())?;
            Ok(match &self.pki {
                Some(pki) => target.with_tls(pki.tls.clone()),
                None => target,
            })
        }

        fn restart(&mut self) -> anyhow::Result<()> {
            let scheme = if self.pki.is_some() { "https" } else { "http" };
            let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
            let peer = format!("http://127.0.0.1:{}", self.peer_port);
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
            let mut cmd = Command::new(ETCD);
            cmd.arg("--data-dir")
                .arg(&self.data)
                .args(["--name", "ha-test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("ha-test={peer}")]);
            if let Some(pki) = &self.pki {
                cmd.args(["--cert-file", &pki.file("server.pem"), "--key-file", &pki.file("server-key.pem")]).args([
                    "--trusted-ca-file",
                    &pki.file("ca.pem"),
                    "--client-cert-auth",
                ]);
            }
            let child = cmd.stdout(Stdio::null()).stderr(log).spawn().context("start etcd")?;
            self.proc = Some(Proc(child));
            // Healthy: a key can be read.
            let target = self.target()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if EtcdStore::open(&target, None).is_ok() {
                    return Ok(());
                }
                if let Some(p) = self.proc.as_mut()
                    && p.0.try_wait()?.is_some()
                {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail = log.lines().last().unwrap_or_default();
                    self.proc = None;
                    bail!("etcd exited: {tail}");
                }
                if Instant::now() > deadline {
                    bail!("etcd not healthy within 20s; see {}", self.log.display());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        fn kill(&mut self) {
            self.proc = None;
        }
    }

    fn child(dir: &Path, log: &str, role: &str, args: &[String]) -> anyhow::Result<Proc> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(log))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["--exact", "ha_child_process", "--nocapture", "--test-threads", "1"])
            .env("CONVOY_HA_CHILD", role)
            .env("CONVOY_HA_ARGS", serde_json::to_string(args)?)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Proc(child))
    }

    fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let name = e.file_name();
            if name == "db" {
                continue; // the embedded store is not used with etcd
            }
            if e.file_type()?.is_dir() {
                copy_dir(&e.path(), &to.join(&name))?;
            } else {
                std::fs::copy(e.path(), to.join(&name))?;
            }
        }
        Ok(())
    }

    struct HaFleet {
        dir: tempfile::TempDir,
        etcd: Etcd,
        coordinators: Vec<Option<Proc>>,
        addrs: Vec<String>,
        agents: Vec<Proc>,
        ca_pem: String,
        token: String,
    }

    impl HaFleet {
        async fn start(hosts: usize) -> anyhow::Result<HaFleet> {
            // CONVOY_KEEP_HA_DIR=1 keeps the directory (logs) for a look after.
            let keep = std::env::var("CONVOY_KEEP_HA_DIR").is_ok_and(|v| v == "1");
            let dir = tempfile::Builder::new().prefix("convoy-ha-").disable_cleanup(keep).tempdir()?;
            if keep {
                eprintln!("HA test directory: {}", dir.path().display());
            }
            let etcd = Etcd::start(dir.path())?;
            let first = dir.path().join("c0");
            let init = convoy_coordinator::cli::init(&first, &[], None)?;
            for i in 1..3 {
                copy_dir(&first, &dir.path().join(format!("c{i}")))?;
            }
            let mut f = HaFleet {
                ca_pem: std::fs::read_to_string(&init.ca_file)?,
                token: init.operator_token,
                etcd,
                coordinators: Vec::new(),
                addrs: Vec::new(),
                agents: Vec::new(),
                dir,
            };
            for i in 0..3 {
                let p = f.spawn_coordinator(i)?;
                f.coordinators.push(Some(p));
                let addr_file = f.dir.path().join(format!("c{i}")).join("coordinator.addr");
                let deadline = Instant::now() + Duration::from_secs(30);
                let addr = loop {
                    if let Some(a) = std::fs::read_to_string(&addr_file).ok().filter(|a| !a.trim().is_empty()) {
                        break a.trim().to_string();
                    }
                    if Instant::now() > deadline {
                        bail!("coordinator {i} not listening within 30s; logs in {}", f.dir.path().display());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                f.addrs.push(addr);
            }
            let (leader, mut op) = f.leader(Duration::from_secs(30)).await?;
            eprintln!("leader: coordinator {leader}");
            let token = op
                .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 3600, uses: 100, hosts: String::new() })
                .await?
                .into_inner()
                .token;
            let token_file = f.dir.path().join("join-token");
            std::fs::write(&token_file, token)?;
            let urls: Vec<String> = f.addrs.iter().map(|a| format!("https://{a}")).collect();
            for h in 0..hosts {
                let id = format!("h{h}");
                let args = vec![
                    "convoy-agent".to_string(),
                    "--coordinator".into(),
                    urls.join(","),
                    "--host-id".into(),
                    id.clone(),
                    "--join-token-file".into(),
                    token_file.display().to_string(),
                    "--ca-file".into(),
                    init.ca_file.display().to_string(),
                    "--state-dir".into(),
                    f.dir.path().join("hosts").join(&id).display().to_string(),
                    "--label".into(),
                    "role=web".into(),
                ];
                f.agents.push(child(f.dir.path(), &format!("agent-{id}.log"), "agent", &args)?);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok((_, mut op)) = f.leader(Duration::from_secs(10)).await
                    && let Ok(r) = op.list_agents(pb::ListAgentsRequest {}).await
                    && r.into_inner().agents.iter().filter(|a| a.connected).count() == hosts
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("agents not all connected within 60s; logs in {}", f.dir.path().display());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(f)
        }

        fn spawn_coordinator(&self, i: usize) -> anyhow::Result<Proc> {
            let data = self.dir.path().join(format!("c{i}"));
            let args = vec![
                "convoy-coordinator".to_string(),
                "serve".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--addr-file".into(),
                data.join("coordinator.addr").display().to_string(),
                "--store".into(),
                self.etcd.url(),
                "--lease-ttl-s".into(),
                LEASE_TTL_S.to_string(),
                "--heartbeat-ms".into(),
                "500".into(),
                // Snapshots every 10 events: takeovers restore from one.
                "--snapshot-every".into(),
                "10".into(),
                // The dashboard and /metrics, on the leader and the followers.
                "--http-listen".into(),
                "127.0.0.1:0".into(),
            ];
            child(self.dir.path(), &format!("coordinator-{i}.log"), "coordinator", &args)
        }

        /// The last lines of every coordinator's log (CI keeps no files).
        fn tails(&self) -> String {
            let mut out = format!("logs in {}", self.dir.path().display());
            for i in 0..self.addrs.len().max(3) {
                let log = self.log(&format!("coordinator-{i}.log"));
                let lines: Vec<&str> = log.lines().collect();
                out.push_str(&format!("\n--- coordinator-{i}.log (end)\n"));
                out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            }
            out
        }

        fn log(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
        }

        /// Coordinator `i`'s HTTPS address, from its latest start's log.
        fn http_addr(&self, i: usize) -> Option<String> {
            const MARK: &str = "dashboard and /metrics: https://";
            let log = self.log(&format!("coordinator-{i}.log"));
            log.lines().rev().find_map(|l| Some(l.split_once(MARK)?.1.trim().trim_end_matches('/').to_string()))
        }

        /// `GET path` on coordinator `i`'s HTTPS listener, with the operator token if `authed`.
        async fn http_get(&self, i: usize, path: &str, authed: bool) -> anyhow::Result<(u16, String)> {
            let addr = self.http_addr(i).with_context(|| format!("no https address in coordinator {i}'s log"))?;
            let auth = format!("Bearer {}", self.token);
            let headers: Vec<(&str, &str)> = if authed { vec![("Authorization", &auth)] } else { vec![] };
            let a = convoy_fleet::https::request("GET", &format!("https://{addr}{path}"), &self.ca_pem, &headers, "")
                .await?;
            Ok((a.status, a.body))
        }

        /// Where coordinator `i`'s HTTPS listener sends a browser asking for
        /// `path`, once it redirects to coordinator `leader`'s dashboard (the
        /// leader announces it when its term starts; followers poll).
        async fn redirected_to(&self, i: usize, path: &str, leader: usize) -> anyhow::Result<String> {
            let addr = self.http_addr(i).with_context(|| format!("no https address in coordinator {i}'s log"))?;
            let want = self.http_addr(leader).with_context(|| format!("no https address for coordinator {leader}"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let a = convoy_fleet::https::request("GET", &format!("https://{addr}{path}"), &self.ca_pem, &[], "")
                    .await?;
                let location =
                    a.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone());
                match location {
                    Some(l) if a.status == 307 && l.contains(&want) => return Ok(l),
                    _ if Instant::now() > deadline => {
                        bail!(
                            "coordinator {i} answers {path} with {} {location:?}: {}\n{}",
                            a.status,
                            a.body,
                            self.tails()
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }

        /// Which coordinator answers as the leader (not with a redirect).
        async fn probe(&self, i: usize) -> Option<Operator> {
            if self.coordinators.get(i).is_none_or(Option::is_none) {
                return None;
            }
            let url = format!("https://{}", self.addrs[i]);
            let connect = connect_operator(&url, &self.ca_pem, &self.token);
            let mut op = tokio::time::timeout(Duration::from_secs(2), connect).await.ok()?.ok()?;
            let probe = op.get_rollout(pb::GetRolloutRequest { rollout_id: "-probe-".into(), ..Default::default() });
            match tokio::time::timeout(Duration::from_secs(2), probe).await.ok()? {
                Err(s) if s.code() == tonic::Code::Unavailable => None,
                _ => Some(op),
            }
        }

        async fn leader(&self, timeout: Duration) -> anyhow::Result<(usize, Operator)> {
            let deadline = Instant::now() + timeout;
            loop {
                for i in 0..self.addrs.len() {
                    if let Some(op) = self.probe(i).await {
                        return Ok((i, op));
                    }
                }
                if Instant::now() > deadline {
                    bail!("no leader within {timeout:?}: {}", self.tails());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        fn runs_file(&self) -> PathBuf {
            self.dir.path().join("runs.txt")
        }

        /// `(host, start time ms)` of every step run so far.
        fn runs(&self) -> Vec<(String, u64)> {
            let text = std::fs::read_to_string(self.runs_file()).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let (h, t) = l.split_once(' ')?;
                    Some((h.to_string(), t.trim().parse().ok()?))
                })
                .collect()
        }

        async fn submit(&self, step_secs: f64) -> anyhow::Result<String> {
            let plan = format!(
                r#"
name: ha
version: "2.0.0"
groups:
  - name: web
    select: {{ role: web }}
    strategy: {{ type: rolling, max_parallel: 1, max_failures: 0 }}
    steps:
      - name: work
        exec: {{ command: sh, args: ["-c", "echo {{{{host}}}} $(date +%s%3N) >> {runs}; sleep {step_secs}"] }}
"#,
                runs = self.runs_file().display()
            );
            let (_, op) = self.leader(Duration::from_secs(30)).await?;
            Ok(convoy_fleet::operator::submit(&op, "ha.yaml", &plan).await?)
        }

        async fn wait_finished(&self, id: &str, timeout: Duration) -> anyhow::Result<pb::RolloutStatus> {
            let deadline = Instant::now() + timeout;
            loop {
                if let Ok((_, op)) = self.leader(Duration::from_secs(10)).await
                    && let Ok(s) = convoy_fleet::operator::status(&op, id).await
                    && convoy_fleet::operator::finished(&s)
                {
                    return Ok(s);
                }
                if Instant::now() > deadline {
                    bail!("rollout {id} not finished within {timeout:?}: {}", self.tails());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// Wait until `n` steps have started.
        async fn wait_runs(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
            let deadline = Instant::now() + timeout;
            while self.runs().len() < n {
                if Instant::now() > deadline {
                    bail!("{n} steps not started within {timeout:?}: {}", self.tails());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }

        /// The finished rollout: every host succeeded, each ran its step
        /// once, and the log in etcd passes the invariant checker.
        fn check(&self, id: &str, status: &pb::RolloutStatus, hosts: usize) -> anyhow::Result<()> {
            assert_eq!(status.state, "succeeded", "{status:#?}");
            let runs = self.runs();
            for h in 0..hosts {
                let n = runs.iter().filter(|(r, _)| *r == format!("h{h}")).count();
                assert_eq!(n, 1, "host h{h} ran its step {n} times: {runs:?}");
            }
            let store = EtcdStore::open(&EtcdTarget::parse(&self.etcd.url())?, None)?;
            let record = store.rollouts()?.into_iter().find(|r| r.id == id).context("rollout not stored")?;
            let mut engine = Engine::new(id, record.spec.clone());
            let mut log = Vec::new();
            for e in store.events(id)? {
                let actions = engine.handle(e.now, e.event.clone());
                log.push(LogEntry { now: e.now, event: e.event, actions });
            }
            invariants::check_final(&record.spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
            // The finished rollout's snapshot is its final state, the log kept whole.
            let snap = store.snapshot(id)?.context("no snapshot of the finished rollout")?;
            assert_eq!(snap.seq, log.len() as u64);
            assert_eq!(snap, engine.snapshot(snap.seq, snap.at));
            Ok(())
        }
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_leader_killed_mid_rollout_another_takes_over_and_each_step_runs_once() -> anyhow::Result<()> {
        if skip("ha_leader_killed_mid_rollout_another_takes_over_and_each_step_runs_once") {
            return Ok(());
        }
        let mut f = HaFleet::start(HOSTS).await?;
        let id = f.submit(0.3).await?;
        f.wait_runs(2, Duration::from_secs(30)).await?;
        let (leader, _) = f.leader(Duration::from_secs(10)).await?;
        let killed_at = now_ms();
        let before = f.runs().len();
        f.coordinators[leader] = None; // SIGKILL
        // Moving again: a step started after the kill.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f.runs().iter().skip(before).any(|(_, t)| *t > killed_at) {
            if Instant::now() > deadline {
                bail!("the rollout did not move within 60s of the leader's death; logs in {}", f.dir.path().display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let moved = f.runs().iter().skip(before).map(|(_, t)| *t).filter(|t| *t > killed_at).min().unwrap_or(0);
        let failover_ms = moved - killed_at;
        println!("ha failover: leader killed -> rollout moving again in {failover_ms} ms (lease TTL {LEASE_TTL_S}s)");
        let status = f.wait_finished(&id, Duration::from_secs(120)).await?;
        f.check(&id, &status, HOSTS)?;
        assert!(failover_ms <= 10_000, "failover took {failover_ms} ms");
        // Kill the new leader too: the next one loads the finished rollout
        // from the snapshot taken at its end, replaying nothing.
        let (second, _) = f.leader(Duration::from_secs(10)).await?;
        f.coordinators[second] = None;
        let (third, mut op) = f.leader(Duration::from_secs(30)).await?;
        let got =
            op.get_rollout(pb::GetRolloutRequest { rollout_id: id.clone(), ..Default::default() }).await?.into_inner();
        assert_eq!(got.state, "succeeded");
        let log = f.log(&format!("coordinator-{third}.log"));
        assert!(
            log.contains("rollout restored from its snapshot"),
            "coordinator {third} did not load the rollout from its snapshot; logs in {}",
            f.dir.path().display()
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_a_paused_leader_is_deposed_its_writes_are_refused_and_it_dispatches_nothing() -> anyhow::Result<()> {
        if skip("ha_a_paused_leader_is_deposed_its_writes_are_refused_and_it_dispatches_nothing") {
            return Ok(());
        }
        let mut f = HaFleet::start(HOSTS).await?;
        let id = f.submit(0.5).await?;
        f.wait_runs(1, Duration::from_secs(30)).await?;
        let (old, _) = f.leader(Duration::from_secs(10)).await?;
        let paused = f.coordinators[old].take().context("leader process")?;
        paused.signal("STOP");
        // Another takes over once the paused leader's lease has expired.
        let (new, _) = f.leader(Duration::from_secs(30)).await?;
        assert_ne!(new, old);
        let runs_at_takeover = f.runs().len();
        f.wait_runs(runs_at_takeover + 1, Duration::from_secs(60)).await?;
        paused.signal("CONT");
        f.coordinators[old] = Some(paused);
        // The old leader wakes up believing it leads: its first write is
        // refused, it stops acting and follows.
        let log_name = format!("coordinator-{old}.log");
        // Generous: on a loaded machine the old leader's keep-alive task may
        // take a while to run after SIGCONT; the tail of its log says where
        // it stood if it did not step down.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = f.log(&log_name);
            if log.contains("stepping down") && log.contains("following again") {
                break;
            }
            if Instant::now() > deadline {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!("the old leader did not step down within 60s; the end of its log:\n{}", tail.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(f.probe(old).await.is_none(), "the old leader still answers as a leader");
        let status = f.wait_finished(&id, Duration::from_secs(120)).await?;
        // Dispatches nothing: no step ran twice.
        f.check(&id, &status, HOSTS)?;
        Ok(())
    }

    /// `--http-listen` in HA: the leader serves the dashboard and its
    /// metrics (`convoy_ha_leader 1`); a follower answers `/metrics` with
    /// `convoy_ha_leader 0` (token checked) and every page with 503 naming
    /// the leader; after the leader dies its successor serves them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_the_dashboard_and_metrics_follow_the_leader() -> anyhow::Result<()> {
        if skip("ha_the_dashboard_and_metrics_follow_the_leader") {
            return Ok(());
        }
        let mut f = HaFleet::start(1).await?;
        let (leader, _) = f.leader(Duration::from_secs(10)).await?;
        let (status, body) = f.http_get(leader, "/metrics", true).await?;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("convoy_ha_leader 1"), "{body}");
        assert!(body.contains("convoy_agents_connected{agent_version="), "the leader's own metrics: {body}");
        let (status, body) = f.http_get(leader, "/agents", true).await?;
        assert_eq!(status, 200, "the leader's dashboard: {body}");
        assert!(body.contains("h0"), "the agents page lists the agent: {body}");
        for i in (0..3).filter(|&i| i != leader) {
            let (status, body) = f.http_get(i, "/metrics", true).await?;
            assert_eq!(status, 200, "follower {i}: {body}");
            assert!(body.contains("convoy_ha_leader 0"), "follower {i}: {body}");
            assert!(!body.contains("convoy_agents_connected"), "a follower has no fleet to report: {body}");
            let (status, _) = f.http_get(i, "/metrics", false).await?;
            assert_eq!(status, 401, "follower {i} without a token");
            // Browsers are sent to the same page on the leader's dashboard.
            let location = f.redirected_to(i, "/agents?host=h0", leader).await?;
            let leader_http = f.http_addr(leader).context("the leader's https address")?;
            assert_eq!(location, format!("https://{leader_http}/agents?host=h0"), "follower {i}");
        }
        f.coordinators[leader] = None; // SIGKILL
        let (next, _) = f.leader(Duration::from_secs(30)).await?;
        assert_ne!(next, leader);
        // The remaining follower sends browsers to the new leader.
        let other = (0..3).find(|&i| i != leader && i != next).expect("three coordinators");
        let location = f.redirected_to(other, "/", next).await?;
        assert_eq!(location, format!("https://{}/", f.http_addr(next).context("the new leader's address")?));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = f.http_get(next, "/metrics", true).await?;
            if status == 200 && body.contains("convoy_ha_leader 1") {
                break;
            }
            if Instant::now() > deadline {
                bail!("coordinator {next} leads but its /metrics says {status}: {body}\n{}", f.tails());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_etcd_down_for_a_while_coordinators_wait_and_recover_without_losing_events() -> anyhow::Result<()> {
        if skip("ha_etcd_down_for_a_while_coordinators_wait_and_recover_without_losing_events") {
            return Ok(());
        }
        let mut f = HaFleet::start(HOSTS).await?;
        let id = f.submit(0.3).await?;
        f.wait_runs(2, Duration::from_secs(30)).await?;
        f.etcd.kill();
        let down_at = Instant::now();
        // Down for 2 s (bounded), then back on the same data and ports.
        while down_at.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Same ports (the coordinators know them): retry while one is still taken.
        let mut tries = 0;
        while let Err(e) = f.etcd.restart() {
            tries += 1;
            if tries >= 10 || !e.to_string().contains("address already in use") {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = f.wait_finished(&id, Duration::from_secs(120)).await?;
        f.check(&id, &status, HOSTS)?;
        Ok(())
    }

    /// etcd over TLS that wants client certificates (`--client-cert-auth`):
    /// the store works with the CA and this coordinator's certificate, and
    /// is refused without the certificate or over plain HTTP; a coordinator
    /// process given `--etcd-ca`, `--etcd-cert` and `--etcd-key` leads and
    /// answers, and one whose `--etcd-ca` holds no PEM stops at once, naming
    /// the flag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_etcd_over_tls_needs_the_ca_and_a_client_certificate() -> anyhow::Result<()> {
        use convoy_common::model::UnixMillis;
        use convoy_coordinator::enrolment::JoinTokenRecord;
        if skip("ha_etcd_over_tls_needs_the_ca_and_a_client_certificate") {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let etcd = Etcd::start_tls(dir.path())?;
        let pki = etcd.pki.as_ref().expect("a TLS etcd");
        let t = etcd.target()?;
        let store = tokio::task::spawn_blocking(move || EtcdStore::open(&t, None)).await??;
        let token = JoinTokenRecord { expires: UnixMillis(9), uses_left: 1, hosts: None, created_by: "tls".into() };
        store.put_join_token("tls", Some(&token))?;
        assert_eq!(store.join_token("tls")?, Some(token));

        let no_cert = EtcdTls { ca_pem: pki.tls.ca_pem.clone(), identity: None };
        for (what, t) in [
            ("without a client certificate", EtcdTarget::parse(&etcd.url())?.with_tls(no_cert)),
            ("over plain http", EtcdTarget::parse(&etcd.url())?),
        ] {
            let opened = tokio::task::spawn_blocking(move || EtcdStore::open(&t, None).map(drop)).await?;
            assert!(opened.is_err(), "etcd let a store in {what}");
        }

        let data = dir.path().join("c0");
        let init = convoy_coordinator::cli::init(&data, &[], None)?;
        let serve = |log: &str, ca: String| {
            let args: Vec<String> = [
                "convoy-coordinator",
                "serve",
                "--data-dir",
                &data.display().to_string(),
                "--listen",
                "127.0.0.1:0",
                "--addr-file",
                &data.join("coordinator.addr").display().to_string(),
                "--store",
                &etcd.url(),
                "--etcd-ca",
                &ca,
                "--etcd-cert",
                &pki.file("client.pem"),
                "--etcd-key",
                &pki.file("client-key.pem"),
            ]
            .map(String::from)
            .to_vec();
            child(dir.path(), log, "coordinator", &args)
        };
        // A CA file that is no PEM: refused before anything else.
        let not_pem = dir.path().join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello")?;
        let mut bad = serve("bad.log", not_pem.display().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while bad.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("a coordinator with a bad --etcd-ca still runs after 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("bad.log"))?;
        assert!(log.contains("--etcd-ca") && log.contains("no PEM"), "{log}");

        let _c = serve("coordinator.log", pki.file("ca.pem"))?;
        let ca_pem = std::fs::read_to_string(&init.ca_file)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) =
                std::fs::read_to_string(data.join("coordinator.addr")).ok().filter(|a| !a.trim().is_empty())
                && let Ok(Ok(mut op)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    connect_operator(&format!("https://{}", addr.trim()), &ca_pem, &init.operator_token),
                )
                .await
                && op.list_agents(pb::ListAgentsRequest {}).await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
                bail!("the coordinator on etcd over TLS did not lead within 30s: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The store alone on a real etcd: records round-trip (a batch of events
    /// larger than one transaction stays in order), a value over the limit
    /// is refused by name, and a store fenced by a leader key whose lease is
    /// gone refuses every write with `Deposed` (and says so on `lost`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_store_on_etcd_round_trips_refuses_big_values_and_fences_writes() -> anyhow::Result<()> {
        use convoy_common::engine::Event;
        use convoy_common::model::UnixMillis;
        use convoy_coordinator::CoordinatorError;
        use convoy_coordinator::enrolment::JoinTokenRecord;
        use convoy_coordinator::store::StoredEvent;
        if skip("ha_store_on_etcd_round_trips_refuses_big_values_and_fences_writes") {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let etcd = Etcd::start(dir.path())?;
        let target = EtcdTarget::parse(&etcd.url())?;
        let t = target.clone();
        let plain = tokio::task::spawn_blocking(move || EtcdStore::open(&t, None)).await??;
        let evs: Vec<StoredEvent> =
            (0..300).map(|i| StoredEvent { now: UnixMillis(i), event: Event::Started }).collect();
        plain.append_events("r-a", 0, &evs)?;
        plain.append_events("r-ab", 0, &evs[..1])?;
        let got = plain.events("r-a")?;
        assert_eq!(got.len(), 300);
        assert!(got.windows(2).all(|w| w[0].now < w[1].now), "events out of order");
        assert_eq!(plain.events("r-ab")?.len(), 1, "a rollout whose id extends another's is apart");
        let token = JoinTokenRecord { expires: UnixMillis(9), uses_left: 2, hosts: None, created_by: "t".into() };
        plain.put_join_token("abc", Some(&token))?;
        assert_eq!(plain.join_token("abc")?, Some(token));
        plain.put_join_token("abc", None)?;
        assert_eq!(plain.join_token("abc")?, None);
        for ms in 1..=25 {
            plain.add_step_time("p", "h-1", "g", "s", ms, 20)?;
        }
        assert_eq!(plain.step_times("p")?[0].recent_ms, (6..=25).collect::<Vec<u64>>());
        let on_host = plain.host_step_times("p")?;
        assert_eq!((on_host.len(), on_host[0].host.as_str()), (1, "h-1"));
        assert_eq!(on_host[0].times.recent_ms, (6..=25).collect::<Vec<u64>>());
        // Holds, the audit trail (in recording order, newest kept by the
        // limit) and paged events, as on sled.
        let hold = convoy_common::hold::Hold {
            host: "web-1".into(),
            reason: "disk".into(),
            by: "ops".into(),
            since: UnixMillis(5),
        };
        plain.put_hold(&hold)?;
        assert_eq!(plain.holds()?, vec![hold.clone()]);
        assert_eq!(plain.remove_hold("web-1")?, Some(hold));
        assert!(plain.holds()?.is_empty());
        for at in [10, 20, 30] {
            let entry = convoy_common::audit::AuditEntry {
                at: UnixMillis(at),
                who: format!("op{at}"),
                role: "operator".into(),
                peer: "127.0.0.1:1".into(),
                action: convoy_common::audit::AuditAction::Pause,
                target: "r".into(),
                outcome: convoy_common::audit::AuditOutcome::Ok,
                detail: String::new(),
            };
            plain.append_audit(&entry)?;
        }
        let who = |v: Vec<convoy_common::audit::AuditEntry>| v.into_iter().map(|e| e.who).collect::<Vec<_>>();
        assert_eq!(who(plain.audit(UnixMillis(0), 10)?), ["op10", "op20", "op30"]);
        assert_eq!(who(plain.audit(UnixMillis(15), 10)?), ["op20", "op30"]);
        assert_eq!(who(plain.audit(UnixMillis(0), 2)?), ["op20", "op30"]);
        // Retention: what was recorded before 20 goes, 20 itself stays.
        plain.prune_audit(UnixMillis(20))?;
        assert_eq!(who(plain.audit(UnixMillis(0), 10)?), ["op20", "op30"]);
        let page: Vec<u64> = plain.events_page("r-a", 298, 10)?.into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(page, [298, 299]);
        let huge = StoredEvent {
            now: UnixMillis(1),
            event: Event::Operator { command: convoy_common::engine::OperatorCommand::Pause, by: "x".repeat(2 << 20) },
        };
        let err = plain.append_events("r-big", 0, &[huge]).unwrap_err();
        assert!(err.to_string().contains("over the etcd store's limit"), "{err}");

        // A real leader key, then its lease revoked: the fenced store's
        // writes are refused.
        let client = target.client().await?;
        let lease = convoy_coordinator::ha::election::lease(&client, Duration::from_secs(3)).await?;
        let leadership = convoy_coordinator::ha::election::campaign(&client, &target, "me:1", &lease).await?;
        let (t, fence) = (target.clone(), leadership.fence.clone());
        let fenced = tokio::task::spawn_blocking(move || EtcdStore::open(&t, Some(fence))).await??;
        fenced.append_events("r-f", 0, &evs[..3])?;
        lease.lost.cancel(); // the keep-alive task revokes the lease
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match fenced.append_events("r-f", 3, &evs[3..4]) {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(()) => bail!("fenced writes still accepted 10s after the lease was revoked"),
            }
        };
        assert!(matches!(err, CoordinatorError::Deposed { .. }), "{err}");
        assert!(fenced.lost().is_cancelled());
        assert!(matches!(fenced.put_join_token("x", None), Err(CoordinatorError::Deposed { .. })));
        let snap = snapshot_of(3, 3);
        assert!(matches!(fenced.put_snapshot("r-f", &snap), Err(CoordinatorError::Deposed { .. })));
        assert!(matches!(fenced.compact_events("r-f", 1), Err(CoordinatorError::Deposed { .. })));
        assert!(plain.events("r-f")?.len() >= 3);
        assert_eq!(plain.snapshot("r-f")?, None);
        Ok(())
    }

    /// An engine snapshot of a rollout of `hosts` hosts, just started,
    /// covering `seq` events.
    fn snapshot_of(hosts: usize, seq: u64) -> convoy_common::engine::EngineSnapshot {
        use convoy_common::engine::Event;
        use convoy_common::model::{ExecSpec, RolloutSpec, StepKind, StepSpec, UnixMillis};
        let step = StepSpec {
            name: "upgrade".into(),
            timeout: Duration::from_secs(60),
            kind: StepKind::Exec(ExecSpec { command: "true".into(), ..ExecSpec::default() }),
            rerun_safe: false,
        };
        let spec = RolloutSpec::one_group((0..hosts).map(|h| format!("web-{h:05}")), vec![step], 50);
        let mut engine = Engine::new("r-s", spec);
        engine.handle(UnixMillis(1), Event::Started);
        engine.snapshot(seq, UnixMillis(1))
    }

    /// Snapshots on etcd: one over etcd's value limit is split into parts
    /// and read back whole; a newer one replaces it (the older parts go);
    /// one over the snapshot limit is refused by name and the previous one
    /// stays; compaction deletes the events before a sequence. A format-3
    /// store is stamped 4 on open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ha_snapshots_on_etcd_are_split_replaced_refused_when_too_big_and_compact_the_log() -> anyhow::Result<()> {
        use convoy_common::engine::Event;
        use convoy_common::model::UnixMillis;
        use convoy_coordinator::store::StoredEvent;
        if skip("ha_snapshots_on_etcd_are_split_replaced_refused_when_too_big_and_compact_the_log") {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let etcd = Etcd::start(dir.path())?;
        let target = EtcdTarget::parse(&etcd.url())?;
        let mut client = target.client().await?;
        client.put(target.key(b"meta/format_version"), 3u32.to_be_bytes().to_vec(), None).await?;
        let t = target.clone();
        let store = tokio::task::spawn_blocking(move || EtcdStore::open(&t, None)).await??;
        let stamp = client.get(target.key(b"meta/format_version"), None).await?;
        assert_eq!(stamp.kvs()[0].value(), 4u32.to_be_bytes(), "a format-3 store is stamped 4");
        let parts = |client: &mut etcd_client::Client| {
            let mut client = client.clone();
            let prefix = target.key(b"snapshot_parts/r-s\0");
            async move {
                let opts = etcd_client::GetOptions::new().with_prefix().with_count_only();
                anyhow::Ok(client.get(prefix, Some(opts)).await?.count())
            }
        };

        let big = snapshot_of(6_000, 10);
        let size = big.to_json().len();
        assert!(size > 2 << 20, "{size} bytes: over etcd's limit");
        store.put_snapshot("r-s", &big)?;
        assert_eq!(store.snapshot("r-s")?.as_ref(), Some(&big));
        assert_eq!(parts(&mut client).await?, size.div_ceil(512 * 1024) as i64);
        let small = snapshot_of(10, 20);
        store.put_snapshot("r-s", &small)?;
        assert_eq!(store.snapshot("r-s")?.as_ref(), Some(&small));
        assert_eq!(parts(&mut client).await?, 1, "the older snapshot's parts are gone");
        let huge = snapshot_of(25_000, 30);
        let err = store.put_snapshot("r-s", &huge).unwrap_err().to_string();
        assert!(err.contains("over the etcd store's limit"), "{err}");
        assert_eq!(store.snapshot("r-s")?.as_ref(), Some(&small), "the previous snapshot stays");
        assert_eq!(store.snapshot("r-none")?, None);

        let evs: Vec<StoredEvent> =
            (0..300).map(|i| StoredEvent { now: UnixMillis(i), event: Event::Started }).collect();
        store.append_events("r-s", 0, &evs)?;
        store.append_events("r-s2", 0, &evs[..5])?;
        store.compact_events("r-s", 250)?;
        let tail = store.events_from("r-s", 0)?;
        assert_eq!(tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (250..300).collect::<Vec<u64>>());
        assert_eq!(store.events("r-s2")?.len(), 5, "another rollout's log is untouched");
        Ok(())
    }
}

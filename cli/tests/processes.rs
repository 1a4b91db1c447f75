//! Process-level tests: the real `convoy` binary as coordinator
//! (`__coordinator`), agents (`__agent`) and operator CLI, talking gRPC over
//! mTLS on loopback. The coordinator is killed with SIGKILL mid-rollout and
//! restarted on the same data directory; the rollout must finish with no step
//! run twice — for a rolling DAG and for a leader/follower cluster (whose
//! leader must still go last, after its switchover).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CONVOY: &str = env!("CARGO_BIN_EXE_convoy");

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn convoy(data: &Path, args: &[&str]) -> Output {
    Command::new(CONVOY).arg("--data-dir").arg(data).args(args).output().expect("run convoy")
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_coordinator(data: &Path, listen: &str, log: &Path) -> (Child, String) {
    let addr_file = data.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(CONVOY)
        .args(["__coordinator", "serve", "--listen", listen, "--heartbeat-ms", "200", "--data-dir"])
        .arg(data)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let addr = wait_for("coordinator address", Duration::from_secs(30), || {
        std::fs::read_to_string(&addr_file).ok().filter(|s| !s.is_empty())
    });
    (child, addr)
}

fn write_plan(dir: &Path) -> PathBuf {
    let plan = r#"name: restart-test
version: "2.0.0"
groups:
  - name: first
    select: { tier: a }
    strategy: { max_parallel: 1 }
    steps:
      - name: work
        timeout: 30s
        exec:
          command: sh
          args: ["-c", "echo {{version}} >> {{label.dir}}/runs; sleep 0.4"]
  - name: second
    select: { tier: b }
    after: [first]
    steps:
      - name: work
        exec:
          command: sh
          args: ["-c", "echo {{version}} >> {{label.dir}}/runs"]
    checks:
      - name: recorded
        file: { path: "{{label.dir}}/runs", contains: "2.0.0" }
"#;
    let p = dir.join("plan.yaml");
    std::fs::write(&p, plan).unwrap();
    p
}

#[test]
fn plan_validation_errors_exit_2_and_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nversion: \"1\"\ngroups:\n  - name: a\n    select: { role: db }\n    after: [ghost]\n",
    )
    .unwrap();
    let out = Command::new(CONVOY).args(["plan"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:6"), "{err}");
    assert!(err.contains("ghost"), "{err}");
}

/// A coordinator (initialised in `dir/coord`) and one agent process per
/// `(id, labels)`, each with a `dir=<its own directory>` label; returns once
/// all are connected.
struct Fleet {
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    addr: String,
    /// The coordinator first, then one agent per host, in `hosts` order.
    procs: Procs,
    hosts: Vec<(String, Vec<(String, String)>)>,
    token: String,
}

impl Fleet {
    fn start(hosts: &[(&str, &[(&str, &str)])]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("coord");
        let log = dir.path().join("coordinator.log");
        let init = Command::new(CONVOY)
            .args(["__coordinator", "init", "--join-token-uses", "100", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
        let stdout = String::from_utf8_lossy(&init.stdout);
        let token = stdout
            .lines()
            .filter(|l| l.starts_with("join token"))
            .find_map(|l| l.rsplit_once(": ").map(|(_, t)| t))
            .expect("join token printed")
            .trim()
            .to_string();
        let mut procs = Procs(Vec::new());
        let (coord, addr) = start_coordinator(&data, "127.0.0.1:0", &log);
        procs.0.push(coord);
        let mut fleet = Fleet {
            dir,
            data,
            log,
            addr,
            procs,
            hosts: hosts
                .iter()
                .map(|(id, l)| (id.to_string(), l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
                .collect(),
            token,
        };
        for i in 0..hosts.len() {
            let child = fleet.spawn_agent(i);
            fleet.procs.0.push(child);
        }
        fleet.wait_connected(hosts.len());
        fleet
    }

    fn wait_connected(&self, n: usize) {
        wait_for("agents to connect", Duration::from_secs(60), || {
            let out = convoy(&self.data, &["agents", "--output", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v.as_array()?.iter().filter(|a| a["connected"] == true).count() == n).then_some(())
        });
    }

    /// Start the agent of host `i` (its state directory survives restarts).
    fn spawn_agent(&self, i: usize) -> Child {
        let (id, labels) = &self.hosts[i];
        let hdir = self.dir.path().join(id);
        std::fs::create_dir_all(&hdir).unwrap();
        let mut cmd = Command::new(CONVOY);
        cmd.arg("__agent")
            .args(["--coordinator", &format!("https://{}", self.addr), "--host-id", id])
            .env("CONVOY_JOIN_TOKEN", &self.token)
            .arg("--ca-file")
            .arg(self.data.join("tls/ca.pem"))
            .arg("--state-dir")
            .arg(hdir.join("state"))
            .args(["--label", &format!("dir={}", hdir.display())]);
        for (k, v) in labels {
            cmd.args(["--label", &format!("{k}={v}")]);
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{id}.log")));
        cmd.stdout(Stdio::null()).stderr(log.unwrap()).spawn().unwrap()
    }

    /// SIGKILL the agent of host `i` (its step's processes live on) and start it again.
    fn kill_and_restart_agent(&mut self, i: usize) {
        let agent = &mut self.procs.0[i + 1];
        agent.kill().unwrap();
        agent.wait().unwrap();
        self.procs.0[i + 1] = self.spawn_agent(i);
    }

    /// SIGKILL the coordinator and start it again on the same data and address.
    fn kill_and_restart_coordinator(&mut self) {
        let mut coord = self.procs.0.remove(0);
        coord.kill().unwrap();
        coord.wait().unwrap();
        let (coord, _) = start_coordinator(&self.data, &self.addr, &self.log);
        self.procs.0.insert(0, coord);
    }

    fn convoy(&self, args: &[&str]) -> Output {
        convoy(&self.data, args)
    }

    /// Follow `rollout` to its end and return its final status.
    fn finish(&self, rollout: &str) -> serde_json::Value {
        let watched = self.convoy(&["watch", rollout]);
        assert!(watched.status.success(), "{watched:?}\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        let status = self.convoy(&["status", rollout, "--output", "json"]);
        serde_json::from_slice(&status.stdout).unwrap()
    }
}

#[test]
fn coordinator_killed_mid_rollout_resumes_and_runs_nothing_twice() {
    let hosts: [(&str, &[(&str, &str)]); 5] = [
        ("a-1", &[("tier", "a")]),
        ("a-2", &[("tier", "a")]),
        ("a-3", &[("tier", "a")]),
        ("b-1", &[("tier", "b")]),
        ("b-2", &[("tier", "b")]),
    ];
    let mut fleet = Fleet::start(&hosts);
    let dir = fleet.dir.path().to_path_buf();
    let data = fleet.data.clone();

    let plan = write_plan(dir.as_path());
    let shown = convoy(&data, &["plan", plan.to_str().unwrap()]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("batch 3: a-3"), "{text}");

    let applied = convoy(&data, &["apply", "--detach", plan.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();

    // Kill the coordinator once the first host has run and the second is on its way.
    wait_for("a-1 to run", Duration::from_secs(30), || std::fs::read_to_string(dir.as_path().join("a-1/runs")).ok());
    fleet.kill_and_restart_coordinator();
    let v = fleet.finish(&rollout);
    assert_eq!(v["state"], "succeeded", "{v}");
    for (id, _) in hosts {
        let runs = std::fs::read_to_string(dir.as_path().join(id).join("runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "host {id} ran its step {} times", runs.lines().count());
    }
}

#[test]
fn a_cluster_rollout_survives_a_coordinator_kill_and_keeps_the_leader_last() {
    let labels: &[(&str, &str)] = &[("role", "mc"), ("cluster", "c1")];
    let mut fleet = Fleet::start(&[("m-1", labels), ("m-2", labels), ("m-3", labels)]);
    let shared = fleet.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("leader-c1"), "m-1\n").unwrap();
    let plan = format!(
        r#"name: cluster-restart
version: "2.0.0"
groups:
  - name: mc
    select: {{ role: mc }}
    strategy:
      type: cluster
      leader:
        exec: {{ command: sh, args: ["-c", 'test "$(cat {shared}/leader-c1)" = {{{{host}}}}'] }}
        follower_when: {{ exit_code: 1 }}
      switchover:
        - name: hand-over
          exec: {{ command: sh, args: ["-c", 'head -n1 {shared}/upgraded-c1 > {shared}/leader-c1'] }}
    steps:
      - name: upgrade
        timeout: 30s
        exec:
          command: sh
          args: ["-c", 'echo {{{{host}}}} >> {shared}/order; echo {{{{version}}}} >> {{{{label.dir}}}}/runs; sleep 0.4; echo {{{{host}}}} >> {shared}/upgraded-c1']
"#,
        shared = shared.display()
    );
    let plan_path = fleet.dir.path().join("cluster.yaml");
    std::fs::write(&plan_path, plan).unwrap();
    let applied = fleet.convoy(&["apply", "--detach", plan_path.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();

    // Kill the coordinator while the first follower is upgrading.
    wait_for("a follower to start", Duration::from_secs(30), || std::fs::read_to_string(shared.join("order")).ok());
    fleet.kill_and_restart_coordinator();
    let v = fleet.finish(&rollout);
    assert_eq!(v["state"], "succeeded", "{v}");

    for id in ["m-1", "m-2", "m-3"] {
        let runs = std::fs::read_to_string(fleet.dir.path().join(id).join("runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "host {id} was upgraded {} times", runs.lines().count());
    }
    let order = std::fs::read_to_string(shared.join("order")).unwrap();
    assert_eq!(order.lines().last(), Some("m-1"), "the leader goes last: {order}");
    let leader = std::fs::read_to_string(shared.join("leader-c1")).unwrap();
    assert_ne!(leader.trim(), "m-1", "the switchover handed the leadership to an upgraded follower");
}

/// The lines of a marker file (`start ID PID` / `end ID PID`).
fn marker_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Every execution started at most once, unless `rerun` allows a second
/// start, and never two runs of one execution side by side.
fn check_once(lines: &[(String, String)], rerun: bool) {
    let mut running: std::collections::BTreeSet<&str> = Default::default();
    let mut starts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (what, id) in lines {
        match what.as_str() {
            "start" => {
                assert!(running.insert(id), "execution {id} ran twice side by side: {lines:?}");
                *starts.entry(id).or_default() += 1;
            }
            "end" => {
                running.remove(id.as_str());
            }
            _ => {}
        }
    }
    for (id, n) in starts {
        assert!(n == 1 || rerun, "execution {id} started {n} times: {lines:?}");
    }
}

fn marked_step_plan(name: &str, sleep: &str, rerun_safe: bool, steps: usize) -> String {
    let mut plan = format!(
        "name: {name}\nversion: \"2.0.0\"\nmax_failures: \"100%\"\ngroups:\n  - name: all\n    select: {{ role: w }}\n    strategy: {{ max_parallel: \"100%\", max_failures: \"100%\" }}\n    steps:\n"
    );
    for k in 0..steps {
        plan.push_str(&format!(
            "      - name: work-{k}\n        timeout: 30s\n        rerun_safe: {rerun_safe}\n        exec:\n          command: sh\n          args: [\"-c\", 'echo start $CONVOY_EXECUTION_ID >> {{{{label.dir}}}}/marker; sleep {sleep}; echo end $CONVOY_EXECUTION_ID >> {{{{label.dir}}}}/marker']\n"
        ));
    }
    plan
}

#[test]
fn an_agent_killed_mid_step_waits_for_it_and_never_runs_it_twice() {
    let hosts: [(&str, &[(&str, &str)]); 2] = [("w-1", &[("role", "w")]), ("w-2", &[("role", "w")])];
    let mut fleet = Fleet::start(&hosts);
    let dir = fleet.dir.path().to_path_buf();
    // w-1's step is not safe to re-run (the default); w-2's is.
    for (i, (plan_name, rerun)) in [("once", false), ("rerun", true)].into_iter().enumerate() {
        let plan = dir.join(format!("{plan_name}.yaml"));
        let text =
            marked_step_plan(plan_name, "1.5", rerun, 1).replace("role: w", &format!("role: w, host: w-{}", i + 1));
        std::fs::write(&plan, text).unwrap();
        let applied = fleet.convoy(&["apply", "--detach", plan.to_str().unwrap()]);
        assert!(applied.status.success(), "{applied:?}");
        let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();
        let marker = dir.join(format!("w-{}", i + 1)).join("marker");
        wait_for("the step to start", Duration::from_secs(30), || std::fs::read_to_string(&marker).ok());
        fleet.kill_and_restart_agent(i);
        let v = fleet.finish(&rollout);
        let lines = marker_lines(&marker);
        check_once(&lines, rerun);
        let log = std::fs::read_to_string(dir.join(format!("w-{}.log", i + 1))).unwrap_or_default();
        assert!(log.contains("execution interrupted by an agent restart"), "{log}");
        if rerun {
            assert_eq!(v["hosts"][0]["state"], "succeeded", "{v}");
            assert_eq!(lines.iter().filter(|(w, _)| w == "start").count(), 2, "{lines:?}");
        } else {
            // The first run was waited for (it ended), then reported unknown.
            assert_eq!(lines.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(), ["start", "end"], "{lines:?}");
            assert_eq!(v["hosts"][0]["state"], "failed", "{v}");
            assert!(v["hosts"][0]["message"].as_str().unwrap().contains("outcome unknown"), "{v}");
        }
    }
}

#[test]
fn agents_killed_at_random_points_never_run_an_execution_twice() {
    let hosts: [(&str, &[(&str, &str)]); 3] =
        [("r-1", &[("role", "w")]), ("r-2", &[("role", "w")]), ("r-3", &[("role", "w")])];
    let mut fleet = Fleet::start(&hosts);
    let dir = fleet.dir.path().to_path_buf();
    let mut kills = 0;
    for seed in 1..=3u64 {
        let plan = dir.join(format!("random-{seed}.yaml"));
        std::fs::write(&plan, marked_step_plan(&format!("random-{seed}"), "0.3", false, 3)).unwrap();
        let applied = fleet.convoy(&["apply", "--detach", plan.to_str().unwrap()]);
        assert!(applied.status.success(), "{applied:?}");
        let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();
        // A small LCG picks which agent dies and when (0-600 ms apart).
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        for _ in 0..3 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis((x >> 33) % 600));
            fleet.kill_and_restart_agent(((x >> 20) % 3) as usize);
            kills += 1;
        }
        let v = fleet.finish(&rollout);
        assert!(matches!(v["state"].as_str(), Some("succeeded" | "failed")), "{v}");
        for (id, _) in hosts {
            check_once(&marker_lines(&dir.join(id).join("marker")), false);
        }
        fleet.wait_connected(3);
    }
    println!("agent kills: {kills}, no execution ran twice");
}

//! Process-level tests: the real `convoy` binary as coordinator
//! (`__coordinator`), agents (`__agent`) and operator CLI, talking gRPC over
//! mTLS on loopback. The coordinator is killed with SIGKILL mid-rollout and
//! restarted on the same data directory; the rollout must finish with no step
//! run twice — for a rolling DAG and for a leader/follower cluster (whose
//! leader must still go last, after its switchover).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use convoy_fleet::processes::{AgentSpec, LocalFleet};
use convoy_fleet::wait::poll;

const CONVOY: &str = env!("CARGO_BIN_EXE_convoy");

fn convoy(data: &Path, args: &[&str]) -> Output {
    Command::new(CONVOY).arg("--data-dir").arg(data).args(args).output().expect("run convoy")
}

fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, what, f).unwrap_or_else(|e| panic!("{e}"))
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

/// A local fleet of this binary's processes (coordinator heartbeat 200 ms)
/// with one agent per `(id, labels)`, each with a `dir=<its host directory>`
/// label; returns once all are connected.
struct Fleet {
    /// Dropped first: the processes stop before their directory goes.
    fleet: LocalFleet,
    tmp: tempfile::TempDir,
}

impl Fleet {
    async fn start(hosts: &[(&str, &[(&str, &str)])]) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let mut fleet = LocalFleet::start(Path::new(CONVOY), tmp.path(), 200, true).unwrap();
        for (id, labels) in hosts {
            let hdir = fleet.host_dir(id);
            std::fs::create_dir_all(&hdir).unwrap();
            let dir = [("dir", hdir.display().to_string())];
            let labels = dir.into_iter().chain(labels.iter().map(|(k, v)| (*k, v.to_string())));
            fleet.spawn_agent(AgentSpec::new(id, labels)).unwrap();
        }
        let fleet = Fleet { fleet, tmp };
        fleet.wait_connected(hosts.len()).await;
        fleet
    }

    /// The fleet's directory (hosts are under `hosts/`).
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Host `id`'s directory: its `dir` label.
    fn host_dir(&self, id: &str) -> PathBuf {
        self.fleet.host_dir(id)
    }

    async fn wait_connected(&self, n: usize) {
        self.fleet.wait_connected(n, Duration::from_secs(60)).await.unwrap();
    }

    /// SIGKILL the agent of host `id` (its step's processes live on) and start it again.
    fn kill_and_restart_agent(&mut self, id: &str) {
        self.fleet.kill_and_restart_agent(id).unwrap();
    }

    /// SIGKILL the coordinator and start it again on the same data and address.
    fn kill_and_restart_coordinator(&mut self) {
        self.fleet.kill_and_restart_coordinator().unwrap();
    }

    fn convoy(&self, args: &[&str]) -> Output {
        convoy(&self.fleet.data_dir, args)
    }

    /// Follow `rollout` to its end and return its final status.
    fn finish(&self, rollout: &str) -> serde_json::Value {
        let watched = self.convoy(&["watch", rollout]);
        let log = || std::fs::read_to_string(self.fleet.coordinator_log()).unwrap_or_default();
        assert!(watched.status.success(), "{watched:?}\n{}", log());
        let status = self.convoy(&["status", rollout, "--output", "json"]);
        serde_json::from_slice(&status.stdout).unwrap()
    }
}

#[tokio::test]
async fn coordinator_killed_mid_rollout_resumes_and_runs_nothing_twice() {
    let hosts: [(&str, &[(&str, &str)]); 5] = [
        ("a-1", &[("tier", "a")]),
        ("a-2", &[("tier", "a")]),
        ("a-3", &[("tier", "a")]),
        ("b-1", &[("tier", "b")]),
        ("b-2", &[("tier", "b")]),
    ];
    let mut fleet = Fleet::start(&hosts).await;
    let dir = fleet.dir().to_path_buf();
    let data = fleet.fleet.data_dir.clone();

    let plan = write_plan(dir.as_path());
    let shown = convoy(&data, &["plan", plan.to_str().unwrap()]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("batch 3: a-3"), "{text}");

    let applied = convoy(&data, &["apply", "--detach", plan.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();

    // Kill the coordinator once the first host has run and the second is on its way.
    let a1_runs = fleet.host_dir("a-1").join("runs");
    wait_for("a-1 to run", Duration::from_secs(30), || std::fs::read_to_string(&a1_runs).ok());
    fleet.kill_and_restart_coordinator();
    let v = fleet.finish(&rollout);
    assert_eq!(v["state"], "succeeded", "{v}");
    for (id, _) in hosts {
        let runs = std::fs::read_to_string(fleet.host_dir(id).join("runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "host {id} ran its step {} times", runs.lines().count());
    }
}

#[tokio::test]
async fn a_cluster_rollout_survives_a_coordinator_kill_and_keeps_the_leader_last() {
    let labels: &[(&str, &str)] = &[("role", "mc"), ("cluster", "c1")];
    let mut fleet = Fleet::start(&[("m-1", labels), ("m-2", labels), ("m-3", labels)]).await;
    let shared = fleet.dir().join("shared");
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
    let plan_path = fleet.dir().join("cluster.yaml");
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
        let runs = std::fs::read_to_string(fleet.host_dir(id).join("runs")).unwrap();
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

#[tokio::test]
async fn an_agent_killed_mid_step_waits_for_it_and_never_runs_it_twice() {
    let hosts: [(&str, &[(&str, &str)]); 2] = [("w-1", &[("role", "w")]), ("w-2", &[("role", "w")])];
    let mut fleet = Fleet::start(&hosts).await;
    let dir = fleet.dir().to_path_buf();
    // w-1's step is not safe to re-run (the default); w-2's is.
    for (i, (plan_name, rerun)) in [("once", false), ("rerun", true)].into_iter().enumerate() {
        let plan = dir.join(format!("{plan_name}.yaml"));
        let text =
            marked_step_plan(plan_name, "1.5", rerun, 1).replace("role: w", &format!("role: w, host: w-{}", i + 1));
        std::fs::write(&plan, text).unwrap();
        let applied = fleet.convoy(&["apply", "--detach", plan.to_str().unwrap()]);
        assert!(applied.status.success(), "{applied:?}");
        let rollout = String::from_utf8_lossy(&applied.stdout).trim().to_string();
        let host = format!("w-{}", i + 1);
        let marker = fleet.host_dir(&host).join("marker");
        wait_for("the step to start", Duration::from_secs(30), || std::fs::read_to_string(&marker).ok());
        fleet.kill_and_restart_agent(&host);
        let v = fleet.finish(&rollout);
        let lines = marker_lines(&marker);
        check_once(&lines, rerun);
        let log = std::fs::read_to_string(fleet.fleet.agent_log(&host)).unwrap_or_default();
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

#[tokio::test]
async fn agents_killed_at_random_points_never_run_an_execution_twice() {
    let hosts: [(&str, &[(&str, &str)]); 3] =
        [("r-1", &[("role", "w")]), ("r-2", &[("role", "w")]), ("r-3", &[("role", "w")])];
    let mut fleet = Fleet::start(&hosts).await;
    let dir = fleet.dir().to_path_buf();
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
            fleet.kill_and_restart_agent(hosts[((x >> 20) % 3) as usize].0);
            kills += 1;
        }
        let v = fleet.finish(&rollout);
        assert!(matches!(v["state"].as_str(), Some("succeeded" | "failed")), "{v}");
        for (id, _) in hosts {
            check_once(&marker_lines(&fleet.host_dir(id).join("marker")), false);
        }
        fleet.wait_connected(3).await;
    }
    println!("agent kills: {kills}, no execution ran twice");
}

/// A coordinator that stops answering (SIGSTOP: its sockets stay open and
/// the kernel still takes the agent's bytes, so only the missing heartbeat
/// acks tell) loses its agent's session within two heartbeats and the
/// connect timeout, and the agent is back once the coordinator answers.
#[tokio::test]
async fn an_agent_leaves_a_coordinator_that_stops_acking_heartbeats_and_comes_back() {
    let f = Fleet::start(&[("web-1", &[("tier", "a")])]).await;
    let pid = f.fleet.coordinator_pid().to_string();
    let log = f.fleet.agent_log("web-1");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let sessions = |s: &str| s.matches("session established").count();
    assert_eq!(sessions(&read()), 1, "{}", read());
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    // 2 x 200 ms + the agent's 5 s connect timeout, checked at each heartbeat.
    let noticed = poll(Duration::from_secs(30), "the agent to give up the silent coordinator", || {
        read().contains("coordinator silent for").then_some(())
    });
    signal("-CONT");
    noticed.unwrap_or_else(|e| panic!("{e}\n{}", read()));
    wait_for("a new session", Duration::from_secs(30), || (sessions(&read()) >= 2).then_some(()));
    f.wait_connected(1).await;
}

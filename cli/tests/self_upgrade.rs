//! Agents upgrading themselves, with the real binaries (`convoy __agent`
//! processes of a `LocalFleet`), a real signature and the artifact store:
//! - a good build: `convoy agents upgrade` rolls it out canary first, every
//!   agent comes back with the new version, `current` points at it;
//! - broken builds, each on the canary: one that exits at once, one that
//!   hangs, one that starts but cannot reach the coordinator, and a SIGKILL
//!   of the agent during the hand-over. Each host reverts by itself within
//!   the deadline, marks the version bad, reports the failure under the
//!   step's execution id, comes back on the previous build, and the rollout
//!   stops at the canary (no other host is touched).
//!
//! The "new builds" are copies of the `convoy` binary with a version
//! trailer (a test device, `agent/src/selfupgrade/identity.rs`), or shell
//! scripts that pass the self-check and then misbehave: both are signed and
//! loaded like a release.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use convoy_agent::selfupgrade::{identity, install, intent};
use convoy_fleet::operator::{self, Operator, finished};
use convoy_fleet::processes::{AgentSpec, LocalFleet};
use convoy_proto::v1 as pb;

const CONVOY: &str = env!("CARGO_BIN_EXE_convoy");

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fleet: LocalFleet,
    op: Operator,
}

fn convoy(fleet: &LocalFleet, args: &[&str]) -> String {
    let out = Command::new(CONVOY).arg("--data-dir").arg(&fleet.data_dir).args(args).output().unwrap();
    assert!(out.status.success(), "convoy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn world(hosts: usize) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut fleet = LocalFleet::start(Path::new(CONVOY), &dir, 200, true).unwrap();
    convoy(&fleet, &["artifact", "keygen", "--out", dir.join("release-key").to_str().unwrap()]);
    let key_pub = dir.join("release-key.pub");
    for i in 1..=hosts {
        let spec = AgentSpec::new(&format!("a-{i}"), [("role", "agent")])
            .env(vec![("CONVOY_TRUSTED_KEYS".into(), key_pub.display().to_string())]);
        fleet.spawn_agent(spec).unwrap();
    }
    fleet.wait_connected(hosts, Duration::from_secs(60)).await.unwrap();
    let op = fleet.operator().await.unwrap();
    World { _tmp: tmp, dir, fleet, op }
}

impl World {
    /// Signs `file` and loads it as `convoy-agent@version`.
    fn load(&self, file: &Path, version: &str) {
        let key = self.dir.join("release-key");
        convoy(&self.fleet, &["artifact", "sign", "--key", key.to_str().unwrap(), file.to_str().unwrap()]);
        convoy(
            &self.fleet,
            &["artifact", "add", file.to_str().unwrap(), "--name", "convoy-agent", "--version", version],
        );
    }

    /// A copy of the `convoy` binary reporting `version` (trailer).
    fn good_build(&self, version: &str) -> PathBuf {
        let p = self.dir.join("builds").join(version).join("convoy-agent");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(CONVOY, &p).unwrap();
        identity::append_trailer(&p, version).unwrap();
        p
    }

    /// A script that passes the self-check as `version`, then runs `body`.
    fn script_build(&self, version: &str, body: &str) -> PathBuf {
        let p = self.dir.join("builds").join(version).join("convoy-agent");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let check = identity::SelfCheck { version: version.into(), expected: Some(version.into()) }.to_json(Ok(()));
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --self-check ] && {{ echo '{check}'; exit 0; }}; done\n{body}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    async fn upgrade(&self, version: &str, extra: &[&str]) -> pb::RolloutStatus {
        let mut args = vec!["agents", "upgrade", "--to", version, "--detach", "--canary", "1", "--canary-soak", "1s"];
        args.extend_from_slice(extra);
        let id = convoy(&self.fleet, &args).trim().to_string();
        operator::wait_rollout(&self.op, &id, Duration::from_secs(120), "the agents' upgrade to end", finished)
            .await
            .unwrap()
    }

    async fn versions(&self) -> Vec<(String, String, bool)> {
        let agents = self.op.clone().list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
        let mut v: Vec<_> = agents.into_iter().map(|a| (a.agent_id, a.agent_version, a.connected)).collect();
        v.sort();
        v
    }

    /// Waits until `host` is connected with agent `version`.
    async fn wait_version(&self, host: &str, version: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.versions().await;
            if v.iter().any(|(h, ver, c)| h == host && ver == version && *c) {
                return;
            }
            assert!(Instant::now() < until, "{host} not back on {version}: {v:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn state(&self, host: &str) -> PathBuf {
        self.fleet.host_dir(host).join("agent")
    }
}

/// The canary failed, reverted by itself, and nothing else was touched.
/// Returns the revert time (switch to failed outcome recorded).
async fn assert_stopped_at_canary(w: &World, status: &pb::RolloutStatus, version: &str, previous: &str) -> u64 {
    assert_ne!(status.state, "succeeded", "{status:#?}");
    let failed: Vec<_> = status.hosts.iter().filter(|h| h.state == "failed").collect();
    assert_eq!(failed.len(), 1, "only the canary failed: {status:#?}");
    let canary = &failed[0];
    assert!(canary.message.contains(&format!("reverted to {previous}")), "{}", canary.message);
    let others: Vec<_> = status.hosts.iter().filter(|h| h.host_id != canary.host_id).collect();
    assert!(others.iter().all(|h| h.state == "pending" || h.state == "skipped"), "{status:#?}");
    let state = w.state(&canary.host_id);
    assert!(install::bad_reason(&state, version).is_some(), "{version} marked bad on {}", canary.host_id);
    let i = intent::read(&state).unwrap().unwrap();
    assert_eq!(i.phase, intent::Phase::Reverted);
    w.wait_version(&canary.host_id, previous).await;
    i.ended_unix_ms.unwrap() - i.started_unix_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_upgrade_themselves_then_broken_builds_revert_at_the_canary() {
    let mut w = world(3).await;
    let built = identity::BUILT_VERSION;

    // A good build: every agent comes back with it.
    let good = w.good_build("0.2.0");
    w.load(&good, "0.2.0");
    let status = w.upgrade("0.2.0", &["--max-parallel", "2"]).await;
    assert_eq!(status.state, "succeeded", "{status:#?}");
    for h in ["a-1", "a-2", "a-3"] {
        w.wait_version(h, "0.2.0").await;
        assert_eq!(install::current_version(&w.state(h)).as_deref(), Some("0.2.0"));
        // Acknowledged in the intent right after the outcome is recorded.
        let until = Instant::now() + Duration::from_secs(30);
        while intent::read(&w.state(h)).unwrap().unwrap().phase != intent::Phase::Acked {
            assert!(Instant::now() < until, "{h}: intent not acknowledged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(status.hosts.iter().all(|h| h.message.contains(&format!("from {built} to 0.2.0"))), "{status:#?}");

    // Started again as the packaged build (as after a reboot), an agent
    // follows `current` and comes back on the build it was upgraded to.
    w.fleet.kill_and_restart_agent("a-2").unwrap();
    let pid = w.fleet.agent_pid("a-2").unwrap();
    let installed = install::binary_path(&w.state("a-2"), "0.2.0");
    let until = Instant::now() + Duration::from_secs(30);
    while std::fs::read_link(format!("/proc/{pid}/exe")).ok() != Some(installed.clone()) {
        assert!(Instant::now() < until, "the restarted agent did not become {}", installed.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.wait_version("a-2", "0.2.0").await;

    // A build that exits at start.
    let exits = w.script_build("0.3.0", "echo 'broken build: exiting at start' >&2; exit 1");
    w.load(&exits, "0.3.0");
    let status = w.upgrade("0.3.0", &["--deadline", "20s"]).await;
    let t_exit = assert_stopped_at_canary(&w, &status, "0.3.0", "0.2.0").await;
    let canary = status.hosts.iter().find(|h| h.state == "failed").unwrap();
    assert!(canary.message.contains("exited") && canary.message.contains("exit code 1"), "{}", canary.message);
    println!("self-upgrade revert: a build that exits at start reverted in {t_exit} ms");

    // Forcing is needed to try 0.3.0 again on that host.
    let again = w.upgrade("0.3.0", &["--deadline", "20s", "--select", &format!("host={}", canary.host_id)]).await;
    let host = &again.hosts[0];
    assert!(host.message.contains("marked bad") && host.message.contains("force"), "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_unreachable_and_killed_hand_overs_revert_within_the_deadline() {
    let w = world(3).await;
    let built = identity::BUILT_VERSION;

    // Hangs after the self-check: killed and reverted at the deadline.
    let hangs = w.script_build("0.5.0", "exec sleep 600");
    w.load(&hangs, "0.5.0");
    let status = w.upgrade("0.5.0", &["--deadline", "3s", "--select", "host=a-1"]).await;
    let t = assert_stopped_at_canary(&w, &status, "0.5.0", built).await;
    let canary = status.hosts.iter().find(|h| h.state == "failed").unwrap();
    assert!(canary.message.contains("not welcomed within its deadline of 3000 ms"), "{}", canary.message);
    assert!((3000..20_000).contains(&t), "reverted {t} ms after the switch");

    // Starts for real but cannot reach the coordinator (its address is
    // rewritten to a closed port): reverted at the deadline.
    let real = w.good_build("0.6.0-real");
    let unreachable = w.script_build(
        "0.6.0",
        &format!(
            "next=\nfor a do shift\n  if [ -n \"$next\" ]; then a=https://127.0.0.1:9; next=; fi\n  [ \"$a\" = --coordinator ] && next=1\n  set -- \"$@\" \"$a\"\ndone\nexec {} \"$@\"",
            real.display()
        ),
    );
    w.load(&unreachable, "0.6.0");
    let status = w.upgrade("0.6.0", &["--deadline", "4s", "--select", "host=a-2"]).await;
    assert_stopped_at_canary(&w, &status, "0.6.0", built).await;
    let canary = &status.hosts[0];
    assert!(canary.message.contains("deadline"), "{}", canary.message);

    // SIGKILL of the agent during the hand-over (the new build takes 2 s to start).
    let slow = w.script_build("0.7.0", &format!("sleep 2\nexec {} \"$@\"", real.display()));
    w.load(&slow, "0.7.0");
    let pid = w.fleet.agent_pid("a-3").unwrap();
    let id = convoy(
        &w.fleet,
        &[
            "agents",
            "upgrade",
            "--to",
            "0.7.0",
            "--detach",
            "--canary",
            "1",
            "--select",
            "host=a-3",
            "--deadline",
            "20s",
        ],
    )
    .trim()
    .to_string();
    // Wait for the hand-over to start: the intent is pending.
    let until = Instant::now() + Duration::from_secs(60);
    while !intent::read(&w.state("a-3"))
        .ok()
        .flatten()
        .is_some_and(|i| i.phase == intent::Phase::Pending && i.to_version == "0.7.0")
    {
        assert!(Instant::now() < until, "no hand-over started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    let status = operator::wait_rollout(&w.op, &id, Duration::from_secs(120), "the killed upgrade to end", finished)
        .await
        .unwrap();
    assert_stopped_at_canary(&w, &status, "0.7.0", built).await;
    assert!(status.hosts[0].message.contains("exited"), "{:#?}", status.hosts[0]);
}

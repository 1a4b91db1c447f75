//! The previous release's agent against this coordinator: during an agent
//! self-upgrade, old and new agents run side by side, so everything both
//! know must keep working, and what the old one lacks must be refused at
//! planning time, naming the host, never sent.
//!
//! The old agent is built from the commit in `tests/compat/PREVIOUS_RELEASE`
//! by `tests/compat/build-previous-agent.sh` (cached outside the clone);
//! `.ci/run` builds it and hands its path over in `CONVOY_PREVIOUS_AGENT`.
//! Without it the test prints SKIPPED, unless `CONVOY_REQUIRE_PREVIOUS=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_fleet::operator::{self, finished};
use convoy_fleet::processes::{AgentSpec, LocalFleet};

const CONVOY: &str = env!("CARGO_BIN_EXE_convoy");

fn previous_agent() -> Option<PathBuf> {
    match std::env::var_os("CONVOY_PREVIOUS_AGENT") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        other => {
            assert!(
                std::env::var("CONVOY_REQUIRE_PREVIOUS").as_deref() != Ok("1"),
                "CONVOY_REQUIRE_PREVIOUS=1 but CONVOY_PREVIOUS_AGENT ({other:?}) is not a file: \
                 run tests/compat/build-previous-agent.sh"
            );
            None
        }
    }
}

const PLAN: &str = r#"name: compat
version: "2.0.0"
component: app
groups:
  - name: web
    select: { role: web }
    strategy: { max_parallel: 1 }
    steps:
      - name: stage
        file: { path: "{{label.dir}}/app.conf", content: "version={{version}}\n" }
      - name: upgrade
        exec: { command: sh, args: ["-c", "echo {{version}} >> {{label.dir}}/runs"] }
        installs: "{{version}}"
    checks:
      - name: configured
        file: { path: "{{label.dir}}/app.conf", contains: "version={{version}}" }
      - name: answers
        exec: { command: cat, args: ["{{label.dir}}/app.conf"] }
        stdout_contains: "version=2.0.0"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_agent_runs_what_both_know_and_is_refused_the_rest() {
    let Some(previous) = previous_agent() else {
        println!("SKIPPED: CONVOY_PREVIOUS_AGENT is not set (tests/compat/build-previous-agent.sh builds it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = LocalFleet::start(Path::new(CONVOY), tmp.path(), 200, true).unwrap();
    for (id, old) in [("old-1", true), ("old-2", true), ("new-1", false)] {
        let dir = fleet.host_dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        let labels = [("role".to_string(), "web".to_string()), ("dir".to_string(), dir.display().to_string())];
        let spec = AgentSpec::new(id, labels);
        fleet.spawn_agent(if old { spec.binary(&previous) } else { spec }).unwrap();
    }
    fleet.wait_connected(3, Duration::from_secs(60)).await.unwrap();
    let op = fleet.operator().await.unwrap();

    // Everything both releases know: files, exec, checks on output.
    let id = operator::submit(&op, "compat.yaml", PLAN).await.unwrap();
    let status =
        operator::wait_rollout(&op, &id, Duration::from_secs(60), "the rollout to end", finished).await.unwrap();
    let log = || std::fs::read_to_string(fleet.coordinator_log()).unwrap_or_default();
    assert_eq!(status.state, "succeeded", "{status:?}\n{}", log());
    for host in ["old-1", "old-2", "new-1"] {
        let runs = std::fs::read_to_string(fleet.host_dir(host).join("runs")).unwrap();
        assert_eq!(runs, "2.0.0\n", "{host} ran its upgrade once");
    }

    // The old agent does not report its install root: a plan that needs it
    // is refused for that host, by name, and nothing starts.
    let needs_root = PLAN.replace("{{label.dir}}/runs", "{{install_root}}/runs").replace("2.0.0", "3.0.0");
    let err = operator::submit(&op, "root.yaml", &needs_root).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("host old-1 does not report its install root"), "{err:?}");

    // The new agent's own view of the old ones: their version is the old
    // release's, as `convoy agents` shows it.
    let agents = op.clone().list_agents(convoy_proto::v1::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    assert_eq!(agents.iter().filter(|a| a.connected).count(), 3);
}

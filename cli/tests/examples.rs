//! The example plans of `examples/`, one per seed procedure of
//! `shared/seeds/`, each run end to end by the real binary:
//! `convoy example NAME` starts a coordinator and the example's agents as
//! processes, applies its plans through the coordinator with the agents'
//! real drivers (the products' tools are the example's shell scripts), and
//! checks the end state itself, exiting non-zero if anything is off. Here we
//! also read what it left behind: each rollout's final status (JSON) and the
//! simulated hosts' files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

struct Ran {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    stdout: String,
    /// What `follow` printed while the rollouts ran (group progress lines).
    stderr: String,
}

fn run_example(name: &str) -> Ran {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["example", name, "--dir"])
        .arg(&dir)
        .env("CONVOY_EXAMPLES_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "example {name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("example done:"), "{stdout}");
    eprintln!("example {name}: {:.1}s", t.elapsed().as_secs_f64());
    // Nothing a plan started is left running.
    for host in std::fs::read_dir(dir.join("hosts")).unwrap() {
        let services = host.unwrap().path().join("root/opt/.services");
        for svc in std::fs::read_dir(&services).into_iter().flatten() {
            let pidfile = svc.unwrap().path().join("pid");
            assert!(!pidfile.exists(), "{} still recorded as running", pidfile.display());
        }
    }
    Ran { _tmp: tmp, dir, stdout, stderr }
}

/// The final status of the `n`th rollout (1-based) of the example.
fn rollout(r: &Ran, n: usize) -> Value {
    let dir = r.dir.join("rollouts");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{n}-")))
        .unwrap_or_else(|| panic!("no rollout {n} in {}", dir.display()));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn host<'a>(s: &'a Value, id: &str, group: &str) -> &'a Value {
    s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == id && h["group"] == group)
        .unwrap_or_else(|| panic!("no {id} in {group}: {s:#}"))
}

fn groups(s: &Value) -> Vec<&str> {
    s["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect()
}

fn read(r: &Ran, path: &str) -> String {
    std::fs::read_to_string(r.dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn canopsis_multi_hop_per_edition_with_broadcast_and_backlog_gate() {
    let r = run_example("canopsis");
    let s = rollout(&r, 1);
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(groups(&s), ["before", "canopsis", "after"]);
    // The backlog gate polled until the queue had drained below 100.
    let gate = host(&s, "canopsis-2", "canopsis")["message"].as_str().unwrap();
    let attempts: u32 = gate.rsplit("after ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(gate.starts_with("metric check: passed") && attempts > 1, "{gate}");
    // Every intermediate release, in order, from each host's own version.
    let log = read(&r, "hosts/canopsis-1/root/canopsis/actions.log");
    let hops: Vec<&str> = log.lines().filter_map(|l| l.split("-> ").nth(1)).collect();
    assert_eq!(hops, ["3.39.0", "3.39.1", "3.40.0"]);
    // Each hop's release is recorded as the host's version: the report shows it.
    for h in ["canopsis-1", "canopsis-2", "canopsis-3", "canopsis-4"] {
        assert_eq!(host(&s, h, "canopsis")["version"], "3.40.0", "{h}");
    }
    let log = read(&r, "hosts/canopsis-3/root/canopsis/actions.log");
    assert!(!log.contains("3.39.0") && !log.contains("community"), "{log}");
    assert_eq!(read(&r, "shared/broadcast.log"), "create upgrade-3.40.0\ndelete upgrade-3.40.0\n");
}

#[test]
fn monq_backups_offline_release_per_module_steps_and_replicas() {
    let r = run_example("monq");
    assert!(r.stdout.contains("loaded monq-release@6.0.0"), "{}", r.stdout);
    let s = rollout(&r, 1);
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(groups(&s), ["backup", "monq"]);
    let backups = s["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 4, "{s:#}");
    assert!(backups.iter().all(|b| b["size_bytes"].as_u64().unwrap() > 0), "{s:#}");
    // The staged release is the component's version.
    assert_eq!(host(&s, "monq-production", "monq")["version"], "6.0.0");
    let prod = &host(&s, "monq-production", "monq")["captured"];
    assert_eq!(prod["replicas_sm"], "sm-aiops-api-service=2");
    let staging = &host(&s, "monq-staging", "monq")["captured"];
    assert!(staging.get("replicas_sm").is_none() && staging.get("replicas_fm").is_none(), "{staging}");
    let log = read(&r, "hosts/monq-staging/root/monq/monqctl.log");
    assert!(!log.contains("--module=sm") && !log.contains("--module=fm"), "{log}");
}

#[test]
fn ceilometer_full_then_partial_upgrade() {
    let r = run_example("ceilometer");
    let full = rollout(&r, 2);
    assert_eq!(full["state"], "succeeded", "{full:#}");
    assert_eq!(groups(&full), ["database", "collector", "notification", "polling", "api"]);
    let partial = rollout(&r, 3);
    assert_eq!(partial["state"], "succeeded", "{partial:#}");
    // While collector-1 was on the new release, collector-2 still served the old one.
    assert_eq!(host(&partial, "collector-1", "collector")["captured"]["seen_after"], "2.0.0,2.1.0");
    for h in partial["hosts"].as_array().unwrap() {
        assert_eq!(h["version"], "2.1.0", "{h}");
    }
}

#[test]
fn exastro_replicas_recorded_scaled_down_and_restored() {
    let r = run_example("exastro");
    let s = rollout(&r, 1);
    assert_eq!(s["state"], "succeeded", "{s:#}");
    // helm reports nothing: the step's `installs:` gives the version.
    for h in ["exastro-dev", "exastro-stg", "exastro-prod"] {
        assert_eq!(host(&s, h, "exastro")["version"], "2.1.0", "{h}");
    }
    let prod = &host(&s, "exastro-prod", "exastro")["captured"];
    assert_eq!(
        (prod["RS_PA"].as_str(), prod["RS_AE"].as_str(), prod["RS_MC"].as_str()),
        (Some("3"), Some("3"), Some("0"))
    );
    // The reverse proxy went down first and came back last.
    let audit = read(&r, "hosts/exastro-prod/root/k8s/audit.log");
    let events: Vec<&str> = audit.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(events.first(), Some(&"scale exastro/platform-auth --replicas=0"));
    assert_eq!(events.last(), Some(&"scale exastro/platform-auth --replicas=3"));
    let upgrade = events.iter().position(|e| e.starts_with("helm upgrade")).unwrap();
    assert!(events[..upgrade].iter().all(|e| e.ends_with("--replicas=0")), "{events:?}");
}

#[test]
fn cleanroom_ordered_canaries_cluster_slave_first_then_all_at_once() {
    let r = run_example("cleanroom");
    let s = rollout(&r, 2);
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(
        groups(&s),
        ["before", "clients", "recording-agents", "mediation-controllers", "edge-gateways", "html5-gateways", "after"]
    );
    assert_eq!(s["backups"].as_array().unwrap().len(), 1, "{s:#}");
    // The recording agents waited for their maintenance window (opening a
    // few seconds after the plan was submitted), then ran in it.
    let agents: Vec<&str> = r.stderr.lines().filter(|l| l.trim_start().starts_with("recording-agents ")).collect();
    let waited = agents.iter().position(|l| l.ends_with("waiting_window"));
    let waited = waited.unwrap_or_else(|| panic!("recording-agents never waited for its window:\n{}", r.stderr));
    assert!(agents[..waited].iter().all(|l| l.contains("  0/2 ")), "{}", r.stderr);
    assert!(agents[waited..].iter().any(|l| l.contains("  2/2 ") && l.ends_with("succeeded")), "{}", r.stderr);
    assert!(r.stderr.contains("next window "), "{}", r.stderr);
    for h in ["agent-1", "agent-2"] {
        assert_eq!(host(&s, h, "recording-agents")["state"], "succeeded", "{s:#}");
    }
    let hotfix = rollout(&r, 3);
    assert_eq!(hotfix["state"], "succeeded", "{hotfix:#}");
    let events = read(&r, "shared/clusters/mc-cluster/events");
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(
        lines[..5],
        ["leave mc-2 1.0.0", "migrate mc-2 2.0.0", "join mc-2 2.0.0", "leave mc-1 1.0.0", "join mc-1 2.0.0"],
        "the slave first, the master last"
    );
    let together: Vec<&str> = lines[5..].iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(together, ["leave", "leave", "migrate", "join", "join"], "{events}");
}

#[test]
fn an_example_gives_up_on_a_rollout_that_does_not_end_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(["example", "exastro", "--rollout-timeout", "1ms", "--dir"])
        .arg(tmp.path().join("run"))
        .env("CONVOY_EXAMPLES_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        format!("{stdout}{stderr}").contains("had not ended after 1ms (--rollout-timeout)"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

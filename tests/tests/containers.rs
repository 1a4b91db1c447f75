//! Layer 4: hosts in their own containers (see `convoy_fleet::docker`).
//!
//! A coordinator container and agent containers on a private Docker network,
//! each with its own hostname, address, filesystem and dpkg database, running
//! the real binaries; the demo Debian packages (`packaging/`) are installed
//! and upgraded for real with apt from the image's local repository.
//!
//! Each test skips (printing why) when Docker cannot be used, unless
//! `CONVOY_REQUIRE_DOCKER=1` (as `.ci/run` sets), where that is a failure.
//! The first test in a process builds or reuses the images
//! (`tests/containers/build-image.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use convoy_common::engine::{Action, Event, ExecutionId, HostState, RolloutState};
use convoy_common::invariants;
use convoy_fleet::docker::{Fleet, FleetOptions, image_or_skip};

/// The fleet of the issue: 2 db, 3 collectors, 3 polling, 2 API hosts.
const FLEET: &[(&str, &str)] = &[
    ("db-1", "db"),
    ("db-2", "db"),
    ("collector-1", "collector"),
    ("collector-2", "collector"),
    ("collector-3", "collector"),
    ("polling-1", "polling"),
    ("polling-2", "polling"),
    ("polling-3", "polling"),
    ("api-1", "api"),
    ("api-2", "api"),
];

/// The demo packages a role runs, with their health ports.
fn packages(role: &str) -> &'static [(&'static str, u16)] {
    match role {
        "db" => &[("convoy-demo-db", 8101)],
        "collector" => &[("convoy-demo-collector", 8102)],
        "polling" => &[("convoy-demo-polling", 8103)],
        "api" => &[("convoy-demo-api", 8104), ("convoy-demo-mediation", 8105)],
        other => panic!("no packages for role {other}"),
    }
}

async fn start_fleet(test: &str, image: &str, hosts: &[(&str, &str)], options: FleetOptions) -> anyhow::Result<Fleet> {
    let t = Instant::now();
    let mut fleet = Fleet::start(test, image, options).await?;
    for (host, role) in hosts {
        fleet.add_agent(host, &[("role", role), ("fleet", "demo")])?;
    }
    let ids: Vec<String> = hosts.iter().map(|(h, _)| h.to_string()).collect();
    fleet.wait_connected(&ids, Duration::from_secs(120)).await?;
    eprintln!("{test}: coordinator and {} agent containers up in {:.1}s", hosts.len(), t.elapsed().as_secs_f64());
    Ok(fleet)
}

/// Steps installing a role's packages at `{{version}}` with the `apt` step
/// kind, and checks that each answers health with that version and dpkg
/// records it.
fn install_steps_and_checks(role: &str) -> String {
    let mut y = String::from("    steps:\n");
    y.push_str(&apt_steps(role));
    y.push_str(&health_checks(role));
    y
}

/// One `apt` step per package of `role`, at `{{version}}`.
fn apt_steps(role: &str) -> String {
    let mut y = String::new();
    for (p, _) in packages(role) {
        y.push_str(&format!(
            "      - name: apt-{p}\n        apt: {{ package: {p}, version: \"{{{{version}}}}\", allow_downgrade: true }}\n        timeout: 180s\n"
        ));
    }
    y
}

/// Health and dpkg checks of `role`'s packages at `{{version}}`.
fn health_checks(role: &str) -> String {
    let pkgs = packages(role);
    let mut y = String::new();
    y.push_str("    checks:\n");
    for (p, port) in pkgs {
        y.push_str(&format!(
            "      - name: health-{p}\n        http: {{ url: \"http://127.0.0.1:{port}/health\", status: 200, body_contains: \"{p} {{{{version}}}} ok\" }}\n        retries: 40\n        interval: 250ms\n        deadline: 20s\n"
        ));
        y.push_str(&format!(
            "      - name: dpkg-{p}\n        exec: {{ command: sh, args: [\"-c\", \"test \\\"$(dpkg-query -W -f='${{Version}}' {p})\\\" = '{{{{version}}}}'\"] }}\n"
        ));
    }
    y
}

/// One group per role, all at once, no order: bring every host to `version`.
fn install_plan(version: &str) -> String {
    let mut y = format!("name: install-suite\nversion: \"{version}\"\ngroups:\n");
    for role in ["db", "collector", "polling", "api"] {
        y.push_str(&format!(
            "  - name: {role}\n    select: {{ role: {role} }}\n    strategy: {{ type: parallel, max_failures: 0 }}\n"
        ));
        y.push_str(&install_steps_and_checks(role));
    }
    y
}

/// The telemetry upgrade order as a DAG: database, then collectors, then the
/// polling agents and the API (with its mediation controller) in parallel;
/// each tier rolling with health gates.
fn upgrade_plan(version: &str) -> String {
    let mut y = format!("name: suite-upgrade\nversion: \"{version}\"\nhost_lost_timeout: 30s\ngroups:\n");
    let groups = [
        ("db", "[]", "{ max_parallel: 1, max_failures: 0 }"),
        ("collector", "[db]", "{ max_parallel: \"50%\", max_failures: 0 }"),
        ("polling", "[collector]", "{ max_parallel: 2, max_failures: 0 }"),
        ("api", "[collector]", "{ max_parallel: 1, max_failures: 0 }"),
    ];
    for (role, after, strategy) in groups {
        y.push_str(&format!(
            "  - name: {role}\n    select: {{ role: {role} }}\n    after: {after}\n    strategy: {strategy}\n"
        ));
        y.push_str(&install_steps_and_checks(role));
    }
    y
}

fn assert_all_succeeded(status: &convoy_proto::v1::RolloutStatus, hosts: usize) {
    assert_eq!(status.state, "succeeded", "{status:#?}");
    assert_eq!(status.hosts.len(), hosts, "{status:#?}");
    for h in &status.hosts {
        assert_eq!(h.state, "succeeded", "{h:?}");
    }
}

/// Stop the coordinator, copy its data out and replay the rollout's events.
fn stored_log(
    fleet: &Fleet,
    rollout: &str,
) -> anyhow::Result<(convoy_common::model::RolloutSpec, Vec<convoy_common::invariants::LogEntry>)> {
    fleet.stop_coordinator()?;
    let dir = tempfile::tempdir()?;
    let data = fleet.copy_coordinator_data(dir.path())?;
    Ok(convoy_fleet::replay::event_log(&data, rollout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_agent_containers_run_an_exec_plan() -> anyhow::Result<()> {
    let Some(image) = image_or_skip("ten_agent_containers_run_an_exec_plan") else { return Ok(()) };
    let t = Instant::now();
    let fleet = start_fleet("exec-plan", &image, FLEET, FleetOptions::default()).await?;

    // Agents report their facts: each container's own hostname.
    let agents = fleet.agents().await?;
    for (host, role) in FLEET {
        let a = agents.iter().find(|a| a.agent_id == *host).unwrap_or_else(|| panic!("{host} not listed"));
        assert_eq!(a.labels.get("role").map(String::as_str), Some(*role));
        assert_eq!(a.facts.as_ref().map(|f| f.hostname.as_str()), Some(*host), "{a:?}");
    }

    let plan = r#"
name: fleet-exec
version: "1.0.0"
groups:
  - name: db
    select: { role: db }
    strategy: { type: parallel, max_failures: 0 }
  - name: collector
    select: { role: collector }
    after: [db]
  - name: polling
    select: { role: polling }
    after: [db]
  - name: api
    select: { role: api }
    after: [db]
defaults:
  strategy: { max_parallel: 4, max_failures: 0 }
  steps:
    - name: list-packages
      exec: { command: sh, args: ["-c", "dpkg -l | head -n 8 > /var/tmp/convoy-dpkg-l.txt && echo host={{host}} group={{group}} >> /var/tmp/convoy-dpkg-l.txt"] }
  checks:
    - file: { path: /var/tmp/convoy-dpkg-l.txt, contains: "host={{host}}" }
"#;
    let id = fleet.submit("fleet-exec.yaml", plan).await?;
    let status = fleet.wait_finished(&id, Duration::from_secs(180)).await?;
    assert_all_succeeded(&status, FLEET.len());

    // Each host ran the step itself, in its own container.
    for (host, role) in FLEET {
        let out = fleet.sh(host, "cat /var/tmp/convoy-dpkg-l.txt")?;
        assert!(out.contains("Desired=Unknown/Install/Remove/Purge/Hold"), "{host}: {out}");
        assert!(out.contains("ii  "), "{host}: no installed package listed: {out}");
        assert!(out.contains(&format!("host={host} group={role}")), "{host}: {out}");
    }

    // The stored log satisfies the DESIGN invariants (db before everything else).
    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    eprintln!("ten_agent_containers_run_an_exec_plan: {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_rolls_from_1_0_0_to_2_0_0_with_real_packages() -> anyhow::Result<()> {
    let test = "suite_rolls_from_1_0_0_to_2_0_0_with_real_packages";
    let Some(image) = image_or_skip(test) else { return Ok(()) };
    let t = Instant::now();
    let fleet = start_fleet("suite-roll", &image, FLEET, FleetOptions::default()).await?;

    // 1.0.0 everywhere, all at once.
    let id = fleet.submit("install-v1.yaml", &install_plan("1.0.0")).await?;
    let status = fleet.wait_finished(&id, Duration::from_secs(300)).await?;
    assert_all_succeeded(&status, FLEET.len());
    for (host, role) in FLEET {
        for (p, port) in packages(role) {
            assert_eq!(fleet.dpkg_version(host, p)?.as_deref(), Some("1.0.0"), "{host} {p}");
            assert_eq!(fleet.health(host, *port)?.trim(), format!("{p} 1.0.0 ok"));
        }
    }
    // The coordinator's facts hold every host's package versions.
    for (host, role) in FLEET {
        let facts = facts_installed(&fleet, host).await?;
        for (p, _) in packages(role) {
            assert_eq!(facts.get(*p).map(String::as_str), Some("1.0.0"), "{host}: {facts:?}");
        }
    }
    // An admin override in the 1.x config format, which 2.0.0's postinst must migrate.
    fleet.sh("db-1", "echo port=8101 >> /etc/convoy-demo/db.local")?;
    let t1 = t.elapsed();

    // Then the DAG upgrade to 2.0.0.
    let id = fleet.submit("suite-upgrade.yaml", &upgrade_plan("2.0.0")).await?;
    let status = fleet.wait_finished(&id, Duration::from_secs(600)).await?;
    assert_all_succeeded(&status, FLEET.len());

    for (host, role) in FLEET {
        for (p, port) in packages(role) {
            assert_eq!(fleet.dpkg_version(host, p)?.as_deref(), Some("2.0.0"), "{host} {p}");
            assert_eq!(fleet.health(host, *port)?.trim(), format!("{p} 2.0.0 ok"), "{host}");
        }
    }
    // A restarted agent reads its packages' versions from dpkg for its Hello.
    restart_and_wait_session(&fleet, "api-1").await?;
    let facts = facts_installed(&fleet, "api-1").await?;
    for (p, _) in packages("api") {
        assert_eq!(facts.get(*p).map(String::as_str), Some("2.0.0"), "api-1 after a restart: {facts:?}");
    }
    // The database's schema went 1 -> 3 through each migration in order.
    for host in ["db-1", "db-2"] {
        assert_eq!(fleet.sh(host, "cat /var/lib/convoy-demo-db/schema")?.trim(), "3");
        let log = fleet.sh(host, "cat /var/lib/convoy-demo-db/migrations.log")?;
        let applied: Vec<&str> = log.lines().map(|l| l.split(" schema ").nth(1).unwrap_or("")).collect();
        assert_eq!(applied.len(), 3, "{log}");
        assert!(applied[0].starts_with("1 applied by convoy-demo-db 1.0.0"), "{log}");
        assert!(applied[2].starts_with("3 applied by convoy-demo-db 2.0.0"), "{log}");
    }
    let local = fleet.sh("db-1", "cat /etc/convoy-demo/db.local")?;
    assert!(local.contains("listen_port=8101") && !local.contains("\nport="), "config not migrated: {local}");
    // A downgrade below the recorded schema is refused and leaves 2.0.0 in place.
    let out = fleet.exec("db-2", &["apt-get", "install", "-y", "-q", "--allow-downgrades", "convoy-demo-db=1.1.0"])?;
    assert!(!out.ok(), "downgrade went through: {out:?}");
    assert!(out.stdout.contains("refusing to downgrade") || out.stderr.contains("refusing to downgrade"), "{out:?}");
    assert_eq!(fleet.dpkg_version("db-2", "convoy-demo-db")?.as_deref(), Some("2.0.0"));

    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    // The DAG order held: no collector started before every db host was done.
    let done_at = |group: &str| -> Vec<i64> {
        let hosts: Vec<&str> = FLEET.iter().filter(|(_, r)| *r == group).map(|(h, _)| *h).collect();
        log.iter()
            .filter(|e| {
                e.actions.iter().any(|a| matches!(a, Action::HostDone { host, .. } if hosts.contains(&host.as_str())))
            })
            .map(|e| e.now.0 as i64)
            .collect()
    };
    let first_dispatch = |group: &str| -> i64 {
        let hosts: Vec<&str> = FLEET.iter().filter(|(_, r)| *r == group).map(|(h, _)| *h).collect();
        log.iter()
            .filter(|e| {
                e.actions.iter().any(|a| matches!(a, Action::Dispatch { host, .. } if hosts.contains(&host.as_str())))
            })
            .map(|e| e.now.0 as i64)
            .min()
            .unwrap_or(i64::MAX)
    };
    assert!(done_at("db").iter().all(|&t| t <= first_dispatch("collector")));
    assert!(done_at("collector").iter().all(|&t| t <= first_dispatch("polling").min(first_dispatch("api"))));
    eprintln!("{test}: install 1.0.0 done at {:.1}s, whole test {:.1}s", t1.as_secs_f64(), t.elapsed().as_secs_f64());
    Ok(())
}

/// A plan whose one group rolls one host at a time through a slow step.
fn slow_plan(max_failures: u32) -> String {
    format!(
        r#"
name: slow-roll
version: "1.0.0"
host_lost_timeout: 3s
groups:
  - name: collector
    select: {{ role: collector }}
    strategy: {{ max_parallel: 1, max_failures: {max_failures} }}
    steps:
      - name: slow
        exec: {{ command: sh, args: ["-c", "sleep 4; echo {{{{host}}}} >> /var/tmp/convoy-slow.txt"] }}
        timeout: 60s
"#
    )
}

/// `docker stop` a host while its step runs; the coordinator marks it lost,
/// fails it after `host_lost_timeout`, and the failure budget decides.
async fn stopped_host(max_failures: u32) -> anyhow::Result<()> {
    let test = format!("stopped_host_budget_{max_failures}");
    let Some(image) = image_or_skip(&test) else { return Ok(()) };
    let hosts: &[(&str, &str)] = &[
        ("collector-1", "collector"),
        ("collector-2", "collector"),
        ("collector-3", "collector"),
        ("collector-4", "collector"),
    ];
    let options = FleetOptions { heartbeat_ms: 300, missed_heartbeats: 3 };
    let fleet = start_fleet(&format!("stop-{max_failures}"), &image, hosts, options).await?;
    let id = fleet.submit("slow.yaml", &slow_plan(max_failures)).await?;

    // The second host to start is the victim (the first proves the roll works).
    let status = fleet
        .wait_status(&id, Duration::from_secs(120), "a second host running", |s| {
            s.hosts.iter().filter(|h| h.state == "succeeded").count() == 1
                && s.hosts.iter().any(|h| h.state == "running")
        })
        .await?;
    let victim = status.hosts.iter().find(|h| h.state == "running").expect("running").host_id.clone();
    fleet.stop(&victim, Duration::from_secs(1))?;
    fleet.wait_disconnected(&victim, Duration::from_secs(30)).await?;

    let status = fleet.wait_finished(&id, Duration::from_secs(180)).await?;
    let by_host: BTreeMap<&str, &convoy_proto::v1::HostStatus> =
        status.hosts.iter().map(|h| (h.host_id.as_str(), h)).collect();
    let v = by_host[victim.as_str()];
    assert_eq!(v.state, "failed", "{status:#?}");
    assert!(v.message.contains("lost"), "{v:?}");
    let others = status.hosts.iter().filter(|h| h.host_id != victim);
    if max_failures == 0 {
        // Budget exceeded: the rollout halts; hosts not started are skipped.
        assert_eq!(status.state, "failed", "{status:#?}");
        assert_eq!(others.clone().filter(|h| h.state == "succeeded").count(), 1, "{status:#?}");
        assert_eq!(others.filter(|h| h.state == "skipped").count(), 2, "{status:#?}");
    } else {
        // Within budget: the rollout carries on without it.
        assert_eq!(status.state, "succeeded", "{status:#?}");
        assert!(others.clone().all(|h| h.state == "succeeded"), "{status:#?}");
        for h in others {
            let ran = fleet.sh(&h.host_id, "cat /var/tmp/convoy-slow.txt")?;
            assert_eq!(ran.trim(), h.host_id, "the step ran exactly once on {}", h.host_id);
        }
    }

    // The event log says what happened: the agent was lost, its lost deadline
    // fired, the host failed with "agent lost", and the rollout ended so.
    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    assert!(log.iter().any(|e| matches!(&e.event, Event::AgentLost { host } if *host == victim)), "no AgentLost");
    assert!(log.iter().any(|e| e.actions.iter().any(|a| matches!(a,
        Action::HostDone { host, state: HostState::Failed { reason, .. } } if *host == victim && reason.contains("lost")))));
    let expected = if max_failures == 0 { RolloutState::Failed } else { RolloutState::Succeeded };
    assert!(log.iter().any(|e| e.actions.contains(&Action::Finished { state: expected })), "{expected:?} not logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_host_mid_rollout_halts_when_over_budget() -> anyhow::Result<()> {
    stopped_host(0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_host_mid_rollout_within_budget_carries_on() -> anyhow::Result<()> {
    stopped_host(1).await
}

/// The package versions the coordinator holds in `host`'s facts.
async fn facts_installed(fleet: &Fleet, host: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let agents = fleet.agents().await?;
    let a = agents.iter().find(|a| a.agent_id == host).ok_or_else(|| anyhow::anyhow!("{host} not listed"))?;
    Ok(a.facts.as_ref().map(|f| f.installed.clone().into_iter().collect()).unwrap_or_default())
}

/// Restart `host`'s container and wait for its agent's new session (its Hello,
/// with freshly read facts, has then been handled).
async fn restart_and_wait_session(fleet: &Fleet, host: &str) -> anyhow::Result<()> {
    let sessions = |logs: String| logs.matches("session established").count();
    let before = sessions(fleet.logs(host));
    fleet.restart(host, Duration::from_secs(1))?;
    convoy_fleet::docker::poll(Duration::from_secs(60), "a new agent session", || {
        (sessions(fleet.logs(host)) > before).then_some(())
    })?;
    Ok(fleet.wait_connected(&[host.to_string()], Duration::from_secs(30)).await?)
}

/// One collector group in `hosts` order, one host at a time, through apt;
/// `rerun_safe` marks the apt steps safe to run again after an agent restart.
fn collector_plan(name: &str, version: &str, hosts: &[&str], rerun_safe: bool) -> String {
    let steps = install_steps_and_checks("collector")
        .replace("        timeout: 180s\n", &format!("        timeout: 180s\n        rerun_safe: {rerun_safe}\n"));
    format!(
        "name: {name}\nversion: \"{version}\"\nhost_lost_timeout: 120s\ngroups:\n  - name: collector\n    hosts: [{}]\n    strategy: {{ max_parallel: 1, max_failures: 0 }}\n{steps}",
        hosts.join(", "),
    )
}

/// `docker restart` a host while dpkg is configuring its upgrade (its
/// postinst is held up by a slow `policy-rc.d`, so the package is
/// half-configured when the container goes down). The agent comes back, the
/// coordinator resends the execution, and the agent (which never finished
/// it) runs it again because the plan says an apt upgrade to a pinned
/// version is `rerun_safe`: the apt driver finds the package half-configured
/// and runs `dpkg --configure -a` first, and the host ends on 2.0.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_restarted_mid_apt_upgrade_recovers_with_configure_pending() -> anyhow::Result<()> {
    let test = "host_restarted_mid_apt_upgrade_recovers_with_configure_pending";
    let Some(image) = image_or_skip(test) else { return Ok(()) };
    let t = Instant::now();
    let hosts: &[(&str, &str)] = &[("collector-1", "collector"), ("collector-2", "collector")];
    let options = FleetOptions { heartbeat_ms: 300, missed_heartbeats: 3 };
    let fleet = start_fleet("restart", &image, hosts, options).await?;
    let pkg = "convoy-demo-collector";
    let victim = "collector-2";

    let id =
        fleet.submit("install-v1.yaml", &collector_plan("install-v1", "1.0.0", &["collector-1", victim], true)).await?;
    assert_all_succeeded(&fleet.wait_finished(&id, Duration::from_secs(300)).await?, hosts.len());

    // The victim's postinst waits in policy-rc.d, once, long enough to restart it.
    fleet.sh(
        victim,
        "printf '#!/bin/sh\\nif [ ! -e /var/tmp/convoy-slow-once ]; then touch /var/tmp/convoy-slow-once; sleep 60; fi\\nexit 0\\n' \
         > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d",
    )?;
    let id = fleet.submit("upgrade.yaml", &collector_plan("upgrade", "2.0.0", &[victim, "collector-1"], true)).await?;
    convoy_fleet::docker::poll(Duration::from_secs(120), "the victim's postinst to start", || {
        fleet.sh(victim, "test -e /var/tmp/convoy-slow-once && echo yes").ok().filter(|o| o.trim() == "yes")
    })?;
    let state = fleet.sh(victim, &format!("dpkg-query -W -f='${{Status}} ${{Version}}' {pkg}"))?;
    assert_eq!(state.trim(), "install ok half-configured 2.0.0", "dpkg state when the host went down");
    restart_and_wait_session(&fleet, victim).await?;

    let status = fleet.wait_finished(&id, Duration::from_secs(300)).await?;
    assert_all_succeeded(&status, hosts.len());
    for (host, _) in hosts {
        assert_eq!(fleet.dpkg_version(host, pkg)?.as_deref(), Some("2.0.0"), "{host}");
        assert_eq!(fleet.health(host, 8102)?.trim(), format!("{pkg} 2.0.0 ok"), "{host}");
    }

    // The event log: the apt step's execution on the victim was resent after
    // the reconnect and finished once, saying it found the package
    // half-configured and ran `dpkg --configure -a`.
    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    let apt_exec: Vec<&ExecutionId> = log
        .iter()
        .flat_map(|e| &e.actions)
        .filter_map(|a| match a {
            Action::Dispatch { host, execution_id, step, .. } if host == victim && step.kind.kind_name() == "apt" => {
                Some(execution_id)
            }
            _ => None,
        })
        .collect();
    let first = *apt_exec.first().expect("the apt step was dispatched to the victim");
    assert!(
        log.iter().flat_map(|e| &e.actions).any(|a| matches!(a,
            Action::Dispatch { execution_id, resend: true, .. } if execution_id == first)),
        "the apt execution was not resent after the restart"
    );
    let finished: Vec<&convoy_common::model::StepOutcome> = log
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepFinished { execution_id, outcome } if execution_id == first => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{finished:#?}");
    let message = &finished[0].message;
    assert!(finished[0].status.is_success(), "{message}");
    assert!(message.contains("half-configured 2.0.0") && message.contains("dpkg --configure -a"), "{message}");
    assert!(log.iter().any(|e| e.actions.contains(&Action::Finished { state: RolloutState::Succeeded })));
    eprintln!("{test}: {:.1}s; the victim's apt step said: {message}", t.elapsed().as_secs_f64());
    Ok(())
}

/// `docker network disconnect` a host while its step runs, and reconnect it
/// after the step has finished: the step ran once (it appends to a file),
/// and its result reached the engine once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_cut_off_mid_step_reports_once_and_runs_once() -> anyhow::Result<()> {
    let test = "host_cut_off_mid_step_reports_once_and_runs_once";
    let Some(image) = image_or_skip(test) else { return Ok(()) };
    let t = Instant::now();
    let hosts: &[(&str, &str)] = &[("collector-1", "collector")];
    let options = FleetOptions { heartbeat_ms: 300, missed_heartbeats: 3 };
    let fleet = start_fleet("netcut", &image, hosts, options).await?;
    let host = "collector-1";
    let plan = r#"
name: netcut
version: "1.0.0"
host_lost_timeout: 120s
groups:
  - name: collector
    hosts: [collector-1]
    steps:
      - name: slow
        exec: { command: sh, args: ["-c", "echo run >> /var/tmp/convoy-runs.txt; sleep 8; echo done"] }
        timeout: 120s
"#;
    let id = fleet.submit("netcut.yaml", plan).await?;
    convoy_fleet::docker::poll(Duration::from_secs(60), "the step to start", || {
        fleet.sh(host, "cat /var/tmp/convoy-runs.txt 2>/dev/null").ok().filter(|o| o.contains("run"))
    })?;
    fleet.disconnect(host)?;
    fleet.wait_disconnected(host, Duration::from_secs(30)).await?;
    // The step finishes while the host is cut off.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fleet.status(&id).await?.state, "running");
    fleet.reconnect(host)?;
    let status = fleet.wait_finished(&id, Duration::from_secs(120)).await?;
    assert_all_succeeded(&status, 1);
    assert_eq!(fleet.sh(host, "cat /var/tmp/convoy-runs.txt")?.lines().count(), 1, "the step ran more than once");

    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    assert!(log.iter().any(|e| matches!(&e.event, Event::AgentLost { host: h } if h == host)), "no AgentLost");
    assert!(log.iter().any(|e| matches!(&e.event, Event::AgentConnected { host: h } if h == host)), "no reconnect");
    // The result may reach the engine more than once (the agent's outbox
    // flushes it on reconnect, and the resent RunStep is answered from the
    // agent's record, marked replayed); the engine acts on the first only.
    let finished: Vec<&invariants::LogEntry> =
        log.iter().filter(|e| matches!(&e.event, Event::StepFinished { .. })).collect();
    assert!(!finished.is_empty(), "no result");
    assert!(!finished[0].actions.is_empty(), "the first result was not acted on: {:?}", finished[0]);
    for dup in &finished[1..] {
        assert!(dup.actions.is_empty(), "a duplicate result was acted on: {dup:?}");
    }
    let ids: std::collections::BTreeSet<ExecutionId> = finished
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepFinished { execution_id, .. } => Some(execution_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    eprintln!(
        "{test}: {:.1}s; the result reached the engine {} time(s), acted on once",
        t.elapsed().as_secs_f64(),
        finished.len()
    );
    Ok(())
}

/// The same restart in the middle of an apt upgrade, with the step not
/// declared `rerun_safe` (the default): the agent that comes back never runs
/// it a second time. It reports "outcome unknown", the package is left as
/// the interrupted run left it, and the rollout stops within its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apt_step_interrupted_by_a_restart_is_not_run_twice() -> anyhow::Result<()> {
    let test = "an_apt_step_interrupted_by_a_restart_is_not_run_twice";
    let Some(image) = image_or_skip(test) else { return Ok(()) };
    let hosts: &[(&str, &str)] = &[("collector-1", "collector")];
    let options = FleetOptions { heartbeat_ms: 300, missed_heartbeats: 3 };
    let fleet = start_fleet("once-apt", &image, hosts, options).await?;
    let pkg = "convoy-demo-collector";
    let victim = "collector-1";
    let id = fleet.submit("install-v1.yaml", &collector_plan("install-v1", "1.0.0", &[victim], false)).await?;
    assert_all_succeeded(&fleet.wait_finished(&id, Duration::from_secs(300)).await?, hosts.len());
    fleet.sh(
        victim,
        "printf '#!/bin/sh\\nif [ ! -e /var/tmp/convoy-slow-once ]; then touch /var/tmp/convoy-slow-once; sleep 60; fi\\nexit 0\\n' \
         > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d",
    )?;
    let id = fleet.submit("upgrade.yaml", &collector_plan("upgrade", "2.0.0", &[victim], false)).await?;
    convoy_fleet::docker::poll(Duration::from_secs(120), "the victim's postinst to start", || {
        fleet.sh(victim, "test -e /var/tmp/convoy-slow-once && echo yes").ok().filter(|o| o.trim() == "yes")
    })?;
    restart_and_wait_session(&fleet, victim).await?;

    let status = fleet.wait_finished(&id, Duration::from_secs(300)).await?;
    assert_eq!(status.state, "failed", "{status:#?}");
    let host = &status.hosts[0];
    assert_eq!(host.state, "failed", "{host:?}");
    assert!(host.message.contains("outcome unknown"), "{host:?}");
    // apt did not run again: nothing configured the package after the restart.
    let state = fleet.sh(victim, &format!("dpkg-query -W -f='${{Status}} ${{Version}}' {pkg}"))?;
    assert_eq!(state.trim(), "install ok half-configured 2.0.0", "apt ran again after the restart");

    let (spec, log) = stored_log(&fleet, &id)?;
    invariants::check_final(&spec, &log).map_err(|v| anyhow::anyhow!("{v:#?}"))?;
    let finished = log
        .iter()
        .filter(
            |e| matches!(&e.event, Event::StepFinished { outcome, .. } if outcome.message.contains("outcome unknown")),
        )
        .count();
    assert_eq!(finished, 1, "one execution, finished once, as unknown");
    Ok(())
}

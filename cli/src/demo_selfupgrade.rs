//! `convoy demo --self-upgrade`: after the demo's service upgrade, the
//! fleet upgrades its own agents, then a broken agent build stops at the
//! canary and reverts by itself; the time to revert is printed.
//!
//! The two agent builds are made honestly but without a second compile:
//! - the good one is a copy of this `convoy` binary (which runs as the
//!   agent when its file is named `convoy-agent`) with a version trailer
//!   appended, so its bytes, sha256, signature and reported version differ
//!   (`agent/src/selfupgrade/identity.rs`);
//! - the broken one is a shell script that passes the self-check and then
//!   exits 1 at start.
//!
//! Both are signed with a release key made for the demo (agents trust its
//! public half) and loaded as the artifact `convoy-agent@VERSION`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convoy_agent::selfupgrade::{identity, intent, now_unix_ms};
use convoy_fleet::processes::LocalFleet;
use convoy_proto::v1 as pb;

use crate::agents_upgrade::{UpgradeArgs, plan_yaml};
use crate::client::{Client, Target};
use crate::commands::{Output, follow};
use crate::error::CliError;

/// Most broken-build runs `--revert-runs` may ask for.
pub const MAX_REVERT_RUNS: usize = 50;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

/// The release key agents are given (`dir/release-key.pub`), made once.
pub fn release_key(dir: &Path) -> Result<PathBuf, CliError> {
    let key = dir.join("release-key");
    if !key.exists() {
        crate::signing::keygen(&key)?;
    }
    Ok(crate::signing::public_path(&key))
}

fn upgrade_args(to: &str, force: bool) -> UpgradeArgs {
    UpgradeArgs {
        to: to.to_string(),
        select: Vec::new(),
        canary: 1,
        canary_soak: "2s".into(),
        max_parallel: "4".into(),
        max_failures: 0,
        deadline: "30s".into(),
        window: None,
        timezone: None,
        force,
        print: false,
        detach: true,
    }
}

async fn load(dir: &Path, target: &Target, file: &Path, version: &str) -> Result<(), CliError> {
    let (sha, _) = crate::artifacts::sha256_file(file)?;
    let (sig, _) = crate::signing::sign(&dir.join("release-key"), file, &sha)?;
    let text = std::fs::read_to_string(&sig).map_err(io(&sig))?;
    crate::artifacts::add_signed(
        file,
        Some("convoy-agent".into()),
        Some(version.into()),
        Some(text),
        target,
        Output::Json,
    )
    .await
}

async fn submit(client: &mut Client, args: &UpgradeArgs) -> Result<pb::RolloutStatus, CliError> {
    let r = client
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: format!("agents-upgrade-{}.yaml", args.to),
            plan_yaml: plan_yaml(args)?,
            dry_run: false,
        })
        .await?
        .into_inner();
    let _ = follow(client, &r.rollout_id, Output::Text).await;
    Ok(client.get_rollout(pb::GetRolloutRequest { rollout_id: r.rollout_id, ..Default::default() }).await?.into_inner())
}

async fn agents(client: &mut Client) -> Result<Vec<pb::AgentInfo>, CliError> {
    Ok(client.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents)
}

/// The self-upgrade part of the demo; `runs` broken-build attempts on the canary.
pub async fn run(dir: &Path, fleet: &LocalFleet, client: &mut Client, runs: usize) -> Result<(), CliError> {
    let target = Target::from(fleet);
    let built = identity::agent_version();
    let good = format!("{built}-demo.2");
    let builds = dir.join("agent-builds");

    println!("\n== agents upgrade themselves: {built} -> {good} (`convoy agents upgrade --to {good} --canary 1`)");
    let file = builds.join(&good).join("convoy-agent");
    std::fs::create_dir_all(file.parent().unwrap_or(&builds)).map_err(io(&builds))?;
    std::fs::copy(&fleet.exe, &file).map_err(io(&file))?;
    identity::append_trailer(&file, &good).map_err(io(&file))?;
    load(dir, &target, &file, &good).await?;
    let t = Instant::now();
    let s = submit(client, &upgrade_args(&good, false)).await?;
    if s.state != "succeeded" {
        return Err(CliError::Demo(format!("the agents' upgrade to {good} ended {}", s.state)));
    }
    let all = agents(client).await?;
    let on_good = all.iter().filter(|a| a.connected && a.agent_version == good).count();
    if on_good != all.len() {
        return Err(CliError::Demo(format!("{on_good} of {} agents on {good}", all.len())));
    }
    println!("all {} agents upgraded themselves to {good} in {:.1}s", all.len(), t.elapsed().as_secs_f64());

    let broken = format!("{built}-demo.3-broken");
    println!("\n== a broken agent build {broken} (exits at start): stopped at the canary, reverted by the host itself");
    let file = builds.join(&broken).join("convoy-agent");
    std::fs::create_dir_all(file.parent().unwrap_or(&builds)).map_err(io(&builds))?;
    // The answer a passing self-check prints.
    let check = identity::SelfCheck { version: broken.clone(), expected: Some(broken.clone()) }.to_json(Ok(()));
    std::fs::write(
        &file,
        format!(
            "#!/bin/sh\n# A broken agent build (convoy demo): passes the self-check, exits at start.\n\
             for a in \"$@\"; do [ \"$a\" = --self-check ] && {{ echo '{check}'; exit 0; }}; done\n\
             echo 'broken agent build: exiting at start' >&2\nexit 1\n"
        ),
    )
    .map_err(io(&file))?;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io(&file))?;
    load(dir, &target, &file, &broken).await?;

    let (mut reverted, mut back) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        // A reverted version is marked bad on its host: later runs force it.
        let s = submit(client, &upgrade_args(&broken, run > 1)).await?;
        let failed: Vec<_> = s.hosts.iter().filter(|h| h.state == "failed").collect();
        let touched = s.hosts.iter().filter(|h| h.state != "pending" && h.state != "skipped").count();
        let [canary] = failed.as_slice() else {
            return Err(CliError::Demo(format!("broken build: expected one failed canary, got {failed:?}")));
        };
        if s.state == "succeeded" || touched != 1 {
            return Err(CliError::Demo(format!(
                "broken build not stopped at the canary: {} ({touched} touched)",
                s.state
            )));
        }
        let state = fleet.host_dir(&canary.host_id).join("agent");
        let i = intent::read(&state)
            .map_err(|e| CliError::Demo(e.to_string()))?
            .ok_or_else(|| CliError::Demo("no self-upgrade intent on the canary".into()))?;
        let done = i.ended_unix_ms.unwrap_or(i.started_unix_ms);
        // Back online: the canary's agent connected again on the previous build.
        let until = Instant::now() + Duration::from_secs(60);
        let online = loop {
            let all = agents(client).await?;
            if all.iter().any(|a| a.agent_id == canary.host_id && a.connected && a.agent_version == good) {
                break now_unix_ms();
            }
            if Instant::now() > until {
                return Err(CliError::Demo(format!("{} not back on {good} within 60s", canary.host_id)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        reverted.push(done.saturating_sub(i.started_unix_ms));
        back.push(online.saturating_sub(i.started_unix_ms));
        println!(
            "run {run}: canary {} reverted in {} ms, back online on {good} after {} ms: {}",
            canary.host_id,
            reverted[run - 1],
            back[run - 1],
            canary.message
        );
    }
    let stat = |v: &mut Vec<u64>| {
        v.sort_unstable();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let ((rm, rw), (bm, bw)) = (stat(&mut reverted), stat(&mut back));
    println!(
        "self-upgrade revert over {runs} run(s): reverted median {rm} ms, worst {rw} ms; back online median {bm} ms, worst {bw} ms \
         (from the switch; deadline 30 s)"
    );
    Ok(())
}

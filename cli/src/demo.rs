//! `convoy demo`: a real local fleet upgrading for real.
//!
//! It starts a coordinator and a dozen agents as separate processes (this very
//! binary re-executed as `convoy __coordinator` / `convoy __agent`, the same
//! code as `convoy-coordinator` and `convoy-agent`), builds two versions of a
//! demo service as tar.gz archives, installs 1.0.0 everywhere, then runs the
//! telemetry-stack upgrade plan of `examples/demo/telemetry-upgrade.yaml`
//! to 2.0.0 with live progress, checks every service's `/health` itself, and
//! cleans up. Everything stays on 127.0.0.1 under one temporary directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convoy_common::engine::RolloutState;
use convoy_common::engine::state::{HostPhase, UnknownState};
use sha2::{Digest, Sha256};

use crate::client::{Target, connect};
use crate::commands::{Output, dry_run_summary, follow, summary_text};
use crate::error::CliError;
use convoy_fleet::net::{free_port, http_get};
use convoy_fleet::processes::{AgentSpec, LocalFleet};
use convoy_proto::v1 as pb;

pub const INSTALL_PLAN: &str = include_str!("../../examples/demo/install-v1.yaml");
pub const UPGRADE_PLAN: &str = include_str!("../../examples/demo/telemetry-upgrade.yaml");
pub const BAD_RELEASE_PLAN: &str = include_str!("../../examples/demo/bad-release.yaml");

/// The demo fleet: (role, count), in the telemetry stack's order.
const FLEET: &[(&str, usize)] = &[("db", 2), ("collector", 3), ("notification", 2), ("polling", 3), ("api", 2)];

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo directory (logs, stores, installs) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Use this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// After the upgrade, try a bad 3.0.0 release: stopped at the canary and rolled back.
    #[arg(long)]
    pub bad_release: bool,
    /// Then the agents upgrade themselves (canary first), and a broken agent
    /// build stops at the canary and reverts by itself (docs/self-upgrade.md).
    #[arg(long)]
    pub self_upgrade: bool,
    /// With --self-upgrade: try the broken build this many times (each
    /// reverted; the median and worst revert times are printed).
    #[arg(long, default_value_t = 1, requires = "self_upgrade",
          value_parser = clap::value_parser!(u64).range(1..=crate::demo_selfupgrade::MAX_REVERT_RUNS as u64))]
    pub revert_runs: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

/// A deterministic tar.gz holding `VERSION` and a README (and a `BROKEN`
/// marker for a release whose health check must fail).
pub fn build_archive(path: &Path, version: &str, broken: bool) -> Result<String, CliError> {
    let file = std::fs::File::create(path).map_err(io(path))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut files = vec![
        ("VERSION", format!("{version}\n")),
        ("README", format!("demo-service {version}: answers /health with its version\n")),
    ];
    if broken {
        files.push(("BROKEN", "this release fails its health check\n".to_string()));
    }
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, body.as_bytes()).map_err(io(path))?;
    }
    tar.into_inner().and_then(|gz| gz.finish()).map_err(io(path))?;
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let tmp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("convoy-demo-").tempdir().map_err(io(Path::new("/tmp")))?),
    };
    let dir = match (&args.dir, &tmp) {
        (Some(d), _) => {
            std::fs::create_dir_all(d).map_err(io(d))?;
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory exists when no --dir is given"),
    };
    let self_upgrade = args.self_upgrade.then_some(args.revert_runs as usize);
    let result = run_in(&dir, started, args.bad_release, self_upgrade).await;
    if args.keep || args.dir.is_some() {
        if let Some(t) = tmp {
            let _ = t.keep();
        }
        println!("demo directory kept: {}", dir.display());
    }
    result
}

async fn run_in(dir: &Path, started: Instant, bad_release: bool, self_upgrade: Option<usize>) -> Result<(), CliError> {
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).map_err(io(&artifacts))?;
    let mut shas = BTreeMap::new();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        let sha = build_archive(&artifacts.join(format!("demo-service-{v}.tar.gz")), v, v == "3.0.0")?;
        shas.insert(v, sha);
    }
    let fill = |plan: &str| {
        let mut p = plan.to_string();
        for (v, sha) in &shas {
            p = p.replace(&format!("@SHA256_{v}@"), sha);
        }
        p
    };

    let mut fleet = LocalFleet::start_this_binary(dir, 500, true)?;
    // Agents trust the demo's release key when they will upgrade themselves.
    let trust = match self_upgrade {
        Some(_) => {
            vec![("CONVOY_TRUSTED_KEYS".to_string(), crate::demo_selfupgrade::release_key(dir)?.display().to_string())]
        }
        None => Vec::new(),
    };
    println!("coordinator listening on {} (logs in {})", fleet.url, dir.join("logs").display());
    let exe = fleet.exe.display().to_string();
    let mut hosts = Vec::new();
    for (role, n) in FLEET {
        for i in 1..=*n {
            let id = format!("{role}-{i}");
            let install = dir.join("hosts").join(&id).join("install");
            let service_root = install.join("demo-service");
            std::fs::create_dir_all(&service_root).map_err(io(&service_root))?;
            let port = free_port()?;
            let labels = [
                ("role", role.to_string()),
                ("fleet", "demo".to_string()),
                ("port", port.to_string()),
                ("service_root", service_root.display().to_string()),
                ("artifacts", artifacts.display().to_string()),
                ("convoy", exe.clone()),
            ];
            fleet.spawn_agent(AgentSpec::new(&id, labels).install_root(&install).env(trust.clone()))?;
            let convoy = fleet.exe.clone();
            fleet.at_teardown(move || stop_demo_service(&convoy, &service_root));
            hosts.push((id, port));
        }
    }
    let mut client = connect(&Target::from(&fleet)).await?;
    fleet.wait_connected(hosts.len(), Duration::from_secs(60)).await?;
    println!("{} agents connected after {:.1}s", hosts.len(), started.elapsed().as_secs_f64());

    // Step 1: version 1.0.0 everywhere.
    println!("\n== installing demo-service 1.0.0 on every host (examples/demo/install-v1.yaml)");
    submit_and_follow(&mut client, "examples/demo/install-v1.yaml", &fill(INSTALL_PLAN)).await?;

    // Step 2: the telemetry-stack upgrade.
    let upgrade = fill(UPGRADE_PLAN);
    println!("\n== the upgrade plan (examples/demo/telemetry-upgrade.yaml), as `convoy plan` shows it");
    let dry = client
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: "telemetry-upgrade.yaml".into(),
            plan_yaml: upgrade.clone(),
            dry_run: true,
        })
        .await?
        .into_inner();
    print!("{}", summary_text(&dry_run_summary(&dry)?));
    println!("\n== upgrading to 2.0.0");
    let t = Instant::now();
    submit_and_follow(&mut client, "examples/demo/telemetry-upgrade.yaml", &upgrade).await?;
    let upgrade_s = t.elapsed().as_secs_f64();

    // Independent check: ask every service itself.
    println!("\n== every service's /health, asked directly");
    let mut bad = Vec::new();
    for (id, port) in &hosts {
        let body = http_get(&format!("http://127.0.0.1:{port}/health"))
            .map(|(_, body)| body)
            .unwrap_or_else(|e| format!("error: {e}"));
        println!("  {id:<16} 127.0.0.1:{port:<5}  {}", body.trim());
        if !body.contains("\"version\":\"2.0.0\"") {
            bad.push(id.clone());
        }
    }
    if !bad.is_empty() {
        return Err(CliError::Demo(format!("hosts not on 2.0.0: {}", bad.join(", "))));
    }
    if bad_release {
        bad_release_step(&mut client, &hosts, &fill(BAD_RELEASE_PLAN)).await?;
    }
    if let Some(runs) = self_upgrade {
        crate::demo_selfupgrade::run(dir, &fleet, &mut client, runs).await?;
    }
    println!(
        "\ndemo done: {} hosts upgraded 1.0.0 -> 2.0.0 in {upgrade_s:.1}s (total {:.1}s)",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    drop(fleet);
    Ok(())
}

/// Stop the demo service under `root` (`convoy __demo-service stop`), when
/// the fleet is torn down.
fn stop_demo_service(convoy: &Path, root: &Path) {
    let _ = std::process::Command::new(convoy)
        .args(["__demo-service", "stop", "--root"])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Try the broken 3.0.0: the canary must fail, be rolled back to 2.0.0, and
/// no other host may be touched.
async fn bad_release_step(
    client: &mut crate::client::Client,
    hosts: &[(String, u16)],
    plan: &str,
) -> Result<(), CliError> {
    println!("\n== a bad release: 3.0.0 answers /health with 503 (examples/demo/bad-release.yaml)");
    let r = client
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: "bad-release.yaml".into(),
            plan_yaml: plan.into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    // The rollout is expected to fail: that is the point.
    let _ = follow(client, &r.rollout_id, Output::Text).await;
    let s = client
        .get_rollout(pb::GetRolloutRequest { rollout_id: r.rollout_id.clone(), ..Default::default() })
        .await?
        .into_inner();
    let state: RolloutState = s.state.parse()?;
    let hosts_now =
        s.hosts.iter().map(|h| Ok((h, h.state.parse::<HostPhase>()?))).collect::<Result<Vec<_>, UnknownState>>()?;
    let canary = hosts_now.iter().find(|(_, p)| *p == HostPhase::RolledBack).map(|(h, _)| h);
    let touched: Vec<&str> = hosts_now
        .iter()
        .filter(|(_, p)| !matches!(p, HostPhase::RolledBack | HostPhase::Skipped | HostPhase::Pending))
        .map(|(h, _)| h.host_id.as_str())
        .collect();
    let mut wrong = Vec::new();
    for (id, port) in hosts {
        let body = http_get(&format!("http://127.0.0.1:{port}/health"))
            .map(|(_, body)| body)
            .unwrap_or_else(|e| format!("error: {e}"));
        if !body.contains("\"version\":\"2.0.0\"") || !body.contains("\"ok\"") {
            wrong.push(format!("{id}: {}", body.trim()));
        }
    }
    match canary {
        Some(c) if touched.is_empty() && wrong.is_empty() && state != RolloutState::Succeeded => {
            println!(
                "bad release stopped at canary {} and rolled back; rollout {} ended {state}; all {} services still healthy on 2.0.0",
                c.host_id,
                s.rollout_id,
                hosts.len()
            );
            Ok(())
        }
        _ => Err(CliError::Demo(format!(
            "bad release not contained: state {state}, canary rolled back: {}, other hosts touched: {touched:?}, services off 2.0.0: {wrong:?}",
            canary.is_some()
        ))),
    }
}

async fn submit_and_follow(client: &mut crate::client::Client, name: &str, plan: &str) -> Result<(), CliError> {
    let r = client
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: name.into(),
            plan_yaml: plan.into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    follow(client, &r.rollout_id, Output::Text).await
}

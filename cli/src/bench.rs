//! `convoy __bench-rolling`: the rolling-upgrade benchmark behind
//! `bench/rolling.sh`.
//!
//! N agent processes on this machine in 4 tiers (db 2, collector 20% of N,
//! api 2, polling the rest), DAG db -> collector -> polling -> api, each tier
//! rolling in windows of 10% of the tier (at least 1) with a 10% failure
//! budget, 3 steps per host: `exec true` (drain), write the host's new version
//! into a per-host file, read it back and check it. Every file is verified
//! afterwards. The cold run includes agent start-up, enrolment and connection;
//! the warm run is a second rollout on the connected fleet.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convoy_common::engine::RolloutState;
use convoy_proto::v1 as pb;

use crate::client::{Target, connect};
use crate::error::CliError;
use convoy_fleet::processes::{AgentSpec, LocalFleet, process_usage};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 200)]
    pub hosts: usize,
    /// Working directory (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the agents as this `convoy-agent` binary (what hosts install)
    /// instead of this binary's `__agent`.
    #[arg(long)]
    pub agent_exe: Option<PathBuf>,
    /// Keep every process's log in `<dir>/logs/` (to see where start-up
    /// goes: `RUST_LOG=info` gives each agent's enrolment and session times).
    #[arg(long)]
    pub keep_logs: bool,
}

fn tiers(n: usize) -> Vec<(&'static str, usize)> {
    let collector = (n / 5).max(1);
    let polling = n.saturating_sub(4 + collector).max(1);
    vec![("db", 2), ("collector", collector), ("polling", polling), ("api", 2)]
}

fn plan(version: &str) -> String {
    let mut p = format!("name: bench-rolling\nversion: \"{version}\"\ngroups:\n");
    let order = ["db", "collector", "polling", "api"];
    for (i, t) in order.iter().enumerate() {
        let _ = write!(
            p,
            r#"  - name: {t}
    select: {{ tier: {t} }}
{after}    strategy: {{ type: rolling, max_parallel: "10%", max_failures: "10%" }}
    steps:
      - name: drain
        exec: {{ command: "true" }}
      - name: write-version
        file: {{ path: "{{{{label.dir}}}}/version", content: "{{{{version}}}}" }}
    checks:
      - name: read-back
        file: {{ path: "{{{{label.dir}}}}/version", contains: "{{{{version}}}}" }}
"#,
            after = if i == 0 { String::new() } else { format!("    after: [{}]\n", order[i - 1]) },
        );
    }
    p
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let tmp = tempfile::Builder::new().prefix("convoy-bench-").tempdir().map_err(io(Path::new("/tmp")))?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let n = args.hosts.max(6);
    let cold_start = Instant::now();
    let mut fleet = LocalFleet::start_this_binary(&dir, 1000, args.keep_logs)?;
    let mut host_dirs = Vec::new();
    for (tier, count) in tiers(n) {
        for i in 1..=count {
            let id = format!("{tier}-{i}");
            let hdir = dir.join("hosts").join(&id);
            std::fs::create_dir_all(&hdir).map_err(io(&hdir))?;
            let labels = [("tier", tier.to_string()), ("dir", hdir.display().to_string())];
            let mut spec = AgentSpec::new(&id, labels).install_root(hdir.join("install"));
            if let Some(exe) = &args.agent_exe {
                spec = spec.binary(exe);
            }
            fleet.spawn_agent(spec)?;
            host_dirs.push(hdir);
        }
    }
    let mut client = connect(&Target::from(&fleet)).await?;
    fleet.wait_connected(host_dirs.len(), Duration::from_secs(300)).await?;
    let connected_s = cold_start.elapsed().as_secs_f64();
    let cold_rollout = rollout(&mut client, "2").await?;
    let cold = cold_start.elapsed().as_secs_f64();
    verify(&host_dirs, "2")?;
    let warm = rollout(&mut client, "3").await?;
    verify(&host_dirs, "3")?;
    let usage = process_usage(fleet.coordinator_pid());
    let steps = (host_dirs.len() * 3) as f64;
    eprintln!(
        "agents connected after {connected_s:.2}s; cold rollout alone {cold_rollout:.2}s; {} hosts verified twice",
        host_dirs.len()
    );
    if let Some((rss_kib, cpu_s)) = usage {
        eprintln!("coordinator peak RSS {:.1} MiB, CPU {cpu_s:.2}s over both rollouts", rss_kib as f64 / 1024.0);
    }
    println!("convoy N={} wall_s={cold:.3} per_host_step_ms={:.3} cold", host_dirs.len(), cold * 1000.0 / steps);
    println!("convoy N={} wall_s={warm:.3} per_host_step_ms={:.3} warm", host_dirs.len(), warm * 1000.0 / steps);
    drop(fleet);
    Ok(())
}

async fn rollout(client: &mut crate::client::Client, version: &str) -> Result<f64, CliError> {
    let t = Instant::now();
    let r = client
        .submit_plan(pb::SubmitPlanRequest {
            catalogs: Default::default(),
            file_name: "bench.yaml".into(),
            plan_yaml: plan(version),
            dry_run: false,
        })
        .await?
        .into_inner();
    let mut stream = client
        .watch_rollout(pb::GetRolloutRequest { rollout_id: r.rollout_id.clone(), changes_only: true })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(s) = stream.message().await? {
        last = Some(s.state);
    }
    let Some(state) = last else { return Err(CliError::Rpc("watch ended without a status".into())) };
    let state: RolloutState = state.parse()?;
    if state != RolloutState::Succeeded {
        return Err(CliError::RolloutFailed { id: r.rollout_id, state });
    }
    Ok(t.elapsed().as_secs_f64())
}

fn verify(dirs: &[PathBuf], version: &str) -> Result<(), CliError> {
    for d in dirs {
        let p = d.join("version");
        let got = std::fs::read_to_string(&p).map_err(io(&p))?;
        if got.trim() != version {
            return Err(CliError::Demo(format!("{}: expected version {version}, found {got:?}", p.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_add_up_to_n_with_the_documented_shape() {
        let t = tiers(200);
        assert_eq!(t, vec![("db", 2), ("collector", 40), ("polling", 156), ("api", 2)]);
        assert_eq!(t.iter().map(|(_, c)| c).sum::<usize>(), 200);
    }

    #[test]
    fn bench_plan_is_a_valid_four_tier_chain() {
        let p = convoy_common::plan::parse_plan("bench.yaml", &plan("2")).expect("valid plan");
        let _ = p;
    }
}

//! `bench/swarm.sh`: N simulated agents (real sessions, fake driver) in this
//! process against a `convoy-coordinator` process. See [`convoy_fleet::swarm`].
//!
//! ```sh
//! cargo run --release -p convoy-fleet --example swarm -- --agents 1000 \
//!     --coordinator-exe target/release/convoy-coordinator
//! ```
//!
//! Options: `--agents N` (default 10000), `--coordinator-exe PATH`,
//! `--idle-s S` (60), `--heartbeat-ms MS` (2000), `--max-parallel P` (500),
//! `--dir DIR` (a temporary one), `--timeout-s S` (600 per phase).
//! The last line: `swarm N=… connect_s=… idle_rss_mb=… idle_cpu_pct=… rollout_s=… resume_s=…`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use convoy_fleet::swarm::{self, SwarmConfig};

fn parse() -> Result<(SwarmConfig, Option<PathBuf>), String> {
    let mut config = SwarmConfig {
        agents: 10_000,
        coordinator_exe: PathBuf::from("target/release/convoy-coordinator"),
        dir: PathBuf::new(),
        idle: Duration::from_secs(60),
        heartbeat_ms: 2000,
        max_parallel: 500,
        phase_timeout: Duration::from_secs(600),
    };
    let mut dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let number = |v: String, lo: u64, hi: u64| -> Result<u64, String> {
            let n: u64 = v.parse().map_err(|_| format!("{a}: not a number: {v}"))?;
            if !(lo..=hi).contains(&n) {
                return Err(format!("{a}: {n} is not in {lo}..={hi}"));
            }
            Ok(n)
        };
        match a.as_str() {
            "--agents" => config.agents = number(value()?, 1, swarm::MAX_AGENTS as u64)? as usize,
            "--coordinator-exe" => config.coordinator_exe = PathBuf::from(value()?),
            "--idle-s" => config.idle = Duration::from_secs(number(value()?, 1, 3600)?),
            "--heartbeat-ms" => config.heartbeat_ms = number(value()?, 10, 600_000)?,
            "--max-parallel" => config.max_parallel = number(value()?, 1, 100_000)? as usize,
            "--timeout-s" => config.phase_timeout = Duration::from_secs(number(value()?, 1, 7200)?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((config, dir))
}

fn main() -> ExitCode {
    let (mut config, dir) = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("swarm: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let tmp = match tempfile::Builder::new().prefix("convoy-swarm-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("swarm: temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swarm: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(swarm::run(&config)) {
        Ok(report) => {
            eprintln!(
                "swarm: coordinator peak RSS {:.1} MiB; {} executions, none twice; all agents back {:.2}s after the kill",
                report.peak_rss_mb, report.executions, report.reconnect_s
            );
            println!("{}", report.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swarm: {e} (coordinator log: {})", config.dir.join("coordinator/coordinator.log").display());
            ExitCode::FAILURE
        }
    }
}

//! `convoy-agent`: parse flags, set up logging, run until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use convoy_agent::AgentArgs;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    // Before any thread: the agent started as a `run_as` trampoline switches
    // user and becomes the command here.
    convoy_agent::run_as::hook();
    // Started as a self-upgrade's watchdog: watch, revert if needed, never return.
    convoy_agent::selfupgrade::watchdog::hook();
    convoy_agent::agent_runtime().context("tokio runtime")?.block_on(agent_main())
}

async fn agent_main() -> anyhow::Result<()> {
    let args = AgentArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if args.self_check {
        let (line, ok) = args.self_check_report();
        println!("{line}");
        std::process::exit(if ok { 0 } else { 3 });
    }
    let (supervised, followed_current) = (args.supervised, args.followed_current);
    // Bad flags or files (a --trusted-key that does not parse, ...): exit code 2.
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("convoy-agent: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tracing::info!(host_id = %config.host_id, coordinator = %config.coordinator_url, "convoy-agent starting");
    convoy_agent::selfupgrade::handover::run_agent_process(config, 0, supervised, followed_current, shutdown)
        .await
        .context("convoy-agent stopped")?;
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("SIGTERM; stopping"),
    }
    shutdown.cancel();
}

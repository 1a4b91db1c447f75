//! `convoy`: the operator CLI.
//!
//! Modules: [`client`] (TLS connection and operator token), [`commands`]
//! (plan, apply, status, agents, pause/resume/abort/approve, join-token),
//! [`artifacts`] (`artifact add|list`),
//! [`render`] (tables and progress), [`demo`] (the local demo fleet),
//! [`example`] (the example plans of `examples/` on a local fleet) and
//! [`demo_service`] (the demo's tiny HTTP service). The hidden subcommands
//! `__coordinator` and `__agent` run the coordinator and agent libraries, so
//! the demo needs only this binary.

mod artifacts;
mod bench;
mod client;
mod commands;
mod demo;
mod demo_service;
mod error;
mod example;
mod render;
mod signing;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use convoy_proto::v1::ControlAction;

use crate::client::ConnectArgs;
use crate::commands::{Format, Output};
use crate::error::CliError;

#[derive(Debug, Parser)]
#[command(name = "convoy", version, about = "Convoy: fleet upgrades as a DAG of rolling groups")]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a plan and show its expansion (groups, hosts, batches, each
    /// host's release path and steps, estimated durations; or the DAG).
    Plan {
        file: PathBuf,
        /// A release catalog the plan may name: NAME=PATH (repeatable).
        #[arg(long = "catalog", value_name = "NAME=PATH")]
        catalogs: Vec<String>,
        /// Expand against this inventory file (YAML list of {id, labels,
        /// installed, facts}) instead of the coordinator's live agents; the
        /// coordinator, when one is given, still supplies measured step times.
        #[arg(long)]
        inventory: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[arg(long, value_enum, default_value_t = Format::Summary)]
        format: Format,
    },
    /// Start a rollout and follow it until it ends (non-zero exit on failure).
    Apply {
        file: PathBuf,
        /// A release catalog the plan may name: NAME=PATH (repeatable).
        #[arg(long = "catalog", value_name = "NAME=PATH")]
        catalogs: Vec<String>,
        /// Print the rollout id and return at once.
        #[arg(long)]
        detach: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a rollout (the latest if none is named).
    Status {
        rollout: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Follow a running rollout until it ends.
    Watch { rollout: Option<String> },
    /// The recorded results of one host's steps in a rollout, with their output.
    Logs {
        /// The rollout (`latest` for the newest one).
        rollout: String,
        host: String,
    },
    /// List agents with their labels and installed versions; `agents revoke HOST` replaces a machine.
    Agents {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(subcommand)]
        action: Option<AgentsCmd>,
    },
    /// Start nothing new; in-flight steps finish.
    Pause { rollout: String },
    /// Carry on where the rollout was paused.
    Resume { rollout: String },
    /// Start nothing new; the rollout ends as aborted once in-flight steps finish.
    Abort {
        rollout: String,
        /// Also roll back what the rollout has upgraded so far (same as `convoy rollback`).
        #[arg(long)]
        rollback: bool,
    },
    /// Approve a rollout waiting for an operator (canaries passed).
    Approve { rollout: String },
    /// Roll back everything the rollout has upgraded so far.
    Rollback { rollout: String },
    /// Offline artifacts: load files agents fetch (`source: artifact:NAME@VERSION`), list them.
    #[command(subcommand)]
    Artifact(artifacts::ArtifactCmd),
    /// Create a join token for enrolling agents (single-use, one hour, unless told otherwise).
    JoinToken {
        /// Lifetime in seconds (at most 7 days).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        ttl_seconds: u64,
        /// How many agents may enrol with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        uses: u32,
        /// Only hosts whose id matches this glob may enrol with it (e.g. 'web-*').
        #[arg(long)]
        hosts: Option<String>,
    },
    /// Run a local demo fleet: a coordinator and 12 agents upgrading a real service.
    Demo(demo::DemoArgs),
    /// Run an example plan of examples/ (a real upgrade procedure) on a small local fleet.
    Example(example::ExampleArgs),
    #[command(name = "__bench-rolling", hide = true)]
    BenchRolling(bench::BenchArgs),
    #[command(name = "__coordinator", hide = true)]
    Coordinator(convoy_coordinator::cli::CoordinatorArgs),
    #[command(name = "__agent", hide = true)]
    Agent(convoy_agent::cli::AgentArgs),
    #[command(name = "__demo-service", hide = true, subcommand)]
    DemoService(demo_service::DemoServiceCommand),
}

#[derive(Debug, clap::Subcommand)]
enum AgentsCmd {
    /// Revoke a host's certificate: its session ends, the certificate is
    /// refused from now on, and the host id may enrol again (a new machine).
    Revoke { host: String },
}

fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<CliError>() {
                Some(c) => c.exit_code(),
                None => 1,
            }
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::DemoService(cmd) = cli.command {
        // Synchronous and tiny; no runtime needed.
        return Ok(demo_service::run(cmd)?);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let target = || cli.connect.resolve();
        match cli.command {
            Cmd::Plan { file, catalogs, inventory, output, format } => {
                let configured = cli.connect.coordinator.is_some() || cli.connect.data_dir.is_some();
                commands::plan_cmd(&file, &catalogs, inventory.as_deref(), target, configured, output, format).await?
            }
            Cmd::Apply { file, catalogs, detach, output } => {
                commands::apply_cmd(&file, &catalogs, target, detach, output).await?
            }
            Cmd::Status { rollout, output } => commands::status_cmd(&target()?, rollout, output).await?,
            Cmd::Watch { rollout } => {
                let mut c = client::connect(&target()?).await?;
                commands::follow(&mut c, rollout.as_deref().unwrap_or(""), Output::Text).await?
            }
            Cmd::Logs { rollout, host } => commands::logs_cmd(&target()?, &rollout, &host).await?,
            Cmd::Agents { output, action: None } => commands::agents_cmd(&target()?, output).await?,
            Cmd::Agents { action: Some(AgentsCmd::Revoke { host }), .. } => {
                commands::revoke_agent_cmd(&target()?, &host).await?
            }
            Cmd::Pause { rollout } => commands::control_cmd(&target()?, &rollout, ControlAction::Pause).await?,
            Cmd::Resume { rollout } => commands::control_cmd(&target()?, &rollout, ControlAction::Resume).await?,
            Cmd::Abort { rollout, rollback } => {
                let action = if rollback { ControlAction::Rollback } else { ControlAction::Abort };
                commands::control_cmd(&target()?, &rollout, action).await?
            }
            Cmd::Approve { rollout } => commands::control_cmd(&target()?, &rollout, ControlAction::Approve).await?,
            Cmd::Rollback { rollout } => commands::control_cmd(&target()?, &rollout, ControlAction::Rollback).await?,
            Cmd::Artifact(cmd) => artifacts::run(cmd, target).await?,
            Cmd::JoinToken { ttl_seconds, uses, hosts } => {
                commands::join_token_cmd(&target()?, ttl_seconds, uses, hosts.unwrap_or_default()).await?
            }
            Cmd::Demo(args) => {
                init_tracing("warn");
                demo::run(args).await?
            }
            Cmd::Example(args) => {
                init_tracing("warn");
                example::run(args).await?
            }
            Cmd::BenchRolling(args) => {
                init_tracing("warn");
                bench::run(args).await?
            }
            Cmd::Coordinator(args) => {
                init_tracing("info");
                convoy_coordinator::cli::run(args, convoy_coordinator::cli::shutdown_on_signal()).await?
            }
            Cmd::Agent(args) => {
                init_tracing("info");
                let config = args.into_config()?;
                convoy_agent::run_local(config, convoy_coordinator::cli::shutdown_on_signal()).await?
            }
            Cmd::DemoService(_) => unreachable!("handled before the runtime starts"),
        }
        Ok(())
    })
}

//! `convoy`: the operator CLI.
//!
//! Modules: [`client`] (TLS connection and operator token), [`commands`]
//! (plan, apply, status, agents, pause/resume/abort/approve, join-token),
//! [`ops`] (verify, events, audit, agents hold/unhold), [`manpages`]
//! (completions and man pages), [`timefmt`] (UTC times),
//! [`artifacts`] (`artifact add|list`),
//! [`render`] (tables and progress), [`demo`] (the local demo fleet),
//! [`example`] (the example plans of `examples/` on a local fleet) and
//! [`demo_service`] (the demo's tiny HTTP service). The hidden subcommands
//! `__coordinator` and `__agent` run the coordinator and agent libraries, so
//! the demo needs only this binary.

mod agents_upgrade;
mod artifacts;
mod bench;
mod client;
mod commands;
mod demo;
mod demo_selfupgrade;
mod demo_service;
mod error;
mod example;
mod manpages;
mod ops;
#[cfg(test)]
mod ops_tests;
mod render;
mod signing;
mod timefmt;

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
        /// Start now, whatever the plan's maintenance windows say (recorded
        /// in the rollout's events with your name).
        #[arg(long)]
        ignore_windows: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a rollout (the latest if none is named).
    Status {
        rollout: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Show each host's note whole (the table cuts them at 100 characters).
        #[arg(long)]
        wide: bool,
    },
    /// Follow a running rollout until it ends.
    Watch {
        rollout: Option<String>,
        /// json: print the final status as JSON (progress goes nowhere).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The recorded results of one host's steps in a rollout, with their output.
    Logs {
        /// The rollout (`latest` for the newest one).
        rollout: String,
        host: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List agents with their labels and installed versions; `agents revoke HOST` replaces a machine.
    Agents {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(subcommand)]
        action: Option<AgentsCmd>,
    },
    /// Start nothing new; in-flight steps finish.
    Pause {
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Carry on where the rollout was paused.
    Resume {
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Start nothing new; the rollout ends as aborted once in-flight steps finish.
    Abort {
        rollout: String,
        /// Also roll back what the rollout has upgraded so far (same as `convoy rollback`).
        #[arg(long)]
        rollback: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Approve a rollout waiting for an operator (canaries passed).
    Approve {
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Lift a running rollout's maintenance windows: its hosts start now,
    /// whatever the windows say (recorded with your name).
    OverrideWindows {
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Roll back everything the rollout has upgraded so far.
    Rollback {
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
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
        /// json: the token with its uses, hosts and expiry.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    // ------------------------------------------------ issue 13 commands
    /// Check a rollout's stored event log against the invariants (in-flight
    /// limits, DAG order, leader last, each execution once, every host
    /// ending known); exit 3 naming the first violation.
    Verify {
        /// The rollout (`latest` for the newest one).
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A rollout's timeline: each host's steps and checks with start and end
    /// times and outcome, and the operators' commands with who gave them.
    Events {
        /// The rollout (`latest` for the newest one).
        rollout: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The audit trail: every operator action and refused call, oldest first.
    Audit {
        /// Only entries since then: a duration back from now (30m, 2h, 7d)
        /// or a UTC time (2026-11-28, 2026-11-28T09:15:00Z).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        shell: clap_complete::Shell,
        /// The program to complete: convoy, convoy-agent or convoy-coordinator.
        #[arg(long, default_value = "convoy")]
        program: manpages::Program,
    },
    /// Write man pages (convoy.1, one per subcommand, and those of
    /// convoy-agent and convoy-coordinator) into a directory.
    Man {
        #[arg(long)]
        out_dir: PathBuf,
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
    /// Hold a host out of rollouts planned from now on (a rollout already
    /// running is not changed); plans list it as held, with the reason.
    Hold {
        host: String,
        /// Why (required; shown in plan, status and agents; at most 500 characters).
        #[arg(long)]
        reason: String,
    },
    /// Release a hold.
    Unhold { host: String },
    /// Upgrade Convoy's own agents: make (and submit) a rollout with an
    /// `agent_upgrade` step, canary first (docs/self-upgrade.md).
    Upgrade(agents_upgrade::UpgradeArgs),
}

/// A copy of this binary named `convoy-agent` is the agent: its arguments
/// are the agent's flags (`convoy __agent …`). That is how an installed
/// agent build made from this binary (the demo's self-upgrade) runs.
/// Returns the arguments to parse and whether it was started as `convoy-agent`.
fn multi_call(args: std::env::ArgsOs) -> (Vec<std::ffi::OsString>, bool) {
    let mut args: Vec<std::ffi::OsString> = args.collect();
    let as_agent = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == convoy_agent::selfupgrade::install::BINARY);
    if as_agent {
        args.insert(1, "__agent".into());
    }
    (args, as_agent)
}

/// `convoy __agent --self-check`: as `convoy-agent --self-check`.
fn agent_self_check(args: convoy_agent::AgentArgs) -> anyhow::Result<()> {
    let (line, ok) = args.self_check_report();
    println!("{line}");
    if ok { Ok(()) } else { Err(CliError::SelfCheck.into()) }
}

/// `latest` names the newest rollout (the API's empty id).
fn latest(rollout: &str) -> &str {
    if rollout == "latest" { "" } else { rollout }
}

/// The CLI's clap command (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    // The embedded agent's `run_as` trampoline (before any thread starts).
    convoy_agent::run_as::hook();
    convoy_agent::selfupgrade::watchdog::hook();
    let (args, as_agent_binary) = multi_call(std::env::args_os());
    let cli = Cli::parse_from(args);
    let code = match run(cli, as_agent_binary) {
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

fn run(cli: Cli, as_agent_binary: bool) -> anyhow::Result<()> {
    if let Cmd::DemoService(cmd) = cli.command {
        // Synchronous and tiny; no runtime needed.
        return Ok(demo_service::run(cmd)?);
    }
    let rt = match cli.command {
        Cmd::Agent(_) => convoy_agent::agent_runtime()?,
        _ => tokio::runtime::Runtime::new()?,
    };
    rt.block_on(async move {
        let target = || cli.connect.resolve();
        match cli.command {
            Cmd::Plan { file, catalogs, inventory, output, format } => {
                let configured = cli.connect.coordinator.is_some() || cli.connect.data_dir.is_some();
                commands::plan_cmd(&file, &catalogs, inventory.as_deref(), target, configured, output, format).await?
            }
            Cmd::Apply { file, catalogs, detach, ignore_windows, output } => {
                commands::apply_cmd(&file, &catalogs, target, detach, ignore_windows, output).await?
            }
            Cmd::Status { rollout, output, wide } => commands::status_cmd(&target()?, rollout, output, wide).await?,
            Cmd::Watch { rollout, output } => {
                let mut c = client::connect(&target()?).await?;
                commands::follow(&mut c, rollout.as_deref().unwrap_or(""), output).await?
            }
            Cmd::Logs { rollout, host, output } => commands::logs_cmd(&target()?, &rollout, &host, output).await?,
            Cmd::Agents { output, action: None } => commands::agents_cmd(&target()?, output).await?,
            Cmd::Agents { action: Some(AgentsCmd::Upgrade(a)), output } => {
                let yaml = agents_upgrade::plan_yaml(&a)?;
                if a.print {
                    print!("{yaml}");
                } else {
                    let name = format!("agents-upgrade-{}.yaml", a.to);
                    commands::apply_source(&name, yaml, Default::default(), target, a.detach, false, output).await?
                }
            }
            Cmd::Agents { action: Some(AgentsCmd::Revoke { host }), .. } => {
                commands::revoke_agent_cmd(&target()?, &host).await?
            }
            Cmd::Pause { rollout, output } => {
                commands::control_out(&target()?, &rollout, ControlAction::Pause, output).await?
            }
            Cmd::Resume { rollout, output } => {
                commands::control_out(&target()?, &rollout, ControlAction::Resume, output).await?
            }
            Cmd::Abort { rollout, rollback, output } => {
                let action = if rollback { ControlAction::Rollback } else { ControlAction::Abort };
                commands::control_out(&target()?, &rollout, action, output).await?
            }
            Cmd::Approve { rollout, output } => {
                commands::control_out(&target()?, &rollout, ControlAction::Approve, output).await?
            }
            Cmd::Rollback { rollout, output } => {
                commands::control_out(&target()?, &rollout, ControlAction::Rollback, output).await?
            }
            Cmd::OverrideWindows { rollout, output } => {
                commands::control_out(&target()?, &rollout, ControlAction::IgnoreWindows, output).await?
            }
            Cmd::Artifact(cmd) => artifacts::run(cmd, target).await?,
            Cmd::JoinToken { ttl_seconds, uses, hosts, output } => {
                commands::join_token_out(&target()?, ttl_seconds, uses, hosts.unwrap_or_default(), output).await?
            }
            Cmd::Verify { rollout, output } => ops::verify_cmd(&target()?, latest(&rollout), output).await?,
            Cmd::Events { rollout, output } => ops::events_cmd(&target()?, latest(&rollout), output).await?,
            Cmd::Audit { since, output } => ops::audit_cmd(&target()?, since.as_deref(), output).await?,
            Cmd::Agents { action: Some(AgentsCmd::Hold { host, reason }), .. } => {
                ops::hold_cmd(&target()?, &host, &reason).await?
            }
            Cmd::Agents { action: Some(AgentsCmd::Unhold { host }), .. } => ops::unhold_cmd(&target()?, &host).await?,
            Cmd::Completions { shell, program } => manpages::completions(shell, program, &mut std::io::stdout())?,
            Cmd::Man { out_dir } => {
                for f in manpages::write_all(&out_dir)? {
                    println!("{}", f.display());
                }
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
                let (supervised, followed_current) = (args.supervised, args.followed_current);
                if args.self_check {
                    return agent_self_check(args);
                }
                let config = args.into_config()?;
                let shutdown = convoy_coordinator::cli::shutdown_on_signal();
                // `convoy __agent FLAGS` has one argument before the agent's
                // flags; a copy named `convoy-agent` has none.
                let prefix_len = if as_agent_binary { 0 } else { 1 };
                convoy_agent::selfupgrade::handover::run_agent_process(
                    config,
                    prefix_len,
                    supervised,
                    followed_current,
                    shutdown,
                )
                .await?
            }
            Cmd::DemoService(_) => unreachable!("handled before the runtime starts"),
        }
        Ok(())
    })
}

//! `convoy agents upgrade --to VERSION`: the ready-made plan that upgrades
//! Convoy's own agents with an `agent_upgrade` step — a rollout like any
//! other (canary, parallelism, failure budget, maintenance window, pause,
//! abort), printed with `--print` or submitted like `convoy apply`.
//!
//! The agent build is the artifact `convoy-agent@VERSION`, loaded with its
//! signature (`convoy artifact add convoy-agent-VERSION --signature …`).

use std::time::Duration;

use convoy_common::plan::format_duration;

use crate::error::CliError;

/// What the plan is made from (the command's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct UpgradeArgs {
    /// The agent version to install (the artifact `convoy-agent@VERSION`).
    #[arg(long = "to", value_name = "VERSION")]
    pub to: String,
    /// Hosts to upgrade, by label (KEY=VALUE, repeatable, all must match; default: every host).
    #[arg(long = "select", value_name = "KEY=VALUE")]
    pub select: Vec<String>,
    /// Upgrade this many hosts first, then wait `--canary-soak` before the rest.
    #[arg(long, default_value_t = 1)]
    pub canary: u32,
    /// How long the canaries run on the new agent before the rest follow.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub canary_soak: String,
    /// Hosts upgraded at once after the canaries: a number or a percentage.
    #[arg(long, value_name = "N|P%", default_value = "10%")]
    pub max_parallel: String,
    /// Failed hosts tolerated before the rollout halts.
    #[arg(long, default_value_t = 0)]
    pub max_failures: u32,
    /// How long a new agent has to come back before its host reverts.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub deadline: String,
    /// A maintenance window: START/DURATION in local time, e.g. 22:00/6h.
    #[arg(long, value_name = "HH:MM/DURATION")]
    pub window: Option<String>,
    /// The window's time zone: an IANA name or {{label.tz}} (default UTC).
    #[arg(long, value_name = "ZONE", requires = "window")]
    pub timezone: Option<String>,
    /// Reinstall a version that a host marked bad after a revert.
    #[arg(long)]
    pub force: bool,
    /// Print the plan instead of submitting it.
    #[arg(long)]
    pub print: bool,
    /// Return once the rollout is created (print its id).
    #[arg(long)]
    pub detach: bool,
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn duration(flag: &str, s: &str) -> Result<Duration, CliError> {
    convoy_common::plan::parse_duration(s).map_err(|e| CliError::Invalid(format!("--{flag}: {e}")))
}

/// The plan's YAML.
pub fn plan_yaml(a: &UpgradeArgs) -> Result<String, CliError> {
    if a.to.trim().is_empty() {
        return Err(CliError::Invalid("--to: give the agent version to install".into()));
    }
    let deadline = duration("deadline", &a.deadline)?;
    let soak = duration("canary-soak", &a.canary_soak)?;
    // The step's timeout: fetch and self-check, then the deadline.
    let timeout = deadline.saturating_add(Duration::from_secs(300));
    let mut select = Vec::new();
    for s in &a.select {
        let (k, v) = s
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| CliError::Invalid(format!("--select {s:?}: expected KEY=VALUE")))?;
        select.push(format!("{}: {}", quote(k.trim()), quote(v.trim())));
    }
    let mut y = String::new();
    y.push_str(&format!("# Made by `convoy agents upgrade --to {}`.\n", a.to));
    y.push_str(&format!("name: {}\n", quote(&format!("agents-upgrade-{}", a.to))));
    y.push_str(&format!("version: {}\n", quote(&a.to)));
    y.push_str("component: convoy-agent\n");
    // The agent is away during its hand-over: its host must not be given up
    // for lost before the deadline (and a revert) has passed.
    let lost = deadline.saturating_add(Duration::from_secs(60));
    y.push_str(&format!("host_lost_timeout: {}\n", quote(&format_duration(lost))));
    if let Some(w) = &a.window {
        let (start, dur) = w
            .split_once('/')
            .ok_or_else(|| CliError::Invalid(format!("--window {w:?}: expected START/DURATION, e.g. 22:00/6h")))?;
        duration("window", dur)?;
        y.push_str("windows:\n");
        if let Some(tz) = &a.timezone {
            y.push_str(&format!("  timezone: {}\n", quote(tz)));
        }
        y.push_str(&format!("  open:\n    - start: {}\n      duration: {}\n", quote(start.trim()), quote(dur.trim())));
    }
    y.push_str("groups:\n  - name: agents\n");
    y.push_str(&format!("    select: {{ {} }}\n", select.join(", ")));
    y.push_str(&format!(
        "    strategy: {{ type: rolling, max_parallel: {}, max_failures: {} }}\n",
        match a.max_parallel.trim().parse::<u32>() {
            Ok(n) => n.to_string(),
            Err(_) => quote(&a.max_parallel),
        },
        a.max_failures
    ));
    if a.canary > 0 {
        y.push_str(&format!(
            "    canary: {{ count: {}, promote: {{ after: {} }} }}\n",
            a.canary,
            quote(&format_duration(soak))
        ));
    }
    y.push_str("    steps:\n      - name: agent-upgrade\n");
    y.push_str(&format!("        timeout: {}\n", quote(&format_duration(timeout))));
    y.push_str(&format!(
        "        agent_upgrade: {{ version: {}, deadline: {}{} }}\n",
        quote(&a.to),
        quote(&format_duration(deadline)),
        if a.force { ", force: true" } else { "" }
    ));
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: UpgradeArgs,
    }

    fn args(extra: &[&str]) -> UpgradeArgs {
        T::parse_from(std::iter::once("t").chain(extra.iter().copied())).a
    }

    #[test]
    fn the_plan_parses_with_a_canary_a_window_and_the_step() {
        let a = args(&[
            "--to",
            "0.2.0",
            "--select",
            "role=web",
            "--canary",
            "2",
            "--max-parallel",
            "25%",
            "--window",
            "22:00/6h",
            "--timezone",
            "Europe/Paris",
            "--deadline",
            "20s",
        ]);
        let yaml = plan_yaml(&a).unwrap();
        let plan = convoy_common::plan::parse_plan("agents.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(plan.version, "0.2.0");
        assert!(yaml.contains("canary: { count: 2"), "{yaml}");
        assert!(yaml.contains("Europe/Paris"), "{yaml}");
        assert!(yaml.contains("agent_upgrade: { version: \"0.2.0\", deadline: \"20s\" }"), "{yaml}");
    }

    #[test]
    fn bad_flags_are_named() {
        let e = plan_yaml(&args(&["--to", "0.2.0", "--select", "web"])).unwrap_err().to_string();
        assert!(e.contains("--select"), "{e}");
        let e = plan_yaml(&args(&["--to", "0.2.0", "--deadline", "soon"])).unwrap_err().to_string();
        assert!(e.contains("--deadline"), "{e}");
        let e = plan_yaml(&args(&["--to", "0.2.0", "--window", "22:00"])).unwrap_err().to_string();
        assert!(e.contains("--window"), "{e}");
    }
}

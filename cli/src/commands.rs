//! The operator commands: plan, apply, status, agents, pause/resume/abort/approve.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use convoy_common::artifact_ref::artifact_steps;
use convoy_common::catalog::{Catalog, parse_catalog};
use convoy_common::engine::RolloutState;
use convoy_common::estimate::{self, Measured, MeasuredStep};
use convoy_common::model::{InventoryHost, RolloutSpec};
use convoy_common::plan::{self, PlanSummary, summary::ClustersSummary};
use convoy_proto::v1 as pb;

use crate::client::{Client, Target, connect};
use crate::error::CliError;
use crate::render;

/// Reads a plan, catalog or inventory the operator named. Anything wrong
/// with it is bad input (exit 2), said in one line: missing, unreadable, too
/// large, or not UTF-8 text.
fn read_plan(file: &Path) -> Result<String, CliError> {
    let bad = |why: String| CliError::Invalid(format!("{}: {why}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| bad(io_reason(&e)))?;
    let max = convoy_common::limits::PlanLimits::default().max_bytes;
    if meta.len() > max as u64 {
        return Err(bad(format!("{} bytes is larger than the limit of {max} bytes", meta.len())));
    }
    let bytes = std::fs::read(file).map_err(|e| bad(io_reason(&e)))?;
    String::from_utf8(bytes).map_err(|e| {
        bad(format!("not UTF-8 text (invalid byte at offset {}); save it as UTF-8", e.utf8_error().valid_up_to()))
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => e.to_string(),
    }
}

/// The `--catalog NAME=PATH` flags: each catalog's source (sent to the
/// coordinator) and the parsed catalogs (for local validation).
type Catalogs = (HashMap<String, String>, BTreeMap<String, Catalog>);

fn read_catalogs(flags: &[String]) -> Result<Catalogs, CliError> {
    let mut sources = HashMap::new();
    let mut parsed = BTreeMap::new();
    for flag in flags {
        let Some((name, path)) = flag.split_once('=').filter(|(n, p)| !n.is_empty() && !p.is_empty()) else {
            return Err(CliError::Invalid(format!("--catalog {flag}: expected NAME=PATH")));
        };
        if sources.contains_key(name) {
            return Err(CliError::Invalid(format!("--catalog {name} is given twice")));
        }
        let source = read_plan(Path::new(path))?;
        let catalog = parse_catalog(path, &source).map_err(|e| CliError::Invalid(e.to_string()))?;
        parsed.insert(name.to_string(), catalog);
        sources.insert(name.to_string(), source);
    }
    Ok((sources, parsed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Groups, hosts and batches.
    Summary,
    /// Graphviz.
    Dot,
}

/// `convoy plan`: validate locally, then expand against an inventory file or
/// the coordinator's live inventory. With an inventory file, the measured
/// step times come from the coordinator when one is configured
/// (`coordinator_configured`: `--coordinator` or `--data-dir`, or their
/// environment variables); without one, or when it cannot be reached
/// (a warning says so), estimates are declared or defaults. Offline, the
/// digests an `artifact:` source leaves to the coordinator's artifact store
/// are not known: the text summary says which steps get theirs there.
pub async fn plan_cmd(
    file: &Path,
    catalogs: &[String],
    inventory: Option<&Path>,
    target: impl FnOnce() -> Result<Target, CliError>,
    coordinator_configured: bool,
    output: Output,
    format: Format,
) -> Result<(), CliError> {
    let name = file.display().to_string();
    let source = read_plan(file)?;
    let (sources, catalogs) = read_catalogs(catalogs)?;
    let parsed =
        plan::parse_plan_with_catalogs(&name, &source, &catalogs).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut expansion = match inventory {
        Some(inv) => {
            let hosts = load_inventory(inv)?;
            plan::expand_detailed(&parsed, &hosts).map_err(|e| CliError::Invalid(e.to_string()))?
        }
        None => {
            let mut c = connect(&target()?).await?;
            let r = c
                .submit_plan(pb::SubmitPlanRequest {
                    file_name: name.clone(),
                    plan_yaml: source,
                    dry_run: true,
                    catalogs: sources,
                })
                .await?
                .into_inner();
            if format == Format::Dot {
                print!("{}", r.dot);
                return Ok(());
            }
            let summary = dry_run_summary(&r)?;
            if output == Output::Json {
                let mut v = summary.to_json();
                v["held"] = r.held.iter().map(held_json).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            print_summary(&summary, output)?;
            print!("{}", render::held(&r.held, "held out of this plan (convoy agents unhold HOST to include)"));
            return Ok(());
        }
    };
    match format {
        Format::Dot => {
            print!("{}", plan::to_dot(&expansion.spec));
            Ok(())
        }
        Format::Summary => {
            let measured = if coordinator_configured {
                measured_times(target, parsed.plan_name()).await.unwrap_or_else(|e| {
                    eprintln!("warning: no measured step times ({e}); estimates are declared or defaults");
                    Measured::new()
                })
            } else {
                Measured::new()
            };
            let mut summary = estimate::summary(&expansion, &measured);
            summary.calendar = convoy_common::calendar_estimate::calendar(
                &expansion.spec,
                &estimate::host_durations(&expansion, &measured),
                now_millis(),
            );
            print_summary(&summary, output)?;
            if output == Output::Text {
                print!("{}", store_digests_text(&mut expansion.spec));
            }
            Ok(())
        }
    }
}

/// The steps whose sha256 the coordinator's artifact store fills in when
/// the plan is submitted, once per step and artifact, with how many hosts.
fn store_digests_text(spec: &mut RolloutSpec) -> String {
    let mut steps: BTreeMap<(String, String), usize> = BTreeMap::new();
    for host in &mut spec.hosts {
        for s in artifact_steps(host) {
            if let (Ok(artifact), true) = (&s.artifact, s.sha256.is_empty()) {
                *steps.entry((s.step.to_string(), artifact.to_string())).or_default() += 1;
            }
        }
    }
    steps
        .iter()
        .map(|((step, artifact), hosts)| {
            let s = if *hosts == 1 { "" } else { "s" };
            format!("step {step} (artifact:{artifact}, {hosts} host{s}): sha256 from the artifact store\n")
        })
        .collect()
}

/// The coordinator's measured step times of plan `plan_name`.
async fn measured_times(
    target: impl FnOnce() -> Result<Target, CliError>,
    plan_name: &str,
) -> Result<Measured, CliError> {
    let mut c = connect(&target()?).await?;
    let r = c.step_times(pb::StepTimesRequest { plan_name: plan_name.to_string() }).await?.into_inner();
    Ok(r.steps
        .into_iter()
        .map(|t| {
            let m = MeasuredStep { median: Duration::from_millis(t.median_ms), runs: t.runs };
            ((t.group, t.step), m)
        })
        .collect())
}

/// The summary of a dry-run submission (`convoy plan` against the coordinator).
pub fn dry_run_summary(r: &pb::SubmitPlanResponse) -> Result<PlanSummary, CliError> {
    serde_json::from_str(&r.expansion_json).map_err(|e| CliError::Rpc(format!("unreadable plan summary: {e}")))
}

/// The wall clock, for the calendar estimate of `convoy plan`.
fn now_millis() -> convoy_common::model::UnixMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    convoy_common::model::UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

fn print_summary(summary: &PlanSummary, output: Output) -> Result<(), CliError> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary.to_json()).unwrap_or_default()),
        Output::Text => print!("{}", summary_text(summary)),
    }
    Ok(())
}

/// Human-readable expansion: the DAG, then per group its strategy and batches.
pub fn summary_text(s: &PlanSummary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "plan {} -> version {}", s.plan, s.target_version);
    for g in &s.groups {
        let st = &g.strategy;
        let _ = writeln!(
            out,
            "group {} ({} host{}){}: max_parallel {}, max_failures {}, soak {}ms{}",
            g.name,
            g.hosts.len(),
            if g.hosts.len() == 1 { "" } else { "s" },
            if g.after.is_empty() { String::new() } else { format!(" after {}", g.after.join(", ")) },
            match &st.ramp {
                Some(stages) => format!("{stages:?} (ramped batches)"),
                None => st.max_parallel.to_string(),
            },
            st.max_failures,
            st.soak_ms,
            if st.order.is_listed() { "" } else { ", hosts balanced from their past durations" },
        );
        if g.pre_checks > 0 {
            let names: Vec<&str> = g.steps.iter().take(g.pre_checks).map(|s| s.name.as_str()).collect();
            let _ = writeln!(out, "  pre-checks before a host is touched: {}", names.join(", "));
        }
        match &g.clusters {
            // Which member leads is known only at run time: no batches
            // with a guessed order, but how each cluster goes.
            Some(c) if !c.same_version => out.push_str(&cluster_rounds(c, st.max_parallel)),
            Some(c) => {
                out.push_str(&cluster_text(c));
                out.push_str(&render::batches(&g.batches));
            }
            None => out.push_str(&render::batches(&g.batches)),
        }
        out.push_str(&render::plan_paths(g));
    }
    out.push_str(&render::plan_estimate(s.estimate.as_ref()));
    if let Some(c) = &s.calendar {
        out.push_str(&render::plan_calendar(c));
    }
    out
}

/// A leader/follower cluster group as it will run: per cluster, its
/// followers `window` at a time, then the leader, whichever member it is.
fn cluster_rounds(c: &ClustersSummary, window: usize) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "  clusters by label '{}', side by side; the leader is found by {} before every step\n",
        c.by,
        c.leader_check.as_deref().unwrap_or("the leader check")
    );
    for (name, hosts) in &c.members {
        let followers = hosts.len().saturating_sub(1);
        let at_a_time = if window <= 1 { "one at a time".to_string() } else { format!("{window} at a time") };
        let switchover = if c.switchover.is_empty() {
            String::new()
        } else {
            format!(", after its switchover ({})", c.switchover.join(", "))
        };
        let _ = writeln!(
            out,
            "  cluster {name} [{}]: {followers} follower{} {at_a_time}, then the leader (found at run time){switchover}",
            hosts.join(" "),
            if followers == 1 { "" } else { "s" },
        );
    }
    out
}

/// The `cluster` strategy of a group: the clusters and how each goes.
fn cluster_text(c: &ClustersSummary) -> String {
    let clusters: Vec<String> = c.members.iter().map(|(name, hosts)| format!("{name} [{}]", hosts.join(" "))).collect();
    let order = if c.same_version {
        "all members of a cluster together, step by step (same_version)".to_string()
    } else {
        let switchover =
            if c.switchover.is_empty() { String::new() } else { format!(", switchover: {}", c.switchover.join(", ")) };
        format!(
            "followers first, the leader last (found by {} before every step{switchover}); which member leads is known only at run time",
            c.leader_check.as_deref().unwrap_or("the leader check")
        )
    };
    format!("  clusters by label '{}': {}\n  {order}\n", c.by, clusters.join(", "))
}

/// An inventory file for offline `convoy plan`: a YAML list of hosts with
/// `id`, `labels` and optionally `installed` and `facts` (what agents report:
/// `hostname`, `os`, `arch` and their `--fact`s).
fn load_inventory(path: &Path) -> Result<Vec<InventoryHost>, CliError> {
    parse_inventory(&path.display().to_string(), &read_plan(path)?)
}

fn parse_inventory(file: &str, text: &str) -> Result<Vec<InventoryHost>, CliError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct H {
        id: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        installed: BTreeMap<String, String>,
        #[serde(default)]
        facts: BTreeMap<String, String>,
    }
    let hosts: Vec<H> = serde_norway::from_str(text).map_err(|e| CliError::Invalid(format!("{file}: {e}")))?;
    Ok(hosts
        .into_iter()
        .map(|h| InventoryHost { id: h.id, labels: h.labels, installed: h.installed, facts: h.facts })
        .collect())
}

/// `convoy apply`: validate locally (clear errors without a round trip), submit,
/// then follow the rollout until it ends.
pub async fn apply_cmd(
    file: &Path,
    catalogs: &[String],
    target: impl FnOnce() -> Result<Target, CliError>,
    detach: bool,
    ignore_windows: bool,
    output: Output,
) -> Result<(), CliError> {
    let name = file.display().to_string();
    // The plan is checked before the connection settings: a typo in a path
    // is the first thing to hear about.
    let source = read_plan(file)?;
    let catalogs = read_catalogs(catalogs)?;
    apply_source(&name, source, catalogs, target, detach, ignore_windows, output).await
}

/// [`apply_cmd`] for a plan already in memory (`name` is how errors name it).
pub async fn apply_source(
    name: &str,
    source: String,
    (sources, catalogs): Catalogs,
    target: impl FnOnce() -> Result<Target, CliError>,
    detach: bool,
    ignore_windows: bool,
    output: Output,
) -> Result<(), CliError> {
    let name = name.to_string();
    plan::parse_plan_with_catalogs(&name, &source, &catalogs).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut c = connect(&target()?).await?;
    let r = c
        .submit_plan(pb::SubmitPlanRequest { file_name: name, plan_yaml: source, dry_run: false, catalogs: sources })
        .await?
        .into_inner();
    eprintln!("rollout {} created", r.rollout_id);
    if ignore_windows {
        // A second, recorded command: the event log says who lifted the windows and when.
        let action = pb::ControlAction::IgnoreWindows as i32;
        let req = pb::ControlRequest { rollout_id: r.rollout_id.clone(), action, reason: String::new() };
        c.control(req).await?;
        eprintln!("maintenance windows lifted for rollout {}", r.rollout_id);
    }
    if detach {
        println!("{}", r.rollout_id);
        return Ok(());
    }
    follow(&mut c, &r.rollout_id, output).await
}

/// Watch a rollout, redrawing group progress, and print the host table at the end.
pub async fn follow(c: &mut Client, rollout_id: &str, output: Output) -> Result<(), CliError> {
    let start = Instant::now();
    // Only changes after the first status: the coordinator sends a 10,000
    // host table once, not per batch (an older one sends full statuses,
    // which merge_status takes as they are).
    let req = pb::GetRolloutRequest { rollout_id: rollout_id.to_string(), changes_only: true };
    let mut stream = c.watch_rollout(req).await?.into_inner();
    let tty = std::io::stderr().is_terminal() && output == Output::Text;
    let mut last_lines = 0usize;
    let mut last_text = String::new();
    let mut last: Option<pb::RolloutStatus> = None;
    while let Some(next) = stream.message().await? {
        let last_state = last.as_ref().map(|l| l.state.clone()).unwrap_or_default();
        let s = match last.take() {
            Some(mut held) => {
                convoy_wire::status::merge_status(&mut held, next);
                held
            }
            None => next,
        };
        let text = format!(
            "rollout {} [{}] {:.1}s\n{}",
            s.rollout_id,
            s.state,
            start.elapsed().as_secs_f64(),
            render::groups(&s)
        );
        if output == Output::Text {
            let body = text.split_once('\n').map(|(_, b)| b).unwrap_or("");
            let mut err = std::io::stderr().lock();
            if tty {
                if last_lines > 0 {
                    let _ = write!(err, "\x1b[{last_lines}A\x1b[J");
                }
                let _ = write!(err, "{text}");
                last_lines = text.lines().count();
            } else if body != last_text || s.state != last_state {
                let _ = write!(err, "{text}");
            }
            last_text = body.to_string();
        }
        last = Some(s);
    }
    let Some(s) = last else { return Err(CliError::Rpc("watch ended without a status".into())) };
    finish(&s, output)
}

fn finish(s: &pb::RolloutStatus, output: Output) -> Result<(), CliError> {
    match output {
        Output::Json => println!("{}", status_json(s)),
        Output::Text => {
            if !s.message.is_empty() {
                println!("{}", s.message);
            }
            print!("{}", render::hosts(s, false));
            print!("{}", render::backups(s));
        }
    }
    let state: RolloutState = s.state.parse()?;
    match state {
        RolloutState::Succeeded => Ok(()),
        RolloutState::Running
        | RolloutState::Paused
        | RolloutState::Pending
        | RolloutState::Halting
        | RolloutState::Aborting
        | RolloutState::RollingBack => Ok(()),
        RolloutState::Failed | RolloutState::Aborted | RolloutState::RolledBack => {
            Err(CliError::RolloutFailed { id: s.rollout_id.clone(), state })
        }
    }
}

pub fn status_json(s: &pb::RolloutStatus) -> String {
    let v = serde_json::json!({
        "rollout": s.rollout_id,
        "plan": s.plan_name,
        "state": s.state,
        "target_version": s.target_version,
        "message": s.message,
        "groups": s.groups.iter().map(|g| serde_json::json!({
            "name": g.name, "state": g.state, "done": g.done, "running": g.running,
            "failed": g.failed, "pending": g.pending, "total": g.total,
        })).collect::<Vec<_>>(),
        "hosts": s.hosts.iter().map(|h| serde_json::json!({
            "host": h.host_id, "group": h.group, "state": h.state, "version": h.version,
            "step": h.current_step, "message": h.message, "captured": h.captured,
        })).collect::<Vec<_>>(),
        "held": s.held.iter().map(held_json).collect::<Vec<_>>(),
        "backups": s.backups.iter().map(|b| serde_json::json!({
            "host": b.host_id, "group": b.group, "step": b.step, "location": b.location,
            "size_bytes": b.size_bytes, "taken_unix_ms": b.taken_unix_ms,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// A hold as JSON (status, plan, agents).
pub fn held_json(h: &pb::HeldHost) -> serde_json::Value {
    serde_json::json!({"host": h.host_id, "reason": h.reason, "by": h.by, "since_unix_ms": h.since_unix_ms})
}

pub async fn status_cmd(target: &Target, rollout: Option<String>, output: Output, wide: bool) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let s = c
        .get_rollout(pb::GetRolloutRequest { rollout_id: rollout.unwrap_or_default(), ..Default::default() })
        .await?
        .into_inner();
    match output {
        Output::Json => {
            // The timeline comes from the stored log (issue 13).
            let mut v: serde_json::Value = serde_json::from_str(&status_json(&s)).unwrap_or_default();
            v["timeline"] = crate::ops::timeline_json(target, &s.rollout_id).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Output::Text => {
            println!("rollout {} ({}) -> {}: {}", s.rollout_id, s.plan_name, s.target_version, s.state);
            if !s.message.is_empty() {
                println!("{}", s.message);
            }
            print!("{}", render::groups(&s));
            print!("{}", render::hosts(&s, wide));
            print!("{}", render::backups(&s));
            print!("{}", render::held(&s.held, "held out of this rollout when it was planned"));
        }
    }
    Ok(())
}

pub async fn agents_cmd(target: &Target, output: Output) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let list = c.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
    match output {
        Output::Text => print!("{}", render::agents(&list)),
        Output::Json => {
            let v: Vec<_> = list
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "host": a.agent_id, "connected": a.connected, "version": a.agent_version,
                        "labels": a.labels, "installed": a.facts.as_ref().map(|f| f.installed.clone()),
                        "facts": a.facts.as_ref().map(agent_facts),
                        "hold": a.hold.as_ref().map(held_json),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
    Ok(())
}

/// An agent's facts as plans see them: its `--fact`s, then the hostname, OS,
/// architecture and install root it reported (these win).
fn agent_facts(f: &pb::Facts) -> BTreeMap<String, String> {
    let mut facts: BTreeMap<String, String> = f.custom.clone().into_iter().collect();
    for (k, v) in [
        ("hostname", &f.hostname),
        ("os", &f.os),
        ("arch", &f.arch),
        (convoy_common::plan::INSTALL_ROOT_FACT, &f.install_root),
    ] {
        if !v.is_empty() {
            facts.insert(k.to_string(), v.clone());
        }
    }
    facts
}

/// A control command; `--output json` prints `{"rollout", "state"}`.
pub async fn control_out(
    target: &Target,
    rollout: &str,
    action: pb::ControlAction,
    output: Output,
) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let r = c
        .control(pb::ControlRequest { rollout_id: rollout.to_string(), action: action as i32, reason: String::new() })
        .await?
        .into_inner();
    if output == Output::Json {
        let j = serde_json::json!({"rollout": r.rollout_id, "asked_for": rollout, "state": r.state});
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    if !r.rollout_id.is_empty() && r.rollout_id != rollout {
        println!(
            "rollout {} rolls back {rollout}: {} (follow it with `convoy watch {}`)",
            r.rollout_id, r.state, r.rollout_id
        );
    } else {
        println!("rollout {rollout}: {}", r.state);
    }
    Ok(())
}

/// `convoy join-token`; `--output json` prints the token with its scope.
pub async fn join_token_out(
    target: &Target,
    ttl: u64,
    uses: u32,
    hosts: String,
    output: Output,
) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let r = c.create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: ttl, uses, hosts }).await?.into_inner();
    if output == Output::Json {
        let j = serde_json::json!({"token": r.token, "uses": r.uses, "hosts": r.hosts, "expires_unix_ms": r.expires_unix_ms});
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    println!("{}", r.token);
    let scope = if r.hosts.is_empty() { String::new() } else { format!(" by hosts matching '{}'", r.hosts) };
    eprintln!("usable {} time(s){scope}, for {ttl}s; give it to agents in a file (--join-token-file)", r.uses);
    Ok(())
}

pub async fn logs_cmd(target: &Target, rollout: &str, host: &str, output: Output) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let rollout_id = if rollout == "latest" { String::new() } else { rollout.to_string() };
    let r = c.host_outputs(pb::HostOutputsRequest { rollout_id, host_id: host.to_string() }).await?.into_inner();
    if output == Output::Json {
        let outputs: Vec<_> = r
            .outputs
            .iter()
            .map(|o| {
                let status = pb::StepStatus::try_from(o.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
                serde_json::json!({
                    "execution_id": o.execution_id,
                    "status": status.trim_start_matches("STEP_STATUS_").to_lowercase(),
                    "exit_code": o.exit_code, "message": o.message, "stdout": o.stdout_tail,
                    "stderr": o.stderr_tail, "finished_unix_ms": o.finished_unix_ms,
                })
            })
            .collect();
        let j = serde_json::json!({"rollout": r.rollout_id, "host": host, "outputs": outputs});
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    if r.outputs.is_empty() {
        println!("rollout {}: no recorded result for host {host}", r.rollout_id);
    }
    for o in &r.outputs {
        let status = pb::StepStatus::try_from(o.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
        println!(
            "== {} {} exit {}",
            o.execution_id,
            status.trim_start_matches("STEP_STATUS_").to_lowercase(),
            o.exit_code
        );
        for (what, text) in [("message", &o.message), ("stdout", &o.stdout_tail), ("stderr", &o.stderr_tail)] {
            if !text.is_empty() {
                println!("-- {what}\n{}", text.trim_end());
            }
        }
    }
    Ok(())
}

pub async fn revoke_agent_cmd(target: &Target, host: &str) -> Result<(), CliError> {
    let mut c = connect(target).await?;
    let r = c.revoke_agent(pb::RevokeAgentRequest { host_id: host.to_string() }).await?.into_inner();
    println!("revoked the certificate of {} (sha256 {}); the host may enrol again", r.host_id, r.fingerprint);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"product: app
component: app
releases:
  - version: "1.0"
  - version: "1.1"
    steps:
      upgrade:
        - { name: install, estimate: 2m, exec: { command: install, args: ["{{version}}"] } }
  - version: "2.0"
    steps:
      pre:
        - { name: note, when: { facts: { os: rocky8 } }, exec: { command: "echo {{fact.os}}" } }
      upgrade:
        - { name: install, estimate: 2m, exec: { command: install, args: ["{{version}}"] } }
"#;

    const PLAN: &str = r#"name: app-upgrade
version: "2.0"
groups:
  - name: app
    select: { role: app }
    release: { catalog: app }
    strategy: { max_parallel: 10 }
    checks:
      - { name: up, tcp: { address: "127.0.0.1:80" } }
"#;

    fn inventory() -> String {
        let mut text = String::new();
        for i in 1..=200 {
            text.push_str(&format!(
                "- {{ id: a-{i:03}, labels: {{ role: app }}, installed: {{ app: \"1.0\" }}, facts: {{ os: rocky8 }} }}\n"
            ));
        }
        text.push_str("- { id: b-1, labels: { role: app }, installed: { app: \"1.1\" } }\n");
        text
    }

    fn text(measured: &Measured) -> String {
        let c = parse_catalog("app.yaml", CATALOG).unwrap_or_else(|e| panic!("{e}"));
        let plan = plan::parse_plan_with_catalogs("plan.yaml", PLAN, &BTreeMap::from([("app".to_string(), c)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let hosts = parse_inventory("inv.yaml", &inventory()).unwrap_or_else(|e| panic!("{e}"));
        let x = plan::expand_detailed(&plan, &hosts).unwrap_or_else(|e| panic!("{e}"));
        summary_text(&estimate::summary(&x, measured))
    }

    #[test]
    fn offline_plans_say_which_digests_come_from_the_artifact_store() {
        let plan = r#"name: art
version: "2.0"
groups:
  - name: app
    select: { role: app }
    steps:
      - name: install
        archive: { component: app, version: "{{version}}", source: "artifact:app@{{version}}" }
      - dpkg: { package: app-db, version: "2.0", source: /srv/app-db.deb, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;
        let inv = "- { id: a-1, labels: { role: app } }\n- { id: a-2, labels: { role: app } }\n";
        let hosts = parse_inventory("inv.yaml", inv).unwrap_or_else(|e| panic!("{e}"));
        let p = plan::parse_plan("plan.yaml", plan).unwrap_or_else(|e| panic!("{e}"));
        let mut x = plan::expand_detailed(&p, &hosts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store_digests_text(&mut x.spec),
            "step install (artifact:app@2.0, 2 hosts): sha256 from the artifact store\n"
        );
    }

    #[test]
    fn cluster_groups_say_how_their_clusters_go() {
        let plan = r#"name: mc
version: "5.2"
groups:
  - name: controllers
    select: { role: mc }
    strategy:
      type: cluster
      leader: { exec: { command: is-master }, follower_when: { exit_code: 1 } }
      switchover: [{ name: hand-over, exec: { command: switchover } }]
    steps: [{ exec: { command: "true" } }]
"#;
        let inv = "- { id: m-1, labels: { role: mc, cluster: c1 } }\n- { id: m-2, labels: { role: mc, cluster: c1 } }\n- { id: m-3, labels: { role: mc, cluster: c2 } }\n";
        let hosts = parse_inventory("inv.yaml", inv).unwrap_or_else(|e| panic!("{e}"));
        let p = plan::parse_plan("plan.yaml", plan).unwrap_or_else(|e| panic!("{e}"));
        let x = plan::expand_detailed(&p, &hosts).unwrap_or_else(|e| panic!("{e}"));
        let text = summary_text(&estimate::summary(&x, &Measured::default()));
        // No batches with a guessed leader: how each cluster goes, the
        // leader found at run time, and its switchover counted once on it.
        assert!(text.contains("the leader is found by leader-check before every step"), "{text}");
        assert!(
            text.contains("  cluster c1 [m-1 m-2]: 1 follower one at a time, then the leader (found at run time), after its switchover (hand-over)\n"),
            "{text}"
        );
        assert!(text.contains("  cluster c2 [m-3]: 0 followers one at a time, then the leader"), "{text}");
        assert!(!text.contains("batch 1"), "{text}");
        assert!(text.contains("each follower (host m-1)"), "{text}");
        assert!(text.contains("the leader of each cluster (whichever member leads; counted on m-2, m-3)"), "{text}");
        let same = plan.replace("      leader: { exec: { command: is-master }, follower_when: { exit_code: 1 } }\n      switchover: [{ name: hand-over, exec: { command: switchover } }]\n", "      same_version: true\n");
        let p = plan::parse_plan("plan.yaml", &same).unwrap_or_else(|e| panic!("{e}"));
        let x = plan::expand_detailed(&p, &hosts).unwrap_or_else(|e| panic!("{e}"));
        let text = summary_text(&estimate::summary(&x, &Measured::default()));
        assert!(text.contains("all members of a cluster together, step by step (same_version)"), "{text}");
    }

    #[test]
    fn a_balanced_group_says_so_and_shows_its_new_order() {
        let plan = "name: b\nversion: \"2\"\ngroups:\n  - name: app\n    select: { role: app }\n    strategy: { max_parallel: 1, order: balanced }\n    steps: [{ name: install, exec: { command: \"true\" } }]\n";
        let inv = "- { id: a-1, labels: { role: app } }\n- { id: a-2, labels: { role: app } }\n";
        let hosts = parse_inventory("inv.yaml", inv).unwrap_or_else(|e| panic!("{e}"));
        let p = plan::parse_plan("plan.yaml", plan).unwrap_or_else(|e| panic!("{e}"));
        let mut x = plan::expand_detailed(&p, &hosts).unwrap_or_else(|e| panic!("{e}"));
        // a-2 took ten times as long as a-1 on the last runs.
        let on_hosts: estimate::HostMeasured = [("a-1", 6), ("a-2", 60)]
            .into_iter()
            .map(|(h, s)| {
                let m = estimate::MeasuredStep { median: std::time::Duration::from_secs(s), runs: 3 };
                ((h.to_string(), "app".to_string(), "install".to_string()), m)
            })
            .collect();
        estimate::balance_hosts(&mut x, &Measured::default(), || on_hosts);
        let text = summary_text(&estimate::summary(&x, &Measured::default()));
        assert!(
            text.contains("max_parallel 1, max_failures 0, soak 0ms, hosts balanced from their past durations"),
            "{text}"
        );
        let first = text.find("a-2").zip(text.find("a-1"));
        assert!(first.is_some_and(|(two, one)| two < one), "the longer host is listed first: {text}");
    }

    #[test]
    fn agent_facts_merge_custom_and_reported() {
        let f = pb::Facts {
            hostname: "h".into(),
            os: String::new(),
            arch: "x86_64".into(),
            custom: [("edition".to_string(), "pro".to_string()), ("arch".to_string(), "fake".to_string())].into(),
            ..Default::default()
        };
        let got = agent_facts(&f);
        assert_eq!(got.get("edition").map(String::as_str), Some("pro"));
        assert_eq!(got.get("arch").map(String::as_str), Some("x86_64"), "reported facts win");
        assert_eq!(got.get("hostname").map(String::as_str), Some("h"));
        assert!(!got.contains_key("os"), "an empty fact is not a fact");
    }

    #[test]
    fn inventory_files_carry_facts() {
        let hosts = parse_inventory("inv.yaml", &inventory()).unwrap();
        assert_eq!(hosts[0].facts.get("os").map(String::as_str), Some("rocky8"));
        assert!(hosts[200].facts.is_empty());
        let e = parse_inventory("inv.yaml", "- { id: x, fact: { a: b } }").unwrap_err();
        assert!(e.to_string().contains("inv.yaml") && e.to_string().contains("unknown field `fact`"), "{e}");
    }

    #[test]
    fn plan_text_shows_paths_grouped_with_hop_steps_and_estimates() {
        let measured: Measured =
            [(("app".to_string(), "up".to_string()), MeasuredStep { median: Duration::from_secs(14), runs: 12 })]
                .into();
        let out = text(&measured);
        let lines: Vec<&str> = out.lines().collect();
        let at = |prefix: &str| {
            lines.iter().position(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}:\n{out}"))
        };
        // 200 identical hosts: one entry, not 200.
        let a = at("hosts a-001, a-002 (+198 more): 1.0 → 1.1 → 2.0, 4 steps, ~4m 24s per host");
        assert_eq!(out.matches("a-150").count(), 0, "not listed at all:\n{out}");
        assert!(out.lines().count() < 30, "{out}");
        assert_eq!(lines[a + 1].trim(), "1.0 → 1.1");
        assert!(lines[a + 2].trim_start().starts_with("install") && lines[a + 2].ends_with("~2m (declared)"), "{out}");
        assert_eq!(lines[a + 3].trim(), "1.1 → 2.0");
        assert!(lines[a + 4].trim_start().starts_with("note") && lines[a + 4].ends_with("~10s (default)"), "{out}");
        assert!(lines[a + 6].contains("then the group's steps"), "{out}");
        assert!(lines[a + 7].trim_start().starts_with("up") && lines[a + 7].ends_with("~14s (measured, 12 runs)"));
        // b-1 starts at 1.1 and has no `os` fact: no note.
        let b = at("host b-1: 1.1 → 2.0, 2 steps, ~2m 14s per host");
        assert_eq!(lines[b + 1].trim(), "1.1 → 2.0");
        assert!(lines[b + 2].trim_start().starts_with("install"), "{out}");
        // 201 hosts, 10 at a time: 21 windows of the slowest host's 4m 24s at most.
        assert!(out.contains("  estimate: ~1h 30m (from +0s to +1h 30m)"), "{out}");
        assert!(out.ends_with(
            "estimated duration: ~1h 30m (parallel branches overlap; step times: 2 declared, 1 measured, 1 default)\n"
        ), "{out}");
    }
}

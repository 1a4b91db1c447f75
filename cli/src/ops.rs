//! The operator tools of issue 13 on the CLI side: `convoy verify` (the
//! invariants over a rollout's stored log), `convoy events` (its
//! timeline; also in `convoy status --output json`), `convoy agents
//! hold|unhold` and `convoy audit`. They talk to the coordinator's
//! `OpsService`.

use std::fmt::Write as _;

use convoy_common::audit::AuditEntry;
use convoy_common::engine::RolloutState;
use convoy_common::invariants::LogEntry;
use convoy_common::model::RolloutSpec;
use convoy_common::timeline::{self, RunRole, Timeline};
use convoy_common::verify::{self, CHECKED, Verified, Violation};
use convoy_proto::v1 as pb;
use convoy_proto::v1::ops_service_client::OpsServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{Auth, MAX_ANSWER_BYTES, Target, authenticated_channel};
use crate::commands::Output;
use crate::error::CliError;
use crate::timefmt;

pub type OpsClient = OpsServiceClient<InterceptedService<Channel, Auth>>;

/// The store format this build reads (the log's JSON is in it).
const KNOWN_FORMAT: u32 = convoy_coordinator::store::format::FORMAT_VERSION;
/// The most events `verify`/`events` read from one rollout.
pub const MAX_EVENTS: usize = 5_000_000;

pub async fn ops_client(t: &Target) -> Result<OpsClient, CliError> {
    let (channel, auth) = authenticated_channel(t).await?;
    Ok(OpsServiceClient::with_interceptor(channel, auth).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// A rollout's stored log, replayed.
#[derive(Debug, Clone)]
pub struct RolloutLog {
    pub id: String,
    pub spec: RolloutSpec,
    pub log: Vec<LogEntry>,
    /// The state the coordinator reports.
    pub state: String,
}

fn wire(e: convoy_wire::WireError) -> CliError {
    CliError::Rpc(format!("unreadable rollout log: {e}"))
}

/// Fetch every page of a rollout's log (`""`: the latest) and replay it.
pub async fn fetch_log(c: &mut OpsClient, rollout: &str) -> Result<RolloutLog, CliError> {
    let mut id = rollout.to_string();
    let mut spec = None;
    let mut events = Vec::new();
    let mut state;
    let mut from = 0u64;
    loop {
        let req = pb::RolloutLogRequest { rollout_id: id.clone(), from_seq: from, max_events: 0 };
        let page = convoy_wire::log::log_page_from_proto(c.rollout_log(req).await?.into_inner(), KNOWN_FORMAT)
            .map_err(wire)?;
        id = page.rollout_id;
        state = page.state;
        if page.spec.is_some() {
            spec = page.spec;
        }
        events.extend(page.events.into_iter().map(|(_, at, e)| (at, e)));
        if !page.more {
            break;
        }
        if page.next_seq <= from || events.len() > MAX_EVENTS {
            return Err(CliError::Rpc(format!("rollout {id}: the log does not end within {MAX_EVENTS} events")));
        }
        from = page.next_seq;
    }
    let spec = spec.ok_or_else(|| CliError::Rpc(format!("rollout {id}: the coordinator sent no spec")))?;
    let log = verify::replay(&id, &spec, events);
    Ok(RolloutLog { id, spec, log, state })
}

/// Verify a fetched log against the state the coordinator reports.
pub fn verify_log(l: &RolloutLog) -> Result<Verified, Violation> {
    verify::verify(&l.spec, &l.log, l.state.parse::<RolloutState>().ok())
}

/// What `convoy verify` prints for a log that passed.
pub fn verified_text(l: &RolloutLog, v: &Verified) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {} ({}): {} events replayed; {} group{}, {} host entr{}, {} execution{} dispatched",
        l.id,
        l.state,
        v.events,
        v.groups,
        if v.groups == 1 { "" } else { "s" },
        v.hosts,
        if v.hosts == 1 { "y" } else { "ies" },
        v.executions,
        if v.executions == 1 { "" } else { "s" },
    );
    if !v.host_ends.is_empty() {
        let ends: Vec<String> = v.host_ends.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(out, "hosts ended: {}", ends.join(", "));
    }
    let _ = writeln!(out, "checked:");
    for c in CHECKED {
        let skipped = c.ends_with("(ended rollouts)") && !v.final_checks;
        let _ = writeln!(out, "  {} {c}", if skipped { "-" } else { "✓" });
    }
    let _ = writeln!(
        out,
        "ok: the stored log keeps every invariant{}",
        if v.final_checks { "" } else { " so far (the rollout has not ended)" }
    );
    out
}

/// `convoy verify ROLLOUT`: exit 0 with a summary, or exit 3 naming the
/// first violation.
pub async fn verify_cmd(target: &Target, rollout: &str, output: Output) -> Result<(), CliError> {
    let mut c = ops_client(target).await?;
    let l = fetch_log(&mut c, rollout).await?;
    let result = verify_log(&l);
    match (&result, output) {
        (Ok(v), Output::Text) => print!("{}", verified_text(&l, v)),
        (Ok(v), Output::Json) => {
            let j =
                serde_json::json!({"rollout": l.id, "state": l.state, "ok": true, "checked": CHECKED, "summary": v});
            println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        }
        (Err(e), Output::Json) => {
            let j = serde_json::json!({"rollout": l.id, "state": l.state, "ok": false, "violation": e.first, "violations": e.count});
            println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        }
        (Err(_), Output::Text) => {}
    }
    result.map(|_| ()).map_err(|e| CliError::Violation { rollout: l.id.clone(), message: e.to_string() })
}

fn offset(at: u64, start: u64) -> String {
    let d = at.saturating_sub(start);
    format!("+{}.{:01}s", d / 1000, d % 1000 / 100)
}

fn role_name(r: RunRole) -> &'static str {
    match r {
        RunRole::Step => "step",
        RunRole::Check => "check",
        RunRole::Rollback => "rollback",
        RunRole::LeaderCheck => "leader-check",
        RunRole::Switchover => "switchover",
    }
}

/// The timeline as text: operator commands, then each host's runs, times
/// as offsets from the start.
pub fn timeline_text(id: &str, t: &Timeline) -> String {
    let mut out = String::new();
    let start = t.started.map_or(0, |s| s.0);
    let _ = write!(out, "rollout {id}: started {}", timefmt::utc(start));
    match &t.finished {
        Some((at, state)) => {
            let _ = writeln!(out, ", ended {state} at {} ({})", timefmt::utc(at.0), offset(at.0, start));
        }
        None => out.push_str(", not ended\n"),
    }
    if !t.operator.is_empty() {
        let _ = writeln!(out, "operator:");
        for o in &t.operator {
            let _ = writeln!(out, "  {:>9}  {:<8}  by {}", offset(o.at.0, start), o.command, o.by);
        }
    }
    let sw = t.hosts.iter().flat_map(|h| &h.runs).map(|r| r.step.chars().count()).max().unwrap_or(4).max(4);
    let kw = t.hosts.iter().flat_map(|h| &h.runs).map(|r| r.kind.len()).max().unwrap_or(4).max(4);
    for h in &t.hosts {
        let agent = if h.agent == h.host { String::new() } else { format!(" on {}", h.agent) };
        let _ = writeln!(out, "host {}{agent} (group {})", h.host, h.group);
        if h.runs.is_empty() && h.ends.is_empty() {
            let _ = writeln!(out, "  not started");
        }
        for r in &h.runs {
            let end = r.ended.map_or_else(|| "running".to_string(), |e| offset(e.0, start));
            let outcome = r.outcome.as_deref().unwrap_or("-");
            let resent = if r.resent > 0 { format!(" (resent {}×)", r.resent) } else { String::new() };
            let msg = if r.message.is_empty() { String::new() } else { format!("  {}", r.message.replace('\n', " ")) };
            let line = format!(
                "  {:>9} → {:>9}  {:<sw$}  {:<kw$}  {:<12}  {:<11}{resent}{msg}",
                offset(r.started.0, start),
                end,
                r.step,
                r.kind,
                role_name(r.role),
                outcome
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for (at, what) in &h.agent_events {
            let _ = writeln!(out, "  {:>9}  {what}", offset(at.0, start));
        }
        for (at, state) in &h.ends {
            let _ = writeln!(out, "  {:>9}  ended {state}", offset(at.0, start));
        }
    }
    out
}

/// `convoy events ROLLOUT`.
pub async fn events_cmd(target: &Target, rollout: &str, output: Output) -> Result<(), CliError> {
    let mut c = ops_client(target).await?;
    let l = fetch_log(&mut c, rollout).await?;
    let t = timeline::build(&l.spec, &l.log);
    match output {
        Output::Text => print!("{}", timeline_text(&l.id, &t)),
        Output::Json => {
            let j = serde_json::json!({"rollout": l.id, "state": l.state, "timeline": t});
            println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        }
    }
    Ok(())
}

/// The timeline of a rollout as JSON (for `convoy status --output json`).
pub async fn timeline_json(target: &Target, rollout: &str) -> Result<serde_json::Value, CliError> {
    let mut c = ops_client(target).await?;
    let l = fetch_log(&mut c, rollout).await?;
    Ok(serde_json::to_value(timeline::build(&l.spec, &l.log)).unwrap_or_default())
}

/// `convoy agents hold HOST --reason ...`.
pub async fn hold_cmd(target: &Target, host: &str, reason: &str) -> Result<(), CliError> {
    convoy_common::hold::check_reason(reason).map_err(CliError::Invalid)?;
    let mut c = ops_client(target).await?;
    let h = c.hold_host(pb::HoldHostRequest { host_id: host.into(), reason: reason.into() }).await?.into_inner();
    println!("{} is held out of rollouts planned from now on: {} (by {})", h.host_id, h.reason, h.by);
    Ok(())
}

/// `convoy agents unhold HOST`.
pub async fn unhold_cmd(target: &Target, host: &str) -> Result<(), CliError> {
    let mut c = ops_client(target).await?;
    let h = c.unhold_host(pb::UnholdHostRequest { host_id: host.into() }).await?.into_inner();
    println!("{} is no longer held (was: {}, by {} at {})", h.host_id, h.reason, h.by, timefmt::utc(h.since_unix_ms));
    Ok(())
}

/// The audit trail as a table.
pub fn audit_text(entries: &[AuditEntry]) -> String {
    let who = |e: &AuditEntry| if e.who.is_empty() { "-".to_string() } else { e.who.clone() };
    let ww = entries.iter().map(|e| who(e).chars().count()).max().unwrap_or(3).max(3);
    let aw = entries.iter().map(|e| e.action.as_str().len()).max().unwrap_or(6).max(6);
    let tw = entries.iter().map(|e| e.target.chars().count()).max().unwrap_or(6).clamp(6, 40);
    let pw = entries.iter().map(|e| e.peer.chars().count()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}  {:<ww$}  {:<pw$}  {:<aw$}  {:<tw$}  {:<7}  DETAIL",
        "TIME", "WHO", "FROM", "ACTION", "TARGET", "OUTCOME"
    );
    for e in entries {
        let target = if e.target.is_empty() { "-" } else { &e.target };
        let line = format!(
            "{:<24}  {:<ww$}  {:<pw$}  {:<aw$}  {:<tw$}  {:<7}  {}",
            timefmt::utc(e.at.0),
            who(e),
            e.peer,
            e.action.as_str(),
            target,
            e.outcome.as_str(),
            e.detail.replace('\n', " ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if entries.is_empty() {
        out.push_str("(no entries)\n");
    }
    out
}

/// `convoy audit [--since ...]`.
pub async fn audit_cmd(target: &Target, since: Option<&str>, output: Output) -> Result<(), CliError> {
    let since = since.map(|s| timefmt::since(s, timefmt::now_ms())).transpose().map_err(CliError::Invalid)?;
    let mut c = ops_client(target).await?;
    let r = c.audit(pb::AuditRequest { since_unix_ms: since.unwrap_or(0), limit: 0 }).await?.into_inner();
    let entries = r
        .entries
        .into_iter()
        .map(convoy_wire::ops::audit_entry_from_proto)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Rpc(format!("unreadable audit entry: {e}")))?;
    match output {
        Output::Text => print!("{}", audit_text(&entries)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default()),
    }
    Ok(())
}

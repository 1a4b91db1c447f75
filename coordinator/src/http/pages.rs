//! The dashboard's pages and its action posts.
//!
//! - `/`: rollouts, newest first: state, progress, who started them.
//! - `/rollouts/ID`: the group DAG (inline SVG), each group's counts, state
//!   (`waiting_window` as `convoy status` shows it), window status (next
//!   opening or time left) and elapsed vs estimated time; the hosts
//!   (filterable by state) with version, current step, message and step
//!   timeline; captured values; backups; the action buttons. Live:
//!   `dashboard.js` follows `/rollouts/ID/events` ([`super::sse`]) and
//!   updates states, counts and window status in place.
//! - `/agents`: connected or not, last seen, labels, installed versions,
//!   agent version, and the mix of agent versions.
//! - `/audit`: the audit trail (`convoy audit`'s entries), newest first,
//!   bounded by `?limit=` and filtered by `?since=`.
//! - `POST /rollouts/ID/ACTION` (`pause`, `resume`, `abort`, `approve`,
//!   `rollback`): operator tokens only, with the session's CSRF token; abort
//!   and rollback ask for a confirmation first (a page of its own when the
//!   browser runs no script). Each post is audited, refusals included (a
//!   role too low, no valid token, no CSRF token).
//!
//! Step timelines come from the rollout's stored event log (each
//! `StepFinished` with the agent's measured duration), read off the runtime
//! task like `convoy outputs` does; they are drawn when the page loads, not
//! live. Estimates use the measured step times and each kind's default
//! (declared `estimate:`s are not kept in the stored spec).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use convoy_common::audit::{AuditAction, AuditEntry, AuditOutcome};
use convoy_common::engine::{Event, ExecutionPart, OperatorCommand};
use convoy_common::estimate::{Measured, rollout_estimate, step_estimate};
use convoy_common::model::{RolloutSpec, StepStatus, UnixMillis};
use serde::Deserialize;

use super::auth::{Answer, Authed, csrf_ok, require};
use super::render::{self, badge, esc, layout};
use super::{HttpState, Peer};
use crate::error::CoordinatorError;
use crate::operators::Role;
use crate::runtime::RolloutSnapshot;
use crate::store::RolloutRecord;

fn error_page(who: Option<&Authed>, status: StatusCode, e: &CoordinatorError) -> Response {
    let body =
        format!("<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Rollouts</a></p>", status, esc(&e.to_string()));
    (status, Html(layout("Error", who, &body))).into_response()
}

fn status_of(e: &CoordinatorError) -> StatusCode {
    match e {
        CoordinatorError::UnknownRollout { .. } | CoordinatorError::NoRollout => StatusCode::NOT_FOUND,
        CoordinatorError::Conflict { .. } | CoordinatorError::BadRequest { .. } => StatusCode::CONFLICT,
        CoordinatorError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Reads the store off the async workers (the store is synchronous).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::Internal { what: "reading the store".into(), message: e.to_string() })?
}

fn progress(s: &RolloutSnapshot) -> (usize, usize) {
    let done = s.view.groups.iter().map(|g| g.done + g.failed + g.rolled_back).sum();
    let total = s.view.groups.iter().map(|g| g.total).sum();
    (done, total)
}

/// `GET /`: every rollout, newest first.
pub async fn rollouts(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let who = match require(&state, &headers, peer, Role::Viewer, "reading rollouts", Answer::Page) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let list = match state.runtime.list_rollouts().await {
        Ok(l) => l,
        Err(e) => return error_page(Some(&who), status_of(&e), &e),
    };
    let store = state.store.clone();
    let started_by: HashMap<String, String> = blocking(move || store.rollouts())
        .await
        .map(|rs| rs.into_iter().map(|r| (r.id, r.created_by)).collect())
        .unwrap_or_default();
    let mut body = String::from(
        "<h1>Rollouts</h1><table class=\"rollouts\" id=\"rollouts\"><thead><tr><th>Rollout</th><th>Plan</th><th>Version</th>\
         <th>State</th><th>Progress</th><th>Started by</th><th>Created (UTC)</th><th>Updated (UTC)</th></tr></thead><tbody>",
    );
    if list.is_empty() {
        body.push_str(
            "<tr><td colspan=\"8\" class=\"empty\">No rollout yet: <code>convoy apply PLAN</code>.</td></tr>",
        );
    }
    for s in list.iter().rev() {
        let (done, total) = progress(s);
        let _ = write!(
            body,
            "<tr data-rollout=\"{id}\"><td><a href=\"/rollouts/{id}\">{id}</a></td><td>{plan}</td><td>{version}</td><td>{state}</td>\
             <td><progress value=\"{done}\" max=\"{total}\"></progress> {done}/{total}</td><td>{by}</td><td>{created}</td><td>{updated}</td></tr>",
            id = esc(&s.id),
            plan = esc(&s.plan_name),
            version = esc(&s.target_version),
            state = badge(s.view.state.as_str()),
            by = esc(started_by.get(&s.id).map_or("", String::as_str)),
            created = render::utc(s.created),
            updated = render::utc(s.updated),
        );
    }
    body.push_str("</tbody></table>");
    Html(layout("Rollouts", Some(&who), &body)).into_response()
}

/// One finished step execution, for a host's timeline.
struct Mark {
    step: String,
    status: StepStatus,
    duration: Duration,
    at: UnixMillis,
}

fn step_name(spec: &RolloutSpec, entry: &str, part: ExecutionPart) -> String {
    let plan = spec.hosts.iter().find(|h| h.key() == entry);
    let name = |list: Option<&Vec<convoy_common::model::StepSpec>>, i: usize| {
        list.and_then(|l| l.get(i)).map(|s| s.name.clone()).unwrap_or_else(|| format!("#{i}"))
    };
    match part {
        ExecutionPart::Step(i) => name(plan.map(|p| &p.steps), i),
        ExecutionPart::Rollback(i) => format!("undo {}", name(plan.map(|p| &p.rollback_steps), i)),
        ExecutionPart::LeaderCheck(i) => format!("leader check before {}", name(plan.map(|p| &p.steps), i)),
        ExecutionPart::Switchover(i) => format!("switchover {}", name(plan.map(|p| &p.switchover), i)),
    }
}

/// What the rollout page reads from the store: its record, each entry's
/// timeline, and the measured step times.
struct Stored {
    record: Option<RolloutRecord>,
    timelines: BTreeMap<String, Vec<Mark>>,
    measured: Measured,
}

fn read_stored(store: &dyn crate::store::Store, id: &str, plan: &str) -> Result<Stored, CoordinatorError> {
    let record = store.rollouts()?.into_iter().find(|r| r.id == id);
    let mut timelines: BTreeMap<String, Vec<Mark>> = BTreeMap::new();
    if let Some(rec) = &record {
        for e in store.events(id)? {
            if let Event::StepFinished { execution_id, outcome } = e.event {
                timelines.entry(execution_id.entry().to_string()).or_default().push(Mark {
                    step: step_name(&rec.spec, execution_id.entry(), execution_id.part()),
                    status: outcome.status,
                    duration: Duration::from_millis(outcome.duration_ms),
                    at: e.now,
                });
            }
        }
    }
    Ok(Stored { record, timelines, measured: crate::timings::measured(store, plan) })
}

fn status_class(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Unsupported => "failed",
        StepStatus::TimedOut => "failed",
    }
}

#[derive(Deserialize, Default)]
pub struct HostFilter {
    /// Show only hosts in this state (`running`, `failed`, …).
    #[serde(default)]
    state: Option<String>,
}

/// The host phases offered by the filter.
const FILTER_STATES: [&str; 9] =
    ["pending", "running", "soaking", "succeeded", "failed", "skipped", "rolling_back", "rolled_back", "held"];

/// `GET /rollouts/ID`.
pub async fn rollout(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    Query(filter): Query<HostFilter>,
    headers: HeaderMap,
) -> Response {
    let who = match require(&state, &headers, peer, Role::Viewer, "reading a rollout", Answer::Page) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let snap = match state.runtime.get(Some(id.clone())).await {
        Ok(s) => s,
        Err(e) => return error_page(Some(&who), status_of(&e), &e),
    };
    let (store, rid, plan) = (state.store.clone(), id.clone(), snap.plan_name.clone());
    let stored = match blocking(move || read_stored(store.as_ref(), &rid, &plan)).await {
        Ok(s) => s,
        Err(e) => return error_page(Some(&who), status_of(&e), &e),
    };
    let now = state.clock.now();
    let body = rollout_body(&snap, &stored, &who, filter.state.as_deref(), now);
    Html(layout(&format!("Rollout {id}"), Some(&who), &body)).into_response()
}

fn rollout_body(
    snap: &RolloutSnapshot,
    stored: &Stored,
    who: &Authed,
    filter: Option<&str>,
    now: UnixMillis,
) -> String {
    let id = esc(&snap.id);
    let v = &snap.view;
    let terminal = v.state.is_terminal();
    let (done, total) = progress(snap);
    let by = stored.record.as_ref().map_or(String::new(), |r| esc(&r.created_by));
    let end = if terminal { snap.updated } else { now };
    let estimate = stored.record.as_ref().map(|r| estimate(&r.spec, &stored.measured));
    let mut b = format!(
        "<div class=\"head\" id=\"rollout\" data-rollout=\"{id}\" data-events=\"/rollouts/{id}/events\" data-terminal=\"{terminal}\">\
         <h1>Rollout {id} <span id=\"rollout-state\">{state}</span></h1>\
         <p class=\"meta\">{plan} → {version} · started by <b>{by}</b> at {created} UTC · \
         <span id=\"rollout-progress\">{done}/{total}</span> hosts finished · elapsed {elapsed}{est}</p>\
         <p class=\"message\" id=\"rollout-message\">{message}</p></div>",
        state = badge(v.state.as_str()),
        plan = esc(&snap.plan_name),
        version = esc(&snap.target_version),
        created = render::utc(snap.created),
        elapsed = render::duration(Duration::from_millis(end.since(snap.created))),
        est = estimate.as_ref().map_or(String::new(), |e| format!(" of about {} estimated", render::duration(e.total))),
        message = esc(&v.message),
    );
    if who.can_act() {
        b.push_str(&buttons(&snap.id, who, terminal));
    }
    b.push_str("<section><h2>Groups</h2>");
    if let Some(rec) = &stored.record {
        b.push_str("<div class=\"dag-wrap\">");
        b.push_str(&render::dag_svg(&rec.spec, &v.groups));
        b.push_str("</div>");
    }
    b.push_str(
        "<table class=\"groups\" id=\"groups\"><thead><tr><th>Group</th><th>State</th><th>Done</th><th>Running</th><th>Failed</th>\
         <th>Rolled back</th><th>Pending</th><th>Total</th><th>Elapsed</th><th>Estimated</th><th>Window</th></tr></thead><tbody>",
    );
    for (gi, g) in v.groups.iter().enumerate() {
        let hosts_of = v.hosts.iter().filter(|h| h.group == g.name).map(|h| h.key.as_str());
        let marks: Vec<&Mark> = hosts_of.filter_map(|k| stored.timelines.get(k)).flatten().collect();
        let first = marks.iter().map(|m| UnixMillis(m.at.0.saturating_sub(m.duration.as_millis() as u64))).min();
        let last = marks.iter().map(|m| m.at).max();
        let group_done = g.running == 0 && g.pending == 0;
        let elapsed = match (first, last) {
            (Some(f), Some(l)) if group_done || terminal => render::duration(Duration::from_millis(l.since(f))),
            (Some(f), _) => render::duration(Duration::from_millis(now.since(f))),
            _ => "–".to_string(),
        };
        let est = estimate.as_ref().and_then(|e| e.groups.get(gi)).map_or("–".to_string(), |e| {
            format!("{}{}", render::duration(e.duration), if e.manual_approval { " + approval" } else { "" })
        });
        let promote =
            g.promote_at.map_or(String::new(), |t| format!(" <small>promotes {} UTC</small>", render::utc(t)));
        // Waiting for a window: its next opening; in an open one: the time
        // left (`convoy status` words it the same way).
        let window = match (render::window_status(g, now), render::window_rules(g)) {
            (Some(status), Some(rules)) => format!(
                "<span class=\"w-status\">{}</span><br><small class=\"w-rules\">{}</small>",
                esc(&status),
                esc(&rules)
            ),
            _ => "<span class=\"w-status\">–</span>".to_string(),
        };
        let _ = write!(
            b,
            "<tr data-group=\"{name}\"><td>{name}</td><td class=\"g-state\">{state}{promote}</td><td class=\"g-done\">{}</td>\
             <td class=\"g-running\">{}</td><td class=\"g-failed\">{}</td><td class=\"g-rolled_back\">{}</td><td class=\"g-pending\">{}</td>\
             <td>{}</td><td>{elapsed}</td><td>{est}</td><td class=\"g-window\">{window}</td></tr>",
            g.done,
            g.running,
            g.failed,
            g.rolled_back,
            g.pending,
            g.total,
            name = esc(&g.name),
            state = badge(g.state_str()),
        );
    }
    b.push_str("</tbody></table></section>");
    b.push_str(&hosts_table(snap, stored, filter));
    b.push_str(&captured_and_backups(snap));
    b
}

fn estimate(spec: &RolloutSpec, measured: &Measured) -> convoy_common::estimate::RolloutEstimate {
    let host_durations: Vec<Duration> = spec
        .hosts
        .iter()
        .map(|h| {
            let group = spec.groups.get(h.group).map(|g| g.name.clone()).unwrap_or_default();
            h.steps
                .iter()
                .map(|s| step_estimate(s, None, measured.get(&(group.clone(), s.name.clone()))).duration)
                .fold(Duration::ZERO, Duration::saturating_add)
        })
        .collect();
    rollout_estimate(spec, &host_durations)
}

fn buttons(id: &str, who: &Authed, terminal: bool) -> String {
    let csrf = who.csrf.as_deref().unwrap_or("");
    let form = |action: &str, label: &str, confirm: Option<&str>| {
        let confirm_attr = confirm.map_or(String::new(), |c| format!(" data-confirm=\"{}\"", esc(c)));
        format!(
            "<form method=\"post\" action=\"/rollouts/{id}/{action}\" class=\"action\"{confirm_attr}>\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"confirmed\" value=\"\">\
             <button type=\"submit\" id=\"btn-{action}\" class=\"btn btn-{action}\">{label}</button></form>",
            id = esc(id),
            csrf = esc(csrf),
        )
    };
    let mut b = String::from("<div class=\"actions\" id=\"actions\">");
    if !terminal {
        b.push_str(&form("pause", "Pause", None));
        b.push_str(&form("resume", "Resume", None));
        b.push_str(&form("approve", "Approve", None));
        b.push_str(&form("abort", "Abort", Some("Abort this rollout? In-flight hosts finish; nothing new starts.")));
    }
    b.push_str(&form(
        "rollback",
        "Roll back",
        Some("Roll back every host this rollout upgraded? This cannot be undone from here."),
    ));
    b.push_str("</div>");
    b
}

fn hosts_table(snap: &RolloutSnapshot, stored: &Stored, filter: Option<&str>) -> String {
    let mut b = String::from(
        "<section><h2>Hosts</h2><form method=\"get\" class=\"filter\"><label>State \
         <select name=\"state\" id=\"state-filter\"><option value=\"\">all</option>",
    );
    for s in FILTER_STATES {
        let sel = if filter == Some(s) { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{s}\"{sel}>{s}</option>");
    }
    b.push_str(
        "</select></label> <noscript><button type=\"submit\">Filter</button></noscript></form>\
         <table class=\"hosts\" id=\"hosts\"><thead><tr><th>Host</th><th>Group</th><th>State</th><th>Version</th>\
         <th>Step</th><th>Message</th><th>Timeline</th></tr></thead><tbody>",
    );
    for h in &snap.view.hosts {
        let phase = h.state.as_str();
        let hidden = match filter {
            Some(f) if !f.is_empty() && f != phase => " hidden",
            _ => "",
        };
        let key = if h.key.is_empty() { h.host.as_str() } else { h.key.as_str() };
        let mut timeline = String::new();
        for m in stored.timelines.get(key).map(Vec::as_slice).unwrap_or_default() {
            let _ = write!(
                timeline,
                "<span class=\"tl {cls}\" title=\"{step}: {status} in {took}, finished {at} UTC\">{step}</span>",
                cls = status_class(m.status),
                step = esc(&m.step),
                status = if m.status.is_success() { "succeeded" } else { "failed" },
                took = render::duration(m.duration),
                at = render::utc(m.at),
            );
        }
        let _ = write!(
            b,
            "<tr data-key=\"{key}\" data-phase=\"{phase}\"{hidden}><td>{key}</td><td>{group}</td><td class=\"h-state\">{state}</td>\
             <td class=\"h-version\">{version}</td><td class=\"h-step\">{step}</td><td class=\"h-message\">{message}</td>\
             <td class=\"h-timeline\">{timeline}</td></tr>",
            key = esc(key),
            group = esc(&h.group),
            state = badge(phase),
            version = esc(h.version.as_deref().unwrap_or("")),
            step = esc(h.current_step.as_deref().unwrap_or("")),
            message = esc(&h.message),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

fn captured_and_backups(snap: &RolloutSnapshot) -> String {
    let mut b = String::from("<section><h2>Captured values</h2>");
    let captured: Vec<_> = snap.view.hosts.iter().filter(|h| !h.captured.is_empty()).collect();
    if captured.is_empty() {
        b.push_str("<p class=\"empty\">None.</p>");
    } else {
        b.push_str("<table class=\"captured\"><thead><tr><th>Host</th><th>Name</th><th>Value</th></tr></thead><tbody>");
        for h in captured {
            for (k, val) in &h.captured {
                let _ =
                    write!(b, "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>", esc(&h.key), esc(k), esc(val));
            }
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section><section><h2>Backups</h2>");
    if snap.view.backups.is_empty() {
        b.push_str("<p class=\"empty\">None.</p>");
    } else {
        b.push_str(
            "<table class=\"backups\"><thead><tr><th>Host</th><th>Group</th><th>Step</th><th>Location</th><th>Size</th><th>Taken (UTC)</th></tr></thead><tbody>",
        );
        for k in &snap.view.backups {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{} bytes</td><td>{}</td></tr>",
                esc(&k.key),
                esc(&k.group),
                esc(&k.step),
                esc(&k.location),
                k.size_bytes,
                render::utc(k.at)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    b
}

/// `GET /agents`.
pub async fn agents(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let who = match require(&state, &headers, peer, Role::Viewer, "listing agents", Answer::Page) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let list = match state.runtime.list_agents().await {
        Ok(l) => l,
        Err(e) => return error_page(Some(&who), status_of(&e), &e),
    };
    let mut versions: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for a in &list {
        let e = versions.entry(a.record.version.as_str()).or_default();
        e.0 += 1;
        if a.connected {
            e.1 += 1;
        }
    }
    let connected = list.iter().filter(|a| a.connected).count();
    let mut b = format!(
        "<h1>Agents</h1><p class=\"meta\" id=\"agents-summary\">{connected} of {} connected · agent versions:",
        list.len()
    );
    for (v, (n, c)) in &versions {
        let _ = write!(b, " <span class=\"version\">{} × {n} ({c} connected)</span>", esc(v));
    }
    b.push_str(
        "</p><table class=\"agents\" id=\"agents\"><thead><tr><th>Host</th><th>Connected</th><th>Last seen (UTC)</th>\
         <th>Agent version</th><th>Labels</th><th>Installed</th><th>OS</th></tr></thead><tbody>",
    );
    let pairs = |m: &BTreeMap<String, String>, sep: &str| {
        m.iter().map(|(k, v)| format!("<code>{}{sep}{}</code>", esc(k), esc(v))).collect::<Vec<_>>().join(" ")
    };
    for a in &list {
        let r = &a.record;
        let _ = write!(
            b,
            "<tr data-host=\"{host}\"><td>{host}</td><td>{conn}</td><td>{seen}</td><td>{version}</td><td>{labels}</td><td>{installed}</td><td>{os} {arch}</td></tr>",
            host = esc(&r.id),
            conn = if a.connected { badge("connected") } else { badge("disconnected") },
            seen = render::utc(r.last_seen),
            version = esc(&r.version),
            labels = pairs(&r.labels, "="),
            installed = pairs(&r.installed, " "),
            os = esc(&r.os),
            arch = esc(&r.arch),
        );
    }
    b.push_str("</tbody></table>");
    Html(layout("Agents", Some(&who), &b)).into_response()
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmed: String,
}

/// `POST /rollouts/ID/ACTION`.
pub async fn control(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let known = match action.as_str() {
        "pause" => Some((OperatorCommand::Pause, AuditAction::Pause, false)),
        "resume" => Some((OperatorCommand::Resume, AuditAction::Resume, false)),
        "approve" => Some((OperatorCommand::Approve, AuditAction::Approve, false)),
        "abort" => Some((OperatorCommand::Abort, AuditAction::Abort, true)),
        "rollback" => Some((OperatorCommand::Rollback, AuditAction::Rollback, true)),
        _ => None,
    };
    let who = match require(&state, &headers, peer, Role::Operator, "controlling a rollout", Answer::Page) {
        Ok(a) => a,
        Err(r) => {
            // A refused action is in the trail like the CLI's refusals: the
            // token's name if it had a valid one (a viewer's), the address.
            if let Some((_, audited, _)) = known {
                let caller = super::auth::identify(&state, &headers).ok().map(|a| a.caller);
                let detail = match &caller {
                    Some(c) => format!("from the dashboard: needs the operator role; this token is a {}", c.role),
                    None => "from the dashboard: no valid operator token".to_string(),
                };
                let origin = crate::audit::Origin::new(caller, Some(peer.0));
                let now = state.clock.now();
                crate::audit::record(state.store.as_ref(), now, &origin, audited, &id, AuditOutcome::Refused, &detail);
            }
            return *r;
        }
    };
    if !csrf_ok(&state, &who, &form.csrf, peer) {
        if let Some((_, audited, _)) = known {
            let origin = crate::audit::Origin::new(Some(who.caller.clone()), Some(peer.0));
            let detail = "from the dashboard: a post without the session's CSRF token";
            crate::audit::record(
                state.store.as_ref(),
                state.clock.now(),
                &origin,
                audited,
                &id,
                AuditOutcome::Refused,
                detail,
            );
        }
        let e =
            CoordinatorError::BadRequest { field: "csrf".into(), message: "missing or wrong; reload the page".into() };
        return error_page(Some(&who), StatusCode::FORBIDDEN, &e);
    }
    let Some((command, audited, needs_confirm)) = known else {
        let e = CoordinatorError::BadRequest { field: "action".into(), message: format!("unknown action '{action}'") };
        return error_page(Some(&who), StatusCode::NOT_FOUND, &e);
    };
    if needs_confirm && form.confirmed != "yes" {
        let body = format!(
            "<h1>{action} rollout {id}?</h1><p>{what}</p><form method=\"post\" action=\"/rollouts/{id}/{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
             <button type=\"submit\" class=\"btn btn-{action}\" id=\"confirm\">Yes, {action}</button> <a href=\"/rollouts/{id}\">Cancel</a></form>",
            id = esc(&id),
            action = esc(&action),
            csrf = esc(who.csrf.as_deref().unwrap_or("")),
            what = if command == OperatorCommand::Abort {
                "In-flight hosts finish; nothing new starts; the rollout ends aborted."
            } else {
                "Every host this rollout started is rolled back (a finished rollout gets a new rollback rollout)."
            },
        );
        return Html(layout("Confirm", Some(&who), &body)).into_response();
    }
    let result = state.runtime.control(Some(id.clone()), command, &who.caller.name).await;
    // The same trail as the CLI's actions: who, from where, how it ended.
    let origin = crate::audit::Origin::new(Some(who.caller.clone()), Some(peer.0));
    let (outcome, detail) = match &result {
        Ok(_) => (AuditOutcome::Ok, "from the dashboard".to_string()),
        Err(e) => (AuditOutcome::Failed, format!("from the dashboard: {e}")),
    };
    crate::audit::record(state.store.as_ref(), state.clock.now(), &origin, audited, &id, outcome, &detail);
    match result {
        Ok(s) => {
            tracing::info!(peer = %peer.0, name = %who.caller.name, rollout = %id, action, "dashboard action");
            Redirect::to(&format!("/rollouts/{}", s.id)).into_response()
        }
        Err(e) => error_page(Some(&who), status_of(&e), &e),
    }
}

/// The audit page lists at most this many entries unless `?limit=` says
/// otherwise (up to [`crate::ops::AUDIT_MAX`], the bound `convoy audit` has).
pub const AUDIT_PAGE_DEFAULT: usize = 200;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    /// Only entries from then on: a duration back from now (`30m`, `2h`,
    /// `7d`) or a UTC time (`2026-11-28`, `2026-11-28 09:15`,
    /// `2026-11-28T09:15:00Z`), as `convoy audit --since` takes.
    #[serde(default)]
    since: Option<String>,
    /// At most this many entries (the newest).
    #[serde(default)]
    limit: Option<String>,
}

/// The audit actions whose target is a rollout id (linked on the page).
fn targets_rollout(e: &AuditEntry) -> bool {
    match e.action {
        AuditAction::Pause
        | AuditAction::Resume
        | AuditAction::Abort
        | AuditAction::Approve
        | AuditAction::Rollback
        | AuditAction::WindowOverride => true,
        AuditAction::Submit => e.outcome == AuditOutcome::Ok,
        AuditAction::ArtifactAdd
        | AuditAction::JoinTokenCreate
        | AuditAction::AgentRevoke
        | AuditAction::Hold
        | AuditAction::Unhold
        | AuditAction::TokenCreate
        | AuditAction::TokenRevoke
        | AuditAction::Call => false,
    }
}

/// `GET /audit[?since=…][&limit=N]`: the audit trail, newest first — the
/// entries `convoy audit` lists, from the same store.
pub async fn audit(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match require(&state, &headers, peer, Role::Viewer, "reading the audit trail", Answer::Page) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let now = state.clock.now();
    let since_text = q.since.as_deref().map(str::trim).unwrap_or("");
    let limit_text = q.limit.as_deref().map(str::trim).unwrap_or("");
    let since = match since_text {
        "" => Ok(UnixMillis(0)),
        t => convoy_common::audit::parse_since(t, now).map_err(|m| format!("since {m}")),
    };
    let limit = match limit_text {
        "" => Ok(AUDIT_PAGE_DEFAULT),
        t => t
            .parse::<usize>()
            .map(|n| n.clamp(1, crate::ops::AUDIT_MAX))
            .map_err(|_| format!("limit '{t}': expected a number of entries")),
    };
    let (since, limit) = match (since, limit) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(m), _) | (_, Err(m)) => {
            let e = CoordinatorError::BadRequest { field: "query".into(), message: m };
            return error_page(Some(&who), StatusCode::BAD_REQUEST, &e);
        }
    };
    let store = state.store.clone();
    let entries = match blocking(move || store.audit(since, limit)).await {
        Ok(e) => e,
        Err(e) => return error_page(Some(&who), status_of(&e), &e),
    };
    let mut b = format!(
        "<h1>Audit trail</h1><form method=\"get\" action=\"/audit\" class=\"audit-filter\">\
         <label>Since <input type=\"text\" name=\"since\" id=\"audit-since\" value=\"{since}\" placeholder=\"2h, 7d, 2026-11-28\"></label>\
         <label>At most <input type=\"number\" name=\"limit\" id=\"audit-limit\" min=\"1\" max=\"{max}\" value=\"{limit}\"></label>\
         <button type=\"submit\">Show</button></form>\
         <p class=\"meta\" id=\"audit-summary\">{n} entr{ies}, newest first{bounded}.</p>\
         <table class=\"audit\" id=\"audit\"><thead><tr><th>When (UTC)</th><th>Who</th><th>Role</th><th>From</th>\
         <th>Action</th><th>Target</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>",
        since = esc(since_text),
        max = crate::ops::AUDIT_MAX,
        n = entries.len(),
        ies = if entries.len() == 1 { "y" } else { "ies" },
        bounded = if entries.len() >= limit {
            format!(" (the newest {limit}: raise the limit or narrow since)")
        } else {
            String::new()
        },
    );
    if entries.is_empty() {
        b.push_str("<tr><td colspan=\"8\" class=\"empty\">No entry.</td></tr>");
    }
    // The store answers oldest first (the newest `limit`).
    for e in entries.iter().rev() {
        let target = if e.target.is_empty() {
            "–".to_string()
        } else if targets_rollout(e) {
            format!("<a href=\"/rollouts/{0}\">{0}</a>", esc(&e.target))
        } else {
            esc(&e.target)
        };
        let _ = write!(
            b,
            "<tr data-action=\"{action}\" data-outcome=\"{outcome}\"><td>{at}</td><td class=\"a-who\">{who}</td><td>{role}</td>\
             <td>{peer}</td><td class=\"a-action\">{action}</td><td class=\"a-target\">{target}</td>\
             <td class=\"a-outcome outcome-{outcome}\">{outcome}</td><td class=\"a-detail\">{detail}</td></tr>",
            at = render::utc(e.at),
            who = if e.who.is_empty() { "–".to_string() } else { esc(&e.who) },
            role = esc(&e.role),
            peer = esc(&e.peer),
            action = e.action.as_str(),
            outcome = e.outcome.as_str(),
            detail = esc(&e.detail),
        );
    }
    b.push_str("</tbody></table>");
    Html(layout("Audit", Some(&who), &b)).into_response()
}

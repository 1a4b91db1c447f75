//! The coordinator's Prometheus metrics: the instruments, where they are
//! recorded, and the gauges computed when `/metrics` is scraped.
//!
//! Two kinds:
//! - **Recorded as things happen** (by the runtime task, the connection
//!   acceptor and the authentication checks): step durations by step kind
//!   and outcome, event-log append and flush latency, the runtime's command
//!   queue depth, refused requests by reason. They live in [`Metrics`],
//!   shared as an `Arc`.
//! - **Computed at scrape time** from the runtime's own snapshots (the same
//!   answers `convoy status` and `convoy agents` get): agents connected by
//!   agent version, rollouts by state, hosts by state per rollout and group.
//!   [`Metrics::refresh`] rewrites them just before encoding, so they never
//!   drift from what the runtime holds.
//!
//! Hosts by state are exported for every unfinished rollout and for the most
//! recent one (finished or not), not for every rollout ever run: labels per
//! rollout would otherwise grow without bound. Every host phase is exported
//! for those rollouts and groups, zeros included, so alert expressions need
//! no `absent()`.
//!
//! The metric names and the alert rules built on them are documented in
//! `docs/metrics.md`.

use std::time::Duration;

use convoy_common::engine::state::HostPhase;
use convoy_common::engine::{ExecutionId, ExecutionPart, RolloutState};
use convoy_common::model::{HostPlan, StepStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::runtime::{AgentSnapshot, RolloutSnapshot};

/// Why a request was refused (the `reason` label of
/// `convoy_requests_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The connection cap was reached; the connection was closed at once.
    ConnectionCap,
    /// An operator call (gRPC or HTTP) without a valid token.
    OperatorToken,
    /// A valid operator token whose role does not allow the call.
    Role,
    /// An agent session whose certificate is missing, revoked or for
    /// another host, or a second session of a live host.
    AgentSession,
    /// An enrolment refused (join token, host id, CSR).
    Enrolment,
    /// A dashboard action without the session's CSRF token.
    Csrf,
    /// A TLS handshake refused: a client certificate the CA did not sign,
    /// a protocol error.
    TlsHandshake,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::ConnectionCap => "connection_cap",
            RefusalReason::OperatorToken => "operator_token",
            RefusalReason::Role => "role",
            RefusalReason::AgentSession => "agent_session",
            RefusalReason::Enrolment => "enrolment",
            RefusalReason::Csrf => "csrf",
            RefusalReason::TlsHandshake => "tls_handshake",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// How a TLS handshake went (the `kind` label of `convoy_tls_handshakes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Certificates exchanged and checked, signatures made.
    Full,
    /// A session resumed from a ticket (see [`crate::tickets`]).
    Resumed,
}

impl HandshakeKind {
    /// Every kind (what the handshake count sums).
    pub const ALL: [HandshakeKind; 2] = [HandshakeKind::Full, HandshakeKind::Resumed];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeKind::Full => "full",
            HandshakeKind::Resumed => "resumed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    agent_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    rollout: String,
    group: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Step buckets: 100 ms to 2 hours.
const STEP_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];
/// Store latency buckets: 100 µs to 5 s.
const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The coordinator's instruments and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Serialises scrapes: a refresh and its encoding are one step.
    scrape: tokio::sync::Mutex<()>,
    refused: Family<ReasonLabels, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
    step_duration: HistogramFamily<StepLabels>,
    append_latency: Histogram,
    flush_latency: Histogram,
    queue_depth: Gauge,
    agents_connected: Family<VersionLabels, Gauge>,
    agents_disconnected: Gauge,
    rollouts: Family<StateLabels, Gauge>,
    hosts: Family<HostLabels, Gauge>,
    /// Scrapes answered (a sanity counter for the scrape path itself).
    scrapes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The help of `convoy_ha_leader`.
const HA_LEADER_HELP: &str = "1 on the coordinator leading in HA (serve --store etcd://), 0 on a follower";

/// What a follower's `/metrics` answers: `convoy_ha_leader 0` alone (it
/// runs no rollouts and holds no agents; the leader has the rest).
pub fn follower_scrape() -> String {
    let mut registry = Registry::with_prefix("convoy");
    registry.register("ha_leader", HA_LEADER_HELP, Gauge::<i64>::default());
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

impl Metrics {
    /// A term's metrics on the leader in HA: [`Metrics::new`] and
    /// `convoy_ha_leader 1`.
    pub fn ha_leader() -> Metrics {
        let mut m = Metrics::new();
        let leader = Gauge::<i64>::default();
        leader.set(1);
        m.registry.register("ha_leader", HA_LEADER_HELP, leader);
        m
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("convoy");
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register("requests_refused", "Requests refused, by reason", refused.clone());
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register("tls_handshakes", "TLS handshakes completed, full or resumed", handshakes.clone());
        let step_duration: HistogramFamily<StepLabels> = Family::new_with_constructor(step_histogram);
        registry.register_with_unit(
            "step_duration",
            "Duration of finished step executions as the agent measured them, by step kind and outcome",
            Unit::Seconds,
            step_duration.clone(),
        );
        let append_latency = latency_histogram();
        registry.register_with_unit(
            "event_log_append",
            "Time to append one batch of a rollout's events to the store",
            Unit::Seconds,
            append_latency.clone(),
        );
        let flush_latency = latency_histogram();
        registry.register_with_unit(
            "event_log_flush",
            "Time to flush the store after a batch (the group commit)",
            Unit::Seconds,
            flush_latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "runtime_queue_depth",
            "Commands waiting for the runtime task when it last started a batch",
            queue_depth.clone(),
        );
        let agents_connected = Family::<VersionLabels, Gauge>::default();
        registry.register("agents_connected", "Agents with a live session, by agent version", agents_connected.clone());
        let agents_disconnected = Gauge::default();
        registry.register(
            "agents_disconnected",
            "Agents the coordinator knows that have no live session",
            agents_disconnected.clone(),
        );
        let rollouts = Family::<StateLabels, Gauge>::default();
        registry.register("rollouts", "Rollouts by state", rollouts.clone());
        let hosts = Family::<HostLabels, Gauge>::default();
        registry.register(
            "hosts",
            "Host entries by state, per unfinished (or latest) rollout and group",
            hosts.clone(),
        );
        let scrapes = Counter::default();
        registry.register("metrics_scrapes", "Scrapes of /metrics answered", scrapes.clone());
        Metrics {
            registry,
            scrape: tokio::sync::Mutex::new(()),
            refused,
            handshakes,
            step_duration,
            append_latency,
            flush_latency,
            queue_depth,
            agents_connected,
            agents_disconnected,
            rollouts,
            hosts,
            scrapes,
        }
    }

    /// Count a refused request.
    pub fn refused(&self, reason: RefusalReason) {
        self.refused.get_or_create(&ReasonLabels { reason: reason.as_str().to_string() }).inc();
    }

    /// Count a completed TLS handshake.
    pub fn handshake(&self, kind: HandshakeKind) {
        self.handshakes.get_or_create(&HandshakeLabels { kind: kind.as_str().to_string() }).inc();
    }

    /// TLS handshakes completed so far, of both kinds.
    pub fn handshakes_total(&self) -> u64 {
        HandshakeKind::ALL
            .into_iter()
            .map(|kind| self.handshakes.get_or_create(&HandshakeLabels { kind: kind.as_str().to_string() }).get())
            .sum()
    }

    /// Record a finished step execution of `spec` (its kind from the spec).
    pub fn step_finished(&self, entry: &HostPlan, execution_id: &ExecutionId, status: StepStatus, duration_ms: u64) {
        let labels = StepLabels { kind: step_kind(entry, execution_id).to_string(), outcome: status_label(status) };
        self.step_duration.get_or_create(&labels).observe(duration_ms as f64 / 1000.0);
    }

    /// Record how long appending a batch of events took.
    pub fn event_append(&self, took: Duration) {
        self.append_latency.observe(took.as_secs_f64());
    }

    /// Record how long a flush took.
    pub fn event_flush(&self, took: Duration) {
        self.flush_latency.observe(took.as_secs_f64());
    }

    /// Set the runtime's queue depth.
    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth.min(i64::MAX as usize) as i64);
    }

    /// Rewrite the scrape-time gauges from the runtime's snapshots and
    /// encode everything in the Prometheus text format.
    pub async fn scrape(&self, agents: &[AgentSnapshot], rollouts: &[RolloutSnapshot]) -> String {
        let _one = self.scrape.lock().await;
        self.refresh(agents, rollouts);
        self.scrapes.inc();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh(&self, agents: &[AgentSnapshot], rollouts: &[RolloutSnapshot]) {
        self.agents_connected.clear();
        let mut disconnected = 0;
        for a in agents {
            if a.connected {
                let v = if a.record.version.is_empty() { "unknown" } else { a.record.version.as_str() };
                self.agents_connected.get_or_create(&VersionLabels { agent_version: v.to_string() }).inc();
            } else {
                disconnected += 1;
            }
        }
        self.agents_disconnected.set(disconnected);
        // Every state, zeros included (`ALL` is checked complete in convoy-common).
        for &s in RolloutState::ALL {
            let n = rollouts.iter().filter(|r| r.view.state == s).count();
            self.rollouts.get_or_create(&StateLabels { state: s.as_str().to_string() }).set(n as i64);
        }
        self.hosts.clear();
        let latest = rollouts.iter().max_by_key(|r| (r.created, r.id.clone())).map(|r| r.id.clone());
        for r in rollouts.iter().filter(|r| !r.view.state.is_terminal() || Some(&r.id) == latest.as_ref()) {
            for g in &r.view.groups {
                for &phase in HostPhase::ALL {
                    let n = r.view.hosts.iter().filter(|h| h.group == g.name && h.state.phase() == phase).count();
                    let labels =
                        HostLabels { rollout: r.id.clone(), group: g.name.clone(), state: phase.as_str().to_string() };
                    self.hosts.get_or_create(&labels).set(n as i64);
                }
            }
        }
    }
}

fn status_label(status: StepStatus) -> String {
    match status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Unsupported => "unsupported",
        StepStatus::TimedOut => "timed_out",
    }
    .to_string()
}

/// The kind of the step an execution ran (`rollback` for an implicit undo
/// step the spec does not list).
fn step_kind(entry: &HostPlan, id: &ExecutionId) -> &'static str {
    let step = match id.part() {
        ExecutionPart::Step(i) => entry.steps.get(i),
        ExecutionPart::LeaderCheck(_) => return "leader_check",
        ExecutionPart::Rollback(i) => match entry.rollback_steps.get(i) {
            Some(s) => Some(s),
            None => return "rollback",
        },
        ExecutionPart::Switchover(i) => entry.switchover.get(i),
    };
    step.map_or("unknown", |s| s.kind.name().as_str())
}

#[cfg(test)]
mod tests {
    /// A new kind breaks this match until it is listed in `ALL` too.
    #[test]
    fn every_handshake_kind_is_in_all() {
        let listed = |k: super::HandshakeKind| super::HandshakeKind::ALL.contains(&k);
        for k in [super::HandshakeKind::Full, super::HandshakeKind::Resumed] {
            match k {
                super::HandshakeKind::Full | super::HandshakeKind::Resumed => assert!(listed(k), "{k:?}"),
            }
        }
    }

    use super::*;

    #[tokio::test]
    async fn refusals_and_latencies_are_encoded() {
        let m = Metrics::new();
        m.refused(RefusalReason::Role);
        m.refused(RefusalReason::Role);
        m.event_flush(Duration::from_millis(2));
        m.queue_depth(7);
        let text = m.scrape(&[], &[]).await;
        assert!(text.contains("convoy_requests_refused_total{reason=\"role\"} 2"), "{text}");
        assert!(text.contains("convoy_event_log_flush_seconds_count 1"), "{text}");
        assert!(text.contains("convoy_runtime_queue_depth 7"), "{text}");
        assert!(text.contains("convoy_rollouts{state=\"running\"} 0"), "{text}");
    }
}

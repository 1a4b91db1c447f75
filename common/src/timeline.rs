//! A rollout's timeline, read from its replayed event log: each host's
//! steps and checks with when they started and ended and how, when the
//! host ended, and the operators' commands with who gave them. What
//! `convoy events` lists and `convoy status --output json` carries
//! (`timeline`).
//!
//! A step "starts" when the engine dispatched it (the coordinator sent it
//! to the agent) and "ends" when its result was handled; the agent's own
//! measured duration is kept beside. Times are the coordinator's.

use std::collections::HashMap;

use serde::Serialize;

use crate::engine::{Action, ClusterPurpose, Event, ExecutionId, HostState};
use crate::invariants::LogEntry;
use crate::model::{RolloutSpec, StepKindName, StepOutcome, UnixMillis};

/// The whole timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// When the rollout started (its `started` event).
    pub started: Option<UnixMillis>,
    /// When it ended and how.
    pub finished: Option<(UnixMillis, String)>,
    /// One per host entry of the spec, in spec order.
    pub hosts: Vec<HostTimeline>,
    /// Operator commands in the order they were handled.
    pub operator: Vec<OperatorEntry>,
}

/// One host entry's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostTimeline {
    /// The entry's key (the host id, or a hook's key).
    pub host: String,
    /// The agent that ran it.
    pub agent: String,
    pub group: String,
    pub runs: Vec<StepRun>,
    /// How its upgrade (and, later, its rollback) ended, with when.
    pub ends: Vec<(UnixMillis, String)>,
    /// When its agent was lost and came back during the rollout.
    pub agent_events: Vec<(UnixMillis, String)>,
}

/// What a run was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunRole {
    /// A step of the host's upgrade that changes something.
    Step,
    /// A health check of the upgrade (http, tcp, exec_check, file_check, metric).
    Check,
    /// A step of the host's rollback.
    Rollback,
    /// A leader check of the `cluster` strategy.
    LeaderCheck,
    /// A switchover step of the `cluster` strategy.
    Switchover,
}

/// One execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRun {
    pub execution_id: String,
    pub step: String,
    pub kind: String,
    pub role: RunRole,
    pub started: UnixMillis,
    pub ended: Option<UnixMillis>,
    /// `succeeded`, `failed`, `unsupported`, `timed_out`; none while running.
    pub outcome: Option<String>,
    /// The result's message (cut to 500 characters here; `convoy logs` has it whole).
    pub message: String,
    /// The agent's measured duration, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Times it was sent again after a reconnect.
    pub resent: u32,
}

/// An operator command as the log recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorEntry {
    pub at: UnixMillis,
    pub command: String,
    pub by: String,
}

fn is_check(k: StepKindName) -> bool {
    match k {
        StepKindName::HttpCheck
        | StepKindName::TcpCheck
        | StepKindName::ExecCheck
        | StepKindName::FileCheck
        | StepKindName::MetricCheck => true,
        StepKindName::Exec
        | StepKindName::AgentUpgrade
        | StepKindName::Archive
        | StepKindName::File
        | StepKindName::ArchiveRollback
        | StepKindName::Apt
        | StepKindName::Dpkg
        | StepKindName::Rpm
        | StepKindName::Service
        | StepKindName::PkgRollback
        | StepKindName::Backup => false,
    }
}

fn outcome_name(o: &StepOutcome) -> String {
    use crate::model::StepStatus;
    match o.status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Unsupported => "unsupported",
        StepStatus::TimedOut => "timed_out",
    }
    .to_string()
}

fn host_state_name(s: &HostState) -> String {
    s.as_str().to_string()
}

/// Build the timeline of a replayed log.
pub fn build(spec: &RolloutSpec, log: &[LogEntry]) -> Timeline {
    let mut t = Timeline::default();
    let mut group_of = vec![String::new(); spec.hosts.len()];
    for g in &spec.groups {
        for &h in &g.hosts {
            if let Some(slot) = group_of.get_mut(h) {
                slot.clone_from(&g.name);
            }
        }
    }
    t.hosts = spec
        .hosts
        .iter()
        .zip(group_of)
        .map(|(h, group)| HostTimeline {
            host: h.key().to_string(),
            agent: h.host.clone(),
            group,
            runs: Vec::new(),
            ends: Vec::new(),
            agent_events: Vec::new(),
        })
        .collect();
    let by_key: HashMap<String, usize> = t.hosts.iter().enumerate().map(|(i, h)| (h.host.clone(), i)).collect();
    let mut runs: HashMap<ExecutionId, (usize, usize)> = HashMap::new();
    for e in log {
        match &e.event {
            Event::Started => t.started = Some(e.now),
            Event::Operator { command, by } => t.operator.push(OperatorEntry {
                at: e.now,
                command: format!("{command:?}").to_lowercase(),
                by: by.clone(),
            }),
            Event::StepFinished { execution_id, outcome } => {
                if let Some(&(h, r)) = runs.get(execution_id) {
                    let run = &mut t.hosts[h].runs[r];
                    if run.ended.is_none() {
                        run.ended = Some(e.now);
                        run.outcome = Some(outcome_name(outcome));
                        run.message = outcome.message.chars().take(500).collect();
                        run.duration_ms = Some(outcome.duration_ms);
                    }
                }
            }
            Event::AgentLost { host } | Event::AgentConnected { host } => {
                let what = if matches!(e.event, Event::AgentLost { .. }) { "agent lost" } else { "agent connected" };
                for h in t.hosts.iter_mut().filter(|h| &h.agent == host && h.started_or_done()) {
                    h.agent_events.push((e.now, what.to_string()));
                }
            }
            Event::TimerFired { .. } => {}
        }
        for a in &e.actions {
            let (execution_id, step, role, resend) = match a {
                Action::Dispatch { execution_id, step, resend, .. } => {
                    let role = if is_check(step.kind.name()) { RunRole::Check } else { RunRole::Step };
                    (execution_id, step, role, *resend)
                }
                Action::DispatchRollback { execution_id, step, resend, .. } => {
                    (execution_id, step, RunRole::Rollback, *resend)
                }
                Action::DispatchCluster { execution_id, step, purpose, resend, .. } => {
                    let role = match purpose {
                        ClusterPurpose::LeaderCheck { .. } => RunRole::LeaderCheck,
                        ClusterPurpose::Switchover { .. } => RunRole::Switchover,
                    };
                    (execution_id, step, role, *resend)
                }
                Action::HostDone { host, state } => {
                    if let Some(&h) = by_key.get(host) {
                        t.hosts[h].ends.push((e.now, host_state_name(state)));
                    }
                    continue;
                }
                Action::Finished { state } => {
                    t.finished = Some((e.now, state.as_str().to_string()));
                    continue;
                }
                Action::Schedule { .. } | Action::StepSucceeded { .. } => continue,
            };
            if let Some(&(h, r)) = runs.get(execution_id) {
                if resend {
                    t.hosts[h].runs[r].resent += 1;
                }
                continue;
            }
            let Some(&h) = by_key.get(execution_id.entry()) else { continue };
            t.hosts[h].runs.push(StepRun {
                execution_id: execution_id.to_string(),
                step: step.name.clone(),
                kind: step.kind.kind_name().to_string(),
                role,
                started: e.now,
                ended: None,
                outcome: None,
                message: String::new(),
                duration_ms: None,
                resent: 0,
            });
            runs.insert(execution_id.clone(), (h, t.hosts[h].runs.len() - 1));
        }
    }
    t
}

impl HostTimeline {
    /// Agent comings and goings matter once the host has started.
    fn started_or_done(&self) -> bool {
        !self.runs.is_empty()
    }
}

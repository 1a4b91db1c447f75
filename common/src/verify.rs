//! `convoy verify`: replay a rollout's stored events through a fresh
//! engine and run the [`invariants`](crate::invariants) over the result.
//!
//! The engine's actions are not stored (a replay recomputes them), so the
//! proof is: these events, fed to this build's engine, produce actions that
//! keep every invariant, and end where the coordinator says the rollout is.
//! A rollout that has ended gets [`check_final`](crate::invariants::check_final)
//! (every host ended known, versions recorded); one still running gets
//! [`check`](crate::invariants::check), which holds for any prefix.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Action, Engine, Event, RolloutState};
use crate::invariants::{self, LogEntry};
use crate::model::{RolloutSpec, UnixMillis};

/// What the invariants cover, for the summary `convoy verify` prints.
pub const CHECKED: &[&str] = &[
    "in-flight hosts within each group's window",
    "no host before the groups it depends on are done",
    "canaries before the rest, promoted by approval or time",
    "leaders after their followers",
    "each step execution dispatched once, steps in order",
    "rollbacks in reverse order, of what succeeded",
    "every host ending in a known state with its version recorded (ended rollouts)",
];

/// Replay `events` through a fresh engine for `spec`: the log the checker reads.
pub fn replay(
    rollout_id: &str,
    spec: &RolloutSpec,
    events: impl IntoIterator<Item = (UnixMillis, Event)>,
) -> Vec<LogEntry> {
    let mut engine = Engine::new(rollout_id, spec.clone());
    events
        .into_iter()
        .map(|(now, event)| {
            let actions = engine.handle(now, event.clone());
            LogEntry { now, event, actions }
        })
        .collect()
}

/// A log that keeps the invariants, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub events: usize,
    pub groups: usize,
    pub hosts: usize,
    /// New executions dispatched (resends not counted).
    pub executions: usize,
    /// Hosts by how they ended (upgrade and rollback ends both count).
    pub host_ends: BTreeMap<String, usize>,
    /// How the replayed log ends, if it does.
    pub finished: Option<String>,
    /// Whether the final checks ran (the rollout has ended).
    pub final_checks: bool,
}

/// A log that breaks an invariant: the first violation, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub first: String,
    pub count: usize,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.first)?;
        if self.count > 1 {
            write!(f, " (and {} more violation{})", self.count - 1, if self.count == 2 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// Check `log` (replayed for `spec`). `reported` is the state the
/// coordinator reports: an ended rollout must replay to that same end.
pub fn verify(spec: &RolloutSpec, log: &[LogEntry], reported: Option<RolloutState>) -> Result<Verified, Violation> {
    let mut finished = None;
    let mut executions = 0;
    let mut host_ends: BTreeMap<String, usize> = BTreeMap::new();
    for e in log {
        for a in &e.actions {
            match a {
                Action::Dispatch { resend, .. }
                | Action::DispatchRollback { resend, .. }
                | Action::DispatchCluster { resend, .. } => executions += usize::from(!resend),
                Action::HostDone { state, .. } => *host_ends.entry(state.as_str().to_string()).or_default() += 1,
                Action::Finished { state } => finished = Some(*state),
                Action::Schedule { .. } | Action::StepSucceeded { .. } => {}
            }
        }
    }
    let ended = reported.is_some_and(RolloutState::is_terminal) || finished.is_some();
    if let Some(r) = reported.filter(|r| r.is_terminal())
        && finished != Some(r)
    {
        let replayed = finished.map_or("not ended".to_string(), |f| format!("ended {}", f.as_str()));
        return Err(Violation {
            first: format!(
                "the coordinator reports the rollout {} but its stored log replays to {replayed} ({} events)",
                r.as_str(),
                log.len()
            ),
            count: 1,
        });
    }
    let checked = if ended { invariants::check_final(spec, log) } else { invariants::check(spec, log) };
    match checked {
        Ok(()) => Ok(Verified {
            events: log.len(),
            groups: spec.groups.len(),
            hosts: spec.hosts.len(),
            executions,
            host_ends,
            finished: finished.map(|f| f.as_str().to_string()),
            final_checks: ended,
        }),
        Err(v) => Err(Violation { first: v[0].clone(), count: v.len() }),
    }
}

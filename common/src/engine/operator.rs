//! Operator commands: pause, resume, abort, approve, rollback and lifting the windows.

use crate::engine::Engine;
use crate::engine::events::{Action, OperatorCommand};
use crate::engine::state::{GroupState, RolloutState};
use crate::model::UnixMillis;
use std::collections::VecDeque;

impl Engine {
    pub(crate) fn on_operator(&mut self, now: UnixMillis, command: OperatorCommand, by: &str, out: &mut Vec<Action>) {
        let state = self.state;
        match command {
            OperatorCommand::Pause => match state {
                RolloutState::Running => {
                    self.state = RolloutState::Paused;
                    self.message = format!("paused by {by}");
                }
                RolloutState::Pending
                | RolloutState::Paused
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("pause by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Resume => match state {
                RolloutState::Paused => {
                    self.state = RolloutState::Running;
                    self.message = format!("resumed by {by}");
                    let queue = (0..self.groups.len())
                        .filter(|&g| matches!(self.groups[g].state, GroupState::Running | GroupState::Canary))
                        .collect();
                    self.progress(now, queue, out);
                }
                RolloutState::Pending
                | RolloutState::Running
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("resume by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Abort => match state {
                RolloutState::Pending | RolloutState::Running | RolloutState::Paused | RolloutState::Halting => {
                    self.state = RolloutState::Aborting;
                    self.message = format!("aborted by {by}");
                    self.aborted_by = Some(by.to_string());
                    self.end_soaks(out);
                    self.progress(now, VecDeque::new(), out);
                }
                RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("abort by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Approve => match state {
                RolloutState::Running | RolloutState::Paused => {
                    let waiting: Vec<usize> = (0..self.groups.len())
                        .filter(|&g| {
                            matches!(self.groups[g].state, GroupState::AwaitingApproval | GroupState::CanarySoak)
                        })
                        .collect();
                    if waiting.is_empty() {
                        self.message = format!("approved by {by} (nothing was waiting for approval)");
                        return;
                    }
                    for &g in &waiting {
                        self.groups[g].state = GroupState::Running;
                    }
                    let names: Vec<&str> = waiting.iter().map(|&g| self.spec.groups[g].name.as_str()).collect();
                    self.message = format!("approved by {by}: promoted {}", names.join(", "));
                    self.progress(now, waiting.into(), out);
                }
                RolloutState::Pending
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("approve by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::IgnoreWindows => match state {
                RolloutState::Pending | RolloutState::Running | RolloutState::Paused => {
                    self.ignore_windows(now, by, out);
                }
                RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("windows override by {by} ignored: the rollout is {}", state.as_str());
                }
            },
            OperatorCommand::Rollback => match state {
                RolloutState::Pending
                | RolloutState::Running
                | RolloutState::Paused
                | RolloutState::Halting
                | RolloutState::Aborting => {
                    self.start_rollback_all(format!("rollback requested by {by}"), out);
                    self.progress(now, VecDeque::new(), out);
                }
                RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => {
                    self.message = format!("rollback by {by} ignored: the rollout is {}", state.as_str());
                }
            },
        }
    }

    /// Halting, aborting or rolling back: nothing new may start.
    pub(crate) fn is_stopping(&self) -> bool {
        match self.state {
            RolloutState::Halting | RolloutState::Aborting | RolloutState::RollingBack => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => false,
        }
    }
}

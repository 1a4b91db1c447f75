//! Timers firing: soaks, step deadlines, lost agents, canary promotion and leader re-checks.

use crate::engine::Engine;
use crate::engine::events::{Action, Timer};
use crate::engine::state::{GroupState, HostState};
use crate::model::UnixMillis;
use std::collections::VecDeque;

impl Engine {
    pub(crate) fn on_timer(&mut self, now: UnixMillis, timer: Timer, out: &mut Vec<Action>) {
        let i = match &timer {
            Timer::SoakOver { host } => {
                let Some(i) = self.host_index(host) else { return };
                match self.hosts[i].state {
                    HostState::Soaking { .. } => {}
                    HostState::Probing { .. }
                    | HostState::SwitchingOver { .. }
                    | HostState::Held { .. }
                    | HostState::LeaderUnknown { .. }
                    | HostState::AtBarrier { .. }
                    | HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped
                    | HostState::RollingBack { .. }
                    | HostState::RolledBack
                    | HostState::RollbackFailed { .. } => return,
                }
                self.host_succeeded(i, out);
                i
            }
            Timer::StepDeadline { execution_id } => {
                let Some(&i) = self.executions.get(execution_id) else { return };
                match self.hosts[i].state.current() {
                    Some((exec, index, current, _)) if current == execution_id => {
                        self.execution_failed(i, now, exec, index, "no result within timeout".to_string(), out)
                    }
                    Some(_) | None => return,
                }
                i
            }
            Timer::LostDeadline { host } => {
                let Some(i) = self.host_index(host) else { return };
                let h = &self.hosts[i];
                let (exec, index) = match h.state.current() {
                    Some((exec, index, _, Some(_))) => (exec, index),
                    Some((_, _, _, None)) | None => return,
                };
                // A timer from an earlier outage fires before the current one's.
                match h.lost_deadline {
                    Some(at) if now >= at => {}
                    Some(_) | None => return,
                }
                self.execution_failed(i, now, exec, index, "agent lost".to_string(), out);
                i
            }
            Timer::LeaderRecheck { host } => {
                let Some(i) = self.host_index(host) else { return };
                match self.hosts[i].state {
                    HostState::LeaderUnknown { step, after_switchover, retry_at } if now >= retry_at => {
                        self.ask_leader(i, step, after_switchover, now, out);
                    }
                    HostState::LeaderUnknown { .. }
                    | HostState::Probing { .. }
                    | HostState::SwitchingOver { .. }
                    | HostState::Held { .. }
                    | HostState::AtBarrier { .. }
                    | HostState::Pending
                    | HostState::Running { .. }
                    | HostState::Soaking { .. }
                    | HostState::Succeeded
                    | HostState::Failed { .. }
                    | HostState::Skipped
                    | HostState::RollingBack { .. }
                    | HostState::RolledBack
                    | HostState::RollbackFailed { .. } => return,
                }
                i
            }
            Timer::WindowOpens { group } => {
                self.on_window_opens(now, group, out);
                return;
            }
            Timer::PromoteCanaries { group } => {
                let Some(&g) = self.group_by_name.get(group) else { return };
                let due = self.groups[g].promote_at.is_some_and(|at| now >= at);
                if self.groups[g].state != GroupState::CanarySoak || !due {
                    return;
                }
                self.groups[g].state = GroupState::Running;
                self.message = format!("group {group}: canaries passed their soak; promoted");
                self.progress(now, VecDeque::from([g]), out);
                return;
            }
        };
        let g = self.hosts[i].group;
        self.progress(now, VecDeque::from([g]), out);
    }
}

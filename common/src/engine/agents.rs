//! Agents coming and going: in-flight work re-sent on reconnect, lost deadlines armed on loss.

use crate::engine::Engine;
use crate::engine::events::{Action, Timer};
use crate::engine::state::HostState;
use crate::model::UnixMillis;

impl Engine {
    pub(crate) fn on_connected(&mut self, host: &str, out: &mut Vec<Action>) {
        for i in self.by_agent.get(host).cloned().unwrap_or_default() {
            self.entry_connected(i, out);
        }
    }

    pub(crate) fn entry_connected(&mut self, i: usize, out: &mut Vec<Action>) {
        let h = &mut self.hosts[i];
        h.agent_lost_since = None;
        match &mut h.state {
            HostState::Running { lost_since, .. }
            | HostState::RollingBack { lost_since, .. }
            | HostState::Probing { lost_since, .. }
            | HostState::SwitchingOver { lost_since, .. } => {
                *lost_since = None;
                h.lost_deadline = None;
            }
            HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => return,
        }
        out.extend(self.send_current(i, true));
    }

    pub(crate) fn on_lost(&mut self, now: UnixMillis, host: &str, out: &mut Vec<Action>) {
        for i in self.by_agent.get(host).cloned().unwrap_or_default() {
            self.entry_lost(now, i, out);
        }
    }

    pub(crate) fn entry_lost(&mut self, now: UnixMillis, i: usize, out: &mut Vec<Action>) {
        let timeout = self.spec.host_lost_timeout;
        let h = &mut self.hosts[i];
        if h.agent_lost_since.is_some() {
            // Already known gone: the outage, and its deadline, started earlier.
            return;
        }
        h.agent_lost_since = Some(now);
        match &mut h.state {
            HostState::Running { lost_since, .. }
            | HostState::RollingBack { lost_since, .. }
            | HostState::Probing { lost_since, .. }
            | HostState::SwitchingOver { lost_since, .. } => {
                *lost_since = Some(now);
                let at = now.plus(timeout);
                h.lost_deadline = Some(at);
                out.push(Action::Schedule { at, timer: Timer::LostDeadline { host: self.key(i) } });
            }
            HostState::Held { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::AtBarrier { .. }
            | HostState::Pending
            | HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => {}
        }
    }
}

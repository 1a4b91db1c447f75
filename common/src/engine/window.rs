//! The window: groups starting in DAG order, hosts started within `max_parallel`, soaks and canary promotion.

use crate::engine::Engine;
use crate::engine::calendar::Pick;
use crate::engine::events::{Action, Timer};
use crate::engine::state::{GroupState, HostState, RolloutState};
use crate::model::{Promote, UnixMillis};
use std::collections::VecDeque;

impl Engine {
    pub(crate) fn on_started(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        match self.state {
            RolloutState::Pending => {}
            RolloutState::Running
            | RolloutState::Paused
            | RolloutState::Halting
            | RolloutState::Aborting
            | RolloutState::RollingBack
            | RolloutState::Succeeded
            | RolloutState::Failed
            | RolloutState::Aborted
            | RolloutState::RolledBack => return,
        }
        self.state = RolloutState::Running;
        self.message = "running".to_string();
        let mut queue = VecDeque::new();
        for g in 0..self.groups.len() {
            if self.spec.groups[g].after.is_empty() {
                self.start_group(g);
                queue.push_back(g);
            }
        }
        self.progress(now, queue, out);
    }

    /// A group whose dependencies are done starts: with its canaries, if any.
    pub(crate) fn start_group(&mut self, g: usize) {
        self.groups[g].state = if self.groups[g].canaries > 0 { GroupState::Canary } else { GroupState::Running };
    }

    /// Host `i` takes a slot of its group's window.
    pub(crate) fn enter_flight(&mut self, i: usize) {
        self.in_flight += 1;
        self.groups[self.hosts[i].group].in_flight += 1;
        if let Some(c) = self.cluster_rt(i) {
            c.in_flight += 1;
        }
    }

    /// Take host `i` out of the in-flight counts if it was in flight.
    pub(crate) fn leave_flight(&mut self, i: usize) {
        if self.hosts[i].state.in_flight() {
            self.in_flight -= 1;
            self.groups[self.hosts[i].group].in_flight -= 1;
            if let Some(c) = self.cluster_rt(i) {
                c.in_flight -= 1;
            }
        }
        self.hosts[i].lost_deadline = None;
    }

    pub(crate) fn host_succeeded(&mut self, i: usize, out: &mut Vec<Action>) {
        self.leave_flight(i);
        self.hosts[i].state = HostState::Succeeded;
        self.groups[self.hosts[i].group].succeeded += 1;
        out.push(Action::HostDone { host: self.key(i), state: HostState::Succeeded });
    }

    /// Once nothing new will start, a soak guards nothing: its host succeeds.
    pub(crate) fn end_soaks(&mut self, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            if self.groups[g].held > 0 {
                // Held hosts go on now: see `progress`.
                self.wake.push(g);
            }
            if self.groups[g].in_flight == 0 {
                continue;
            }
            for k in 0..self.groups[g].next {
                let i = self.groups[g].order[k];
                if let HostState::Soaking { .. } = self.hosts[i].state {
                    self.host_succeeded(i, out);
                }
            }
        }
    }

    /// Start hosts in the queued groups (and the groups woken meanwhile),
    /// promote groups whose canaries passed, move group rollbacks on, close
    /// the groups that finished, start the groups they unblock, and finish
    /// the rollout if it is over.
    pub(crate) fn progress(&mut self, now: UnixMillis, mut queue: VecDeque<usize>, out: &mut Vec<Action>) {
        while let Some(g) = queue.pop_front().or_else(|| self.wake.pop()) {
            if self.groups[g].held > 0 && self.is_stopping() {
                self.release_held(g, now, out);
            }
            match self.groups[g].state {
                GroupState::RollingBack => {
                    self.fill_rollback(g, now, out, &mut queue);
                    continue;
                }
                GroupState::Canary | GroupState::Running => {}
                GroupState::Waiting
                | GroupState::AwaitingApproval
                | GroupState::CanarySoak
                | GroupState::Succeeded
                | GroupState::Failed
                | GroupState::Skipped
                | GroupState::RolledBack
                | GroupState::RollbackFailed => continue,
            }
            self.fill(g, now, out);
            // A host that failed without starting (no window fits it) may
            // have failed the group meanwhile.
            if !matches!(self.groups[g].state, GroupState::Canary | GroupState::Running) {
                continue;
            }
            if self.groups[g].state == GroupState::Canary {
                if self.canaries_passed(g, now, out) {
                    queue.push_back(g);
                }
                continue;
            }
            let rt = &self.groups[g];
            if rt.in_flight > 0 || rt.succeeded + rt.failed + rt.skipped < self.spec.groups[g].hosts.len() {
                continue;
            }
            self.groups[g].state = GroupState::Succeeded;
            self.open_groups -= 1;
            let can_start_groups = match self.state {
                RolloutState::Running | RolloutState::Paused => true,
                RolloutState::Pending
                | RolloutState::Halting
                | RolloutState::Aborting
                | RolloutState::RollingBack
                | RolloutState::Succeeded
                | RolloutState::Failed
                | RolloutState::Aborted
                | RolloutState::RolledBack => false,
            };
            if !can_start_groups {
                continue;
            }
            for k in 0..self.groups[g].dependents.len() {
                let d = self.groups[g].dependents[k];
                let ready = self.groups[d].state == GroupState::Waiting
                    && self.spec.groups[d].after.iter().all(|&a| self.groups[a].state == GroupState::Succeeded);
                if ready {
                    self.start_group(d);
                    queue.push_back(d);
                }
            }
        }
        self.maybe_finish(out);
    }

    /// If every canary of group `g` succeeded, move it on to waiting for its
    /// promotion. Returns true when it was promoted at once (zero soak).
    pub(crate) fn canaries_passed(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) -> bool {
        let rt = &self.groups[g];
        if rt.in_flight > 0 || rt.succeeded < rt.canaries || self.is_stopping() {
            return false;
        }
        let name = &self.spec.groups[g].name;
        let n = rt.canaries;
        match self.spec.groups[g].canary.map_or(Promote::Manual, |c| c.promote) {
            Promote::Manual => {
                self.groups[g].state = GroupState::AwaitingApproval;
                self.message = format!("group {name}: {n} canaries passed; waiting for approval");
                false
            }
            Promote::After(d) if d.is_zero() => {
                self.groups[g].state = GroupState::Running;
                true
            }
            Promote::After(d) => {
                let at = now.plus(d);
                self.message = format!("group {name}: {n} canaries passed; promoting at {}", at.0);
                out.push(Action::Schedule { at, timer: Timer::PromoteCanaries { group: name.clone() } });
                self.groups[g].state = GroupState::CanarySoak;
                self.groups[g].promote_at = Some(at);
                false
            }
        }
    }

    /// Start pending hosts of group `g` while its window has room (only its
    /// canaries while it is in its canary phase).
    pub(crate) fn fill(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if self.state != RolloutState::Running {
            return;
        }
        if self.spec.groups[g].cluster().is_some() {
            if self.groups[g].state == GroupState::Running {
                self.fill_cluster(g, now, out);
            }
            return;
        }
        loop {
            let rt = &self.groups[g];
            let limit = match rt.state {
                GroupState::Canary => rt.canaries,
                GroupState::Running => self.spec.groups[g].hosts.len(),
                GroupState::Waiting
                | GroupState::AwaitingApproval
                | GroupState::CanarySoak
                | GroupState::Succeeded
                | GroupState::Failed
                | GroupState::Skipped
                | GroupState::RollingBack
                | GroupState::RolledBack
                | GroupState::RollbackFailed => 0,
            };
            if rt.next >= limit {
                return;
            }
            // A ramp stage starts once the stages before it are done.
            let window = self.spec.groups[g].window_at(rt.next);
            if rt.in_flight >= window.size || (window.first_of_stage && rt.in_flight > 0) {
                return;
            }
            if self.windowed(g) {
                match self.window_pick(g, limit, now) {
                    Pick::Start => self.groups[g].window_wait = None,
                    Pick::WaitUntil(at) => {
                        self.wait_window(g, at, out);
                        return;
                    }
                    Pick::Never(reason) => {
                        let i = self.groups[g].order[self.groups[g].next];
                        self.groups[g].next += 1;
                        self.host_failed(i, now, None, reason, out);
                        continue;
                    }
                }
            }
            let rt = &self.groups[g];
            let i = rt.order[rt.next];
            self.groups[g].next += 1;
            if self.spec.hosts[i].steps.is_empty() {
                self.host_succeeded(i, out);
            } else {
                self.enter_flight(i);
                self.dispatch(i, 0, now, out);
            }
        }
    }
}

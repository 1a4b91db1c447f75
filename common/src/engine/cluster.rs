//! The cluster strategy: leader checks, followers first, the switchover, and same-version barriers.

use crate::capture;
use crate::engine::Engine;
use crate::engine::events::{Action, Timer};
use crate::engine::execution_id::ExecutionPart;
use crate::engine::results::failure_reason;
use crate::engine::state::{Exec, HostState, Role, RolloutState};
use crate::engine::tracking::ClusterRt;
use crate::model::{LeaderAnswer, LeaderAnswers, StepOutcome, StepStatus, UnixMillis};

impl Engine {
    /// The runtime of host `i`'s cluster, when its group uses the `cluster` strategy.
    pub(crate) fn cluster_rt(&mut self, i: usize) -> Option<&mut ClusterRt> {
        let c = self.hosts[i].cluster?;
        self.groups[self.hosts[i].group].clusters.get_mut(c)
    }

    /// The members of host `i`'s cluster (empty outside the `cluster` strategy).
    pub(crate) fn members(&self, i: usize) -> &[usize] {
        let spec = &self.spec.groups[self.hosts[i].group];
        match (spec.cluster(), self.hosts[i].cluster) {
            (Some(cs), Some(c)) => &cs.clusters[c].hosts,
            (Some(_), None) | (None, _) => &[],
        }
    }

    pub(crate) fn cluster_name(&self, i: usize) -> &str {
        let spec = &self.spec.groups[self.hosts[i].group];
        match (spec.cluster(), self.hosts[i].cluster) {
            (Some(cs), Some(c)) => &cs.clusters[c].name,
            (Some(_), None) | (None, _) => "",
        }
    }

    /// Host `i` is in a `same_version` cluster.
    pub(crate) fn same_version(&self, i: usize) -> bool {
        self.hosts[i].cluster.is_some()
            && self.spec.groups[self.hosts[i].group].cluster().is_some_and(|c| c.same_version)
    }

    /// Ask host `i`'s leader check before its step `before` (again, after
    /// an unknown answer, while `asked_since` is set).
    pub(crate) fn ask_leader(
        &mut self,
        i: usize,
        before: usize,
        after_switchover: bool,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let Some(check) = self.spec.hosts[i].leader_check.as_ref() else {
            self.dispatch(i, before, now, out);
            return;
        };
        let timeout = check.timeout;
        let h = &mut self.hosts[i];
        h.asked_since.get_or_insert((now, 0));
        h.check_attempts[before] += 1;
        let attempt = h.check_attempts[before];
        let execution_id = self.execution_id(i, ExecutionPart::LeaderCheck(before), attempt);
        if let Err(reason) = self.rendered(i, check) {
            // As in `dispatch`: mark it in flight so failing it gives the slot back.
            self.hosts[i].state = HostState::Probing {
                step: before,
                after_switchover,
                execution_id: execution_id.clone(),
                since: now,
                lost_since: None,
            };
            self.host_failed(i, now, Some(before), format!("leader check: {reason}"), out);
            return;
        }
        self.issue(i, Exec::LeaderCheck { after_switchover }, before, execution_id, timeout, now, out);
    }

    pub(crate) fn dispatch_switchover(
        &mut self,
        i: usize,
        before: usize,
        index: usize,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let timeout = self.spec.hosts[i].switchover[index].timeout;
        let h = &mut self.hosts[i];
        h.switchover_attempts[index] += 1;
        let attempt = h.switchover_attempts[index];
        let execution_id = self.execution_id(i, ExecutionPart::Switchover(index), attempt);
        if let Err(reason) = self.rendered(i, &self.spec.hosts[i].switchover[index]) {
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        self.issue(i, Exec::Switchover { before }, index, execution_id, timeout, now, out);
    }

    /// The leader check before step `before` answered: passing means host
    /// `i` leads its cluster. A follower goes on; a leader waits while any
    /// other member is pending or in flight (unless the rollout is
    /// stopping), else hands the leadership over (its switchover, once) or
    /// goes on.
    pub(crate) fn on_leader_check(
        &mut self,
        now: UnixMillis,
        i: usize,
        before: usize,
        after_switchover: bool,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        let answers = self.spec.hosts[i].leader_answers.clone();
        let leader = match LeaderAnswer::of(answers.as_ref(), &outcome) {
            LeaderAnswer::Leader => true,
            LeaderAnswer::Follower => false,
            LeaderAnswer::Unknown => {
                self.leader_unknown(i, before, after_switchover, answers.as_ref(), outcome, now, out);
                return;
            }
        };
        self.hosts[i].asked_since = None;
        let host = self.spec.hosts[i].host.clone();
        let cluster = self.cluster_name(i).to_string();
        if leader && let Some(c) = self.cluster_rt(i) {
            c.leader_claimed = true;
        }
        if before == 0 && self.state == RolloutState::Paused {
            // Asked before the pause: a host that has not started does not
            // start now. Its answer still counts for the next pick.
            self.hosts[i].role = if leader { Role::Leader } else { Role::Follower };
            self.defer(i, 0);
            self.hosts[i].message = "paused before its first step".to_string();
            return;
        }
        if !leader {
            self.hosts[i].role = Role::Follower;
            if answers.is_some() && !after_switchover && self.nobody_leads(i) {
                let reason = format!(
                    "cluster {cluster}: no member claims the leadership: every other member has ended or answered \
                     'follower' and {host} answers 'follower' too; it is not upgraded (a cluster has one leader: \
                     check the leader check's answers, and that the leader is in this group)"
                );
                self.host_failed(i, now, Some(before), reason, out);
                return;
            }
            self.dispatch(i, before, now, out);
            return;
        }
        if after_switchover {
            let reason = format!("switchover did not take effect: {host} still passes its leader check");
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        // A cluster has one leader: any other member's mark is stale now.
        self.hosts[i].role = Role::Leader;
        let members = self.members(i).to_vec();
        for &j in &members {
            if j != i && self.hosts[j].role == Role::Leader {
                self.hosts[j].role = Role::Unknown;
            }
        }
        // Pending, held or in flight: whatever has not ended.
        let waiting: Vec<&str> = members
            .iter()
            .filter(|&&j| j != i && !self.hosts[j].state.is_terminal())
            .map(|&j| self.spec.hosts[j].host.as_str())
            .collect();
        if !waiting.is_empty() && !self.is_stopping() {
            let waiting = waiting.join(", ");
            let limit = 2 * members.len();
            let deferrals = self.cluster_rt(i).map_or(0, |c| {
                c.deferrals += 1;
                c.deferrals
            });
            if deferrals > limit {
                let reason = format!(
                    "cluster {cluster}: the leadership keeps moving ({deferrals} leaders found with no step done \
                     in between); do several members claim it?"
                );
                self.host_failed(i, now, Some(before), reason, out);
                return;
            }
            self.defer(i, before);
            self.hosts[i].message = format!("leader of cluster {cluster}: waits for {waiting}");
            return;
        }
        if !self.spec.hosts[i].switchover.is_empty() && !self.hosts[i].switched_over {
            self.hosts[i].switched_over = true;
            self.hosts[i].message = format!("leader of cluster {cluster}: switching over");
            self.dispatch_switchover(i, before, 0, now, out);
            return;
        }
        self.hosts[i].message = format!("leader of cluster {cluster}: upgraded last");
        self.dispatch(i, before, now, out);
    }

    /// Host `i`'s leader check could not tell (unknown): asked again after
    /// the check's interval while its deadline allows, else the host fails
    /// without running its step. A legacy spec (no [`LeaderAnswers`]) or an
    /// agent that cannot run the check fails it at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn leader_unknown(
        &mut self,
        i: usize,
        before: usize,
        after_switchover: bool,
        answers: Option<&LeaderAnswers>,
        outcome: StepOutcome,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let unsupported = outcome.status == StepStatus::Unsupported;
        let reason = failure_reason(outcome);
        let (since, unknown) = self.hosts[i].asked_since.unwrap_or((now, 0));
        let unknown = unknown.saturating_add(1);
        let Some(a) = answers.filter(|_| !unsupported) else {
            self.host_failed(i, now, Some(before), format!("leader check: {reason}"), out);
            return;
        };
        let retry_at = now.plus(a.interval);
        if retry_at >= since.plus(a.deadline) {
            self.hosts[i].asked_since = None;
            let s = if unknown == 1 { "" } else { "s" };
            let reason = format!(
                "leader check: could not tell leader from follower within {:?} ({unknown} unknown answer{s}); \
                 not touched; last answer: {reason}",
                a.deadline
            );
            self.host_failed(i, now, Some(before), reason, out);
            return;
        }
        self.hosts[i].asked_since = Some((since, unknown));
        self.hosts[i].state = HostState::LeaderUnknown { step: before, after_switchover, retry_at };
        self.hosts[i].message = format!("leader check could not tell ({reason}); asking again");
        out.push(Action::Schedule { at: retry_at, timer: Timer::LeaderRecheck { host: self.key(i) } });
    }

    /// No member of host `i`'s cluster has claimed the leadership, and none
    /// but `i` still can: every other member ended, or runs its last step.
    pub(crate) fn nobody_leads(&self, i: usize) -> bool {
        let claimed = self.hosts[i].cluster.and_then(|c| self.groups[self.hosts[i].group].clusters.get(c));
        if claimed.is_none_or(|c| c.leader_claimed) {
            return false;
        }
        self.members(i).iter().filter(|&&j| j != i).all(|&j| match self.hosts[j].state {
            HostState::Running { step, .. } => step + 1 >= self.spec.hosts[j].steps.len(),
            HostState::Soaking { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RollingBack { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. }
            | HostState::AtBarrier { .. } => true,
            HostState::Pending
            | HostState::Probing { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::SwitchingOver { .. }
            | HostState::Held { .. } => false,
        })
    }

    /// Leader `i` gives up its slot until the other members are done: back
    /// to pending (out of the started hosts) when it ran no step yet, held
    /// otherwise.
    pub(crate) fn defer(&mut self, i: usize, before: usize) {
        self.leave_flight(i);
        let g = self.hosts[i].group;
        if before == 0 {
            self.hosts[i].state = HostState::Pending;
            let rt = &mut self.groups[g];
            if let Some(p) = rt.order[..rt.next].iter().position(|&h| h == i) {
                rt.next -= 1;
                let last = rt.next;
                // Keep the started hosts in the order they started.
                let host = rt.order.remove(p);
                rt.order.insert(last, host);
            }
        } else {
            self.hosts[i].state = HostState::Held { step: before };
            self.groups[g].held += 1;
        }
    }

    pub(crate) fn on_switchover_finished(
        &mut self,
        now: UnixMillis,
        i: usize,
        before: usize,
        index: usize,
        outcome: StepOutcome,
        out: &mut Vec<Action>,
    ) {
        let name = self.spec.hosts[i].switchover[index].name.clone();
        if !outcome.status.is_success() {
            let reason = failure_reason(outcome);
            self.host_failed(i, now, Some(before), format!("switchover step {name}: {reason}"), out);
            return;
        }
        // Its value is for the later switchover steps (the plan allows no other use).
        if let Some(c) = self.spec.hosts[i].switchover_capture(index) {
            match capture::extract(c, &outcome.stdout_tail) {
                Ok(value) => {
                    self.hosts[i].captured.insert(c.name.clone(), value);
                }
                Err(reason) => {
                    self.host_failed(i, now, Some(before), format!("switchover step {name}: {reason}"), out);
                    return;
                }
            }
        }
        if index + 1 < self.spec.hosts[i].switchover.len() {
            self.dispatch_switchover(i, before, index + 1, now, out);
        } else {
            self.hosts[i].asked_since = None;
            self.ask_leader(i, before, true, now, out);
        }
    }

    /// `same_version`: host `i` finished a step and waits at the barrier.
    /// When a member failed, it fails too; when every member is at the
    /// barrier, they all start the next step.
    pub(crate) fn at_barrier(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        if let Some(failed) = self.cluster_rt(i).and_then(|c| c.failed_member.clone()) {
            let HostState::AtBarrier { step } = self.hosts[i].state else { return };
            let reason = format!("stopped with its cluster {}: {failed}", self.cluster_name(i));
            self.host_failed(i, now, Some(step), reason, out);
            return;
        }
        let members = self.members(i).to_vec();
        let mut ready = Vec::new();
        for &j in &members {
            match self.hosts[j].state {
                HostState::AtBarrier { step } => ready.push((j, step)),
                // A member with nothing left to do does not hold the others.
                HostState::Succeeded | HostState::Soaking { .. } => {}
                HostState::Pending
                | HostState::Running { .. }
                | HostState::Probing { .. }
                | HostState::SwitchingOver { .. }
                | HostState::Held { .. }
                | HostState::LeaderUnknown { .. }
                | HostState::Failed { .. }
                | HostState::Skipped
                | HostState::RollingBack { .. }
                | HostState::RolledBack
                | HostState::RollbackFailed { .. } => return,
            }
        }
        for (j, step) in ready {
            self.dispatch(j, step, now, out);
        }
    }

    /// `same_version`: member `i` failed; the members at the barrier stop
    /// with it (the ones still running stop when they reach it).
    pub(crate) fn member_failed(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let host = self.spec.hosts[i].host.clone();
        let Some(c) = self.cluster_rt(i) else { return };
        if c.failed_member.is_some() {
            return;
        }
        c.failed_member = Some(format!("member {host} failed"));
        for j in self.members(i).to_vec() {
            if let HostState::AtBarrier { .. } = self.hosts[j].state {
                self.at_barrier(j, now, out);
            }
        }
    }

    /// Start what a `cluster` group can start: every member of a
    /// `same_version` cluster at once; in a leader/follower cluster, up to
    /// `max_parallel` members, the first not known to be the leader, the
    /// leader only when no other member is in flight.
    pub(crate) fn fill_cluster(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let Some(cs) = self.spec.groups[g].cluster() else { return };
        let max_parallel = self.spec.groups[g].steady_window();
        let same_version = cs.same_version;
        for c in 0..cs.clusters.len() {
            let members = self.spec.groups[g].cluster().map_or_else(Vec::new, |cs| cs.clusters[c].hosts.clone());
            if same_version {
                if members.iter().all(|&j| self.hosts[j].state == HostState::Pending) {
                    for &j in &members {
                        self.start_member(j, now, out);
                    }
                }
                continue;
            }
            while self.groups[g].clusters[c].in_flight < max_parallel {
                let mut first = None;
                let mut follower = None;
                for &j in &members {
                    match self.hosts[j].state {
                        HostState::Pending | HostState::Held { .. } => {
                            first.get_or_insert(j);
                            if self.hosts[j].role != Role::Leader {
                                follower = Some(j);
                                break;
                            }
                        }
                        HostState::Running { .. }
                        | HostState::Soaking { .. }
                        | HostState::Probing { .. }
                        | HostState::LeaderUnknown { .. }
                        | HostState::SwitchingOver { .. }
                        | HostState::AtBarrier { .. }
                        | HostState::Succeeded
                        | HostState::Failed { .. }
                        | HostState::Skipped
                        | HostState::RollingBack { .. }
                        | HostState::RolledBack
                        | HostState::RollbackFailed { .. } => {}
                    }
                }
                let pick = match (follower, first) {
                    (Some(j), _) => j,
                    (None, Some(j)) if self.groups[g].clusters[c].in_flight == 0 => j,
                    (None, Some(_)) | (None, None) => break,
                };
                self.start_member(pick, now, out);
            }
        }
    }

    /// Start (or restart, when held) cluster member `i`.
    pub(crate) fn start_member(&mut self, i: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let g = self.hosts[i].group;
        let step = match self.hosts[i].state {
            HostState::Held { step } => {
                self.groups[g].held -= 1;
                step
            }
            HostState::Pending => {
                let rt = &mut self.groups[g];
                if let Some(p) = rt.order[rt.next..].iter().position(|&h| h == i) {
                    let host = rt.order.remove(rt.next + p);
                    rt.order.insert(rt.next, host);
                    rt.next += 1;
                }
                0
            }
            HostState::Running { .. }
            | HostState::Soaking { .. }
            | HostState::Probing { .. }
            | HostState::LeaderUnknown { .. }
            | HostState::SwitchingOver { .. }
            | HostState::AtBarrier { .. }
            | HostState::Succeeded
            | HostState::Failed { .. }
            | HostState::Skipped
            | HostState::RollingBack { .. }
            | HostState::RolledBack
            | HostState::RollbackFailed { .. } => return,
        };
        self.enter_flight(i);
        if self.spec.hosts[i].steps.is_empty() {
            self.host_succeeded(i, out);
        } else {
            self.next_step(i, step, now, out);
        }
    }

    /// Once nothing new starts, held hosts of group `g` go on: a host that
    /// started finishes its steps. They still go through their cluster's
    /// window, a leader only once nothing else of its cluster is in flight
    /// (the group is woken again as members leave flight).
    pub(crate) fn release_held(&mut self, g: usize, now: UnixMillis, out: &mut Vec<Action>) {
        let window = self.spec.groups[g].steady_window();
        let started: Vec<usize> = self.groups[g].order[..self.groups[g].next].to_vec();
        for i in started {
            let HostState::Held { .. } = self.hosts[i].state else { continue };
            let leader = self.hosts[i].role == Role::Leader;
            let room = self.cluster_rt(i).is_none_or(|c| c.in_flight < window && (!leader || c.in_flight == 0));
            if room {
                self.start_member(i, now, out);
            }
        }
    }
}

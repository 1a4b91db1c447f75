//! One batch of the actor: events applied to their engines as they come
//! ([`Actor::event`]), made durable together ([`Actor::commit`], after the
//! group-commit window of [`RuntimeConfig::commit_window`]), and only then
//! acted on ([`Actor::act`]); timers fire into the same path.

use super::*;

impl Actor {
    /// Apply an event to a rollout's engine now; it is stored at commit.
    pub(super) fn event(&mut self, rollout_id: &str, event: Event) {
        let now = self.clock.now();
        let Some(run) = self.rollouts.get_mut(rollout_id) else { return };
        let actions = run.engine.handle(now, event.clone());
        run.updated = now;
        run.dirty = true;
        let finished = run.engine.is_finished();
        self.events.push((rollout_id.to_string(), StoredEvent { now, event }));
        for a in actions {
            self.actions.push((rollout_id.to_string(), a));
        }
        if finished {
            // Its hosts are free from this event on, not from when the
            // batch is committed: an agent lost or a plan submitted later
            // in the same batch must not see the rollout as running.
            self.retire(rollout_id);
        }
    }

    /// `rollout_id` no longer holds its hosts.
    fn retire(&mut self, rollout_id: &str) {
        for list in self.active.values_mut() {
            list.retain(|r| r != rollout_id);
        }
        self.active.retain(|_, l| !l.is_empty());
    }

    /// Make the batch durable, then act on it.
    pub(super) fn commit(&mut self) {
        if !self.events.is_empty() {
            self.last_flush = Some(tokio::time::Instant::now());
            // Group by rollout, keeping order inside each rollout.
            let mut by_rollout: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
            for (id, e) in self.events.drain(..) {
                by_rollout.entry(id).or_default().push(e);
            }
            for (id, evs) in by_rollout {
                let Some(run) = self.rollouts.get_mut(&id) else { continue };
                let started = std::time::Instant::now();
                let appended = self.store.append_events(&id, run.next_seq, &evs);
                self.metrics.event_append(started.elapsed());
                if let Err(e) = appended {
                    self.deposed |= matches!(e, CoordinatorError::Deposed { .. });
                    run.diverged = true;
                    // Without a durable log we must not act: stop this
                    // rollout's actions and say so loudly.
                    tracing::error!(rollout = %id, error = %e, "cannot store events; actions withheld");
                    self.actions.retain(|(r, _)| r != &id);
                    continue;
                }
                run.next_seq += evs.len() as u64;
            }
        }
        let started = std::time::Instant::now();
        let flushed = self.store.flush();
        self.metrics.event_flush(started.elapsed());
        if let Err(e) = flushed {
            tracing::error!(error = %e, "store flush failed; actions withheld");
            self.actions.clear();
        } else if !self.deposed {
            self.take_snapshots();
        }
        if self.deposed {
            // Lost leadership: nothing of this batch is carried out; callers
            // waiting for an answer get "shutting down" when it is dropped.
            self.actions.clear();
            self.after_commit.clear();
            return;
        }
        for (id, action) in std::mem::take(&mut self.actions) {
            self.act(&id, action);
        }
        // Changes before answers: a `Watch` answered below subscribes
        // after this batch's change, with a snapshot that includes it.
        for run in self.rollouts.values_mut() {
            if run.dirty {
                run.dirty = false;
                run.publisher.publish(&mut run.engine, run.updated);
            }
        }
        for f in std::mem::take(&mut self.after_commit) {
            f(self);
        }
    }

    fn act(&mut self, rollout_id: &str, action: Action) {
        match action {
            Action::Dispatch { host, execution_id, step_index: _, step, resend }
            | Action::DispatchRollback { host, execution_id, rollback_index: _, step, resend }
            | Action::DispatchCluster { host, execution_id, purpose: _, step, resend } => {
                let Some(conn) = self.agents.get(&host) else {
                    tracing::debug!(%host, %execution_id, "no agent known; dispatch waits for it");
                    return;
                };
                if let Some((_, tx)) = &conn.session {
                    tracing::debug!(%host, %execution_id, resend, "dispatch");
                    let _ = tx.send(ToAgent::RunStep { execution_id, step: Box::new(step) });
                }
            }
            Action::Schedule { at, timer } => {
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), (rollout_id.to_string(), timer));
            }
            Action::StepSucceeded { host, group, step, duration_ms } => {
                if let Some(run) = self.rollouts.get(rollout_id) {
                    crate::timings::record(self.store.as_ref(), &run.record.spec, &host, &group, &step, duration_ms);
                }
            }
            Action::HostDone { host, state } => {
                tracing::info!(rollout = rollout_id, %host, state = state.as_str(), "host done");
            }
            // Its hosts were freed when its engine finished (`event`).
            Action::Finished { state } => {
                tracing::info!(rollout = rollout_id, state = state.as_str(), "rollout finished");
            }
        }
    }

    pub(super) fn fire_timers(&mut self) {
        let now = self.clock.now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (rollout, timer) = entry.remove();
            self.event(&rollout, Event::TimerFired { timer });
        }
    }
}

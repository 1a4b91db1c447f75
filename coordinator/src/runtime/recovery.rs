//! Starting over a store: agents and rollouts loaded, each rollout rebuilt
//! from its snapshot and the tail of its log (or the whole log), and
//! snapshots taken as logs grow.

use super::*;

impl Actor {
    /// Load agents and rollouts and replay every event log.
    pub(super) fn recover(&mut self) -> Result<(), CoordinatorError> {
        for record in self.store.agents()? {
            self.agents.insert(
                record.id.clone(),
                AgentConn {
                    pulse: Pulse::new(record.last_seen),
                    record,
                    stored: true,
                    session: None,
                    heartbeat: self.config.heartbeat_interval,
                },
            );
        }
        let mut records = self.store.rollouts()?;
        records.sort_by_key(|r| (r.created, r.id.clone()));
        let now = self.clock.now();
        for record in records {
            let id = record.id.clone();
            let Rebuilt { mut engine, next_seq, snapshot_seq, updated } = self.rebuild(&record)?;
            let finished = engine.state().is_terminal();
            let run = RolloutRun {
                publisher: watch::Publisher::new(&mut engine, updated, self.config.watch_capacity),
                record,
                engine,
                next_seq,
                snapshot_seq,
                diverged: false,
                updated,
                dirty: false,
            };
            self.order.push(id.clone());
            if !finished {
                let hosts = agents_of(&run.record.spec);
                for host in &hosts {
                    self.active.entry(host.clone()).or_default().push(id.clone());
                }
                let resume = run.engine.resume_actions(now);
                self.rollouts.insert(id.clone(), run);
                // Re-arm timers; dispatches wait for the agents to reconnect
                // (every agent is disconnected after a restart).
                for a in resume {
                    match a {
                        Action::Schedule { .. } => self.actions.push((id.clone(), a)),
                        Action::Dispatch { .. }
                        | Action::DispatchRollback { .. }
                        | Action::DispatchCluster { .. }
                        | Action::HostDone { .. }
                        | Action::Finished { .. }
                        | Action::StepSucceeded { .. } => {}
                    }
                }
                for host in hosts {
                    self.event(&id, Event::AgentLost { host });
                }
            } else {
                self.rollouts.insert(id, run);
            }
        }
        self.commit();
        Ok(())
    }

    /// A rollout's engine as its stored snapshot and log leave it: the
    /// snapshot plus the events after it, or the whole log when there is
    /// no snapshot or it cannot be used (another format, another shape, a
    /// gap after it: each said in a warning). A log compacted below a
    /// snapshot that cannot be used cannot be rebuilt: that is an error.
    pub(super) fn rebuild(&self, record: &RolloutRecord) -> Result<Rebuilt, CoordinatorError> {
        let id = &record.id;
        let snapshot = match self.store.snapshot(id) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(rollout = %id, error = %e, "cannot read the rollout's snapshot; replaying its log");
                None
            }
        };
        if let Some(snap) = snapshot {
            let seq = snap.seq;
            let at = snap.at;
            let tail = self.store.events_from(id, seq)?;
            let contiguous = tail.iter().enumerate().all(|(i, (s, _))| *s == seq + i as u64);
            let restored = match Engine::restore(id.clone(), record.spec.clone(), snap) {
                Ok(engine) if contiguous => Ok(engine),
                Ok(_) => Err(format!("the log after the snapshot's {seq} events has a gap")),
                Err(e) => Err(e.to_string()),
            };
            match restored {
                Ok(mut engine) => {
                    let next_seq = seq + tail.len() as u64;
                    let mut updated = if seq == 0 { record.created } else { at };
                    for (_, e) in tail {
                        updated = e.now;
                        engine.handle(e.now, e.event);
                    }
                    tracing::info!(rollout = %id, snapshot = seq, tail = next_seq - seq, "rollout restored from its snapshot");
                    return Ok(Rebuilt { engine, next_seq, snapshot_seq: seq, updated });
                }
                Err(why) => {
                    tracing::warn!(rollout = %id, snapshot = seq, why, "cannot use the rollout's snapshot; replaying its log")
                }
            }
        }
        let events = self.store.events_from(id, 0)?;
        if let Some((first, _)) = events.first().filter(|(s, _)| *s != 0) {
            return Err(CoordinatorError::Store {
                op: "rebuild rollout",
                message: format!(
                    "rollout {id}: its log was compacted below event {first} and no usable snapshot covers it \
                     (a snapshot of another build's format?); run the coordinator that wrote it"
                ),
            });
        }
        let mut engine = Engine::new(id.clone(), record.spec.clone());
        let next_seq = events.last().map_or(0, |(s, _)| s + 1);
        let mut updated = record.created;
        for (_, e) in events {
            updated = e.now;
            engine.handle(e.now, e.event);
        }
        Ok(Rebuilt { engine, next_seq, snapshot_seq: 0, updated })
    }

    /// Snapshot every rollout whose log grew by `snapshot_every` events
    /// (or by as many events as it has hosts, if more: a snapshot costs in
    /// proportion to the rollout's size, so this keeps its cost per event
    /// bounded — at 10,000 hosts, 10,000 agents reconnecting no longer take
    /// ten 2 MB snapshots) since its last snapshot, or that has finished since; with
    /// `compact_events`, then delete the events the snapshot covers once
    /// it is durable. Called right after a batch is durable and before its
    /// actions run, so each engine holds exactly its stored events.
    pub(super) fn take_snapshots(&mut self) {
        let every = self.config.snapshot_every;
        if every == 0 {
            return;
        }
        let due: Vec<String> = self
            .rollouts
            .iter()
            .filter(|(_, r)| {
                !r.diverged
                    && r.next_seq > r.snapshot_seq
                    && (r.next_seq - r.snapshot_seq >= every.max(r.record.spec.hosts.len() as u64)
                        || r.engine.is_finished())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(run) = self.rollouts.get_mut(&id) else { continue };
            let snapshot = run.engine.snapshot(run.next_seq, run.updated);
            // Tried once per `every` events, whether it is stored or not.
            run.snapshot_seq = run.next_seq;
            let started = std::time::Instant::now();
            let stored = self.store.put_snapshot(&id, &snapshot).and_then(|()| self.store.flush());
            match stored {
                Ok(()) => {
                    tracing::debug!(rollout = %id, seq = snapshot.seq, took = ?started.elapsed(), "snapshot stored");
                }
                Err(e) => {
                    self.deposed |= matches!(e, CoordinatorError::Deposed { .. });
                    tracing::warn!(rollout = %id, seq = snapshot.seq, error = %e, "cannot store the rollout's snapshot; its log is kept whole");
                    continue;
                }
            }
            if self.config.compact_events
                && let Err(e) = self.store.compact_events(&id, snapshot.seq)
            {
                self.deposed |= matches!(e, CoordinatorError::Deposed { .. });
                tracing::warn!(rollout = %id, seq = snapshot.seq, error = %e, "cannot compact the rollout's log");
            }
        }
    }
}

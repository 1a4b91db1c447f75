//! Agent sessions in the actor: connecting (and the heartbeat interval an
//! agent is given), the results agents report, liveness, and losing an
//! agent.

use super::*;

/// How stale the stored `last_seen` of an agent that reconnects with an
/// unchanged record may get before the record is written again anyway.
const AGENT_RECORD_REFRESH_MS: u64 = 3_600_000;

/// Whether `new` says nothing `stored` does not, apart from when.
fn unchanged(stored: &AgentRecord, new: &AgentRecord) -> bool {
    // Spelled out so that a new field has to be placed on one side.
    let AgentRecord {
        id,
        version,
        protocol_version,
        labels,
        hostname,
        os,
        arch,
        installed,
        last_seen: _,
        facts,
        install_root,
        capabilities,
    } = new;
    stored.id == *id
        && stored.version == *version
        && stored.protocol_version == *protocol_version
        && stored.labels == *labels
        && stored.hostname == *hostname
        && stored.os == *os
        && stored.arch == *arch
        && stored.installed == *installed
        && stored.facts == *facts
        && stored.install_root == *install_root
        && stored.capabilities == *capabilities
}

/// Writes `record` to `store`; whether that worked (a failure is logged,
/// and the record written again at the agent's next connection).
fn store_agent(store: &dyn Store, record: &AgentRecord) -> bool {
    match store.put_agent(record) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(host = %record.id, error = %e, "cannot store agent record");
            false
        }
    }
}

impl Actor {
    pub(super) fn connect(
        &mut self,
        hello: AgentHello,
        session: u64,
        tx: mpsc::UnboundedSender<ToAgent>,
        pulse: Pulse,
        heartbeat: Duration,
    ) {
        let now = self.clock.now();
        let host = hello.id.clone();
        let mut record = AgentRecord {
            id: host.clone(),
            version: hello.version.clone(),
            protocol_version: hello.protocol_version,
            labels: hello.labels.clone(),
            hostname: hello.hostname.clone(),
            os: hello.os.clone(),
            arch: hello.arch.clone(),
            installed: hello.installed.clone(),
            last_seen: now,
            facts: hello.facts.clone(),
            install_root: hello.install_root.clone(),
            capabilities: hello.capabilities.clone(),
        };
        // A whole fleet reconnects after every restart or takeover, almost
        // always with nothing new to say: rewriting 10,000 unchanged records
        // (on etcd, 10,000 writes through consensus) only delays the
        // sessions. The stored `last_seen` is still refreshed now and then.
        let stored = match self.agents.get(&host) {
            Some(a)
                if a.stored
                    && unchanged(&a.record, &record)
                    && now.since(a.record.last_seen) < AGENT_RECORD_REFRESH_MS =>
            {
                record.last_seen = a.record.last_seen;
                true
            }
            Some(_) | None => store_agent(self.store.as_ref(), &record),
        };
        tracing::info!(%host, version = %hello.version, "agent connected");
        let conn = AgentConn { record, stored, session: Some((session, tx)), heartbeat, pulse };
        let replaced = self.agents.insert(host.clone(), conn);
        if replaced.is_none_or(|a| a.session.is_none()) {
            self.connected += 1;
        }
        self.pace();
        for r in self.active.get(&host).cloned().unwrap_or_default() {
            self.event(&r, Event::AgentConnected { host: host.clone() });
        }
        for (execution_id, outcome) in hello.replayed {
            self.result(&host, execution_id, outcome);
        }
    }

    /// A step result from `host`: logged only if its host waits for it.
    pub(super) fn result(&mut self, host: &str, execution_id: ExecutionId, outcome: StepOutcome) {
        let rollout = execution_id.rollout().to_string();
        let Some(run) = self.rollouts.get(&rollout) else {
            tracing::warn!(%host, %execution_id, "result for an unknown rollout ignored");
            return;
        };
        let awaited = run.engine.awaiting(&execution_id).filter(|&i| run.record.spec.hosts[i].host == host);
        let Some(i) = awaited else {
            // Agents re-send recent results on every reconnect (the
            // coordinator may have died before storing them): after a
            // restart that is one per agent, most of them recorded long ago.
            // Logging them would grow the log, and a finished rollout's
            // snapshot, for nothing.
            match run.engine.execution_host(&execution_id) {
                Some(owner) if owner != host => {
                    tracing::warn!(%host, %owner, %execution_id, "agent reported another host's execution; ignored")
                }
                Some(_) | None => {
                    tracing::debug!(%host, %execution_id, "result not awaited (recorded or stale); ignored")
                }
            }
            return;
        };
        let entry = &run.record.spec.hosts[i];
        // Keep the inventory current: the next plan expands against
        // what hosts run now, not what they ran when they connected.
        if let (Some((component, version)), Some(agent)) = (&outcome.installed, self.agents.get_mut(host)) {
            agent.record.installed.insert(component.clone(), version.clone());
            agent.stored = store_agent(self.store.as_ref(), &agent.record);
        }
        self.metrics.step_finished(entry, &execution_id, outcome.status, outcome.duration_ms);
        self.event(&rollout, Event::StepFinished { execution_id, outcome })
    }

    /// The liveness check runs on a drained queue: results waiting behind a
    /// backlog are applied first, so an agent is never declared lost for
    /// news the coordinator already has (heartbeats do not queue: their
    /// sessions stamp them, [`AgentSession::heartbeat`]). Only what was
    /// queued at the tick is drained, so this ends.
    pub(super) fn on_liveness_tick(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) {
        for _ in 0..rx.len() {
            match rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(_) => break,
            }
        }
        self.check_liveness();
    }

    pub(super) fn check_liveness(&mut self) {
        let now = self.clock.now();
        let stale: Vec<HostId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.session.is_some() && now.since(a.last_seen()) > self.timeout_of(a))
            .map(|(h, _)| h.clone())
            .collect();
        for host in stale {
            tracing::warn!(%host, "agent missed its heartbeats; marking it lost");
            self.lose(&host);
        }
    }

    /// How long `a` may be silent: the agent timeout, scaled by how much
    /// longer than the base interval its heartbeat interval is.
    pub(super) fn timeout_of(&self, a: &AgentConn) -> u64 {
        let base = self.config.heartbeat_interval.as_millis().max(1);
        let scaled = self.config.agent_timeout.as_millis() * a.heartbeat.as_millis().max(base) / base;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    /// The heartbeat interval for an agent joining the connected ones:
    /// the fleet as a whole sends at most `max_heartbeats_per_s`.
    pub(super) fn heartbeat_for_next(&self) -> Duration {
        self.heartbeat_for(self.connected + 1)
    }

    /// The heartbeat interval that keeps `agents` connected agents within
    /// `max_heartbeats_per_s`, between the base interval and a minute.
    fn heartbeat_for(&self, agents: usize) -> Duration {
        let rate = f64::from(self.config.max_heartbeats_per_s.max(1));
        let spread = Duration::from_secs_f64(agents as f64 / rate);
        spread.max(self.config.heartbeat_interval).min(MAX_HEARTBEAT_INTERVAL.max(self.config.heartbeat_interval))
    }

    /// Spreads the connected agents' heartbeats out again once the fleet has
    /// grown by half since the last time: an agent keeps the interval it was
    /// given when it joined, so without this the first thousands of a
    /// 10,000-agent fleet would go on beating at the base interval (2.6 times
    /// the intended rate in all). Agents whose interval is shorter than the
    /// fleet's are told the new one ([`ToAgent::Pace`]); their allowed
    /// silence grows at once (never a false loss). Intervals are not
    /// shortened when the fleet shrinks: the rate only falls.
    fn pace(&mut self) {
        if self.connected < self.paced_at.saturating_mul(3) / 2 || self.connected < 2 {
            return;
        }
        self.paced_at = self.connected;
        let interval = self.heartbeat_for(self.connected);
        if interval <= self.config.heartbeat_interval {
            return;
        }
        let mut told = 0usize;
        for a in self.agents.values_mut() {
            let Some((_, tx)) = &a.session else { continue };
            // Within a fifth: not worth a message.
            if a.heartbeat.as_millis() * 5 >= interval.as_millis() * 4 {
                continue;
            }
            a.heartbeat = interval;
            let _ = tx.send(ToAgent::Pace { heartbeat: interval });
            told += 1;
        }
        if told > 0 {
            tracing::info!(
                agents = self.connected,
                interval_ms = interval.as_millis() as u64,
                told,
                "heartbeats spread out"
            );
        }
    }

    pub(super) fn lose(&mut self, host: &str) {
        if let Some(a) = self.agents.get_mut(host) {
            // Dropping the sender ends the gRPC stream towards the agent.
            if a.session.take().is_some() {
                self.connected -= 1;
            }
        }
        for r in self.active.get(host).cloned().unwrap_or_default() {
            self.event(&r, Event::AgentLost { host: host.to_string() });
        }
    }
}

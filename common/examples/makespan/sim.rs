//! The pure engine under a simulated clock: no processes, no runtime. Each
//! dispatch comes back as a `StepFinished` after the step's drawn duration;
//! each `Schedule` fires at its time; events are handled in time order
//! (ties in the order they were produced).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use convoy_common::engine::{Action, Engine, Event, RolloutState};
use convoy_common::model::{StepOutcome, UnixMillis};

use crate::dag::Case;

/// The clock the simulation starts at (any value works; the engine reads only differences).
const T0: u64 = 1_000_000;

/// What the simulation found for one rollout.
pub struct Outcome {
    /// From `Started` to `Finished`, in ms.
    pub makespan_ms: u64,
    /// Events handled.
    pub events: usize,
}

/// The engine, the clock and what is due when.
struct Sim<'a> {
    case: &'a Case,
    engine: Engine,
    /// `(due, slot in pending)`, earliest first.
    queue: BinaryHeap<Reverse<(u64, usize)>>,
    pending: Vec<Option<Event>>,
    events: usize,
}

impl Sim<'_> {
    /// Handle `event` at `now`; `Some(now)` once the rollout finished.
    fn feed(&mut self, now: u64, event: Event) -> Result<Option<u64>, String> {
        self.events += 1;
        let mut finished = None;
        for action in self.engine.handle(UnixMillis(now), event) {
            let (at, next) = match action {
                Action::Dispatch { host, execution_id, step_index, .. } => {
                    let ms = *self
                        .case
                        .durations
                        .get(&(host.clone(), step_index))
                        .ok_or_else(|| format!("no duration for {host} step {step_index}"))?;
                    let outcome = StepOutcome { duration_ms: ms, ..StepOutcome::ok() };
                    (now + ms, Event::StepFinished { execution_id, outcome })
                }
                Action::Schedule { at, timer } => (at.0.max(now), Event::TimerFired { timer }),
                Action::Finished { .. } => {
                    finished = Some(now);
                    continue;
                }
                Action::DispatchRollback { .. }
                | Action::DispatchCluster { .. }
                | Action::HostDone { .. }
                | Action::StepSucceeded { .. } => continue,
            };
            self.queue.push(Reverse((at, self.pending.len())));
            self.pending.push(Some(next));
        }
        Ok(finished)
    }
}

/// Run `case` to its end; errors if it does not succeed.
pub fn run(case: &Case) -> Result<Outcome, String> {
    let mut sim = Sim {
        case,
        engine: Engine::new("makespan", case.spec.clone()),
        queue: BinaryHeap::new(),
        pending: Vec::new(),
        events: 0,
    };
    let mut end = sim.feed(T0, Event::Started)?;
    while end.is_none() {
        let Some(Reverse((now, slot))) = sim.queue.pop() else { break };
        let Some(event) = sim.pending[slot].take() else { continue };
        end = sim.feed(now, event)?;
    }
    let Some(end) = end else { return Err(format!("rollout did not finish: {}", sim.engine.message())) };
    if sim.engine.state() != RolloutState::Succeeded {
        return Err(format!("rollout ended {:?}: {}", sim.engine.state(), sim.engine.message()));
    }
    Ok(Outcome { makespan_ms: end - T0, events: sim.events })
}

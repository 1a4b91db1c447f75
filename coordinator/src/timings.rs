//! Measured step times, for `convoy plan`'s estimates.
//!
//! Every step an agent reports as succeeded adds its `duration_ms` to the
//! history of its (plan name, group, step name) in the store, which keeps the
//! last [`HISTORY`]. Only a rollout's own steps count (not rollbacks, leader
//! checks or switchovers), and not the rollouts `convoy rollback` creates.
//! [`measured`] turns the history of a plan into the medians
//! [`convoy_common::estimate`] uses; the operator API serves them
//! (`StepTimes`) and a dry-run `SubmitPlan` folds them into its summary.
//!
//! Recording is best effort: a store error is logged, never fails the result.

use convoy_common::engine::{Engine, HostState};
use convoy_common::estimate::{HISTORY, Measured, MeasuredStep, median};
use convoy_common::model::{StepOutcome, StepStatus};
use std::time::Duration;

use crate::store::{RolloutRecord, Store};

/// The group and step name of the forward step `execution_id`
/// (`rollout/host-key/STEP/attempt`) when `engine` is waiting for that very
/// execution; `None` for rollback, leader-check and switchover executions,
/// results it no longer waits for, and unknown ids. Hash lookups only: it
/// runs for every result.
pub fn forward_step<'e>(engine: &'e Engine, execution_id: &str) -> Option<(&'e str, &'e str)> {
    let key = execution_id.split('/').nth(1)?;
    let Some(HostState::Running { step, execution_id: current, .. }) = engine.host_state(key) else { return None };
    if current != execution_id {
        return None;
    }
    let step = *step;
    let host = engine.host_plan(key)?;
    let group = engine.spec().groups.get(host.group)?;
    Some((group.name.as_str(), host.steps.get(step)?.name.as_str()))
}

/// Record the duration of a succeeded forward step of `rollout`, if
/// `engine` (the rollout's, before it handles the result) is waiting for
/// that execution: a result delivered twice (after a reconnection) counts once.
pub fn record(store: &dyn Store, rollout: &RolloutRecord, engine: &Engine, execution_id: &str, outcome: &StepOutcome) {
    // Rollouts made by `convoy rollback` have no plan source.
    if outcome.status != StepStatus::Succeeded || rollout.plan_source.is_empty() {
        return;
    }
    let Some((group, step)) = forward_step(engine, execution_id) else { return };
    let plan = &rollout.spec.plan_name;
    if let Err(e) = store.add_step_time(plan, group, step, outcome.duration_ms, HISTORY) {
        tracing::warn!(%plan, %group, %step, error = %e, "cannot record the step's duration");
    }
}

/// The measured times of plan `plan`'s steps (empty when unknown or on a
/// store error, which is logged).
pub fn measured(store: &dyn Store, plan: &str) -> Measured {
    let times = match store.step_times(plan) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%plan, error = %e, "cannot read measured step times");
            return Measured::new();
        }
    };
    times
        .into_iter()
        .filter_map(|t| {
            let m = median(&t.recent_ms)?;
            let step = MeasuredStep {
                median: Duration::from_millis(m),
                runs: t.recent_ms.len().min(u32::MAX as usize) as u32,
            };
            Some(((t.group, t.step), step))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use convoy_common::model::UnixMillis;
    use convoy_common::plan::{expand, parse_plan};

    const PLAN: &str = r#"name: timed
version: "2"
hooks:
  before: { on: a-1, steps: [ { name: announce, exec: { command: "true" } } ] }
groups:
  - name: app
    select: { role: app }
    steps:
      - name: install
        exec: { command: "true" }
      - name: restart
        exec: { command: "true" }
"#;

    fn rollout(source: &str) -> RolloutRecord {
        let inventory = vec![convoy_common::model::InventoryHost {
            id: "a-1".into(),
            labels: [("role".to_string(), "app".to_string())].into(),
            ..Default::default()
        }];
        let spec = expand(&parse_plan("p.yaml", PLAN).unwrap(), &inventory).unwrap();
        RolloutRecord {
            id: "r1".into(),
            file: "p.yaml".into(),
            plan_source: source.into(),
            spec,
            created: UnixMillis(0),
            created_by: "t".into(),
        }
    }

    fn took(ms: u64) -> StepOutcome {
        StepOutcome { duration_ms: ms, ..StepOutcome::ok() }
    }

    /// Runs `r`'s rollout on a fake clock, every step taking `ms(i)` (the
    /// i-th step executed), recording each result as the runtime does.
    fn run(store: &dyn Store, r: &RolloutRecord, mut ms: impl FnMut(usize) -> StepOutcome) {
        use convoy_common::engine::{Action, Event};
        let mut engine = Engine::new(r.id.clone(), r.spec.clone());
        let mut pending: Vec<Action> = engine.handle(UnixMillis(1), Event::Started);
        let mut n = 0;
        while let Some(a) = pending.pop() {
            if let Action::Dispatch { execution_id, .. } = a {
                let outcome = ms(n);
                n += 1;
                record(store, r, &engine, &execution_id, &outcome);
                let id = execution_id.clone();
                pending.extend(
                    engine.handle(UnixMillis(2), Event::StepFinished { execution_id, outcome: outcome.clone() }),
                );
                // Delivered again (after a reconnection), once handled: not counted again.
                record(store, r, &engine, &id, &outcome);
            }
        }
        assert!(engine.state().is_terminal(), "{:?}", engine.state());
    }

    #[test]
    fn forward_steps_are_found_by_the_execution_the_engine_waits_for() {
        use convoy_common::engine::{Action, Event};
        let r = rollout(PLAN);
        let mut engine = Engine::new(r.id.clone(), r.spec.clone());
        let first = engine.handle(UnixMillis(1), Event::Started);
        let Some(Action::Dispatch { execution_id, .. }) = first.first() else { panic!("{first:?}") };
        assert_eq!(execution_id, "r1/a-1@before/0/1");
        assert_eq!(forward_step(&engine, execution_id), Some(("before", "announce")));
        assert_eq!(forward_step(&engine, "r1/a-1@before/0/2"), None, "not the attempt it waits for");
        assert_eq!(forward_step(&engine, "r1/a-1@before/rb0/1"), None, "a rollback step");
        assert_eq!(forward_step(&engine, "r1/a-1@before/lc0/1"), None, "a leader check");
        assert_eq!(forward_step(&engine, "r1/a-1/0/1"), None, "not started yet");
        assert_eq!(forward_step(&engine, "r1/ghost/0/1"), None);
        assert_eq!(forward_step(&engine, "garbage"), None);
    }

    #[test]
    fn successes_are_recorded_and_give_medians() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let r = rollout(PLAN);
        // Three rollouts: announce, install, restart each time.
        let times = [400, 1000, 10, 500, 3000, 20, 600, 2000, 30];
        for k in 0..3 {
            run(&store, &r, |i| took(times[k * 3 + i]));
        }
        // A failed run does not count (the rollout stops at the failure).
        run(&store, &r, |i| {
            if i == 1 { StepOutcome { duration_ms: 99_000, ..StepOutcome::failed("no") } } else { took(1) }
        });
        // `convoy rollback` rollouts (no plan source) are not measured.
        run(&store, &rollout(""), |_| took(7));

        let m = measured(&store, "timed");
        assert_eq!(m.len(), 3, "{m:?}");
        let install = m[&("app".to_string(), "install".to_string())];
        assert_eq!(install, MeasuredStep { median: Duration::from_secs(2), runs: 3 }, "failures do not count");
        let announce = m[&("before".to_string(), "announce".to_string())];
        assert_eq!(announce, MeasuredStep { median: Duration::from_millis(450), runs: 4 });
        assert_eq!(m[&("app".to_string(), "restart".to_string())].runs, 3);
        assert!(measured(&store, "other").is_empty());
    }

    #[test]
    fn the_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let r = rollout(PLAN);
        for _ in 0..HISTORY {
            run(&store, &r, |_| took(60_000));
        }
        // The plan got faster: the last HISTORY runs are all that count.
        for _ in 0..HISTORY {
            run(&store, &r, |_| took(1_000));
        }
        let m = measured(&store, "timed");
        let install = m[&("app".to_string(), "install".to_string())];
        assert_eq!(install, MeasuredStep { median: Duration::from_secs(1), runs: HISTORY as u32 });
    }
}

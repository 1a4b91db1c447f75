//! Measured step times, for `convoy plan`'s estimates.
//!
//! Every step an agent reports as succeeded adds its `duration_ms` to the
//! history of its (plan name, group, step name) in the store, and to that
//! host's history of the step, each keeping the last [`HISTORY`]. Only a rollout's own steps count (not rollbacks, leader
//! checks or switchovers), and not the rollouts `convoy rollback` creates.
//! [`measured`] turns the history of a plan into the medians
//! [`convoy_common::estimate`] uses; the operator API serves them
//! (`StepTimes`) and a dry-run `SubmitPlan` folds them into its summary.
//! [`measured_on_hosts`] gives each host's own medians, which
//! `order: balanced` groups are ordered by ([`convoy_common::host_order`]).
//!
//! Recording is best effort: a store error is logged, never fails the result.

use convoy_common::estimate::{HISTORY, HostMeasured, Measured, MeasuredStep, median};
use convoy_common::model::RolloutSpec;
use std::time::Duration;

use crate::store::Store;

/// Record that step `step` of group `group` of a rollout of `spec`
/// succeeded on `host` in `duration_ms` (the engine's [`Action::StepSucceeded`], which
/// it emits once per execution, for forward steps only). Rollouts made by
/// `convoy rollback` are not measured: their steps are undos.
///
/// [`Action::StepSucceeded`]: convoy_common::engine::Action::StepSucceeded
pub fn record(store: &dyn Store, spec: &RolloutSpec, host: &str, group: &str, step: &str, duration_ms: u64) {
    if spec.rollback_of.is_some() {
        return;
    }
    let plan = &spec.plan_name;
    if let Err(e) = store.add_step_time(plan, host, group, step, duration_ms, HISTORY) {
        tracing::warn!(%plan, %host, %group, %step, error = %e, "cannot record the step's duration");
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
    times.into_iter().filter_map(|t| Some(((t.group, t.step), of(&t.recent_ms)?))).collect()
}

/// The median of a history and how many runs it holds; `None` when empty.
fn of(recent_ms: &[u64]) -> Option<MeasuredStep> {
    let m = median(recent_ms)?;
    Some(MeasuredStep { median: Duration::from_millis(m), runs: recent_ms.len().min(u32::MAX as usize) as u32 })
}

/// The medians of plan `plan`'s steps on each host that ran them (empty
/// when unknown or on a store error, which is logged).
pub fn measured_on_hosts(store: &dyn Store, plan: &str) -> HostMeasured {
    let times = match store.host_step_times(plan) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%plan, error = %e, "cannot read measured step times per host");
            return HostMeasured::new();
        }
    };
    times.into_iter().filter_map(|h| Some(((h.host, h.times.group, h.times.step), of(&h.times.recent_ms)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use convoy_common::model::{StepOutcome, UnixMillis};
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

    fn rollout(rollback_of: Option<&str>) -> RolloutSpec {
        let inventory = vec![convoy_common::model::InventoryHost {
            id: "a-1".into(),
            labels: [("role".to_string(), "app".to_string())].into(),
            ..Default::default()
        }];
        let mut spec = expand(&parse_plan("p.yaml", PLAN).unwrap(), &inventory).unwrap();
        spec.rollback_of = rollback_of.map(str::to_string);
        spec
    }

    fn took(ms: u64) -> StepOutcome {
        StepOutcome { duration_ms: ms, ..StepOutcome::ok() }
    }

    /// Runs a rollout of `spec` on a fake clock, every step taking `ms(i)`
    /// (the i-th step executed), recording what the engine reports as the
    /// runtime does; each result is delivered twice (after a reconnection).
    fn run(store: &dyn Store, spec: &RolloutSpec, mut ms: impl FnMut(usize) -> StepOutcome) {
        use convoy_common::engine::{Action, Engine, Event};
        let mut engine = Engine::new("r1", spec.clone());
        let mut pending: Vec<Action> = engine.handle(UnixMillis(1), Event::Started);
        let mut n = 0;
        while let Some(a) = pending.pop() {
            match a {
                Action::Dispatch { execution_id, .. } => {
                    let outcome = ms(n);
                    n += 1;
                    let event = Event::StepFinished { execution_id, outcome };
                    pending.extend(engine.handle(UnixMillis(2), event.clone()));
                    pending.extend(engine.handle(UnixMillis(3), event));
                }
                Action::StepSucceeded { host, group, step, duration_ms } => {
                    record(store, spec, &host, &group, &step, duration_ms)
                }
                _ => {}
            }
        }
        assert!(engine.state().is_terminal(), "{:?}", engine.state());
    }

    #[test]
    fn successes_are_recorded_and_give_medians() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let r = rollout(None);
        // Three rollouts: announce, install, restart each time.
        let times = [400, 1000, 10, 500, 3000, 20, 600, 2000, 30];
        for k in 0..3 {
            run(&store, &r, |i| took(times[k * 3 + i]));
        }
        // A failed run does not count (the rollout stops at the failure).
        run(&store, &r, |i| {
            if i == 1 { StepOutcome { duration_ms: 99_000, ..StepOutcome::failed("no") } } else { took(1) }
        });
        // `convoy rollback` rollouts are not measured.
        run(&store, &rollout(Some("r0")), |_| took(7));

        let m = measured(&store, "timed");
        assert_eq!(m.len(), 3, "{m:?}");
        let install = m[&("app".to_string(), "install".to_string())];
        assert_eq!(install, MeasuredStep { median: Duration::from_secs(2), runs: 3 }, "failures do not count");
        let announce = m[&("before".to_string(), "announce".to_string())];
        assert_eq!(announce, MeasuredStep { median: Duration::from_millis(450), runs: 4 });
        assert_eq!(m[&("app".to_string(), "restart".to_string())].runs, 3);
        assert!(measured(&store, "other").is_empty());
        // The same history, per host: a-1 ran every step of every run.
        let on_hosts = measured_on_hosts(&store, "timed");
        let key = ("a-1".to_string(), "app".to_string(), "install".to_string());
        assert_eq!(on_hosts[&key], install, "{on_hosts:?}");
        assert!(measured_on_hosts(&store, "other").is_empty());
    }

    #[test]
    fn the_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let r = rollout(None);
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

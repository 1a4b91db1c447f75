//! The engine with durations at and beyond any plan's bounds, at a `now`
//! near the end of time: every timer saturates instead of overflowing or
//! wrapping into the past, and the rollout still runs to its end.

mod engine_support;

use std::time::Duration;

use convoy_common::engine::{Action, Engine, Event, RolloutState, Timer};
use convoy_common::invariants::{self, LogEntry};
use convoy_common::limits::MAX_DURATION;
use convoy_common::model::{Promote, UnixMillis};
use engine_support::*;

/// Drive `engine` from `now`: every dispatched step succeeds, every timer
/// fires at its time; returns the log and the scheduled times.
fn drive(engine: &mut Engine, mut now: u64) -> (Vec<LogEntry>, Vec<(Timer, UnixMillis)>) {
    let mut log = Vec::new();
    let mut scheduled = Vec::new();
    let mut pending = vec![Event::Started];
    let mut timers: Vec<(UnixMillis, Timer)> = Vec::new();
    for _ in 0..10_000 {
        let Some(event) = pending.pop().or_else(|| {
            // Earliest timer first; steps and checks time out only when
            // nothing else is left, which never happens here.
            timers.sort_by_key(|(at, _)| *at);
            (!timers.is_empty()).then(|| {
                let (at, timer) = timers.remove(0);
                now = now.max(at.0);
                Event::TimerFired { timer }
            })
        }) else {
            break;
        };
        let at = UnixMillis(now);
        let actions = engine.handle(at, event.clone());
        log.push(LogEntry { now: at, event, actions: actions.clone() });
        for a in actions {
            match a {
                Action::Dispatch { execution_id, .. } => {
                    pending.push(Event::StepFinished { execution_id, outcome: ok_installed() });
                }
                Action::Schedule { at: when, timer } => {
                    assert!(when.0 >= now, "timer {timer:?} scheduled in the past: {when:?} < {now}");
                    scheduled.push((timer.clone(), when));
                    if !matches!(timer, Timer::StepDeadline { .. } | Timer::LostDeadline { .. }) {
                        timers.push((when, timer));
                    }
                }
                _ => {}
            }
        }
        if engine.state().is_terminal() {
            break;
        }
    }
    (log, scheduled)
}

/// Two groups, canaries promoted after `wait`, every step and the soak
/// and host-lost timeouts `d`.
fn long_spec(d: Duration, wait: Duration) -> convoy_common::model::RolloutSpec {
    let mut s = spec(&[g("a", 3, 2).canary(1), g("b", 2, 5).after(&[0])], 2);
    for grp in &mut s.groups {
        grp.soak = d;
        if let Some(c) = &mut grp.canary {
            c.promote = Promote::After(wait);
        }
    }
    for h in &mut s.hosts {
        for step in &mut h.steps {
            step.timeout = d;
        }
    }
    s.host_lost_timeout = d;
    s
}

#[test]
fn a_rollout_with_the_longest_durations_runs_to_the_end() {
    let mut engine = Engine::new("r1", long_spec(MAX_DURATION, MAX_DURATION));
    let (log, scheduled) = drive(&mut engine, 1_000_000);
    assert_eq!(engine.state(), RolloutState::Succeeded, "{}", engine.view().message);
    assert!(scheduled.iter().any(
        |(t, at)| matches!(t, Timer::PromoteCanaries { .. }) && at.0 >= 1_000_000 + MAX_DURATION.as_millis() as u64
    ));
    if let Err(v) = invariants::check(engine.spec(), &log) {
        panic!("{}", v.join("\n"));
    }
}

#[test]
fn durations_past_any_bound_saturate_at_the_end_of_time() {
    // 2^64 + 1000 ms: a cast to u64 would wrap to one second.
    let huge = Duration::from_millis(u64::MAX) + Duration::from_millis(1001);
    for start in [1_000_000, u64::MAX - 10] {
        let mut engine = Engine::new("r1", long_spec(huge, huge));
        let (log, scheduled) = drive(&mut engine, start);
        assert!(!scheduled.is_empty());
        for (timer, at) in &scheduled {
            assert_eq!(at.0, u64::MAX, "{timer:?} at {at:?}");
        }
        assert_eq!(engine.state(), RolloutState::Succeeded, "{}", engine.view().message);
        if let Err(v) = invariants::check(engine.spec(), &log) {
            panic!("{}", v.join("\n"));
        }
    }
}

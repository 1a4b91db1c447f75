//! Fixtures shared by the engine tests: a small spec builder (independent of
//! `plan.rs`) and a driver that logs every event for `invariants::check`.
#![allow(dead_code)]

use std::time::Duration;

use convoy_common::engine::{Action, Engine, Event, ExecutionId, HostState, OperatorCommand, RolloutState, Timer};
use convoy_common::invariants::{self, LogEntry};
use convoy_common::model::{
    CanarySpec, ExecSpec, GroupSpec, HostPlan, OnFailure, Promote, RolloutSpec, StepKind, StepOutcome, StepSpec,
    StepStatus, Strategy, UnixMillis,
};

pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const LOST_TIMEOUT: Duration = Duration::from_secs(120);

/// One group of the fixture: `hosts` hosts named `{name}-{k}`.
#[derive(Clone)]
pub struct G {
    pub name: &'static str,
    pub after: Vec<usize>,
    pub hosts: usize,
    pub max_parallel: usize,
    pub max_failures: usize,
    pub soak: Duration,
    pub canary: Option<CanarySpec>,
    pub on_failure: OnFailure,
}

pub fn g(name: &'static str, hosts: usize, max_parallel: usize) -> G {
    G {
        name,
        after: Vec::new(),
        hosts,
        max_parallel,
        max_failures: 0,
        soak: Duration::ZERO,
        canary: None,
        on_failure: OnFailure::Halt,
    }
}

impl G {
    pub fn after(mut self, deps: &[usize]) -> G {
        self.after = deps.to_vec();
        self
    }
    pub fn budget(mut self, max_failures: usize) -> G {
        self.max_failures = max_failures;
        self
    }
    pub fn soak(mut self, secs: u64) -> G {
        self.soak = Duration::from_secs(secs);
        self
    }
    /// The first `hosts` hosts are canaries, promoted by an operator.
    pub fn canary(mut self, hosts: usize) -> G {
        self.canary = Some(CanarySpec { hosts, promote: Promote::Manual });
        self
    }
    /// The first `hosts` hosts are canaries, promoted `secs` after they pass.
    pub fn canary_after(mut self, hosts: usize, secs: u64) -> G {
        self.canary = Some(CanarySpec { hosts, promote: Promote::After(Duration::from_secs(secs)) });
        self
    }
    pub fn on_failure(mut self, mode: OnFailure) -> G {
        self.on_failure = mode;
        self
    }
}

/// The undo of `step{s}` in the fixture: `undo{s}`.
pub fn undo(s: usize) -> StepSpec {
    StepSpec {
        name: format!("undo{s}"),
        timeout: STEP_TIMEOUT,
        kind: StepKind::Exec(ExecSpec {
            command: "undo".to_string(),
            args: vec![s.to_string()],
            ..ExecSpec::default()
        }),
        rerun_safe: false,
    }
}

pub fn step(name: &str) -> StepSpec {
    StepSpec {
        name: name.to_string(),
        timeout: STEP_TIMEOUT,
        kind: StepKind::Exec(ExecSpec { command: "true".to_string(), ..ExecSpec::default() }),
        rerun_safe: false,
    }
}

/// A spec whose hosts each have `steps` steps and started on version 1.0 of "app".
pub fn spec(groups: &[G], steps: usize) -> RolloutSpec {
    let mut hosts = Vec::new();
    let mut group_specs = Vec::new();
    for (gi, grp) in groups.iter().enumerate() {
        let mut members = Vec::new();
        for k in 0..grp.hosts {
            members.push(hosts.len());
            hosts.push(HostPlan {
                host: format!("{}-{k}", grp.name),
                group: gi,
                initial_version: Some("1.0".to_string()),
                steps: (0..steps).map(|s| step(&format!("step{s}"))).collect(),
                // Every step but the last (think: the final check) has an undo.
                undo: (0..steps).map(|s| (s + 1 < steps).then(|| undo(s))).collect(),
                ..HostPlan::default()
            });
        }
        group_specs.push(GroupSpec {
            name: grp.name.to_string(),
            after: grp.after.clone(),
            strategy: Strategy::rolling(grp.max_parallel),
            max_failures: grp.max_failures,
            soak: grp.soak,
            hosts: members,
            canary: grp.canary,
            on_failure: grp.on_failure,
            hook: false,
        });
    }
    RolloutSpec {
        plan_name: "test".to_string(),
        target_version: "2.0".to_string(),
        component: Some("app".to_string()),
        groups: group_specs,
        hosts,
        host_lost_timeout: LOST_TIMEOUT,
        max_failures: None,
        on_failure: OnFailure::Halt,
        require_backup: false,
        rollback_of: None,
        windows: None,
    }
}

pub fn ok_installed() -> StepOutcome {
    StepOutcome { installed: Some(("app".to_string(), "2.0".to_string())), ..StepOutcome::ok() }
}

pub fn outcome(status: StepStatus, message: &str) -> StepOutcome {
    StepOutcome { status, message: message.to_string(), ..StepOutcome::failed(message) }
}

/// Drives an engine, keeping the log the coordinator would store.
pub struct Run {
    pub engine: Engine,
    pub log: Vec<LogEntry>,
    /// Host states seen after events, by name (filled by drivers that want it).
    pub seen: std::collections::BTreeSet<&'static str>,
    pub now: u64,
}

impl Run {
    pub fn new(spec: RolloutSpec) -> Run {
        Run { engine: Engine::new("r1", spec), log: Vec::new(), now: 1_000_000, seen: Default::default() }
    }

    pub fn now(&self) -> UnixMillis {
        UnixMillis(self.now)
    }

    pub fn advance(&mut self, ms: u64) -> &mut Run {
        self.now += ms;
        self
    }

    pub fn ev(&mut self, event: Event) -> Vec<Action> {
        let now = UnixMillis(self.now);
        let actions = self.engine.handle(now, event.clone());
        self.log.push(LogEntry { now, event, actions: actions.clone() });
        actions
    }

    pub fn start(&mut self) -> Vec<Action> {
        self.ev(Event::Started)
    }

    pub fn op(&mut self, command: OperatorCommand, by: &str) -> Vec<Action> {
        self.ev(Event::Operator { command, by: by.to_string() })
    }

    /// The execution host is running now (a step or a rollback step).
    /// Panics if it is not running.
    pub fn exec_of(&self, host: &str) -> ExecutionId {
        match self.engine.host_state(host) {
            Some(
                HostState::Running { execution_id, .. }
                | HostState::RollingBack { execution_id, .. }
                | HostState::Probing { execution_id, .. }
                | HostState::SwitchingOver { execution_id, .. },
            ) => execution_id.clone(),
            other => panic!("host {host} is not running: {other:?}"),
        }
    }

    pub fn report(&mut self, host: &str, outcome: StepOutcome) -> Vec<Action> {
        let execution_id = self.exec_of(host);
        self.ev(Event::StepFinished { execution_id, outcome })
    }

    pub fn ok(&mut self, host: &str) -> Vec<Action> {
        self.report(host, ok_installed())
    }

    pub fn fail(&mut self, host: &str) -> Vec<Action> {
        self.report(host, StepOutcome::failed("exit 1"))
    }

    /// Succeed every remaining step of `host`, returning all actions.
    pub fn complete(&mut self, host: &str) -> Vec<Action> {
        let mut all = Vec::new();
        while matches!(self.engine.host_state(host), Some(HostState::Running { .. })) {
            all.extend(self.ok(host));
        }
        all
    }

    /// Succeed every remaining rollback step of `host`, returning all actions.
    pub fn complete_rollback(&mut self, host: &str) -> Vec<Action> {
        let mut all = Vec::new();
        while matches!(self.engine.host_state(host), Some(HostState::RollingBack { .. })) {
            all.extend(self.report(host, StepOutcome::ok()));
        }
        all
    }

    pub fn timer(&mut self, timer: Timer) -> Vec<Action> {
        self.ev(Event::TimerFired { timer })
    }

    pub fn state_of(&self, host: &str) -> HostState {
        self.engine.host_state(host).cloned().expect("known host")
    }

    pub fn assert_invariants(&self) {
        if let Err(violations) = invariants::check(self.engine.spec(), &self.log) {
            panic!("invariants violated:\n{}", violations.join("\n"));
        }
    }

    pub fn assert_final_invariants(&self) {
        if let Err(violations) = invariants::check_final(self.engine.spec(), &self.log) {
            panic!("final invariants violated:\n{}", violations.join("\n"));
        }
    }
}

/// `(host, step_index)` of every new (not re-sent) dispatch.
pub fn dispatched(actions: &[Action]) -> Vec<(String, usize)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Dispatch { host, step_index, resend: false, .. } = a {
                Some((host.clone(), *step_index))
            } else {
                None
            }
        })
        .collect()
}

/// `(host, rollback_index)` of every new (not re-sent) rollback dispatch.
pub fn rolled(actions: &[Action]) -> Vec<(String, usize)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::DispatchRollback { host, rollback_index, resend: false, .. } = a {
                Some((host.clone(), *rollback_index))
            } else {
                None
            }
        })
        .collect()
}

pub fn resent(actions: &[Action]) -> Vec<(String, ExecutionId)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Dispatch { host, execution_id, resend: true, .. } = a {
                Some((host.clone(), execution_id.clone()))
            } else {
                None
            }
        })
        .collect()
}

pub fn scheduled(actions: &[Action]) -> Vec<(UnixMillis, Timer)> {
    actions
        .iter()
        .filter_map(|a| if let Action::Schedule { at, timer } = a { Some((*at, timer.clone())) } else { None })
        .collect()
}

pub fn done(actions: &[Action]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .filter_map(
            |a| if let Action::HostDone { host, state } = a { Some((host.clone(), state.as_str())) } else { None },
        )
        .collect()
}

pub fn finished(actions: &[Action]) -> Option<RolloutState> {
    let all: Vec<RolloutState> =
        actions.iter().filter_map(|a| if let Action::Finished { state } = a { Some(*state) } else { None }).collect();
    assert!(all.len() <= 1, "Finished emitted {} times in one batch", all.len());
    all.first().copied()
}

pub fn hosts(names: &[&str]) -> Vec<(String, usize)> {
    names.iter().map(|h| (h.to_string(), 0)).collect()
}

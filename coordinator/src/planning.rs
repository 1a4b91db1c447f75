//! Turning a submitted plan into a validated rollout spec, away from the
//! runtime task.
//!
//! Parsing, validation, expansion against the inventory and the estimate
//! run on a blocking thread under a time limit, at most [`WORKERS`] at a
//! time; the runtime task then only receives the result
//! ([`crate::runtime::RuntimeHandle::submit`]). A slow or hostile plan
//! therefore costs its caller a timeout, never the agents' heartbeats or
//! other operators' calls. Artifact steps that leave their sha256 to the
//! artifact store get it here ([`ArtifactStore::fill_digests`]), before
//! the summary and the rollout are made. A panic while planning is contained to that
//! request (reported as an internal error and logged). Hosts held out of
//! rollouts (`convoy agents hold`) are left out of the inventory the plan
//! expands against, and the holds of the hosts it would have selected come
//! back with the plan (shown by `convoy plan`, stored with the rollout). The bounds of the plan
//! itself are `convoy_common::limits`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use convoy_common::catalog::parse_catalog;
use convoy_common::hold::Hold;
use convoy_common::model::{InventoryHost, RolloutSpec};
use convoy_common::plan;
use tokio::sync::Semaphore;

use crate::artifacts::ArtifactStore;
use crate::error::{AgentLacksStepKind, CoordinatorError};
use crate::store::Store;

/// How many plans are worked on at once.
pub const WORKERS: usize = 2;

/// A plan as submitted.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub file: String,
    pub source: String,
    /// Catalog name -> YAML text.
    pub catalogs: BTreeMap<String, String>,
}

/// What a plan is expanded against: the live hosts, and what each agent can run.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub hosts: Vec<InventoryHost>,
    /// By host id. A host missing here, or with no capabilities on record
    /// (stored before they were kept), is not checked.
    pub abilities: BTreeMap<String, AgentAbilities>,
}

/// An agent's version and the step kinds it said it runs.
#[derive(Debug, Clone, Default)]
pub struct AgentAbilities {
    pub version: String,
    pub capabilities: BTreeSet<String>,
}

/// A validated, expanded plan, ready to start.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: RolloutSpec,
    pub file: String,
    pub source: String,
    pub summary: serde_json::Value,
    pub dot: String,
    /// Hosts the plan selects that are held out of rollouts (expanded without them).
    pub held: Vec<Hold>,
}

/// Runs plans on blocking threads, a few at a time, each under a limit.
#[derive(Debug, Clone)]
pub struct Planner {
    limit: Duration,
    slots: Arc<Semaphore>,
}

impl Planner {
    pub fn new(limit: Duration) -> Planner {
        Planner { limit, slots: Arc::new(Semaphore::new(WORKERS)) }
    }

    /// Plans `request` against `inventory`; waiting for a slot counts
    /// against the same limit.
    pub async fn plan(
        &self,
        request: PlanRequest,
        inventory: Inventory,
        store: Arc<dyn Store>,
        artifacts: Arc<ArtifactStore>,
    ) -> Result<Planned, CoordinatorError> {
        let file = request.file.clone();
        let too_slow = || CoordinatorError::PlanTooSlow { file: file.clone(), limit: self.limit };
        let deadline = tokio::time::Instant::now() + self.limit;
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| too_slow())?
            .map_err(|_| CoordinatorError::ShuttingDown)?;
        let work = tokio::task::spawn_blocking(move || {
            // The slot is held until the work ends, even past the caller's
            // timeout, so abandoned plans cannot pile up threads.
            let _permit = permit;
            plan_now(request, &inventory, store.as_ref(), &artifacts)
        });
        match tokio::time::timeout_at(deadline, work).await {
            Err(_) => {
                tracing::warn!(%file, limit = ?self.limit, "plan refused: took too long");
                Err(too_slow())
            }
            Ok(Err(join)) => {
                tracing::error!(%file, error = %join, "planning failed unexpectedly");
                Err(CoordinatorError::Internal { what: format!("planning {file}"), message: join.to_string() })
            }
            Ok(Ok(result)) => result,
        }
    }
}

/// The work itself, synchronous.
pub fn plan_now(
    request: PlanRequest,
    inventory: &Inventory,
    store: &dyn Store,
    artifacts: &ArtifactStore,
) -> Result<Planned, CoordinatorError> {
    let PlanRequest { file, source, catalogs } = request;
    // Catalogs are named `catalog:NAME` in errors unless the CLI sent a file name.
    let catalogs = catalogs
        .iter()
        .map(|(name, text)| Ok((name.clone(), parse_catalog(&format!("catalog:{name}"), text)?)))
        .collect::<Result<BTreeMap<_, _>, plan::PlanError>>()?;
    let parsed = plan::parse_plan_with_catalogs(&file, &source, &catalogs)?;
    // Held hosts are left out of the inventory the plan expands against.
    let holds = store.holds()?;
    let free: Vec<InventoryHost> =
        inventory.hosts.iter().filter(|h| !holds.iter().any(|x| x.host == h.id)).cloned().collect();
    let held = held_selected(&parsed, &inventory.hosts, holds);
    let mut expansion = plan::expand_detailed(&parsed, &free)?;
    check_capabilities(&file, &expansion.spec, &inventory.abilities)?;
    artifacts.fill_digests(&mut expansion.spec)?;
    let measured = crate::timings::measured(store, parsed.plan_name());
    // Before the estimates: a balanced group's estimate follows its new order.
    convoy_common::estimate::balance_hosts(&mut expansion, &measured, || {
        crate::timings::measured_on_hosts(store, parsed.plan_name())
    });
    // The engine fits these estimates into the maintenance windows.
    convoy_common::estimate::fill_window_estimates(&mut expansion, &measured);
    let summary = convoy_common::estimate::summary_json(&expansion, &measured);
    let spec = expansion.spec;
    let dot = plan::to_dot(&spec);
    Ok(Planned { spec, file, source, summary, dot, held })
}

/// The holds on hosts the plan would select if they were not held: the
/// plan expanded against the whole inventory (only when there are holds).
/// When that expansion fails (a held host the plan cannot upgrade), every
/// hold is reported: it is the safe side of "was it selected?".
fn held_selected(parsed: &plan::Plan, inventory: &[InventoryHost], holds: Vec<Hold>) -> Vec<Hold> {
    if holds.is_empty() {
        return holds;
    }
    match plan::expand_detailed(parsed, inventory) {
        Ok(all) => holds.into_iter().filter(|h| all.spec.hosts.iter().any(|x| x.host == h.host)).collect(),
        Err(_) => holds,
    }
}

/// Refuse a rollout that would send a host a step kind its agent does not
/// run (an older agent during a self-upgrade, or one built without a
/// driver), naming the host and its agent version: a step is never sent
/// to an agent that would only fail it.
fn check_capabilities(
    file: &str,
    spec: &RolloutSpec,
    abilities: &BTreeMap<String, AgentAbilities>,
) -> Result<(), CoordinatorError> {
    for entry in &spec.hosts {
        let Some(agent) = abilities.get(&entry.host).filter(|a| !a.capabilities.is_empty()) else { continue };
        for (needed, step) in entry.capabilities_needed() {
            if !agent.capabilities.contains(needed) {
                return Err(CoordinatorError::AgentLacksStepKind(Box::new(AgentLacksStepKind {
                    file: file.to_string(),
                    host: entry.host.clone(),
                    agent_version: agent.version.clone(),
                    needed: needed.to_string(),
                    step: step.name.clone(),
                    group: spec.groups.get(entry.group).map_or_else(String::new, |g| g.name.clone()),
                })));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "name: p\nversion: \"2\"\ngroups:\n  - name: web\n    select: { role: web }\n    steps:\n      - name: fetch\n        exec: { command: \"true\" }\n    checks:\n      - name: healthy\n        http: { url: \"http://127.0.0.1:1/\" }\n";

    fn inventory(caps: &[(&str, &[&str])]) -> Inventory {
        let mut inv = Inventory::default();
        for (id, c) in caps {
            inv.hosts.push(InventoryHost {
                id: id.to_string(),
                labels: BTreeMap::from([("role".to_string(), "web".to_string())]),
                ..Default::default()
            });
            inv.abilities.insert(
                id.to_string(),
                AgentAbilities { version: "0.0.9".into(), capabilities: c.iter().map(|s| s.to_string()).collect() },
            );
        }
        inv
    }

    fn plan(inv: &Inventory) -> Result<Planned, CoordinatorError> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let artifacts = ArtifactStore::open(dir.path()).unwrap();
        plan_now(
            PlanRequest { file: "p.yaml".into(), source: PLAN.into(), catalogs: BTreeMap::new() },
            inv,
            &store,
            &artifacts,
        )
    }

    #[test]
    fn a_step_kind_an_agent_lacks_is_refused_naming_host_and_version() {
        let err = plan(&inventory(&[("web-1", &["exec", "http"]), ("web-2", &["exec"])])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CoordinatorError::AgentLacksStepKind(_)), "{msg}");
        assert!(
            msg.contains(
                "host web-2 runs agent 0.0.9, which does not support 'http' (step 'healthy' of group 'web' needs it)"
            ),
            "{msg}"
        );
        // Every agent able, or capabilities unknown (an old record): planned.
        assert!(plan(&inventory(&[("web-1", &["exec", "http"]), ("web-2", &["http", "exec"])])).is_ok());
        assert!(plan(&inventory(&[("web-1", &[])])).is_ok());
    }

    /// A balanced group starts the hosts that took longest last time first,
    /// from the coordinator's own history, and keeps the listed order
    /// without history or without `order: balanced`.
    #[test]
    fn a_balanced_group_is_ordered_by_each_hosts_history() {
        const BALANCED: &str = "name: b\nversion: \"2\"\ngroups:\n  - name: web\n    select: { role: web }\n    strategy: { max_parallel: 2, order: balanced }\n    steps:\n      - name: install\n        exec: { command: \"true\" }\n";
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let artifacts = ArtifactStore::open(dir.path()).unwrap();
        let inv = inventory(&[("web-1", &[]), ("web-2", &[]), ("web-3", &[]), ("web-4", &[]), ("web-5", &[])]);
        let order = |store: &crate::store::SledStore, source: &str| -> Vec<String> {
            let request = PlanRequest { file: "b.yaml".into(), source: source.into(), catalogs: BTreeMap::new() };
            let planned = plan_now(request, &inv, store, &artifacts).unwrap();
            planned.spec.groups[0].hosts.iter().map(|&i| planned.spec.hosts[i].host.clone()).collect()
        };
        let listed: Vec<String> = (1..=5).map(|k| format!("web-{k}")).collect();
        assert_eq!(order(&store, BALANCED), listed, "no history: nothing to balance by");
        // web-5 took 5 minutes, web-4 four, ... web-1 one.
        for k in 1..=5u64 {
            for _ in 0..3 {
                store.add_step_time("b", &format!("web-{k}"), "web", "install", k * 60_000, 20).unwrap();
            }
        }
        let got = order(&store, BALANCED);
        assert_eq!(got[0], "web-5", "the longest host starts first: {got:?}");
        // Slots of 5+1+... : {5, 1} and {4, 3}... any split of 15 over two slots is at best 8.
        let minutes = |h: &str| h.trim_start_matches("web-").parse::<u64>().unwrap();
        let mut slots = [0u64; 2];
        for h in &got {
            let s = if slots[0] <= slots[1] { 0 } else { 1 };
            slots[s] += minutes(h);
        }
        assert_eq!(slots.iter().max(), Some(&8), "{got:?} gives {slots:?}");
        // The listed order (the default) ignores the history.
        let listed_plan = BALANCED.replace(", order: balanced", "");
        assert_eq!(order(&store, &listed_plan), listed);
    }
}

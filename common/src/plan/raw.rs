//! The plan document as written: the serde types a YAML plan is read into.
//!
//! Every mapping refuses unknown fields (a typo such as `max_paralel` must
//! not be silently ignored). Scalars that accept several spellings
//! (durations, counts or percentages) are read as text and validated by
//! hand, so that the errors can say what was expected; serde_norway hands
//! any scalar's text to a `String`.
//!
//! Anchors and aliases are resolved by serde_norway; merge keys (`<<:`)
//! are not, so a plan that uses them is read a second way ([`read`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::OnFailure;

use super::errors::{FieldPath, PlanError, Src, yaml_error};
use super::locate;

/// The document in `src` read into `T`. serde_norway treats `<<` as a plain
/// key, so when reading fails on a text with one, the document is read as a
/// YAML value, its merge keys applied, and the result read into `T`; an
/// error then names the field serde reports, at its line in `src` (or the
/// closest enclosing field's).
pub(super) fn read<T: DeserializeOwned>(src: Src<'_>) -> Result<T, PlanError> {
    let first = match serde_norway::from_str(src.source) {
        Ok(v) => return Ok(v),
        Err(e) => yaml_error(src.file, &e),
    };
    if !src.source.contains("<<") {
        return Err(first);
    }
    let Ok(mut value) = serde_norway::from_str::<serde_norway::Value>(src.source) else { return Err(first) };
    value.apply_merge().map_err(|e| yaml_error(src.file, &e))?;
    // Through text, so that serde's errors carry the field path.
    let text = serde_norway::to_string(&value).map_err(|e| yaml_error(src.file, &e))?;
    serde_norway::from_str(&text).map_err(|e| {
        let mut e = yaml_error(src.file, &e);
        e.line = Some(match e.field.as_str() {
            "(yaml)" => 1,
            field => locate::line_of(src.source, &FieldPath::parse(field).0),
        });
        e
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) name: Option<String>,
    pub(super) version: Option<String>,
    pub(super) component: Option<String>,
    pub(super) host_lost_timeout: Option<String>,
    pub(super) max_failures: Option<String>,
    pub(super) on_failure: Option<OnFailure>,
    pub(super) require_backup: Option<bool>,
    /// Values for `{{vars.NAME}}` (see the `vars` module).
    pub(super) vars: Option<BTreeMap<String, String>>,
    /// Environment of every exec-like step and check.
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) hooks: Option<RawHooks>,
    pub(super) defaults: Option<RawDefaults>,
    /// Maintenance windows of every group (see the `windows` module).
    pub(super) windows: Option<RawWindows>,
    pub(super) groups: Option<Vec<RawGroup>>,
}

/// `windows:`, at the plan level or on a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindows {
    pub(super) timezone: Option<String>,
    pub(super) cutoff: Option<String>,
    pub(super) open: Option<Vec<RawWindow>>,
    pub(super) blackouts: Option<Vec<RawBlackout>>,
    /// A group under a plan with windows that may run at any time.
    pub(super) anytime: Option<bool>,
}

/// One entry of `windows.open`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) days: Option<Vec<String>>,
    pub(super) start: Option<String>,
    pub(super) cron: Option<String>,
    pub(super) duration: Option<String>,
}

/// One entry of `windows.blackouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlackout {
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    /// Shown to people only.
    #[allow(dead_code)]
    pub(super) reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) before: Option<RawHook>,
    pub(super) after: Option<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    /// A host id, or `{ select: { LABEL: VALUE } }`; read by hand.
    pub(super) on: Option<serde_norway::Value>,
    pub(super) steps: Option<Vec<RawStep>>,
    pub(super) checks: Option<Vec<RawCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    pub(super) name: Option<String>,
    pub(super) regex: Option<String>,
    pub(super) json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) strategy: Option<RawStrategy>,
    pub(super) pre_checks: Option<Vec<RawCheck>>,
    pub(super) steps: Option<Vec<RawStep>>,
    pub(super) checks: Option<Vec<RawCheck>>,
    pub(super) rollback_steps: Option<Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: Option<String>,
    pub(super) select: Option<BTreeMap<String, String>>,
    pub(super) hosts: Option<Vec<String>>,
    pub(super) after: Option<Vec<String>>,
    pub(super) strategy: Option<RawStrategy>,
    pub(super) canary: Option<RawCanary>,
    pub(super) on_failure: Option<OnFailure>,
    /// Over the plan's `vars`, per name.
    pub(super) vars: Option<BTreeMap<String, String>>,
    /// Over the plan's `env`, per name.
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) hooks: Option<RawHooks>,
    /// Checks that must pass on a host before its first step.
    pub(super) pre_checks: Option<Vec<RawCheck>>,
    pub(super) steps: Option<Vec<RawStep>>,
    pub(super) checks: Option<Vec<RawCheck>>,
    pub(super) rollback_steps: Option<Vec<RawStep>>,
    pub(super) release: Option<RawGroupRelease>,
    /// Over the plan's `windows`, wholesale.
    pub(super) windows: Option<RawWindows>,
    /// Every artifact the group's steps install needs a valid signature.
    #[serde(default)]
    pub(super) require_signature: bool,
}

/// `release: { catalog: NAME }` on a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroupRelease {
    pub(super) catalog: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCanary {
    pub(super) count: Option<String>,
    pub(super) percent: Option<String>,
    pub(super) select: Option<BTreeMap<String, String>>,
    /// `manual` or `{ after: DURATION }`, read by hand for a clear error.
    pub(super) promote: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum StrategyType {
    Rolling,
    Parallel,
    Cluster,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStrategy {
    #[serde(rename = "type")]
    pub(super) kind: Option<StrategyType>,
    /// A size, or a list of sizes (ramped batches).
    pub(super) max_parallel: Option<RawSizes>,
    pub(super) max_failures: Option<String>,
    pub(super) soak: Option<String>,
    /// `type: rolling`: `listed` (the default) or `balanced` ([`crate::host_order`]).
    pub(super) order: Option<String>,
    /// `type: cluster`: the label naming a host's cluster (default `cluster`).
    pub(super) by: Option<String>,
    /// `type: cluster`: the check that passes on the leader.
    pub(super) leader: Option<RawCheck>,
    /// `type: cluster`: steps handing the leadership over, run on the leader.
    pub(super) switchover: Option<Vec<RawStep>>,
    /// `type: cluster`: every member of a cluster together, step by step.
    pub(super) same_version: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) exec: Option<RawExec>,
    pub(super) archive: Option<RawArchive>,
    pub(super) file: Option<RawFile>,
    pub(super) apt: Option<RawApt>,
    pub(super) dpkg: Option<RawDpkg>,
    pub(super) rpm: Option<RawRpm>,
    pub(super) service: Option<RawService>,
    pub(super) backup: Option<RawBackup>,
    pub(super) agent_upgrade: Option<RawAgentUpgrade>,
    pub(super) rollback: Option<RawExec>,
    pub(super) capture: Option<RawCapture>,
    pub(super) migration: Option<bool>,
    /// How long the step usually takes (`90s`), for `convoy plan`'s estimate.
    pub(super) estimate: Option<String>,
    /// May run again if the agent restarted while it ran (default false).
    #[serde(default)]
    pub(super) rerun_safe: bool,
    /// The version of the plan's `component` the host runs once this step
    /// succeeded (templated), for steps whose driver cannot tell.
    pub(super) installs: Option<String>,
    /// The artifact this step installs needs a valid signature.
    #[serde(default)]
    pub(super) require_signature: bool,
}

/// `backup: { command, args, env, workdir, run_as, path }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) command: Option<String>,
    pub(super) args: Option<Vec<String>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) workdir: Option<String>,
    /// A user, or `{ user, group }`; read by hand (`run_as` module).
    pub(super) run_as: Option<serde_norway::Value>,
    pub(super) path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    pub(super) command: Option<String>,
    pub(super) args: Option<Vec<String>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) workdir: Option<String>,
    /// A user, or `{ user, group }`; read by hand (`run_as` module).
    pub(super) run_as: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArchive {
    pub(super) component: Option<String>,
    pub(super) version: Option<String>,
    pub(super) source: Option<String>,
    pub(super) sha256: Option<String>,
    pub(super) install_root: Option<String>,
}

/// `agent_upgrade: { version, source, sha256, deadline, force }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentUpgrade {
    pub(super) version: Option<String>,
    pub(super) source: Option<String>,
    pub(super) sha256: Option<String>,
    pub(super) deadline: Option<String>,
    #[serde(default)]
    pub(super) force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApt {
    pub(super) package: Option<String>,
    pub(super) version: Option<String>,
    pub(super) hold: Option<bool>,
    pub(super) allow_downgrade: Option<bool>,
    pub(super) update: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpkg {
    pub(super) package: Option<String>,
    pub(super) version: Option<String>,
    pub(super) source: Option<String>,
    pub(super) sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRpm {
    pub(super) package: Option<String>,
    pub(super) version: Option<String>,
    pub(super) manager: Option<String>,
    pub(super) source: Option<String>,
    pub(super) sha256: Option<String>,
    pub(super) allow_downgrade: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Option<String>,
    pub(super) action: Option<String>,
    pub(super) manager: Option<String>,
    pub(super) command: Option<RawExec>,
    pub(super) pidfile: Option<String>,
    pub(super) log: Option<String>,
    pub(super) stop_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) path: Option<String>,
    pub(super) content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) name: Option<String>,
    pub(super) retries: Option<u32>,
    pub(super) interval: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) healthy_deadline: Option<String>,
    pub(super) min_healthy_time: Option<String>,
    pub(super) http: Option<RawHttp>,
    pub(super) tcp: Option<RawTcp>,
    pub(super) exec: Option<RawExec>,
    pub(super) file: Option<RawFileCheck>,
    pub(super) metric: Option<RawMetric>,
    /// Exec checks only: the command's stdout, trailing whitespace trimmed, equals this.
    pub(super) stdout_equals: Option<String>,
    /// Exec checks only: the command's stdout contains this.
    pub(super) stdout_contains: Option<String>,
    /// Exec checks only: the command's stdout matches this regex.
    pub(super) stdout_matches: Option<String>,
    /// How long the check usually takes to pass, for `convoy plan`'s estimate.
    pub(super) estimate: Option<String>,
    /// A cluster's leader check only: the leader's answer (default: the check passes).
    pub(super) leader_when: Option<RawRoleMatch>,
    /// A cluster's leader check only: the follower's answer (required).
    pub(super) follower_when: Option<RawRoleMatch>,
}

/// `leader_when:` / `follower_when:` of a leader check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoleMatch {
    pub(super) exit_code: Option<i32>,
    pub(super) status: Option<u16>,
    pub(super) output_contains: Option<String>,
    pub(super) stdout_equals: Option<String>,
    pub(super) stdout_matches: Option<String>,
}

/// `metric:` — exactly one of `url`/`command`; `prometheus` (with optional
/// `labels`) or `json`, or neither for a plain number; `below` and/or `above`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetric {
    pub(super) url: Option<String>,
    pub(super) command: Option<RawExec>,
    pub(super) prometheus: Option<String>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    pub(super) json: Option<String>,
    pub(super) below: Option<f64>,
    pub(super) above: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) url: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) body_contains: Option<String>,
    pub(super) json: Option<RawJsonExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJsonExpect {
    pub(super) path: Option<String>,
    pub(super) equals: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub(super) address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileCheck {
    pub(super) path: Option<String>,
    pub(super) contains: Option<String>,
}

/// `max_parallel`: one size or a list of them, each kept as written (a
/// number too large for any integer type still reaches validation, which
/// names it).
#[derive(Debug)]
pub(super) enum RawSizes {
    One(String),
    Many(Vec<String>),
}

/// A scalar as text; anything else is refused with what was expected.
struct ScalarText;

impl<'de> serde::de::Visitor<'de> for ScalarText {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number or a percentage such as '20%'")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarText).map(Scalar)
    }
}

impl<'de> Deserialize<'de> for RawSizes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawSizes, D::Error> {
        struct Sizes;
        impl<'de> serde::de::Visitor<'de> for Sizes {
            type Value = RawSizes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, a percentage such as '25%', or a list of them (ramped batches)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSizes, E> {
                ScalarText.visit_str(v).map(RawSizes::One)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSizes, E> {
                ScalarText.visit_u64(v).map(RawSizes::One)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSizes, E> {
                ScalarText.visit_i64(v).map(RawSizes::One)
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<RawSizes, E> {
                ScalarText.visit_u128(v).map(RawSizes::One)
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<RawSizes, E> {
                ScalarText.visit_i128(v).map(RawSizes::One)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawSizes, E> {
                ScalarText.visit_f64(v).map(RawSizes::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawSizes, A::Error> {
                let mut out = Vec::new();
                // Bounded: a longer list is refused by validation, which names it.
                while let Some(Scalar(s)) = seq.next_element()? {
                    out.push(s);
                    if out.len() > super::strategies::MAX_RAMP_STAGES + 1 {
                        break;
                    }
                }
                Ok(RawSizes::Many(out))
            }
        }
        d.deserialize_any(Sizes)
    }
}

//! The stored form of everything the store keeps: its trees, keys and one
//! record type per kind of value and format version, with the conversion
//! between each record and the coordinator's own type ([`Stored`]).
//!
//! Format 4 (JSON values; formats 1 and 2 differ only in the rollout's
//! embedded spec, see [`super::format`]: format 3 added its `windows`,
//! format 4 the `snapshots` tree):
//!
//! | tree             | key                                  | value           |
//! |------------------|--------------------------------------|-----------------|
//! | `rollouts`       | rollout id                           | [`RolloutV2`]   |
//! | `events`         | rollout id, 0, sequence (u64 BE)     | [`EventV1`]     |
//! | `agents`         | agent id                             | [`AgentV1`]     |
//! | `join_tokens_v2` | sha256 of the token, hex             | [`JoinTokenV1`] |
//! | `enrolments`     | host id                              | [`EnrolmentV1`] |
//! | `step_times`     | plan, 0, group, 0, step              | [`StepTimesV1`] |
//! | `host_step_times` | plan, 0, host, 0, group, 0, step    | [`HostStepTimesV1`] |
//! | `holds`          | host id                              | [`HoldV1`]      |
//! | `rollout_holds`  | rollout id                           | [`RolloutHoldsV1`] |
//! | `audit`          | sequence (u64 BE, sled's generated ids) | [`AuditV1`]  |
//! | `snapshots`      | rollout id                           | `EngineSnapshot` JSON (its own `format`) |
//! | `meta`           | `format_version`                     | u32 BE ([`super::format`]) |
//!
//! Format 4 added the `snapshots` tree and lets a rollout's event log start
//! above sequence 0: with `--compact-events` the runtime deletes the events
//! its latest snapshot covers. Nothing is rewritten by the upgrade from 3;
//! the bump makes a build that predates snapshots refuse a store it would
//! misread (it would replay a compacted log from its first kept event).
//!
//! `host_step_times` was added within format 4, and `holds`,
//! `rollout_holds` and `audit` within format 2: a new
//! tree that no older build reads and that an older store simply lacks
//! (it reads as empty) changes no stored shape, so it needs no bump; its
//! records are versioned from their first day, and a later change to them
//! follows the rule below like any other (see docs/architecture.md).
//!
//! [`RolloutV2`]: format 2 changed a group's strategy into an enum
//! (`rolling` with its window, `parallel`, `cluster` with its clusters) with
//! `max_failures` and `soak` beside it, and marks a rollback rollout by
//! `rollback_of`; the upgrade rewrites format-1 rollouts in place.
//!
//! Records embed [`RolloutSpec`] and [`Event`] (and what they hold) in
//! their serde form rather than mirroring that large model: a change to the
//! serde form of those types is a change of format like any other here.
//! One addition within format 4 needed no bump: a rolling strategy's
//! `order` (`balanced`) is written only when set, reads as `listed` when
//! missing, and a build that predates it ignores it and runs the spec's
//! already reordered hosts the same way.
//!
//! Format 1 is also what builds before format versions wrote, so the fields
//! those builds added along the way (an agent's `facts`, a join token's
//! `hosts` and `created_by`, an enrolment's `revoked`) read as empty when
//! missing. Later formats get no such patches: a changed record is a new
//! record type (`AgentV2`), the previous one stays for the migration that
//! reads it ([`super::format`]), and [`Stored`] switches to the new one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use convoy_common::audit::{AuditAction, AuditEntry, AuditOutcome};
use convoy_common::engine::Event;
use convoy_common::hold::Hold;
use convoy_common::model::{RolloutSpec, UnixMillis};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{AgentRecord, HostStepTimes, RolloutRecord, StepTimes, StoredEvent};
use crate::enrolment::{Enrolment, HostPattern, JoinTokenRecord, Revocation};
use crate::error::CoordinatorError;

pub(super) const ROLLOUTS: &str = "rollouts";
pub(super) const EVENTS: &str = "events";
pub(super) const AGENTS: &str = "agents";
/// Tokens before scoped join tokens were stored in the clear in
/// `join_tokens`; they are not read any more (create new ones).
pub(super) const JOIN_TOKENS: &str = "join_tokens_v2";
pub(super) const ENROLMENTS: &str = "enrolments";
pub(super) const STEP_TIMES: &str = "step_times";
pub(super) const HOST_STEP_TIMES: &str = "host_step_times";
pub(super) const HOLDS: &str = "holds";
pub(super) const ROLLOUT_HOLDS: &str = "rollout_holds";
pub(super) const AUDIT: &str = "audit";
pub(super) const SNAPSHOTS: &str = "snapshots";

/// A stored engine snapshot: its own JSON, versioned by its `format`
/// ([`convoy_common::engine::snapshot`]); one of another format is a store
/// error, and the runtime replays the log instead.
pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<convoy_common::engine::EngineSnapshot, CoordinatorError> {
    convoy_common::engine::EngineSnapshot::from_json(bytes)
        .map_err(|e| CoordinatorError::Store { op: "decode snapshot", message: e.to_string() })
}

/// A coordinator type the store keeps, written as the current format's record.
pub(super) trait Stored: Sized {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError>;
    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError>;
}

fn to_json<T: Serialize>(op: &'static str, record: &T) -> Result<Vec<u8>, CoordinatorError> {
    serde_json::to_vec(record).map_err(|e| CoordinatorError::Store { op, message: e.to_string() })
}

fn from_json<T: DeserializeOwned>(op: &'static str, bytes: &[u8]) -> Result<T, CoordinatorError> {
    serde_json::from_slice(bytes).map_err(|e| CoordinatorError::Store { op, message: e.to_string() })
}

/// `owner \0`: the prefix of every key of one rollout's events or one
/// plan's step times, so that an owner whose name extends another's is apart.
pub(super) fn owner_prefix(owner: &str) -> Vec<u8> {
    [owner.as_bytes(), b"\0"].concat()
}

pub(super) fn event_key(rollout_id: &str, seq: u64) -> Vec<u8> {
    [rollout_id.as_bytes(), b"\0", &seq.to_be_bytes()].concat()
}

/// `plan \0 group \0 step`: a plan's steps are one prefix scan.
pub(super) fn step_time_key(plan: &str, group: &str, step: &str) -> Vec<u8> {
    [plan.as_bytes(), b"\0", group.as_bytes(), b"\0", step.as_bytes()].concat()
}

/// `plan \0 host \0 group \0 step`: a plan's hosts are one prefix scan.
pub(super) fn host_step_time_key(plan: &str, host: &str, group: &str, step: &str) -> Vec<u8> {
    [plan.as_bytes(), b"\0", host.as_bytes(), b"\0", group.as_bytes(), b"\0", step.as_bytes()].concat()
}

/// Records borrow what they write (`Cow`): the event log is written on every
/// commit and specs can be large.
#[derive(Serialize, Deserialize)]
pub(super) struct RolloutV2<'a> {
    id: Cow<'a, str>,
    file: Cow<'a, str>,
    plan_source: Cow<'a, str>,
    spec: Cow<'a, RolloutSpec>,
    created: UnixMillis,
    created_by: Cow<'a, str>,
}

impl Stored for RolloutRecord {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode rollout",
            &RolloutV2 {
                id: Cow::Borrowed(&self.id),
                file: Cow::Borrowed(&self.file),
                plan_source: Cow::Borrowed(&self.plan_source),
                spec: Cow::Borrowed(&self.spec),
                created: self.created,
                created_by: Cow::Borrowed(&self.created_by),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: RolloutV2 = from_json("decode rollout", bytes)?;
        Ok(RolloutRecord {
            id: r.id.into_owned(),
            file: r.file.into_owned(),
            plan_source: r.plan_source.into_owned(),
            spec: r.spec.into_owned(),
            created: r.created,
            created_by: r.created_by.into_owned(),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct EventV1<'a> {
    now: UnixMillis,
    event: Cow<'a, Event>,
}

impl Stored for StoredEvent {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json("encode event", &EventV1 { now: self.now, event: Cow::Borrowed(&self.event) })
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: EventV1 = from_json("decode event", bytes)?;
        Ok(StoredEvent { now: r.now, event: r.event.into_owned() })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct AgentV1<'a> {
    id: Cow<'a, str>,
    version: Cow<'a, str>,
    protocol_version: u32,
    labels: Cow<'a, BTreeMap<String, String>>,
    hostname: Cow<'a, str>,
    os: Cow<'a, str>,
    arch: Cow<'a, str>,
    installed: Cow<'a, BTreeMap<String, String>>,
    last_seen: UnixMillis,
    #[serde(default)]
    facts: Cow<'a, BTreeMap<String, String>>,
    #[serde(default)]
    install_root: Cow<'a, str>,
    #[serde(default)]
    capabilities: Cow<'a, [String]>,
}

impl Stored for AgentRecord {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode agent",
            &AgentV1 {
                id: Cow::Borrowed(&self.id),
                version: Cow::Borrowed(&self.version),
                protocol_version: self.protocol_version,
                labels: Cow::Borrowed(&self.labels),
                hostname: Cow::Borrowed(&self.hostname),
                os: Cow::Borrowed(&self.os),
                arch: Cow::Borrowed(&self.arch),
                installed: Cow::Borrowed(&self.installed),
                last_seen: self.last_seen,
                facts: Cow::Borrowed(&self.facts),
                install_root: Cow::Borrowed(&self.install_root),
                capabilities: Cow::Borrowed(&self.capabilities),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: AgentV1 = from_json("decode agent", bytes)?;
        Ok(AgentRecord {
            id: r.id.into_owned(),
            version: r.version.into_owned(),
            protocol_version: r.protocol_version,
            labels: r.labels.into_owned(),
            hostname: r.hostname.into_owned(),
            os: r.os.into_owned(),
            arch: r.arch.into_owned(),
            installed: r.installed.into_owned(),
            last_seen: r.last_seen,
            facts: r.facts.into_owned(),
            install_root: r.install_root.into_owned(),
            capabilities: r.capabilities.into_owned(),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct JoinTokenV1 {
    expires: UnixMillis,
    uses_left: u32,
    /// A [`HostPattern`].
    #[serde(default)]
    hosts: Option<String>,
    #[serde(default)]
    created_by: String,
}

impl Stored for JoinTokenRecord {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode join token",
            &JoinTokenV1 {
                expires: self.expires,
                uses_left: self.uses_left,
                hosts: self.hosts.as_ref().map(|h| h.as_str().to_string()),
                created_by: self.created_by.clone(),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: JoinTokenV1 = from_json("decode join token", bytes)?;
        let hosts = r
            .hosts
            .map(|h| HostPattern::parse(&h))
            .transpose()
            .map_err(|e| CoordinatorError::Store { op: "decode join token", message: e.to_string() })?;
        Ok(JoinTokenRecord { expires: r.expires, uses_left: r.uses_left, hosts, created_by: r.created_by })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct EnrolmentV1 {
    host: String,
    /// sha256 of the certificate's DER, hex.
    fingerprint: String,
    enrolled: UnixMillis,
    /// Added after the first records: absent means unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default)]
    revoked: Option<RevocationV1>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct RevocationV1 {
    at: UnixMillis,
    by: String,
}

impl Stored for Enrolment {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode enrolment",
            &EnrolmentV1 {
                host: self.host.clone(),
                fingerprint: self.fingerprint.clone(),
                enrolled: self.enrolled,
                key: self.key.clone(),
                revoked: self.revoked.as_ref().map(|r| RevocationV1 { at: r.at, by: r.by.clone() }),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: EnrolmentV1 = from_json("decode enrolment", bytes)?;
        Ok(Enrolment {
            host: r.host,
            fingerprint: r.fingerprint,
            enrolled: r.enrolled,
            key: r.key,
            revoked: r.revoked.map(|v| Revocation { at: v.at, by: v.by }),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct StepTimesV1 {
    group: String,
    step: String,
    recent_ms: Vec<u64>,
}

impl Stored for StepTimes {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode step times",
            &StepTimesV1 { group: self.group.clone(), step: self.step.clone(), recent_ms: self.recent_ms.clone() },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: StepTimesV1 = from_json("decode step times", bytes)?;
        Ok(StepTimes { group: r.group, step: r.step, recent_ms: r.recent_ms })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct HostStepTimesV1 {
    host: String,
    group: String,
    step: String,
    recent_ms: Vec<u64>,
}

impl Stored for HostStepTimes {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        let t = &self.times;
        to_json(
            "encode host step times",
            &HostStepTimesV1 {
                host: self.host.clone(),
                group: t.group.clone(),
                step: t.step.clone(),
                recent_ms: t.recent_ms.clone(),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: HostStepTimesV1 = from_json("decode host step times", bytes)?;
        Ok(HostStepTimes { host: r.host, times: StepTimes { group: r.group, step: r.step, recent_ms: r.recent_ms } })
    }
}

// ------------------------------------------ holds and audit (issue 13)

#[derive(Serialize, Deserialize)]
pub(super) struct HoldV1 {
    host: String,
    reason: String,
    by: String,
    since: UnixMillis,
}

impl From<&Hold> for HoldV1 {
    fn from(h: &Hold) -> HoldV1 {
        HoldV1 { host: h.host.clone(), reason: h.reason.clone(), by: h.by.clone(), since: h.since }
    }
}

impl From<HoldV1> for Hold {
    fn from(h: HoldV1) -> Hold {
        Hold { host: h.host, reason: h.reason, by: h.by, since: h.since }
    }
}

impl Stored for Hold {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json("encode hold", &HoldV1::from(self))
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        Ok(from_json::<HoldV1>("decode hold", bytes)?.into())
    }
}

/// The hosts a rollout's plan selected that were held when it was planned.
#[derive(Serialize, Deserialize)]
pub(super) struct RolloutHoldsV1 {
    held: Vec<HoldV1>,
}

/// The holds of one rollout, as stored.
pub(super) struct RolloutHolds(pub Vec<Hold>);

impl Stored for RolloutHolds {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json("encode rollout holds", &RolloutHoldsV1 { held: self.0.iter().map(HoldV1::from).collect() })
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: RolloutHoldsV1 = from_json("decode rollout holds", bytes)?;
        Ok(RolloutHolds(r.held.into_iter().map(Hold::from).collect()))
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct AuditV1 {
    at: UnixMillis,
    who: String,
    role: String,
    peer: String,
    /// [`AuditAction`] in its kebab-case form.
    action: AuditAction,
    target: String,
    outcome: AuditOutcome,
    detail: String,
}

impl Stored for AuditEntry {
    fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        to_json(
            "encode audit entry",
            &AuditV1 {
                at: self.at,
                who: self.who.clone(),
                role: self.role.clone(),
                peer: self.peer.clone(),
                action: self.action,
                target: self.target.clone(),
                outcome: self.outcome,
                detail: self.detail.clone(),
            },
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoordinatorError> {
        let r: AuditV1 = from_json("decode audit entry", bytes)?;
        Ok(AuditEntry {
            at: r.at,
            who: r.who,
            role: r.role,
            peer: r.peer,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            detail: r.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as builds before format versions wrote them (some from before
    /// a field was added) read as format 1.
    #[test]
    fn values_written_before_format_versions_decode() {
        let agent = AgentRecord::decode(
            br#"{"id":"web-1","version":"0.1.0","protocol_version":1,"labels":{"tier":"web"},"hostname":"h","os":"linux","arch":"x86_64","installed":{"svc":"1.0.0"},"last_seen":5}"#,
        )
        .unwrap();
        assert_eq!(agent.labels["tier"], "web");
        assert!(agent.facts.is_empty());

        let token = JoinTokenRecord::decode(br#"{"expires":99,"uses_left":2}"#).unwrap();
        assert_eq!(
            token,
            JoinTokenRecord { expires: UnixMillis(99), uses_left: 2, hosts: None, created_by: "".into() }
        );
        let scoped =
            JoinTokenRecord::decode(br#"{"expires":99,"uses_left":2,"hosts":"web-*","created_by":"ops"}"#).unwrap();
        assert_eq!(scoped.hosts.map(|h| h.to_string()), Some("web-*".to_string()));

        let e = Enrolment::decode(br#"{"host":"web-1","fingerprint":"ab","enrolled":3}"#).unwrap();
        assert_eq!(e.revoked, None);
        let e = Enrolment::decode(br#"{"host":"web-1","fingerprint":"ab","enrolled":3,"revoked":{"at":4,"by":"ops"}}"#)
            .unwrap();
        assert_eq!(e.revoked, Some(Revocation { at: UnixMillis(4), by: "ops".into() }));

        let t = StepTimes::decode(br#"{"group":"db","step":"install","recent_ms":[1,2]}"#).unwrap();
        assert_eq!(t.recent_ms, vec![1, 2]);
        let ev = StoredEvent::decode(br#"{"now":7,"event":"started"}"#).unwrap();
        assert_eq!(ev, StoredEvent { now: UnixMillis(7), event: Event::Started });
    }

    #[test]
    fn a_bad_host_pattern_in_a_join_token_is_a_store_error() {
        let err = JoinTokenRecord::decode(br#"{"expires":99,"uses_left":2,"hosts":"a b"}"#).unwrap_err();
        assert!(matches!(err, CoordinatorError::Store { op: "decode join token", .. }), "{err}");
    }
}

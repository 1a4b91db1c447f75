//! Agents on the wire: the Hello an agent opens its session with (who it
//! is, what it can run, its host's facts and inventory, results it kept),
//! and the `AgentInfo` operators list.
//!
//! A Hello names the host the session is for, so the coordinator refuses
//! one whose id is not a plain host id ([`valid_host_id`]) or that replays a
//! result it would refuse on the stream.

use std::collections::BTreeMap;

use convoy_common::engine::ExecutionId;
use convoy_common::model::{HostId, StepOutcome, UnixMillis};
use convoy_proto::v1 as pb;

use crate::error::WireError;
use crate::outcome::result_from_proto;

/// Who an agent is and what its host is like.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentIntro {
    pub id: HostId,
    pub version: String,
    pub protocol_version: u32,
    pub labels: BTreeMap<String, String>,
    pub facts: HostFacts,
}

/// What an agent reports about its host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    /// Component -> version installed.
    pub installed: BTreeMap<String, String>,
    /// The facts the operator gave the agent (`--fact KEY=VALUE`).
    pub custom: BTreeMap<String, String>,
    /// The agent's install root, an absolute path; empty from agents that
    /// predate it.
    pub install_root: String,
}

/// A Hello as the coordinator takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub agent: AgentIntro,
    /// Step kinds the agent runs ([`convoy_common::model::StepKindName`] names).
    pub capabilities: Vec<String>,
    /// Results the agent finished while it was disconnected.
    pub replayed: Vec<(ExecutionId, StepOutcome)>,
}

/// Host ids end up in paths, execution ids and certificates: keep them plain.
pub fn valid_host_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The Hello an agent sends; `replayed_results` are already in wire form
/// (the agent keeps what it sent).
pub fn hello_to_proto(
    agent: AgentIntro,
    capabilities: Vec<String>,
    replayed_results: Vec<pb::StepResult>,
) -> pb::Hello {
    pb::Hello {
        agent_id: agent.id,
        agent_version: agent.version,
        protocol_version: agent.protocol_version,
        capabilities,
        labels: agent.labels.into_iter().collect(),
        facts: Some(facts_to_proto(agent.facts)),
        replayed_results,
    }
}

/// The Hello a coordinator received, checked.
pub fn hello_from_proto(h: pb::Hello) -> Result<Hello, WireError> {
    if !valid_host_id(&h.agent_id) {
        return Err(WireError::invalid(
            "hello.agent_id",
            format!("'{}' is not a valid host id (letters, digits, '-', '_', '.')", h.agent_id),
        ));
    }
    let replayed = h.replayed_results.into_iter().map(result_from_proto).collect::<Result<_, _>>()?;
    if let Some(f) = &h.facts {
        check_install_root(&f.install_root).map_err(|m| WireError::invalid("hello.facts.install_root", m))?;
    }
    Ok(Hello {
        agent: AgentIntro {
            id: h.agent_id,
            version: h.agent_version,
            protocol_version: h.protocol_version,
            labels: h.labels.into_iter().collect(),
            facts: facts_from_proto(h.facts.unwrap_or_default()),
        },
        capabilities: h.capabilities,
        replayed,
    })
}

/// An agent as `ListAgents` shows it.
pub fn agent_info(agent: AgentIntro, connected: bool, last_seen: UnixMillis) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: agent.id,
        agent_version: agent.version,
        connected,
        labels: agent.labels.into_iter().collect(),
        facts: Some(facts_to_proto(agent.facts)),
        last_seen_unix_ms: last_seen.0,
        protocol_version: agent.protocol_version,
        // Filled in by the coordinator (holds live beside the agents).
        hold: None,
    }
}

fn facts_to_proto(f: HostFacts) -> pb::Facts {
    pb::Facts {
        hostname: f.hostname,
        os: f.os,
        arch: f.arch,
        installed: f.installed.into_iter().collect(),
        custom: f.custom.into_iter().collect(),
        install_root: f.install_root,
    }
}

fn facts_from_proto(f: pb::Facts) -> HostFacts {
    HostFacts {
        hostname: f.hostname,
        os: f.os,
        arch: f.arch,
        installed: f.installed.into_iter().collect(),
        custom: f.custom.into_iter().collect(),
        install_root: f.install_root,
    }
}

/// The longest install root a Hello may report.
pub const MAX_INSTALL_ROOT: usize = 1024;

/// An install root is empty (an older agent) or an absolute path of one line.
fn check_install_root(root: &str) -> Result<(), String> {
    if root.is_empty() {
        return Ok(());
    }
    if root.len() > MAX_INSTALL_ROOT {
        return Err(format!("is {} bytes long, over the limit of {MAX_INSTALL_ROOT}", root.len()));
    }
    if !root.starts_with('/') || root.contains(['\0', '\n', '\r']) {
        return Err(format!("{root:?} is not an absolute path on one line"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::outcome_to_result;

    fn intro() -> AgentIntro {
        AgentIntro {
            id: "web-1".into(),
            version: "0.1.0".into(),
            protocol_version: convoy_proto::PROTOCOL_VERSION,
            labels: BTreeMap::from([("role".into(), "web".into())]),
            facts: HostFacts {
                hostname: "web-1.example".into(),
                os: "Debian GNU/Linux 12".into(),
                arch: "x86_64".into(),
                installed: BTreeMap::from([("app".into(), "1.0".into())]),
                custom: BTreeMap::from([("dc".into(), "eu".into())]),
                install_root: "/var/lib/convoy-agent/install".into(),
            },
        }
    }

    #[test]
    fn hello_round_trips() {
        let replayed = vec![outcome_to_result("r/web-1/0/1", &StepOutcome::ok(), true)];
        let caps = vec!["exec".to_string(), "archive_rollback".to_string()];
        let hello = hello_from_proto(hello_to_proto(intro(), caps.clone(), replayed)).unwrap();
        assert_eq!(hello.agent, intro());
        assert_eq!(hello.capabilities, caps);
        assert_eq!(hello.replayed, vec![("r/web-1/0/1".parse().unwrap(), StepOutcome::ok())]);
    }

    #[test]
    fn hellos_with_bad_ids_or_results_are_refused() {
        for id in ["", "../etc", "a b", &"x".repeat(129)] {
            let h = hello_to_proto(AgentIntro { id: id.to_string(), ..intro() }, vec![], vec![]);
            assert_eq!(hello_from_proto(h).unwrap_err().field, "hello.agent_id");
        }
        let bad = pb::StepResult { execution_id: String::new(), ..Default::default() };
        let err = hello_from_proto(hello_to_proto(intro(), vec![], vec![bad])).unwrap_err();
        assert_eq!(err.field, "step_result.execution_id");
        for root in ["relative/path", "/a\nb", &format!("/{}", "x".repeat(MAX_INSTALL_ROOT))] {
            let h = hello_to_proto(
                AgentIntro { facts: HostFacts { install_root: root.to_string(), ..intro().facts }, ..intro() },
                vec![],
                vec![],
            );
            assert_eq!(hello_from_proto(h).unwrap_err().field, "hello.facts.install_root", "{root:?}");
        }
        // A Hello without facts is a host with no facts.
        let bare = pb::Hello { agent_id: "h".into(), ..Default::default() };
        assert_eq!(hello_from_proto(bare).unwrap().agent.facts, HostFacts::default());
    }

    #[test]
    fn agent_info_carries_the_intro() {
        let info = agent_info(intro(), true, UnixMillis(42));
        assert_eq!(info.agent_id, "web-1");
        assert!(info.connected);
        assert_eq!(info.last_seen_unix_ms, 42);
        assert_eq!(info.facts.unwrap().custom.get("dc").map(String::as_str), Some("eu"));
    }
}

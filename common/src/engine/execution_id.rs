//! Execution ids: which rollout, host entry, step (or rollback, leader-check
//! or switchover step) and attempt one execution is.
//!
//! The text form `rollout/KEY/STEP/attempt` (`STEP` is `N`, `rbN`, `lcN` or
//! `swN`) is what agents store and echo back and what the event log holds, so
//! it never changes; code reads the parts through this type instead of
//! splitting the text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Unique id of one execution of one step on one host. Never reused: attempts
/// are counted per host entry and step, from 1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutionId {
    rollout: String,
    entry: String,
    part: ExecutionPart,
    attempt: u32,
}

/// What an execution runs, with its index in the host entry's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecutionPart {
    /// Step `N` of the host's plan (`N`).
    Step(usize),
    /// Step `N` of the host's rollback list (`rbN`).
    Rollback(usize),
    /// The leader check asked before step `N` (`lcN`).
    LeaderCheck(usize),
    /// Switchover step `N` (`swN`).
    Switchover(usize),
}

/// Why a text is not an execution id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an execution id (rollout/host/step/attempt): {text:?}: {why}")]
pub struct BadExecutionId {
    text: String,
    why: &'static str,
}

impl ExecutionId {
    /// The id of attempt `attempt` of `part` of host entry `entry`
    /// ([`crate::model::HostPlan::key`]) in rollout `rollout`.
    pub fn new(rollout: &str, entry: &str, part: ExecutionPart, attempt: u32) -> ExecutionId {
        ExecutionId { rollout: rollout.to_string(), entry: entry.to_string(), part, attempt }
    }

    /// The rollout that issued it.
    pub fn rollout(&self) -> &str {
        &self.rollout
    }

    /// The host entry's key: the host id, or `host@group` for a hook entry.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    pub fn part(&self) -> ExecutionPart {
        self.part
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for ExecutionPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecutionPart::Step(n) => write!(f, "{n}"),
            ExecutionPart::Rollback(n) => write!(f, "rb{n}"),
            ExecutionPart::LeaderCheck(n) => write!(f, "lc{n}"),
            ExecutionPart::Switchover(n) => write!(f, "sw{n}"),
        }
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.rollout, self.entry, self.part, self.attempt)
    }
}

impl FromStr for ExecutionPart {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<ExecutionPart, &'static str> {
        let (make, digits): (fn(usize) -> ExecutionPart, &str) = if let Some(n) = s.strip_prefix("rb") {
            (ExecutionPart::Rollback, n)
        } else if let Some(n) = s.strip_prefix("lc") {
            (ExecutionPart::LeaderCheck, n)
        } else if let Some(n) = s.strip_prefix("sw") {
            (ExecutionPart::Switchover, n)
        } else {
            (ExecutionPart::Step, s)
        };
        // `usize::from_str` takes a leading `+`, which the text form never has.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the step part is not N, rbN, lcN or swN");
        }
        digits.parse().map(make).map_err(|_| "the step index is too large")
    }
}

impl FromStr for ExecutionId {
    type Err = BadExecutionId;

    fn from_str(text: &str) -> Result<ExecutionId, BadExecutionId> {
        let bad = |why| BadExecutionId { text: text.chars().take(200).collect(), why };
        let parts: Vec<&str> = text.split('/').collect();
        let [rollout, entry, part, attempt] = parts[..] else {
            return Err(bad("it does not have four parts"));
        };
        if rollout.is_empty() || entry.is_empty() {
            return Err(bad("the rollout or host part is empty"));
        }
        let part = part.parse().map_err(bad)?;
        let attempt = match attempt.parse::<u32>() {
            Ok(n) if n >= 1 && attempt.bytes().all(|b| b.is_ascii_digit()) => n,
            Ok(_) | Err(_) => return Err(bad("the attempt is not a number from 1")),
        };
        Ok(ExecutionId::new(rollout, entry, part, attempt))
    }
}

// Tests and logs compare ids with their text form.
impl PartialEq<str> for ExecutionId {
    fn eq(&self, other: &str) -> bool {
        other.parse::<ExecutionId>().is_ok_and(|o| o == *self)
    }
}

impl PartialEq<&str> for ExecutionId {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for ExecutionId {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

// Stored and sent as its text form, as before the type existed.
impl Serialize for ExecutionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExecutionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ExecutionId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_round_trips_through_its_text_and_json() {
        for part in [
            ExecutionPart::Step(0),
            ExecutionPart::Step(12),
            ExecutionPart::Rollback(3),
            ExecutionPart::LeaderCheck(1),
            ExecutionPart::Switchover(0),
        ] {
            let id = ExecutionId::new("r-1", "web-1@hooks", part, 2);
            let text = id.to_string();
            assert_eq!(text.parse::<ExecutionId>().unwrap(), id, "{text}");
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ExecutionId>(&json).unwrap(), id);
        }
        assert_eq!(ExecutionId::new("r", "h", ExecutionPart::Rollback(4), 1).to_string(), "r/h/rb4/1");
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        for (text, why) in [
            ("r/h/1", "four parts"),
            ("r/h/1/1/x", "four parts"),
            ("/h/1/1", "empty"),
            ("r//1/1", "empty"),
            ("r/h/xx1/1", "N, rbN"),
            ("r/h/rb/1", "N, rbN"),
            ("r/h/+1/1", "N, rbN"),
            ("r/h/1/0", "attempt"),
            ("r/h/1/+2", "attempt"),
            ("r/h/99999999999999999999999/1", "too large"),
        ] {
            let err = text.parse::<ExecutionId>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(serde_json::from_str::<ExecutionId>("\"nope\"").is_err());
    }
}

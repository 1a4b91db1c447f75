//! The audit trail's vocabulary: what an operator did (or tried), by whom,
//! from where, and how it ended. The coordinator records these
//! (`coordinator::audit`); `convoy audit` lists them.

use serde::{Deserialize, Serialize};

use crate::model::UnixMillis;

/// What an operator did or tried to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// Submitted a plan (`convoy apply`).
    Submit,
    /// Paused a rollout.
    Pause,
    /// Resumed a rollout.
    Resume,
    /// Aborted a rollout.
    Abort,
    /// Approved a rollout waiting after its canaries.
    Approve,
    /// Rolled a rollout back.
    Rollback,
    /// Loaded an artifact into the coordinator's artifact store.
    ArtifactAdd,
    /// Created a join token for agents.
    JoinTokenCreate,
    /// Revoked an agent's certificate.
    AgentRevoke,
    /// Held a host out of rollouts.
    Hold,
    /// Released a hold.
    Unhold,
    /// Created an operator token (`convoy-coordinator token create`).
    TokenCreate,
    /// Revoked an operator token (`convoy-coordinator token revoke`).
    TokenRevoke,
    /// Overrode a maintenance window.
    WindowOverride,
    /// A call refused before it could be read (no valid token): what it
    /// asked for is not known.
    Call,
}

impl AuditAction {
    /// Every action, for parsing and docs.
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::Submit,
        AuditAction::Pause,
        AuditAction::Resume,
        AuditAction::Abort,
        AuditAction::Approve,
        AuditAction::Rollback,
        AuditAction::ArtifactAdd,
        AuditAction::JoinTokenCreate,
        AuditAction::AgentRevoke,
        AuditAction::Hold,
        AuditAction::Unhold,
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::WindowOverride,
        AuditAction::Call,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Submit => "submit",
            AuditAction::Pause => "pause",
            AuditAction::Resume => "resume",
            AuditAction::Abort => "abort",
            AuditAction::Approve => "approve",
            AuditAction::Rollback => "rollback",
            AuditAction::ArtifactAdd => "artifact-add",
            AuditAction::JoinTokenCreate => "join-token-create",
            AuditAction::AgentRevoke => "agent-revoke",
            AuditAction::Hold => "hold",
            AuditAction::Unhold => "unhold",
            AuditAction::TokenCreate => "token-create",
            AuditAction::TokenRevoke => "token-revoke",
            AuditAction::WindowOverride => "window-override",
            AuditAction::Call => "call",
        }
    }

    /// The action of an operator command on a rollout.
    pub fn of_command(c: crate::engine::OperatorCommand) -> AuditAction {
        use crate::engine::OperatorCommand;
        match c {
            OperatorCommand::Pause => AuditAction::Pause,
            OperatorCommand::Resume => AuditAction::Resume,
            OperatorCommand::Abort => AuditAction::Abort,
            OperatorCommand::Approve => AuditAction::Approve,
            OperatorCommand::Rollback => AuditAction::Rollback,
            OperatorCommand::IgnoreWindows => AuditAction::WindowOverride,
        }
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<AuditAction, String> {
        AuditAction::ALL.iter().copied().find(|a| a.as_str() == s).ok_or_else(|| format!("unknown audit action '{s}'"))
    }
}

/// How an audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It did what was asked.
    Ok,
    /// The caller was not allowed: no valid token, or a role too low.
    Refused,
    /// It was allowed but failed (unknown rollout, bad plan, conflict, ...).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }
}

impl std::str::FromStr for AuditOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<AuditOutcome, String> {
        match s {
            "ok" => Ok(AuditOutcome::Ok),
            "refused" => Ok(AuditOutcome::Refused),
            "failed" => Ok(AuditOutcome::Failed),
            other => Err(format!("unknown audit outcome '{other}'")),
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: UnixMillis,
    /// The operator token's name as the coordinator authenticated it
    /// (empty when the call had no valid token).
    pub who: String,
    /// The token's role (`viewer`, `operator`; empty when unauthenticated).
    pub role: String,
    /// The caller's address.
    pub peer: String,
    pub action: AuditAction,
    /// What it acted on: a rollout id, a host id, `NAME@VERSION`, ...
    pub target: String,
    pub outcome: AuditOutcome,
    /// Why it was refused or failed, or what it did.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_outcomes_parse_back() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(*a));
        }
        for o in [AuditOutcome::Ok, AuditOutcome::Refused, AuditOutcome::Failed] {
            assert_eq!(o.as_str().parse::<AuditOutcome>(), Ok(o));
        }
        assert!("nope".parse::<AuditAction>().is_err());
    }
}

/// The start of an audit listing (`convoy audit --since`, the dashboard's
/// `?since=`): a duration back from `now` (`30m`, `2h`, `7d`, `1h30m`) or a
/// UTC time (`2026-11-28`, `2026-11-28 09:15`, `2026-11-28T09:15:00Z`). At
/// most 10 years back. The error says what was expected (the caller names
/// the flag or field).
pub fn parse_since(text: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    const MAX_BACK: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);
    let t = text.trim();
    let bad = || {
        format!(
            "'{t}': expected a duration back from now (30m, 2h, 7d) or a UTC time \
             (2026-11-28, 2026-11-28 09:15 or 2026-11-28T09:15:00Z)"
        )
    };
    let back = |d: std::time::Duration| -> Result<UnixMillis, String> {
        if d > MAX_BACK {
            return Err(format!("'{t}': at most 3650 days back"));
        }
        Ok(UnixMillis(now.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))))
    };
    if let Some(days) = t.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        return back(std::time::Duration::from_secs(days.saturating_mul(86_400)));
    }
    if t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.contains('-') {
        let millis = |ms: i64| Ok(UnixMillis(u64::try_from(ms).unwrap_or(0)));
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
            return millis(at.timestamp_millis());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return millis(d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_millis());
        }
        for f in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
            if let Ok(at) = chrono::NaiveDateTime::parse_from_str(t, f) {
                return millis(at.and_utc().timestamp_millis());
            }
        }
        return Err(bad());
    }
    crate::plan::parse_duration(t).map_err(|_| bad()).and_then(back)
}

#[cfg(test)]
mod since_tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_utc_times() {
        // 2026-11-28 12:34:56 UTC.
        let now = UnixMillis(1_795_869_296_000);
        assert_eq!(parse_since("2h", now), Ok(UnixMillis(now.0 - 7_200_000)));
        assert_eq!(parse_since("1h30m", now), Ok(UnixMillis(now.0 - 5_400_000)));
        assert_eq!(parse_since("7d", now), Ok(UnixMillis(now.0 - 7 * 86_400_000)));
        assert_eq!(parse_since("2026-11-28", now), Ok(UnixMillis(1_795_824_000_000)));
        assert_eq!(parse_since("2026-11-28 12:34", now), Ok(UnixMillis(1_795_869_240_000)));
        assert_eq!(parse_since("2026-11-28T12:34:56Z", now), Ok(now));
        assert_eq!(parse_since("1970-01-02", UnixMillis(0)), Ok(UnixMillis(86_400_000)));
        assert!(parse_since("soon", now).is_err());
        assert!(parse_since("2026-13-01", now).is_err());
        assert!(parse_since("4000d", now).unwrap_err().contains("3650"));
    }
}

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

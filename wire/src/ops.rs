//! Holds on hosts and audit entries on the wire (`OpsService`).

use convoy_common::audit::AuditEntry;
use convoy_common::hold::Hold;
use convoy_common::model::UnixMillis;
use convoy_proto::v1 as pb;

use crate::error::WireError;

pub fn held_host(h: &Hold) -> pb::HeldHost {
    pb::HeldHost { host_id: h.host.clone(), reason: h.reason.clone(), by: h.by.clone(), since_unix_ms: h.since.0 }
}

pub fn hold_from_proto(h: pb::HeldHost) -> Hold {
    Hold { host: h.host_id, reason: h.reason, by: h.by, since: UnixMillis(h.since_unix_ms) }
}

pub fn audit_entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        unix_ms: e.at.0,
        who: e.who.clone(),
        role: e.role.clone(),
        peer: e.peer.clone(),
        action: e.action.as_str().to_string(),
        target: e.target.clone(),
        outcome: e.outcome.as_str().to_string(),
        detail: e.detail.clone(),
    }
}

/// An entry as the domain knows it; an action or outcome this build does
/// not know (a newer coordinator) is refused with its field.
pub fn audit_entry_from_proto(e: pb::AuditEntry) -> Result<AuditEntry, WireError> {
    Ok(AuditEntry {
        at: UnixMillis(e.unix_ms),
        action: e.action.parse().map_err(|m: String| WireError::invalid("action", m))?,
        outcome: e.outcome.parse().map_err(|m: String| WireError::invalid("outcome", m))?,
        who: e.who,
        role: e.role,
        peer: e.peer,
        target: e.target,
        detail: e.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::audit::{AuditAction, AuditOutcome};

    #[test]
    fn holds_and_entries_round_trip() {
        let h = Hold { host: "db-1".into(), reason: "disk".into(), by: "alice".into(), since: UnixMillis(3) };
        assert_eq!(hold_from_proto(held_host(&h)), h);
        let e = AuditEntry {
            at: UnixMillis(9),
            who: "bob".into(),
            role: "viewer".into(),
            peer: "127.0.0.1:5".into(),
            action: AuditAction::Pause,
            target: "r1".into(),
            outcome: AuditOutcome::Refused,
            detail: "needs the operator role".into(),
        };
        assert_eq!(audit_entry_from_proto(audit_entry(&e)).unwrap(), e);
        let bad = pb::AuditEntry { action: "teleport".into(), ..audit_entry(&e) };
        assert_eq!(audit_entry_from_proto(bad).unwrap_err().field, "action");
    }
}

//! Operator commands on the wire: a `ControlRequest`'s action as the
//! engine's [`OperatorCommand`].

use convoy_common::engine::OperatorCommand;
use convoy_proto::v1 as pb;

use crate::error::WireError;

/// The command a `ControlRequest.action` asks for; an unset or unknown
/// action is refused, never guessed.
pub fn command_from_proto(action: i32) -> Result<OperatorCommand, WireError> {
    match pb::ControlAction::try_from(action) {
        Ok(pb::ControlAction::Pause) => Ok(OperatorCommand::Pause),
        Ok(pb::ControlAction::Resume) => Ok(OperatorCommand::Resume),
        Ok(pb::ControlAction::Abort) => Ok(OperatorCommand::Abort),
        Ok(pb::ControlAction::Approve) => Ok(OperatorCommand::Approve),
        Ok(pb::ControlAction::Rollback) => Ok(OperatorCommand::Rollback),
        Ok(pb::ControlAction::IgnoreWindows) => Ok(OperatorCommand::IgnoreWindows),
        Ok(pb::ControlAction::Unspecified) | Err(_) => {
            Err(WireError::invalid("action", format!("unknown control action {action}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_are_refused() {
        assert_eq!(command_from_proto(pb::ControlAction::Rollback as i32), Ok(OperatorCommand::Rollback));
        for bad in [pb::ControlAction::Unspecified as i32, 99] {
            let err = command_from_proto(bad).unwrap_err();
            assert_eq!(err.field, "action");
            assert!(err.to_string().contains("unknown control action"), "{err}");
        }
    }
}

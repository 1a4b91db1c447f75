//! A host held out of rollouts by an operator (`convoy agents hold HOST
//! --reason ...`): plans expand without it, and say so with the reason.

use serde::{Deserialize, Serialize};

use crate::model::{HostId, UnixMillis};

/// The longest reason a hold may carry, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// One hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub host: HostId,
    pub reason: String,
    /// The operator token that placed it.
    pub by: String,
    pub since: UnixMillis,
}

/// A reason an operator gave, checked: not blank, at most
/// [`MAX_REASON_CHARS`], one line.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let r = reason.trim();
    if r.is_empty() {
        return Err("a hold needs a reason (--reason)".into());
    }
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(format!("the reason is longer than {MAX_REASON_CHARS} characters"));
    }
    if r.chars().any(char::is_control) {
        return Err("the reason must be one line of text".into());
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_single_lines() {
        assert_eq!(check_reason("  disk swap  ").unwrap(), "disk swap");
        assert!(check_reason(" ").is_err());
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"x".repeat(501)).is_err());
    }
}

//! `run_as:` of a command (exec steps, exec checks, leader checks, metric
//! commands, backups and `rollback:` steps): who the agent runs it as.
//!
//! Written as a user (`run_as: postgres`, or a numeric id `run_as: 999`) or
//! as a mapping with a group (`run_as: { user: postgres, group: ssl-cert }`).
//! Names may be templates (`{{vars.db_user}}`, `{{label.owner}}`); a name
//! without one is checked here ([`crate::run_as::parse`]), a templated one
//! once rendered for each host (`template.rs`). Whether the user exists is
//! the agent's to say, on the host.

use serde_norway::Value;

use crate::model::RunAs;

use super::errors::{FieldPath, PlanError, Src};

/// The `run_as` written at `p` (`None` when absent).
pub(super) fn run_as(src: Src<'_>, raw: Option<&Value>, p: &FieldPath) -> Result<Option<RunAs>, PlanError> {
    let Some(raw) = raw else { return Ok(None) };
    let shape = || src.err(p, "expected a user (`run_as: postgres`) or `{ user: NAME, group: NAME }`");
    let out = match raw {
        Value::Mapping(m) => {
            let (mut user, mut group) = (None, None);
            for (k, v) in m {
                let slot = match k.as_str() {
                    Some("user") => &mut user,
                    Some("group") => &mut group,
                    Some(other) => {
                        return Err(src.err(p, format!("unknown field `{other}`, expected `user` or `group`")));
                    }
                    None => return Err(shape()),
                };
                let field = p.key(k.as_str().unwrap_or_default());
                *slot = Some(scalar(v).ok_or_else(|| src.err(&field, "expected a name or a numeric id"))?);
            }
            RunAs { user: user.ok_or_else(|| src.err(p, "missing required field 'user'"))?, group }
        }
        other => RunAs { user: scalar(other).ok_or_else(shape)?, group: None },
    };
    let user_path = if matches!(raw, Value::Mapping(_)) { p.key("user") } else { p.clone() };
    check_name(src, "user", &out.user, &user_path)?;
    if let Some(g) = &out.group {
        check_name(src, "group", g, &p.key("group"))?;
    }
    Ok(Some(out))
}

/// A name or id as text; `None` for anything but a string or an integer.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A name as written: bounded, and checked now unless it is a template.
fn check_name(src: Src<'_>, what: &str, name: &str, p: &FieldPath) -> Result<(), PlanError> {
    if name.len() > MAX_TEMPLATED {
        return Err(src.err(p, format!("{what} name is longer than {MAX_TEMPLATED} bytes")));
    }
    if !name.contains("{{") {
        crate::run_as::parse(what, name).map_err(|m| src.err(p, m))?;
    }
    Ok(())
}

/// The longest `run_as` name as written (templates included); the rendered
/// name is held to [`crate::run_as::MAX_NAME`].
const MAX_TEMPLATED: usize = 256;

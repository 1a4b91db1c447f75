//! The names `run_as:` accepts for a user or a group.
//!
//! A name is what `useradd` accepts on common distributions: 1 to
//! [`MAX_NAME`] ASCII letters, digits, `_`, `.` or `-`, not starting with
//! `-` (it would read as an option) and not `.` or `..`. A name made only of
//! digits is a numeric id (`65534`), at most `u32::MAX - 1` (`-1` means
//! "unchanged" to the kernel). The plan checks names as written (after
//! rendering templates), the wire checks them again, and the agent looks them
//! up in the host's `/etc/passwd` and `/etc/group`.

/// The longest user or group name, in bytes (Linux `useradd`'s limit).
pub const MAX_NAME: usize = 32;

/// A user or group as written: a name, or a numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// Looked up by name.
    Name(&'a str),
    /// Taken as it is (a user id need not have a `/etc/passwd` entry to be
    /// refused; see the agent's lookup for what it requires).
    Id(u32),
}

/// `what` (`user` or `group`) `name` read, or why it is not acceptable (one
/// line, naming it).
pub fn parse<'a>(what: &str, name: &'a str) -> Result<Principal<'a>, String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!("{what} name {name:?} is longer than {MAX_NAME} bytes"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return match name.parse::<u32>() {
            Ok(id) if id != u32::MAX => Ok(Principal::Id(id)),
            _ => Err(format!("{what} id {name} is out of range (at most {})", u32::MAX - 1)),
        };
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("invalid {what} name {name:?}: {bad:?} is not allowed (use A-Z a-z 0-9 _ . -)"));
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return Err(format!("invalid {what} name {name:?}: must not start with '-' nor be '.' or '..'"));
    }
    Ok(Principal::Name(name))
}

/// Both names of a `run_as`, checked with [`parse`].
pub fn check(run_as: &crate::model::RunAs) -> Result<(), String> {
    parse("user", &run_as.user)?;
    if let Some(g) = &run_as.group {
        parse("group", g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(parse("user", "postgres"), Ok(Principal::Name("postgres")));
        assert_eq!(parse("user", "ssl-cert"), Ok(Principal::Name("ssl-cert")));
        assert_eq!(parse("user", "svc_app.1"), Ok(Principal::Name("svc_app.1")));
        assert_eq!(parse("user", "65534"), Ok(Principal::Id(65534)));
        assert_eq!(parse("user", "0"), Ok(Principal::Id(0)));
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |n: &str| parse("user", n).unwrap_err();
        assert!(err("").contains("must not be empty"));
        assert!(err(&"a".repeat(33)).contains("longer than 32"));
        assert!(err("-rf").contains("must not start with '-'"));
        assert!(err("..").contains("'..'"));
        assert!(err("root postgres").contains("' ' is not allowed"), "{}", err("root postgres"));
        assert!(err("a/b").contains("'/' is not allowed"));
        assert!(err("4294967295").contains("out of range"));
        assert!(err("99999999999").contains("out of range"));
        assert!(parse("group", "x;y").unwrap_err().starts_with("invalid group name"));
    }
}

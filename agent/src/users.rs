//! Who a `run_as` names: a user and group looked up in the host's
//! `/etc/passwd` and `/etc/group`, read by a small parser here (no NSS:
//! users that exist only in LDAP or SSSD are not found by name; give their
//! numeric id and a group instead).
//!
//! Rules:
//! - The user is a name (its `/etc/passwd` entry) or a numeric id (its entry
//!   when it has one; without one, a `group` is required, `HOME` is `/` and
//!   `USER` is the number).
//! - The group is the `run_as` group (a name from `/etc/group` or a numeric
//!   id) when given, else the user's primary group.
//! - Supplementary groups are what `initgroups` would give: the user's
//!   primary group and every `/etc/group` entry listing the user as a member,
//!   plus the group run with. At most [`MAX_GROUPS`].
//! - Lines that are blank, comments, NIS markers (`+`/`-`) or malformed are
//!   skipped; each file is read up to [`MAX_FILE_BYTES`].

use std::io::Read;
use std::path::Path;

use convoy_common::model::RunAs;
use convoy_common::run_as::{Principal, parse};

/// The most bytes of `/etc/passwd` or `/etc/group` read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The most supplementary groups given to a command (Linux's `NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Who a command runs as, resolved on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (its id as text when it has no entry).
    pub user: String,
    pub uid: u32,
    /// The group it runs with.
    pub gid: u32,
    /// Supplementary groups, sorted, without duplicates.
    pub groups: Vec<u32>,
    pub home: String,
    /// The login shell, when the entry names one.
    pub shell: Option<String>,
}

/// The entries of an `/etc/passwd` text.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            let [name, _pw, uid, gid, _gecos, home, shell] = f[..] else { return None };
            Some(PasswdEntry {
                name: name.to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: home.to_string(),
                shell: shell.to_string(),
            })
        })
        .collect()
}

/// The entries of an `/etc/group` text.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            let [name, _pw, gid, members] = f[..] else { return None };
            Some(GroupEntry {
                name: name.to_string(),
                gid: gid.parse().ok()?,
                members: members.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The `:`-separated fields of each line that can be an entry.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !(l.is_empty() || l.starts_with('#') || l.starts_with('+') || l.starts_with('-')))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| !f[0].is_empty())
}

/// `run_as` resolved against the texts of `/etc/passwd` and `/etc/group`;
/// the error says what is missing (the caller adds the host).
pub fn resolve(run_as: &RunAs, passwd: &str, group: &str) -> Result<Identity, String> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let entry = match parse("user", &run_as.user)? {
        Principal::Name(n) => {
            Some(users.iter().find(|u| u.name == n).ok_or_else(|| format!("unknown user '{n}' (not in /etc/passwd)"))?)
        }
        Principal::Id(id) => users.iter().find(|u| u.uid == id),
    };
    let gid = match run_as.group.as_deref().map(|g| parse("group", g)).transpose()? {
        Some(Principal::Name(n)) => {
            groups.iter().find(|g| g.name == n).ok_or_else(|| format!("unknown group '{n}' (not in /etc/group)"))?.gid
        }
        Some(Principal::Id(id)) => id,
        None => match entry {
            Some(e) => e.gid,
            None => {
                return Err(format!(
                    "user id {} has no /etc/passwd entry: give its group too (run_as: {{ user: {}, group: GROUP }})",
                    run_as.user, run_as.user
                ));
            }
        },
    };
    let mut supplementary = vec![gid];
    if let Some(e) = entry {
        supplementary.push(e.gid);
        supplementary.extend(groups.iter().filter(|g| g.members.contains(&e.name)).map(|g| g.gid));
    }
    supplementary.sort_unstable();
    supplementary.dedup();
    if supplementary.len() > MAX_GROUPS {
        return Err(format!("user '{}' is in {} groups, more than {MAX_GROUPS}", run_as.user, supplementary.len()));
    }
    Ok(match entry {
        Some(e) => Identity {
            user: e.name.clone(),
            uid: e.uid,
            gid,
            groups: supplementary,
            home: if e.home.is_empty() { "/".to_string() } else { e.home.clone() },
            shell: Some(e.shell.clone()).filter(|s| !s.is_empty()),
        },
        None => Identity {
            user: run_as.user.clone(),
            uid: run_as.user.parse().map_err(|_| format!("user id {} is out of range", run_as.user))?,
            gid,
            groups: supplementary,
            home: "/".to_string(),
            shell: None,
        },
    })
}

/// [`resolve`] against this host's `/etc/passwd` and `/etc/group`.
pub fn resolve_on_host(run_as: &RunAs) -> Result<Identity, String> {
    let passwd = read_bounded(Path::new("/etc/passwd"))?;
    let group = read_bounded(Path::new("/etc/group"))?;
    resolve(run_as, &passwd, &group)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# local users
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin

postgres:x:105:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
broken:x:notanumber:1:::
short:x:7
+nisuser::::::
nohome:x:300:300:::
";

    const GROUP: &str = "\
root:x:0:
ssl-cert:x:109:postgres,www-data
postgres:x:110:
www-data:x:33:
audit:x:200: postgres , other
nogroup:x:65534:
";

    fn ra(user: &str, group: Option<&str>) -> RunAs {
        RunAs { user: user.into(), group: group.map(str::to_string) }
    }

    #[test]
    fn passwd_skips_comments_blank_malformed_and_nis_lines() {
        let users = parse_passwd(PASSWD);
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "nobody", "postgres", "nohome"]);
        assert_eq!(
            users[2],
            PasswdEntry {
                name: "postgres".into(),
                uid: 105,
                gid: 110,
                home: "/var/lib/postgresql".into(),
                shell: "/bin/bash".into()
            }
        );
    }

    #[test]
    fn group_members_are_trimmed() {
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 6);
        assert_eq!(groups[1].members, ["postgres", "www-data"]);
        assert_eq!(groups[4].members, ["postgres", "other"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn a_user_gets_its_primary_and_member_groups() {
        let id = resolve(&ra("postgres", None), PASSWD, GROUP).unwrap();
        assert_eq!(
            id,
            Identity {
                user: "postgres".into(),
                uid: 105,
                gid: 110,
                groups: vec![109, 110, 200],
                home: "/var/lib/postgresql".into(),
                shell: Some("/bin/bash".into()),
            }
        );
    }

    #[test]
    fn a_group_replaces_the_primary_group_and_keeps_the_others() {
        let id = resolve(&ra("postgres", Some("ssl-cert")), PASSWD, GROUP).unwrap();
        assert_eq!((id.gid, id.groups), (109, vec![109, 110, 200]));
        let id = resolve(&ra("nobody", Some("33")), PASSWD, GROUP).unwrap();
        assert_eq!((id.gid, id.groups), (33, vec![33, 65534]));
    }

    #[test]
    fn numeric_ids() {
        let id = resolve(&ra("65534", None), PASSWD, GROUP).unwrap();
        assert_eq!((id.user.as_str(), id.uid, id.gid), ("nobody", 65534, 65534));
        let id = resolve(&ra("4242", Some("4243")), PASSWD, GROUP).unwrap();
        assert_eq!((id.user.as_str(), id.uid, id.gid, id.home.as_str()), ("4242", 4242, 4243, "/"));
        assert_eq!(id.groups, [4243]);
        let err = resolve(&ra("4242", None), PASSWD, GROUP).unwrap_err();
        assert!(err.contains("user id 4242 has no /etc/passwd entry"), "{err}");
    }

    #[test]
    fn empty_home_is_root_and_empty_shell_is_none() {
        let id = resolve(&ra("nohome", None), PASSWD, GROUP).unwrap();
        assert_eq!((id.home.as_str(), id.shell), ("/", None));
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        assert_eq!(
            resolve(&ra("pgsql", None), PASSWD, GROUP).unwrap_err(),
            "unknown user 'pgsql' (not in /etc/passwd)"
        );
        assert_eq!(
            resolve(&ra("postgres", Some("wheel")), PASSWD, GROUP).unwrap_err(),
            "unknown group 'wheel' (not in /etc/group)"
        );
        assert!(resolve(&ra("bad name", None), PASSWD, GROUP).unwrap_err().contains("invalid user name"));
    }
}

//! The store's format version: a store is stamped with the format that wrote
//! it; opening one upgrades an older format in one place ([`upgrade_from`])
//! and refuses a newer one.
//!
//! **What one release writes, the next one reads** (self-upgrade depends on
//! it: a new coordinator resumes the rollouts the old one left). A change to
//! any stored shape — a tree, a key, a record of [`super::records`], or the
//! serde form of a domain type a record embeds (`RolloutSpec`, `Event` and
//! what they hold) — must:
//! 1. bump [`FORMAT_VERSION`] and add the new record types beside the old
//!    ones;
//! 2. add the arm of [`upgrade_from`] that rewrites a store of the previous
//!    format into the new one (idempotent: a crash before the new stamp runs
//!    it again on the next open);
//! 3. keep every checked-in fixture store opening and resuming
//!    (`tests/tests/store_fixture.rs`), and check in one written by the new
//!    format.
//!
//! No `#[serde(default)]` patches on stored types instead: a default hides
//! the change from the version and from the migration.
//!
//! The stamp is the `meta` tree's `format_version`, a big-endian u32. A
//! store with no stamp but with data was written by a build from before
//! format versions, which wrote format 1; a store with nothing in it is
//! stamped with the current format.

use std::path::Path;

use crate::error::CoordinatorError;

/// The format this build writes.
pub const FORMAT_VERSION: u32 = 1;

const META: &str = "meta";
const VERSION_KEY: &[u8] = b"format_version";

fn serr(op: &'static str) -> impl FnOnce(sled::Error) -> CoordinatorError {
    move |e| CoordinatorError::Store { op, message: e.to_string() }
}

/// Check the format of the store `db` (at `path`), upgrade it to
/// [`FORMAT_VERSION`] and stamp it; returns the format it was found in.
/// A newer format is refused before anything is written.
pub(super) fn open(db: &sled::Db, path: &Path) -> Result<u32, CoordinatorError> {
    let found = found_version(db)?;
    if found > FORMAT_VERSION {
        return Err(CoordinatorError::StoreTooNew { path: path.to_path_buf(), found, known: FORMAT_VERSION });
    }
    for from in found..FORMAT_VERSION {
        tracing::info!(store = %path.display(), from, to = from + 1, "upgrading the store's format");
        upgrade_from(db, from)?;
        stamp(db, from + 1)?;
    }
    if found == FORMAT_VERSION {
        // A store from before format versions (or a new one) gets its stamp.
        stamp(db, FORMAT_VERSION)?;
    }
    Ok(found)
}

/// The format the store is in, stamped or not.
pub(super) fn found_version(db: &sled::Db) -> Result<u32, CoordinatorError> {
    let meta = db.open_tree(META).map_err(serr("open meta"))?;
    match meta.get(VERSION_KEY).map_err(serr("read format version"))? {
        Some(v) => match <[u8; 4]>::try_from(v.as_ref()) {
            Ok(b) if u32::from_be_bytes(b) >= 1 => Ok(u32::from_be_bytes(b)),
            _ => Err(CoordinatorError::Store {
                op: "read format version",
                message: format!("not a format version: {:?}", v.as_ref()),
            }),
        },
        None if has_data(db)? => Ok(1),
        None => Ok(FORMAT_VERSION),
    }
}

fn stamp(db: &sled::Db, version: u32) -> Result<(), CoordinatorError> {
    let meta = db.open_tree(META).map_err(serr("open meta"))?;
    if meta.get(VERSION_KEY).map_err(serr("read format version"))?.as_deref() == Some(&version.to_be_bytes()[..]) {
        return Ok(());
    }
    meta.insert(VERSION_KEY, &version.to_be_bytes()).map_err(serr("write format version"))?;
    db.flush().map_err(serr("flush format version"))?;
    Ok(())
}

/// Whether any tree but `meta` holds a value.
fn has_data(db: &sled::Db) -> Result<bool, CoordinatorError> {
    for name in db.tree_names() {
        if name == META.as_bytes() {
            continue;
        }
        if !db.open_tree(&name).map_err(serr("open tree"))?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rewrite a store of format `from` into format `from + 1`: the one place
/// where older stored data is upgraded.
fn upgrade_from(_db: &sled::Db, from: u32) -> Result<(), CoordinatorError> {
    // Format 1 is the first. Format 2 adds its arm here, e.g.
    // `1 => v2::from_v1(db)` (and `_db` becomes `db`), reading the `…V1` records and writing `…V2`.
    #[allow(clippy::match_single_binding, reason = "one arm per format after the first")]
    match from {
        unknown => Err(CoordinatorError::Store {
            op: "upgrade format",
            message: format!("no upgrade from store format {unknown}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir).open().unwrap()
    }

    #[test]
    fn a_new_store_is_stamped_with_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        assert_eq!(open(&db, dir.path()).unwrap(), FORMAT_VERSION);
        let meta = db.open_tree(META).unwrap();
        assert_eq!(meta.get(VERSION_KEY).unwrap().as_deref(), Some(&FORMAT_VERSION.to_be_bytes()[..]));
    }

    #[test]
    fn a_store_with_data_and_no_stamp_is_format_1_and_gets_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        db.open_tree("rollouts").unwrap().insert(b"r-1", &b"{}"[..]).unwrap();
        assert_eq!(found_version(&db).unwrap(), 1);
        assert_eq!(open(&db, dir.path()).unwrap(), 1);
        assert_eq!(
            db.open_tree(META).unwrap().get(VERSION_KEY).unwrap().as_deref(),
            Some(&FORMAT_VERSION.to_be_bytes()[..])
        );
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let newer = (FORMAT_VERSION + 1).to_be_bytes();
        db.open_tree(META).unwrap().insert(VERSION_KEY, &newer).unwrap();
        let err = open(&db, dir.path()).unwrap_err();
        assert!(
            matches!(err, CoordinatorError::StoreTooNew { found, known, .. } if found == FORMAT_VERSION + 1 && known == FORMAT_VERSION),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "store format {} is newer than this coordinator understands ({FORMAT_VERSION}); upgrade the coordinator",
                FORMAT_VERSION + 1
            )),
            "{text}"
        );
        assert_eq!(db.open_tree(META).unwrap().get(VERSION_KEY).unwrap().as_deref(), Some(&newer[..]));
    }

    #[test]
    fn a_garbled_stamp_is_a_store_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        db.open_tree(META).unwrap().insert(VERSION_KEY, &b"x"[..]).unwrap();
        let err = open(&db, dir.path()).unwrap_err();
        assert!(matches!(err, CoordinatorError::Store { op: "read format version", .. }), "{err:?}");
    }
}

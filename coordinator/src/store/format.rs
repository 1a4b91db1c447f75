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
//! Adding a tree that no older build reads, and that an older store simply
//! lacks (read as empty), is not such a change: it needs no bump (see
//! [`super::records`] for the trees added that way).
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
pub const FORMAT_VERSION: u32 = 4;

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
fn upgrade_from(db: &sled::Db, from: u32) -> Result<(), CoordinatorError> {
    match from {
        1 => rollouts_1_to_2(db),
        2 => rollouts_2_to_3(db),
        // Format 4: the `snapshots` tree (created empty on open) and event
        // logs that may start above 0 once compacted; nothing to rewrite.
        3 => Ok(()),
        unknown => Err(CoordinatorError::Store {
            op: "upgrade format",
            message: format!("no upgrade from store format {unknown}"),
        }),
    }
}

/// Format 1 -> 2: each rollout's spec gets its groups' strategies as an
/// enum and its `rollback_of` mark. Values already in format 2 (a crash
/// before the stamp) are left as they are.
fn rollouts_1_to_2(db: &sled::Db) -> Result<(), CoordinatorError> {
    let tree = db.open_tree(super::records::ROLLOUTS).map_err(serr("open rollouts"))?;
    for item in tree.iter() {
        let (key, value) = item.map_err(serr("read rollout"))?;
        let mut record: serde_json::Value = serde_json::from_slice(&value)
            .map_err(|e| CoordinatorError::Store { op: "upgrade rollout", message: e.to_string() })?;
        if rollout_1_to_2(&mut record) {
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| CoordinatorError::Store { op: "upgrade rollout", message: e.to_string() })?;
            tree.insert(key, bytes).map_err(serr("write rollout"))?;
        }
    }
    tree.flush().map_err(serr("flush rollouts"))?;
    Ok(())
}

/// Format 2 -> 3: each rollout's spec gets its maintenance `windows`
/// (none: rollouts stored before windows existed had none).
fn rollouts_2_to_3(db: &sled::Db) -> Result<(), CoordinatorError> {
    let tree = db.open_tree(super::records::ROLLOUTS).map_err(serr("open rollouts"))?;
    for item in tree.iter() {
        let (key, value) = item.map_err(serr("read rollout"))?;
        let mut record: serde_json::Value = serde_json::from_slice(&value)
            .map_err(|e| CoordinatorError::Store { op: "upgrade rollout", message: e.to_string() })?;
        if rollout_2_to_3(&mut record) {
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| CoordinatorError::Store { op: "upgrade rollout", message: e.to_string() })?;
            tree.insert(key, bytes).map_err(serr("write rollout"))?;
        }
    }
    tree.flush().map_err(serr("flush rollouts"))?;
    Ok(())
}

/// Rewrite one format-2 rollout record; false when there was nothing to do.
fn rollout_2_to_3(record: &mut serde_json::Value) -> bool {
    let Some(spec) = record.get_mut("spec").and_then(serde_json::Value::as_object_mut) else { return false };
    if spec.contains_key("windows") {
        return false;
    }
    spec.insert("windows".into(), serde_json::Value::Null);
    true
}

/// Rewrite one format-1 rollout record; false when there was nothing to do.
fn rollout_1_to_2(record: &mut serde_json::Value) -> bool {
    use serde_json::{Value, json};
    // `convoy rollback` rollouts were told apart by their file name and an
    // empty plan source.
    let rollback_of = match (record["file"].as_str(), record["plan_source"].as_str()) {
        (Some(file), Some("")) => file.strip_prefix("rollback of ").map(str::to_string),
        _ => None,
    };
    let Some(spec) = record.get_mut("spec").and_then(Value::as_object_mut) else { return false };
    let mut changed = false;
    if !spec.contains_key("rollback_of") {
        spec.insert("rollback_of".into(), json!(rollback_of));
        changed = true;
    }
    for group in spec.get_mut("groups").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(g) = group.as_object_mut() else { continue };
        // Format 1: `strategy: { max_parallel, max_failures, soak }` and an
        // optional `cluster` beside it.
        let Some(old) = g.get("strategy").filter(|s| s.get("max_parallel").is_some()).cloned() else { continue };
        let cluster = g.remove("cluster").filter(|c| !c.is_null());
        let max_parallel = old["max_parallel"].clone();
        let strategy = match cluster {
            Some(cluster) => json!({ "cluster": { "max_parallel": max_parallel, "cluster": cluster } }),
            None => json!({ "rolling": { "window": { "stages": [max_parallel] } } }),
        };
        g.insert("strategy".into(), strategy);
        g.insert("max_failures".into(), old["max_failures"].clone());
        g.insert("soak".into(), old["soak"].clone());
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir).open().unwrap()
    }

    /// A format-1 rollback rollout with a cluster group and a rolling one
    /// reads as this build's spec after the upgrade; a second run changes
    /// nothing.
    #[test]
    fn format_1_rollouts_upgrade_to_strategy_enums_and_the_rollback_mark() {
        use convoy_common::model::{RolloutSpec, Strategy};
        let soak = serde_json::json!({ "secs": 2, "nanos": 0 });
        let group = |name: &str, cluster: serde_json::Value| {
            serde_json::json!({ "name": name, "after": [], "hosts": [0],
                "strategy": { "max_parallel": 3, "max_failures": 1, "soak": soak }, "cluster": cluster })
        };
        let clusters = serde_json::json!({ "label": "cluster", "clusters": [{ "name": "c1", "hosts": [0] }] });
        let mut record = serde_json::json!({
            "id": "r2", "file": "rollback of r1", "plan_source": "", "created": 0, "created_by": "op",
            "spec": { "plan_name": "p", "target_version": "2", "component": null,
                "groups": [group("db", clusters), group("web", serde_json::Value::Null)],
                "hosts": [], "host_lost_timeout": { "secs": 60, "nanos": 0 } }
        });
        assert!(rollout_1_to_2(&mut record));
        let before = record.clone();
        assert!(!rollout_1_to_2(&mut record), "idempotent");
        assert_eq!(record, before);
        assert!(rollout_2_to_3(&mut record));
        let spec: RolloutSpec = serde_json::from_value(record["spec"].clone()).unwrap();
        assert_eq!(spec.rollback_of.as_deref(), Some("r1"));
        let db = &spec.groups[0];
        assert!(
            matches!(&db.strategy, Strategy::Cluster { max_parallel: 3, cluster } if cluster.clusters[0].name == "c1")
        );
        assert_eq!((db.max_failures, db.soak), (1, std::time::Duration::from_secs(2)));
        assert_eq!(spec.groups[1].strategy, Strategy::rolling(3));
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

    /// A format-2 rollout reads with no windows after the upgrade; a second
    /// run changes nothing.
    #[test]
    fn format_2_rollouts_upgrade_to_no_windows() {
        let mut record = serde_json::json!({ "id": "r1", "spec": { "plan_name": "p", "groups": [] } });
        assert!(rollout_2_to_3(&mut record));
        assert_eq!(record["spec"]["windows"], serde_json::Value::Null);
        let before = record.clone();
        assert!(!rollout_2_to_3(&mut record), "idempotent");
        assert_eq!(record, before);
    }
}

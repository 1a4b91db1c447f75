//! The `archive` step: install a versioned tar.gz and switch to it atomically.
//!
//! Layout under the install root (the step's, or the driver's):
//!
//! ```text
//! <root>/<component>/releases/<version>/        unpacked release
//! <root>/<component>/releases/.<version>.sha256 sha256 of the archive it came from
//! <root>/<component>/current  -> releases/<version>   (relative symlink)
//! <root>/<component>/previous -> releases/<older>     (kept for rollback)
//! ```
//!
//! Order of work, so that a failure at any point leaves the host as it was:
//! 1. verify the archive's sha256 (mismatch: nothing is touched);
//! 2. unpack into a hidden temporary directory beside the releases, hashing
//!    the bytes again as they are read (the file cannot change underneath us);
//! 3. rename the temporary directory to `releases/<version>`;
//! 4. point `previous` at the old `current` target, then replace `current` by
//!    renaming a new symlink over it (rename is atomic: no moment without one).
//!
//! A release that already exists from the same archive (same sha256) is not
//! unpacked again, only switched to; one from a different archive is refused
//! rather than overwritten, since `current` or `previous` may point at it.
//!
//! Unpacking refuses, and fails the step on, any entry that could write
//! outside the release directory: absolute paths, `..` components, entries
//! below a symlink of the same archive, symlinks whose target is absolute or
//! climbs above the release (`..` is only allowed as a leading run, which is
//! then resolved lexically against real directories), hard links out of the
//! release, and device or FIFO entries. The temporary directory is removed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use convoy_common::model::{ArchiveRollbackSpec, ArchiveSpec};
use flate2::read::GzDecoder;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::fsutil;

/// Why an install stopped.
#[derive(Debug)]
pub(crate) enum Fail {
    Failed(String),
    TimedOut(String),
}

type Result<T> = std::result::Result<T, Fail>;

fn io_fail(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Fail {
    move |e| Fail::Failed(format!("{what}: {e}"))
}

fn check_deadline(deadline: Option<Instant>, during: &str) -> Result<()> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(Fail::TimedOut(format!("step timeout reached while {during}"))),
        _ => Ok(()),
    }
}

/// A single path component usable as a directory name.
fn check_name(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && !value.contains(['/', '\0'])
        && value.chars().all(|c| !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Fail::Failed(format!("invalid {field} {value:?}: must be a plain name (no '/', not starting with '.')")))
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    deadline: Option<Instant>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "step timeout reached"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn timed_out_or(e: io::Error, what: impl std::fmt::Display) -> Fail {
    if e.kind() == io::ErrorKind::TimedOut {
        Fail::TimedOut(format!("step timeout reached while {what}"))
    } else {
        Fail::Failed(format!("{what}: {e}"))
    }
}

/// sha256 (lower-case hex) of a file, giving up at `deadline`. Blocking.
pub(crate) fn sha256_file(path: &Path, deadline: Option<Instant>) -> Result<String> {
    let file = File::open(path).map_err(io_fail(format!("open archive {}", path.display())))?;
    let mut reader = Hashing { inner: BufReader::with_capacity(1 << 16, file), hasher: Sha256::new(), deadline };
    io::copy(&mut reader, &mut io::sink()).map_err(|e| timed_out_or(e, format!("hashing {}", path.display())))?;
    Ok(hex::encode(reader.hasher.finalize()))
}

/// Cleans an entry path: only normal components (and `.`) are allowed.
fn entry_path(path: &Path) -> std::result::Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("entry {:?} contains '..'", path)),
            Component::RootDir | Component::Prefix(_) => return Err(format!("entry {:?} is an absolute path", path)),
        }
    }
    Ok(clean)
}

/// A symlink at `entry` (clean, relative) pointing at `target` must stay inside.
fn check_symlink(entry: &Path, target: &Path) -> std::result::Result<(), String> {
    let refuse = |why: &str| Err(format!("symlink {:?} -> {:?} {why}", entry, target));
    let depth = entry.components().count().saturating_sub(1);
    let mut ups = 0usize;
    let mut seen_name = false;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return refuse("is absolute"),
            Component::CurDir => {}
            Component::ParentDir if seen_name => return refuse("has '..' after a name"),
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
        }
    }
    if ups > depth {
        return refuse("escapes the release directory");
    }
    Ok(())
}

fn below_symlink(path: &Path, symlinks: &HashSet<PathBuf>) -> bool {
    path.ancestors().skip(1).any(|a| symlinks.contains(a))
}

/// Unpacks `source` into `dest`, refusing escaping entries; returns the
/// sha256 of all the bytes read. Refuses an archive whose entries add up to
/// more than `max_unpacked` bytes (each entry counts its size plus one
/// 512-byte header, so millions of empty files count too) before writing the
/// entry that crosses the limit.
fn unpack(source: &Path, dest: &Path, deadline: Option<Instant>, max_unpacked: u64) -> Result<String> {
    let mut unpacked_bytes: u64 = 0;
    let file = File::open(source).map_err(io_fail(format!("open archive {}", source.display())))?;
    let hashing = Hashing { inner: BufReader::with_capacity(1 << 16, file), hasher: Sha256::new(), deadline };
    let mut archive = tar::Archive::new(GzDecoder::new(hashing));
    archive.set_overwrite(true);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let shown = source.display().to_string();
    let entries = archive.entries().map_err(|e| timed_out_or(e, format!("reading {shown}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| timed_out_or(e, format!("reading {shown}")))?;
        let raw_path = entry.path().map_err(io_fail(format!("{shown}: entry path")))?.into_owned();
        let refuse = |why: String| Fail::Failed(format!("refusing archive {shown}: {why}"));
        let path = entry_path(&raw_path).map_err(refuse)?;
        if path.as_os_str().is_empty() {
            continue; // the archive's "./" entry
        }
        if below_symlink(&path, &symlinks) {
            return Err(refuse(format!("entry {:?} lies below a symlink of the archive", raw_path)));
        }
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::GNUSparse | T::Directory => {}
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_fail(format!("{shown}: link name")))?
                    .ok_or_else(|| refuse(format!("symlink {:?} has no target", raw_path)))?
                    .into_owned();
                check_symlink(&path, &target).map_err(refuse)?;
                symlinks.insert(path.clone());
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_fail(format!("{shown}: link name")))?
                    .ok_or_else(|| refuse(format!("hard link {:?} has no target", raw_path)))?
                    .into_owned();
                let target = entry_path(&target).map_err(|e| refuse(format!("hard link {:?}: {e}", raw_path)))?;
                if target.as_os_str().is_empty() || target.ancestors().any(|a| symlinks.contains(a)) {
                    return Err(refuse(format!(
                        "hard link {:?} -> {:?} is not a plain file of the archive",
                        raw_path, target
                    )));
                }
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            other => return Err(refuse(format!("entry {:?} has unsupported type {other:?}", raw_path))),
        }
        let size = entry.header().size().unwrap_or(u64::MAX).max(entry.size());
        unpacked_bytes = unpacked_bytes.saturating_add(size).saturating_add(512);
        if unpacked_bytes > max_unpacked {
            return Err(refuse(format!(
                "it unpacks to more than {max_unpacked} bytes (the agent's --max-unpacked-bytes limit; \
                 entry {:?} crosses it)",
                raw_path
            )));
        }
        let unpacked =
            entry.unpack_in(dest).map_err(|e| timed_out_or(e, format!("unpacking {:?} from {shown}", raw_path)))?;
        if !unpacked {
            return Err(refuse(format!("entry {:?} would land outside the release directory", raw_path)));
        }
    }
    // Hash whatever follows the tar end marker too, so the digest covers the file.
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(|e| timed_out_or(e, format!("reading {shown}")))?;
    let mut hashing = gz.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| timed_out_or(e, format!("reading {shown}")))?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Points `<dir>/<name>` at `target` atomically (new symlink renamed over it).
fn replace_symlink(dir: &Path, name: &str, target: &Path) -> Result<()> {
    let link = dir.join(name);
    if let Ok(meta) = fs::symlink_metadata(&link)
        && !meta.file_type().is_symlink()
    {
        return Err(Fail::Failed(format!("{} exists and is not a symlink; not replacing it", link.display())));
    }
    let suffix: u32 = rand::rng().random();
    let tmp = dir.join(format!(".{name}.tmp-{suffix:08x}"));
    std::os::unix::fs::symlink(target, &tmp).map_err(io_fail(format!("create symlink {}", tmp.display())))?;
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(Fail::Failed(format!("switch {}: {e}", link.display())));
    }
    Ok(())
}

/// What a successful install did.
#[derive(Debug)]
pub(crate) struct Installed {
    pub message: String,
}

/// Installs `spec` under `root` (already resolved). Blocking.
pub(crate) fn install(
    spec: &ArchiveSpec,
    root: &Path,
    source: &Path,
    deadline: Option<Instant>,
    max_unpacked: u64,
) -> Result<Installed> {
    check_name("component", &spec.component)?;
    check_name("version", &spec.version)?;
    let expected = spec.sha256.trim().to_ascii_lowercase();
    if !is_sha256_hex(&expected) {
        return Err(Fail::Failed(format!(
            "archive step for {} {} needs a sha256 (64 hex digits), got {:?}",
            spec.component, spec.version, spec.sha256
        )));
    }
    let actual = sha256_file(source, deadline)?;
    if actual != expected {
        return Err(Fail::Failed(format!(
            "sha256 mismatch for {}: expected {expected}, actual {actual}; nothing installed",
            source.display()
        )));
    }

    let component_dir = root.join(&spec.component);
    let releases = component_dir.join("releases");
    fs::create_dir_all(&releases).map_err(io_fail(format!("create {}", releases.display())))?;
    let release = releases.join(&spec.version);
    let marker = releases.join(format!(".{}.sha256", spec.version));

    let reused = if fs::symlink_metadata(&release).is_ok() {
        let recorded = fs::read_to_string(&marker).unwrap_or_default();
        if recorded.trim() != expected {
            let recorded =
                if recorded.trim().is_empty() { "no record".to_string() } else { recorded.trim().to_string() };
            return Err(Fail::Failed(format!(
                "{} already exists from a different archive (recorded sha256: {recorded}, this one: {expected}); \
                 remove it to reinstall {} {}",
                release.display(),
                spec.component,
                spec.version
            )));
        }
        true
    } else {
        let suffix: u64 = rand::rng().random();
        let tmp = releases.join(format!(".{}.tmp-{suffix:016x}", spec.version));
        fs::create_dir(&tmp).map_err(io_fail(format!("create {}", tmp.display())))?;
        let result = unpack(source, &tmp, deadline, max_unpacked).and_then(|digest| {
            if digest != expected {
                return Err(Fail::Failed(format!(
                    "{} changed while it was being unpacked (sha256 now {digest}); nothing installed",
                    source.display()
                )));
            }
            check_deadline(deadline, "unpacking")?;
            fsutil::write_atomic(&marker, format!("{expected}\n").as_bytes(), None)
                .map_err(io_fail(format!("write {}", marker.display())))?;
            fs::rename(&tmp, &release).map_err(io_fail(format!("rename into {}", release.display())))?;
            fsutil::sync_dir(&releases).map_err(io_fail(format!("sync {}", releases.display())))
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        false
    };

    let target = Path::new("releases").join(&spec.version);
    let current = component_dir.join("current");
    let old = match fs::read_link(&current) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Fail::Failed(format!("read {}: {e}", current.display()))),
    };
    let mut message = format!(
        "installed {} {} into {}{}",
        spec.component,
        spec.version,
        release.display(),
        if reused { " (already unpacked)" } else { "" }
    );
    if old.as_deref() == Some(target.as_path()) {
        message.push_str("; it was already current");
    } else {
        if let Some(old) = &old {
            replace_symlink(&component_dir, "previous", old)?;
            message.push_str(&format!("; previous: {}", old.display()));
        }
        replace_symlink(&component_dir, "current", &target)?;
    }
    fsutil::sync_dir(&component_dir).map_err(io_fail(format!("sync {}", component_dir.display())))?;
    Ok(Installed { message })
}

/// What an archive rollback did: the version now current, if any.
#[derive(Debug)]
pub(crate) struct RolledBack {
    pub message: String,
    pub version: Option<String>,
}

/// Switches `current` back: to `releases/<to_version>` when given and
/// present, else to what `previous` points at. With neither (the release being
/// undone was the first), `current` is removed: the undo of a first install is
/// having nothing installed. The undone release stays on disk and `previous`
/// points at it, so rolling forward again needs no unpacking. Blocking.
pub(crate) fn rollback(spec: &ArchiveRollbackSpec, root: &Path) -> Result<RolledBack> {
    check_name("component", &spec.component)?;
    let component_dir = root.join(&spec.component);
    let current = component_dir.join("current");
    let old = fs::read_link(&current).ok();
    let wanted = match &spec.to_version {
        Some(v) => {
            check_name("version", v)?;
            let rel = Path::new("releases").join(v);
            if component_dir.join(&rel).is_dir() { Some(rel) } else { None }
        }
        None => None,
    };
    let target = match wanted {
        Some(t) => Some(t),
        None => fs::read_link(component_dir.join("previous")).ok().filter(|t| component_dir.join(t).is_dir()),
    };
    let Some(target) = target else {
        if old.is_none() {
            return Ok(RolledBack {
                message: format!("{} has no current release; nothing to undo", spec.component),
                version: None,
            });
        }
        fs::remove_file(&current).map_err(io_fail(format!("remove {}", current.display())))?;
        if let Some(old) = &old {
            replace_symlink(&component_dir, "previous", old)?;
        }
        fsutil::sync_dir(&component_dir).map_err(io_fail(format!("sync {}", component_dir.display())))?;
        return Ok(RolledBack {
            message: format!("{}: no earlier release; removed current (was {})", spec.component, show(&old)),
            version: None,
        });
    };
    let version = target.file_name().and_then(|v| v.to_str()).map(str::to_string);
    if old.as_deref() != Some(target.as_path()) {
        replace_symlink(&component_dir, "current", &target)?;
        if let Some(old) = &old {
            replace_symlink(&component_dir, "previous", old)?;
        }
    }
    fsutil::sync_dir(&component_dir).map_err(io_fail(format!("sync {}", component_dir.display())))?;
    Ok(RolledBack {
        message: format!("{}: current switched back from {} to {}", spec.component, show(&old), target.display()),
        version,
    })
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "nothing".into())
}

/// `component -> version` for every `<root>/*/current` symlink.
pub(crate) fn installed_under(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = fs::read_dir(root) else { return out };
    for entry in dir.flatten() {
        let Ok(target) = fs::read_link(entry.path().join("current")) else { continue };
        if let (Some(component), Some(version)) =
            (entry.file_name().to_str(), target.file_name().and_then(|v| v.to_str()))
        {
            out.insert(component.to_string(), version.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_rules() {
        let ok = [("a", "b"), ("d/a", "../b"), ("d/e/a", "../../x/y"), ("a", "./b"), ("d/a", "e/f")];
        for (e, t) in ok {
            check_symlink(Path::new(e), Path::new(t)).unwrap_or_else(|m| panic!("{m}"));
        }
        let bad = [("a", "../b"), ("a", "/etc/passwd"), ("d/a", "../../b"), ("a", "x/../../b"), ("a", "x/..")];
        for (e, t) in bad {
            assert!(check_symlink(Path::new(e), Path::new(t)).is_err(), "{e} -> {t} accepted");
        }
    }

    #[test]
    fn entry_paths() {
        assert_eq!(entry_path(Path::new("./a/./b")).unwrap(), PathBuf::from("a/b"));
        assert!(entry_path(Path::new("a/../../b")).is_err());
        assert!(entry_path(Path::new("/etc/x")).is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("v", "1.2.3").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a\0"] {
            assert!(check_name("v", bad).is_err(), "{bad:?}");
        }
    }
}

//! `convoy artifact keygen` and `convoy artifact sign`: a release owner's
//! ed25519 key pair and the signature files agents check before they install
//! an artifact (format: [`convoy_common::signature`]; guide:
//! `docs/artifacts.md`, "Signatures"). Neither talks to the coordinator: the
//! secret key stays on the release owner's machine.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use convoy_common::signature::{MAX_FILE_BYTES, SecretKey};

use crate::error::CliError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

/// `KEY.pub` beside `KEY`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// `FILE.sig` beside `FILE`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// Writes a new key pair: `out` (secret, mode 0600, never overwritten) and
/// `out.pub`. Returns the key id.
pub fn keygen(out: &Path) -> Result<String, CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Io { path: out.to_path_buf(), source: std::io::Error::other(e) })?;
    let key = SecretKey::from_seed(seed);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode_0600().open(out).map_err(io(out))?;
    f.write_all(key.to_text().as_bytes()).and_then(|()| f.sync_all()).map_err(io(out))?;
    let public = public_path(out);
    std::fs::write(&public, key.public().to_text()).map_err(io(&public))?;
    Ok(key.id())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Reads a secret key file.
pub fn read_secret(path: &Path) -> Result<SecretKey, CliError> {
    let text = read_small(path)?;
    SecretKey::parse(&text).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

/// A key or signature file, refused past [`MAX_FILE_BYTES`].
pub fn read_small(path: &Path) -> Result<String, CliError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if len > MAX_FILE_BYTES as u64 {
        return Err(CliError::Invalid(format!("{}: {len} bytes, at most {MAX_FILE_BYTES}", path.display())));
    }
    std::fs::read_to_string(path).map_err(io(path))
}

/// Signs `file` with the key at `key`: writes `file.sig`; returns its path,
/// the sha256 and the key id.
pub fn sign(key: &Path, file: &Path, sha256: &str) -> Result<(PathBuf, String), CliError> {
    let key = read_secret(key)?;
    let sig = key.sign(sha256).map_err(|e| CliError::Invalid(e.to_string()))?;
    let out = signature_path(file);
    std::fs::write(&out, sig.to_text()).map_err(io(&out))?;
    Ok((out, key.id()))
}

#[cfg(test)]
mod tests {
    use convoy_common::signature::{PublicKey, verify};

    use super::*;

    #[test]
    fn keygen_then_sign_verifies_and_keys_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("release.key");
        let id = keygen(&key).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&key).is_err(), "an existing key is never overwritten");
        let public = PublicKey::parse(&std::fs::read_to_string(public_path(&key)).unwrap()).unwrap();
        assert_eq!(public.id(), id);
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"x").unwrap();
        let sha = "ab".repeat(32);
        let (sig, signer) = sign(&key, &file, &sha).unwrap();
        assert_eq!(sig, dir.path().join("a.bin.sig"));
        assert_eq!(signer, id);
        let text = std::fs::read_to_string(sig).unwrap();
        assert_eq!(verify(Some(&text), &sha, &[public]).unwrap(), id);
    }
}

//! TLS session tickets that outlive the coordinator process.
//!
//! After a restart the whole fleet reconnects at once, and a full mTLS
//! handshake costs each side a signature and two certificate checks. A
//! client holding a ticket from the previous process resumes instead: the
//! ticket carries the session's secret and the client certificate it was
//! opened with, encrypted under a key only coordinators with this data
//! directory hold. Resumed sessions still run a fresh key exchange (TLS 1.3
//! `psk_dhe_ke`), and the services check the certificate the ticket names
//! exactly as they check one just presented (enrolment record, revocation,
//! validity): see [`crate::enrolment::authenticate_agent`].
//!
//! Keys live in `<data_dir>/tls/tickets.json` (mode 0600, versioned). One
//! key encrypts for [`ROTATE_EVERY`]; keys are kept for decryption until
//! [`KEEP_FOR`] after they were made, then erased from the file and from
//! memory (rustls' advice: a ticket's lifetime is enforced by erasing its
//! key, which also bounds what a stolen key file reveals). A missing,
//! unreadable or unknown file only costs full handshakes: it is replaced.
//!
//! Coordinators in HA each keep their own keys: after a takeover agents
//! make full handshakes with the new leader (docs/security.md).

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use convoy_common::model::UnixMillis;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::CoordinatorError;
use crate::runtime::Clock;

/// How long one key encrypts new tickets.
pub const ROTATE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// What clients are told a ticket is good for (TLS 1.3's maximum).
pub const TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a key is kept: it encrypts for [`ROTATE_EVERY`], and its last
/// ticket may be used for [`TICKET_LIFETIME`] after that.
pub const KEEP_FOR: Duration = Duration::from_secs(ROTATE_EVERY.as_secs() + TICKET_LIFETIME.as_secs());

/// The file format this release writes (and the only one it reads).
const FILE_VERSION: u32 = 1;
/// First byte of every ticket: its layout.
const TICKET_FORMAT: u8 = 1;
/// Format byte, key id.
const HEADER_LEN: usize = 1 + 4;
/// Larger tickets than this are not ours (ours carry a session secret and
/// the client's certificate chain: about 1–2 KiB).
const MAX_TICKET: usize = 16 * 1024;

/// The stored keys.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredKey {
    id: u32,
    created_ms: u64,
    /// 32 bytes, hex.
    secret: String,
}

struct Key {
    id: u32,
    created: UnixMillis,
    secret: [u8; 32],
    aead: LessSafeKey,
}

impl Key {
    fn new(id: u32, created: UnixMillis, secret: [u8; 32]) -> Option<Key> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &secret).ok()?;
        Some(Key { id, created, secret, aead: LessSafeKey::new(unbound) })
    }

    fn age(&self, now: UnixMillis) -> Duration {
        Duration::from_millis(now.0.saturating_sub(self.created.0))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Erasure is the point of rotating (see the module doc).
        self.secret.fill(0);
    }
}

/// The ticket keys of one data directory; rustls' `ProducesTickets`.
pub struct SessionTickets {
    path: PathBuf,
    clock: Clock,
    rng: SystemRandom,
    /// Newest last.
    keys: RwLock<Vec<Key>>,
}

impl std::fmt::Debug for SessionTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().map(|k| k.len()).unwrap_or_default();
        f.debug_struct("SessionTickets").field("path", &self.path).field("keys", &keys).finish()
    }
}

/// Where a data directory keeps its ticket keys.
pub fn tickets_path(data_dir: &Path) -> PathBuf {
    crate::tls::PkiPaths::new(data_dir).dir.join("tickets.json")
}

impl SessionTickets {
    /// The keys of `data_dir`, rotated as of `clock`'s now (a new key made
    /// and old ones erased, the file rewritten if anything changed).
    pub fn open(data_dir: &Path, clock: Clock) -> Result<SessionTickets, CoordinatorError> {
        let path = tickets_path(data_dir);
        let keys = read_keys(&path);
        let tickets = SessionTickets { path, clock, rng: SystemRandom::new(), keys: RwLock::new(keys) };
        tickets.rotate()?;
        Ok(tickets)
    }

    /// Make a new key if the newest is [`ROTATE_EVERY`] old, erase keys
    /// [`KEEP_FOR`] old; writes the file when anything changed.
    pub fn rotate(&self) -> Result<(), CoordinatorError> {
        let now = self.clock.now();
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let before = keys.len();
        keys.retain(|k| k.age(now) < KEEP_FOR);
        let mut changed = keys.len() != before;
        if keys.last().is_none_or(|k| k.age(now) >= ROTATE_EVERY) {
            let mut secret = [0u8; 32];
            let mut id = [0u8; 4];
            self.rng.fill(&mut secret).map_err(|_| tls_error("no random bytes for a ticket key"))?;
            self.rng.fill(&mut id).map_err(|_| tls_error("no random bytes for a ticket key"))?;
            let key = Key::new(u32::from_be_bytes(id), now, secret).ok_or_else(|| tls_error("ticket key"))?;
            keys.push(key);
            changed = true;
        }
        if changed {
            let file = KeyFile {
                version: FILE_VERSION,
                keys: keys
                    .iter()
                    .map(|k| StoredKey { id: k.id, created_ms: k.created.0, secret: hex::encode(k.secret) })
                    .collect(),
            };
            let json = serde_json::to_string(&file).map_err(|e| tls_error(&e.to_string()))?;
            crate::tls::write_private(&self.path, &json)?;
            tracing::info!(keys = keys.len(), path = %self.path.display(), "session ticket keys rotated");
        }
        Ok(())
    }

    /// Keys held now (tests and the log).
    pub fn key_count(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or_default()
    }
}

fn tls_error(message: &str) -> CoordinatorError {
    CoordinatorError::Tls { what: "session tickets".into(), message: message.to_string() }
}

/// The keys in `path`; none (with a warning) if it is missing, unreadable
/// or not a format this release knows: tickets are a cache.
fn read_keys(path: &Path) -> Vec<Key> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session ticket keys unreadable; making new ones");
            return Vec::new();
        }
    };
    let file: KeyFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session ticket keys malformed; making new ones");
            return Vec::new();
        }
    };
    if file.version != FILE_VERSION {
        tracing::warn!(path = %path.display(), version = file.version, "session ticket keys of an unknown version; making new ones");
        return Vec::new();
    }
    let mut keys: Vec<Key> = file
        .keys
        .into_iter()
        .filter_map(|k| {
            let bytes = hex::decode(&k.secret).ok()?;
            let secret: [u8; 32] = bytes.try_into().ok()?;
            Key::new(k.id, UnixMillis(k.created_ms), secret)
        })
        .collect();
    keys.sort_by_key(|k| k.created.0);
    keys
}

impl rustls::server::ProducesTickets for SessionTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME.as_secs() as u32
    }

    /// `format | key id | nonce | ciphertext and tag`, the header as the
    /// associated data.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.read().ok()?;
        let key = keys.last()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plain.len() + CHACHA20_POLY1305.tag_len());
        out.push(TICKET_FORMAT);
        out.extend_from_slice(&key.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&out[..HEADER_LEN]), &mut sealed)
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Any bytes a client sends: length checks first, a key that is too old
    /// is as good as erased even if rotation has not run yet.
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() > MAX_TICKET || cipher.len() < HEADER_LEN + NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return None;
        }
        if cipher[0] != TICKET_FORMAT {
            return None;
        }
        let id = u32::from_be_bytes(cipher[1..HEADER_LEN].try_into().ok()?);
        let nonce = Nonce::try_assume_unique_for_key(&cipher[HEADER_LEN..HEADER_LEN + NONCE_LEN]).ok()?;
        let now = self.clock.now();
        let keys = self.keys.read().ok()?;
        let key = keys.iter().find(|k| k.id == id && k.age(now) < KEEP_FOR)?;
        let mut body = cipher[HEADER_LEN + NONCE_LEN..].to_vec();
        let plain = key.aead.open_in_place(nonce, Aad::from(&cipher[..HEADER_LEN]), &mut body).ok()?;
        let len = plain.len();
        body.truncate(len);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    #[test]
    fn tickets_round_trip_survive_a_reopen_and_reject_tampering() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::tls::PkiPaths::new(dir.path()).dir).unwrap();
        let clock = Clock::starting_at(UnixMillis(100 * DAY_MS));
        let t = SessionTickets::open(dir.path(), clock).unwrap();
        let ticket = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"session state");
        assert_ne!(&ticket[HEADER_LEN + NONCE_LEN..], b"session state", "encrypted");
        assert_ne!(t.encrypt(b"session state").unwrap(), ticket, "a fresh nonce each time");

        // Another process over the same directory reads the same key.
        let again = SessionTickets::open(dir.path(), clock).unwrap();
        assert_eq!(again.key_count(), 1, "no new key: the stored one is not a day old");
        assert_eq!(again.decrypt(&ticket).unwrap(), b"session state");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tickets_path(dir.path())).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x40;
            assert!(again.decrypt(&bad).is_none(), "byte {i} flipped still decrypts");
        }
        assert!(again.decrypt(&ticket[..ticket.len() - 1]).is_none());
        assert!(again.decrypt(&[]).is_none());
        assert!(again.decrypt(&vec![TICKET_FORMAT; MAX_TICKET + 1]).is_none());
        // Another directory's keys do not open it.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::tls::PkiPaths::new(other.path()).dir).unwrap();
        assert!(SessionTickets::open(other.path(), clock).unwrap().decrypt(&ticket).is_none());
    }

    #[test]
    fn keys_rotate_daily_and_are_erased_once_their_tickets_expire() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::tls::PkiPaths::new(dir.path()).dir).unwrap();
        let day0 = UnixMillis(100 * DAY_MS);
        let t0 = SessionTickets::open(dir.path(), Clock::starting_at(day0)).unwrap();
        let old = t0.encrypt(b"day 0").unwrap();

        // A day later a restart makes a new key and keeps the old one.
        let t1 = SessionTickets::open(dir.path(), Clock::starting_at(UnixMillis(day0.0 + DAY_MS))).unwrap();
        assert_eq!(t1.key_count(), 2);
        let new = t1.encrypt(b"day 1").unwrap();
        assert_ne!(new[1..HEADER_LEN], old[1..HEADER_LEN], "encrypted under the new key");
        assert_eq!(t1.decrypt(&old).unwrap(), b"day 0");

        // A minute before KEEP_FOR the day-0 ticket still opens (the clock
        // runs on while the test does); at KEEP_FOR it does not, even
        // before rotation erases its key…
        let keep = KEEP_FOR.as_millis() as u64;
        let late = SessionTickets::open(dir.path(), Clock::starting_at(UnixMillis(day0.0 + keep - 60_000))).unwrap();
        assert_eq!(late.decrypt(&old).unwrap(), b"day 0");
        let stale = SessionTickets {
            path: late.path.clone(),
            clock: Clock::starting_at(UnixMillis(day0.0 + keep)),
            rng: SystemRandom::new(),
            keys: RwLock::new(read_keys(&late.path)),
        };
        assert!(stale.decrypt(&old).is_none());
        // …and rotation erases it from the file.
        stale.rotate().unwrap();
        let text = std::fs::read_to_string(tickets_path(dir.path())).unwrap();
        let file: KeyFile = serde_json::from_str(&text).unwrap();
        let old_id = u32::from_be_bytes(old[1..HEADER_LEN].try_into().unwrap());
        assert!(file.keys.iter().all(|k| k.id != old_id), "erased: {text}");
        assert_eq!(stale.decrypt(&new).unwrap(), b"day 1", "the day-1 key is kept");
    }

    #[test]
    fn a_malformed_or_unknown_key_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::tls::PkiPaths::new(dir.path()).dir).unwrap();
        let clock = Clock::starting_at(UnixMillis(100 * DAY_MS));
        for junk in [
            "not json",
            r#"{"version":99,"keys":[]}"#,
            r#"{"version":1,"keys":[{"id":1,"created_ms":0,"secret":"zz"}]}"#,
        ] {
            std::fs::write(tickets_path(dir.path()), junk).unwrap();
            let t = SessionTickets::open(dir.path(), clock).unwrap();
            assert_eq!(t.key_count(), 1);
            let ticket = t.encrypt(b"x").unwrap();
            assert_eq!(t.decrypt(&ticket).unwrap(), b"x");
            let text = std::fs::read_to_string(tickets_path(dir.path())).unwrap();
            assert!(text.starts_with(r#"{"version":1"#), "{junk} replaced: {text}");
        }
    }
}

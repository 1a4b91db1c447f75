//! Who an agent is: join tokens, enrolment, and the check every agent call
//! passes.
//!
//! - **Join tokens** are scoped ([`JoinScope`]): a number of uses (one by
//!   default), an optional host-id pattern (`web-*`) and a lifetime (one hour
//!   by default, at most [`MAX_JOIN_TTL`]). Only their sha256 is stored, so a
//!   copy of the store does not hand out tokens.
//! - **Enrolment** binds a host id to one certificate: the coordinator records
//!   the sha256 fingerprint of the certificate it signed ([`Enrolment`]). A host
//!   id that is enrolled cannot enrol again; replacing a machine is an
//!   operator action (`convoy agents revoke HOST`) that marks the record
//!   revoked, after which the old certificate is refused and the host id may
//!   enrol again.
//! - **A retried enrolment** (the agent stopped waiting for an answer the
//!   coordinator sent late) is accepted when its CSR carries the *same public
//!   key* as the enrolment on record: the CSR's signature proves the caller
//!   holds that private key, so it already owns the identity, and a join
//!   token alone (without the key) can never re-enrol an enrolled host. The
//!   retry spends no use of the token (it must still be known, unexpired and
//!   allow the host) and the new certificate replaces the recorded one.
//! - **Every agent call** (a session, an artifact fetch) presents a client
//!   certificate whose fingerprint must be the enrolled one
//!   ([`authenticate_agent`]). Certificates signed before enrolment records
//!   existed carry no [`ENROLLED_MARK`]; the first such certificate a host
//!   presents is adopted (and logged), any other one is refused, so an upgrade
//!   does not lock out a fleet.

use std::sync::Arc;
use std::time::Duration;

use convoy_common::model::UnixMillis;
use sha2::{Digest, Sha256};

use crate::error::CoordinatorError;
use crate::store::Store;
use crate::tls::CertificateAuthority;

/// The longest a join token may live.
pub const MAX_JOIN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default lifetime of a join token.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);
/// The most uses one join token may have.
pub const MAX_JOIN_USES: u32 = 100_000;
/// The organisational unit of certificates signed with an enrolment record.
pub const ENROLLED_MARK: &str = "convoy-enrolled";

/// The sha256 of a DER certificate (or of a token), hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A glob on host ids: `*` matches any run of characters, `?` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, CoordinatorError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?'));
        if ok {
            Ok(HostPattern(s.to_string()))
        } else {
            Err(CoordinatorError::BadRequest {
                field: "hosts".into(),
                message: format!("'{s}' is not a host-id pattern (letters, digits, '-', '_', '.', '*', '?')"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative glob match: linear in practice, no recursion to blow up.
    pub fn matches(&self, host: &str) -> bool {
        let (p, h): (Vec<char>, Vec<char>) = (self.0.chars().collect(), host.chars().collect());
        let (mut pi, mut hi, mut star, mut mark) = (0, 0, None::<usize>, 0);
        while hi < h.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == h[hi]) {
                pi += 1;
                hi += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = hi;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                hi = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a join token may do, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinScope {
    pub uses: u32,
    pub hosts: Option<HostPattern>,
    pub ttl: Duration,
}

impl Default for JoinScope {
    fn default() -> Self {
        JoinScope { uses: 1, hosts: None, ttl: DEFAULT_JOIN_TTL }
    }
}

impl JoinScope {
    /// Checks the bounds: 1..=[`MAX_JOIN_USES`] uses, a lifetime up to
    /// [`MAX_JOIN_TTL`].
    pub fn validate(self) -> Result<JoinScope, CoordinatorError> {
        if self.uses == 0 || self.uses > MAX_JOIN_USES {
            return Err(CoordinatorError::BadRequest {
                field: "uses".into(),
                message: format!("{} is out of range 1..={MAX_JOIN_USES}", self.uses),
            });
        }
        if self.ttl.is_zero() || self.ttl > MAX_JOIN_TTL {
            return Err(CoordinatorError::BadRequest {
                field: "ttl".into(),
                message: format!("{}s is out of range 1..={}s", self.ttl.as_secs(), MAX_JOIN_TTL.as_secs()),
            });
        }
        Ok(self)
    }
}

/// A stored join token (keyed by the token's sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    pub expires: UnixMillis,
    pub uses_left: u32,
    pub hosts: Option<HostPattern>,
    pub created_by: String,
}

/// The certificate a host id is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub host: String,
    /// sha256 of the certificate's DER, hex.
    pub fingerprint: String,
    pub enrolled: UnixMillis,
    /// sha256 of the certificate's public key (see
    /// [`crate::tls::csr_key_digest`]), hex; `None` on records written before
    /// it was kept (such hosts cannot retry an enrolment).
    pub key: Option<String>,
    /// Set by `convoy agents revoke`: the certificate is refused and the host
    /// id may enrol again.
    pub revoked: Option<Revocation>,
}

/// Who revoked an enrolment, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub at: UnixMillis,
    pub by: String,
}

/// Create a join token with `scope`; returns the token (shown once).
pub fn issue_join_token(
    store: &dyn Store,
    now: UnixMillis,
    scope: JoinScope,
    by: &str,
) -> Result<(String, JoinTokenRecord), CoordinatorError> {
    let scope = scope.validate()?;
    let token = crate::tls::random_token();
    let record = JoinTokenRecord {
        expires: now.plus(scope.ttl),
        uses_left: scope.uses,
        hosts: scope.hosts,
        created_by: by.to_string(),
    };
    store.put_join_token(&sha256_hex(token.as_bytes()), Some(&record))?;
    store.flush()?;
    Ok((token, record))
}

/// Why an enrolment was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A host not enrolled (or revoked): one use of the token was spent.
    New,
    /// The same host with the same key as its enrolment on record: a retry of
    /// an enrolment whose answer the agent did not get. No use was spent.
    Retry,
}

/// Admits `host`, whose CSR's public key has digest `key`, if `token` allows
/// it: a new enrolment spends one use; a retry with the key on record spends
/// none (see the module doc). The caller serialises enrolments (check and
/// spend are one step).
pub fn admit_enrolment(
    store: &dyn Store,
    now: UnixMillis,
    token: &str,
    host: &str,
    key: &str,
) -> Result<Admission, CoordinatorError> {
    let digest = sha256_hex(token.as_bytes());
    let refuse = |message: String| Err(CoordinatorError::Unauthenticated { message });
    let Some(mut record) = store.join_token(&digest)? else {
        return refuse("unknown join token".into());
    };
    if record.expires <= now {
        return refuse("join token expired".into());
    }
    if let Some(p) = &record.hosts
        && !p.matches(host)
    {
        return Err(CoordinatorError::PermissionDenied {
            host: host.to_string(),
            message: format!("this join token is only for hosts matching '{p}'"),
        });
    }
    if let Some(e) = store.enrolment(host)?
        && e.revoked.is_none()
    {
        if e.key.as_deref() == Some(key) {
            return Ok(Admission::Retry);
        }
        return Err(CoordinatorError::PermissionDenied {
            host: host.to_string(),
            message: "already enrolled; to replace the machine, revoke it first (convoy agents revoke HOST)".into(),
        });
    }
    if record.uses_left == 0 {
        return refuse("join token used up".into());
    }
    record.uses_left -= 1;
    // Kept at zero uses until it expires, so a late user is told why.
    store.put_join_token(&digest, Some(&record))?;
    Ok(Admission::New)
}

/// Records the certificate signed for `host` (PEM), whose public key has
/// digest `key`, as its only valid one. Not durable until the caller flushes
/// the store, which it must do before handing the certificate out.
pub fn record_enrolment(
    store: &dyn Store,
    now: UnixMillis,
    host: &str,
    certificate_pem: &str,
    key: &str,
) -> Result<Enrolment, CoordinatorError> {
    let der = pem_to_der(certificate_pem)?;
    let e = Enrolment {
        host: host.to_string(),
        fingerprint: sha256_hex(&der),
        enrolled: now,
        key: Some(key.to_string()),
        revoked: None,
    };
    store.put_enrolment(&e)?;
    Ok(e)
}

/// A granted enrolment: how it was admitted, the certificate signed (PEM)
/// and what was recorded.
#[derive(Debug, Clone)]
pub struct Granted {
    pub admission: Admission,
    pub certificate_pem: String,
    pub enrolment: Enrolment,
}

/// Enrols `host` with the CSR `csr_pem` under join token `token`: admits it
/// ([`admit_enrolment`]), signs its certificate and records it, one
/// enrolment at a time under `lock` so that two never race past a check
/// (the time, from `now`, is read under it), then makes it durable before
/// returning.
///
/// The flush happens after `lock` is released and off the runtime's
/// threads: enrolments arriving together share one flush (a store's flush
/// covers every write made before it, in order, so a later enrolment is
/// never durable without an earlier one), where under the lock they queued
/// behind each other's fsync. A crash before the flush loses only
/// enrolments no agent was answered for, and an agent retries with its key.
pub async fn enrol(
    store: &Arc<dyn Store>,
    lock: &tokio::sync::Mutex<()>,
    ca: &CertificateAuthority,
    now: impl Fn() -> UnixMillis,
    token: &str,
    host: &str,
    csr_pem: &str,
) -> Result<Granted, CoordinatorError> {
    let key = crate::tls::csr_key_digest(csr_pem)?;
    let granted = {
        let _one_at_a_time = lock.lock().await;
        let now = now();
        let admission = admit_enrolment(store.as_ref(), now, token, host, &key)?;
        let certificate_pem = ca.sign_agent(host, csr_pem)?;
        let enrolment = record_enrolment(store.as_ref(), now, host, &certificate_pem, &key)?;
        Granted { admission, certificate_pem, enrolment }
    };
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| CoordinatorError::Internal { what: "flushing an enrolment".into(), message: e.to_string() })??;
    Ok(granted)
}

/// Marks `host`'s enrolment revoked. Unknown hosts are an error.
pub fn revoke(store: &dyn Store, now: UnixMillis, host: &str, by: &str) -> Result<Enrolment, CoordinatorError> {
    let mut e = store.enrolment(host)?.ok_or_else(|| CoordinatorError::BadRequest {
        field: "host_id".into(),
        message: format!("host '{host}' is not enrolled"),
    })?;
    e.revoked = Some(Revocation { at: now, by: by.to_string() });
    store.put_enrolment(&e)?;
    store.flush()?;
    Ok(e)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, CoordinatorError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CoordinatorError::Tls { what: "signed certificate".into(), message: e.to_string() })?;
    Ok(p.contents)
}

/// The host id a client certificate proves, once its fingerprint is checked
/// against the enrolment record. `peer` is only for the refusal message.
pub fn authenticate_agent(
    store: &dyn Store,
    now: UnixMillis,
    certs: Option<&[impl AsRef<[u8]>]>,
) -> Result<String, CoordinatorError> {
    let unauth = |m: &str| CoordinatorError::Unauthenticated { message: m.to_string() };
    let der = certs.and_then(|c| c.first()).ok_or_else(|| unauth("a client certificate is required (enrol first)"))?;
    let der = der.as_ref();
    let CertificateIdentity { host, marked, not_before, not_after } =
        certificate_identity(der).ok_or_else(|| unauth("client certificate names no host"))?;
    // The TLS layer checked the dates when the certificate was presented;
    // a resumed TLS session (crate::tickets) brings back the certificate
    // of its first handshake, maybe days later, so the dates are checked
    // here on every session too.
    let secs = (now.0 / 1000) as i64;
    if secs < not_before || secs > not_after {
        return Err(CoordinatorError::PermissionDenied {
            host,
            message: format!("certificate not valid now (valid from {not_before} to {not_after}, Unix seconds)"),
        });
    }
    let fingerprint = sha256_hex(der);
    match store.enrolment(&host)? {
        Some(e) if e.revoked.is_none() && e.fingerprint == fingerprint => Ok(host),
        Some(e) if e.revoked.is_some() && e.fingerprint == fingerprint => {
            Err(CoordinatorError::PermissionDenied { host, message: "certificate revoked".into() })
        }
        Some(_) => Err(CoordinatorError::PermissionDenied {
            host,
            message: "certificate replaced: not the one enrolled for this host".into(),
        }),
        None if !marked => {
            // Signed before enrolment records existed: adopt the first one.
            tracing::warn!(%host, %fingerprint, "adopting a certificate issued before enrolment records");
            store.put_enrolment(&Enrolment {
                host: host.clone(),
                fingerprint,
                enrolled: now,
                key: None,
                revoked: None,
            })?;
            store.flush()?;
            Ok(host)
        }
        None => Err(CoordinatorError::PermissionDenied { host, message: "no enrolment record for this host".into() }),
    }
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The host id: the subject's common name.
    pub host: String,
    /// It carries [`ENROLLED_MARK`] (issued with an enrolment record).
    pub marked: bool,
    /// Validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The identity a DER certificate names; `None` if it does not parse or
/// names no host.
pub fn certificate_identity(der: &[u8]) -> Option<CertificateIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let host = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    let marked = cert.subject().iter_organizational_unit().any(|ou| ou.as_str().ok() == Some(ENROLLED_MARK));
    let validity = cert.validity();
    Some(CertificateIdentity {
        host,
        marked,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_globs() {
        let p = HostPattern::parse("web-*").unwrap();
        assert!(p.matches("web-1") && p.matches("web-") && !p.matches("db-1") && !p.matches("xweb-1"));
        let q = HostPattern::parse("*-?.eu").unwrap();
        assert!(q.matches("db-1.eu") && !q.matches("db-12.eu"));
        assert!(HostPattern::parse("*").unwrap().matches("anything"));
        assert!(HostPattern::parse("a/b").is_err() && HostPattern::parse("").is_err());
        // Many stars on a long id stay quick (no exponential backtracking).
        let many = HostPattern::parse(&"*a".repeat(60)).unwrap();
        assert!(!many.matches(&"a".repeat(59)));
    }

    #[test]
    fn an_expired_token_admits_no_one_and_a_refusal_spends_no_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let scope = JoinScope { uses: 1, hosts: Some(HostPattern::parse("web-*").unwrap()), ttl: DEFAULT_JOIN_TTL };
        let (token, rec) = issue_join_token(&store, UnixMillis(1_000), scope, "t").unwrap();
        assert!(admit_enrolment(&store, UnixMillis(2_000), &token, "db-1", "k").is_err());
        let late = rec.expires;
        let err = admit_enrolment(&store, late, &token, "web-1", "k").unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        admit_enrolment(&store, UnixMillis(2_000), &token, "web-1", "k").unwrap();
        let err = admit_enrolment(&store, UnixMillis(2_000), &token, "web-2", "k").unwrap_err();
        assert!(err.to_string().contains("used up"), "{err}");
        // Only the digest is stored.
        assert!(store.join_token(&token).unwrap().is_none());
    }

    /// A late answer made the agent retry: the same key is admitted again
    /// without spending a use; another key (someone holding only the join
    /// token) is refused, before and after the host's first session; a
    /// revoked host may enrol anew.
    #[test]
    fn a_retry_with_the_same_key_is_admitted_and_another_key_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(&dir.path().join("store")).unwrap();
        crate::tls::init(dir.path(), &[]).unwrap();
        let ca = crate::tls::CertificateAuthority::load(&crate::tls::PkiPaths::new(dir.path())).unwrap();
        let scope = JoinScope { uses: 1, ..Default::default() };
        let (token, _) = issue_join_token(&store, UnixMillis(1_000), scope, "t").unwrap();
        let (_, csr) = crate::tls::test_csr("web-1");
        let key = crate::tls::csr_key_digest(&csr).unwrap();
        assert_eq!(admit_enrolment(&store, UnixMillis(2_000), &token, "web-1", &key).unwrap(), Admission::New);
        let first = ca.sign_agent("web-1", &csr).unwrap();
        record_enrolment(&store, UnixMillis(2_000), "web-1", &first, &key).unwrap();
        // The retry: same key, the token's only use already spent.
        assert_eq!(admit_enrolment(&store, UnixMillis(3_000), &token, "web-1", &key).unwrap(), Admission::Retry);
        let second = ca.sign_agent("web-1", &csr).unwrap();
        let e = record_enrolment(&store, UnixMillis(3_000), "web-1", &second, &key).unwrap();
        assert_eq!(e.fingerprint, sha256_hex(&pem_to_der(&second).unwrap()));
        // Someone else with the token but another key.
        let (_, other) = crate::tls::test_csr("web-1");
        let other = crate::tls::csr_key_digest(&other).unwrap();
        assert_ne!(other, key);
        let err = admit_enrolment(&store, UnixMillis(3_000), &token, "web-1", &other).unwrap_err();
        assert!(err.to_string().contains("already enrolled"), "{err}");
        // A retry still needs a valid token.
        assert!(admit_enrolment(&store, UnixMillis(3_000), "not-a-token", "web-1", &key).is_err());
    }

    /// Enrolments answered are durable (a flush that went to disk after
    /// each), and enrolments made together neither overspend the token nor
    /// need a flush each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_enrolment_is_flushed_before_it_returns_and_concurrent_ones_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let sled = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let store: Arc<dyn Store> = sled.clone();
        crate::tls::init(dir.path(), &[]).unwrap();
        let ca = Arc::new(crate::tls::CertificateAuthority::load(&crate::tls::PkiPaths::new(dir.path())).unwrap());
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let scope = JoinScope { uses: 16, ..Default::default() };
        let (token, _) = issue_join_token(store.as_ref(), UnixMillis(1_000), scope, "t").unwrap();

        let before = sled.disk_flushes();
        let (_, csr) = crate::tls::test_csr("web-0");
        let g = enrol(&store, &lock, &ca, || UnixMillis(2_000), &token, "web-0", &csr).await.unwrap();
        assert_eq!(g.admission, Admission::New);
        assert_eq!(sled.disk_flushes(), before + 1, "answered only once flushed");
        assert_eq!(store.enrolment("web-0").unwrap().unwrap().fingerprint, g.enrolment.fingerprint);

        // 16 more hosts at once for the token's 15 remaining uses.
        let before = sled.disk_flushes();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=16 {
            let (store, lock, ca, token) = (store.clone(), lock.clone(), ca.clone(), token.clone());
            let (_, csr) = crate::tls::test_csr(&format!("web-{i}"));
            tasks.spawn(async move {
                enrol(&store, &lock, &ca, || UnixMillis(3_000), &token, &format!("web-{i}"), &csr).await
            });
        }
        let (mut granted, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(g) => {
                    assert_eq!(g.admission, Admission::New);
                    granted += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("used up"), "{e}");
                    refused += 1;
                }
            }
        }
        assert_eq!((granted, refused), (15, 1));
        let flushes = sled.disk_flushes() - before;
        assert!((1..=16).contains(&flushes), "{flushes} flushes for 16 enrolments");
        let enrolled = (1..=16).filter(|i| store.enrolment(&format!("web-{i}")).unwrap().is_some()).count();
        assert_eq!(enrolled, 15);
    }

    #[test]
    fn scopes_are_bounded() {
        assert!(JoinScope { uses: 0, ..Default::default() }.validate().is_err());
        assert!(JoinScope { uses: MAX_JOIN_USES + 1, ..Default::default() }.validate().is_err());
        assert!(JoinScope { ttl: MAX_JOIN_TTL * 2, ..Default::default() }.validate().is_err());
        assert!(JoinScope { ttl: Duration::ZERO, ..Default::default() }.validate().is_err());
        assert!(JoinScope::default().validate().is_ok());
    }
}

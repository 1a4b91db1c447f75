//! Operator tokens: named credentials with a role, and the check on every
//! operator call.
//!
//! Tokens live in `DATA_DIR/operators.json` (mode 0600), as the sha256 of the
//! secret with a name, a role, the creation time and an optional expiry.
//! `convoy-coordinator token create|list|revoke` edits that file under an
//! exclusive file lock and replaces it atomically; a running coordinator sees
//! the change on the next call (it compares the file's modification time and
//! size on every call, which costs one `stat`). The file does not live in the
//! store because the store belongs to the running coordinator alone.
//!
//! Roles: a **viewer** reads (status, watch, agents, step times, artifact list,
//! dry-run plans); an **operator** also acts (apply, pause, resume, abort,
//! approve, rollback, join tokens, artifact uploads, agent revocation).
//! What an operator does is recorded under the token's name, which the caller
//! cannot choose. Refused calls are logged with the peer address.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use convoy_common::model::UnixMillis;
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::enrolment::sha256_hex;
use crate::error::CoordinatorError;
use crate::grpc::to_status;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only calls.
    Viewer,
    /// Everything an operator does to rollouts, agents and artifacts.
    Operator,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(format!("unknown role '{other}' (viewer or operator)")),
        }
    }
}

/// One named token (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorToken {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    pub created: UnixMillis,
    #[serde(default)]
    pub expires: Option<UnixMillis>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    format: u32,
    tokens: Vec<OperatorToken>,
}

const FORMAT: u32 = 1;

/// The authenticated caller of an operator call, put in the request's
/// extensions by [`OperatorAuth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Where the tokens of a data directory live.
pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operators.json")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |source| CoordinatorError::Io { path: path.to_path_buf(), source }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn read_file(path: &Path) -> Result<TokenFile, CoordinatorError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let f: TokenFile = serde_json::from_slice(&bytes).map_err(|e| CoordinatorError::BadRequest {
                field: path.display().to_string(),
                message: format!("not a Convoy operator token file: {e}"),
            })?;
            if f.format > FORMAT {
                return Err(CoordinatorError::BadRequest {
                    field: path.display().to_string(),
                    message: format!("format {} is newer than this coordinator's ({FORMAT})", f.format),
                });
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile { format: FORMAT, tokens: Vec::new() }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Runs `edit` on the token file under an exclusive lock and writes the
/// result atomically.
fn edit_file<T>(
    data_dir: &Path,
    edit: impl FnOnce(&mut Vec<OperatorToken>) -> Result<T, CoordinatorError>,
) -> Result<T, CoordinatorError> {
    let lock_path = data_dir.join("operators.lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
    let lock = lock.map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let path = tokens_path(data_dir);
    let mut file = read_file(&path)?;
    let out = edit(&mut file.tokens)?;
    file.format = FORMAT;
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| CoordinatorError::Store { op: "encode operator tokens", message: e.to_string() })?;
    crate::tls::write_private(&path, &json)?;
    Ok(out)
}

/// Adds a token named `name`; returns the secret (shown once). Names are
/// unique.
pub fn create(
    data_dir: &Path,
    name: &str,
    role: Role,
    now: UnixMillis,
    expires: Option<UnixMillis>,
) -> Result<String, CoordinatorError> {
    if !valid_name(name) {
        return Err(CoordinatorError::BadRequest {
            field: "--name".into(),
            message: format!("'{name}' is not a token name (1-64 letters, digits, '-', '_', '.', '@')"),
        });
    }
    let secret = crate::tls::random_token();
    let sha256 = sha256_hex(secret.as_bytes());
    edit_file(data_dir, |tokens| {
        if tokens.iter().any(|t| t.name == name) {
            return Err(CoordinatorError::BadRequest {
                field: "--name".into(),
                message: format!("a token named '{name}' exists (revoke it first)"),
            });
        }
        tokens.push(OperatorToken { name: name.to_string(), role, sha256, created: now, expires });
        Ok(())
    })?;
    Ok(secret)
}

/// Adds `secret` as the token `name` if no token has that name (used by
/// `init` and to adopt a data directory's token from before named tokens).
pub fn ensure(data_dir: &Path, name: &str, role: Role, secret: &str, now: UnixMillis) -> Result<(), CoordinatorError> {
    edit_file(data_dir, |tokens| {
        if !tokens.iter().any(|t| t.name == name) {
            let sha256 = sha256_hex(secret.as_bytes());
            tokens.push(OperatorToken { name: name.to_string(), role, sha256, created: now, expires: None });
        }
        Ok(())
    })
}

/// Removes the token `name`; it stops working on the next call.
pub fn revoke(data_dir: &Path, name: &str) -> Result<(), CoordinatorError> {
    edit_file(data_dir, |tokens| {
        let before = tokens.len();
        tokens.retain(|t| t.name != name);
        if tokens.len() == before {
            return Err(CoordinatorError::BadRequest {
                field: "NAME".into(),
                message: format!("no token named '{name}'"),
            });
        }
        Ok(())
    })
}

/// The tokens of a data directory (without secrets).
pub fn list(data_dir: &Path) -> Result<Vec<OperatorToken>, CoordinatorError> {
    Ok(read_file(&tokens_path(data_dir))?.tokens)
}

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<(SystemTime, u64)>,
    tokens: Vec<OperatorToken>,
}

/// The server's view of the token file, reloaded when the file changes.
#[derive(Debug, Clone)]
pub struct OperatorAuth {
    path: Arc<PathBuf>,
    cache: Arc<Mutex<Cache>>,
    clock: crate::runtime::Clock,
    /// Where refused calls and queued local entries go ([`crate::audit`]).
    audit: Option<Arc<dyn crate::store::Store>>,
    /// Counts refused calls.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl OperatorAuth {
    pub fn new(data_dir: &Path, clock: crate::runtime::Clock) -> OperatorAuth {
        OperatorAuth { path: Arc::new(tokens_path(data_dir)), cache: Arc::default(), clock, audit: None, metrics: None }
    }

    /// Record refused calls in `store`'s audit trail, and move the entries
    /// local token commands queue into it whenever the token file changes.
    pub fn with_audit(mut self, store: Arc<dyn crate::store::Store>) -> OperatorAuth {
        self.audit = Some(store);
        self
    }

    /// Count refused calls in `metrics` (and let [`require`] count role refusals).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> OperatorAuth {
        self.metrics = Some(metrics);
        self
    }

    /// Where refusals are counted, if anywhere.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
    }

    fn tokens(&self) -> Result<Vec<OperatorToken>, CoordinatorError> {
        let meta = std::fs::metadata(&*self.path).ok();
        let stamp = meta.and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.stamp != stamp || stamp.is_none() {
            cache.tokens = read_file(&self.path)?.tokens;
            if cache.stamp != stamp
                && let (Some(store), Some(dir)) = (&self.audit, self.path.parent())
                && let Err(e) = crate::audit::ingest_local(dir, store.as_ref())
            {
                tracing::error!(error = %e, "cannot store the audit entries of token commands");
            }
            cache.stamp = stamp;
        }
        Ok(cache.tokens.clone())
    }

    /// The caller a bearer token proves, if any.
    pub fn authenticate(&self, bearer: &str) -> Result<Caller, CoordinatorError> {
        let unauth = |m: &str| CoordinatorError::Unauthenticated { message: m.to_string() };
        if bearer.is_empty() {
            return Err(unauth("operator token missing"));
        }
        let got = sha256_hex(bearer.as_bytes());
        let now = self.clock.now();
        // Compare digests in constant time per entry: no early exit on the
        // first differing byte.
        let found = self.tokens()?.into_iter().find(|t| {
            t.sha256.len() == got.len() && t.sha256.bytes().zip(got.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        });
        match found {
            None => Err(unauth("operator token unknown or revoked")),
            Some(t) if t.expires.is_some_and(|e| e <= now) => Err(unauth("operator token expired")),
            Some(t) => Ok(Caller { name: t.name, role: t.role }),
        }
    }

    /// Authenticates a request's metadata (for services that check per call).
    pub fn check_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Caller, Status> {
        let got = metadata.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let got = got.strip_prefix("Bearer ").unwrap_or("");
        self.authenticate(got).map_err(|e| {
            if let Some(m) = &self.metrics {
                m.refused(crate::metrics::RefusalReason::OperatorToken);
            }
            tracing::warn!(peer = %peer_label(peer), error = %e, "operator call refused");
            if let Some(store) = &self.audit {
                let origin = crate::audit::Origin::unauthenticated(peer);
                let (action, outcome) =
                    (convoy_common::audit::AuditAction::Call, convoy_common::audit::AuditOutcome::Refused);
                crate::audit::record(store.as_ref(), self.clock.now(), &origin, action, "", outcome, &e.to_string());
            }
            to_status(e)
        })
    }
}

/// A peer address for logs.
pub fn peer_label(peer: Option<std::net::SocketAddr>) -> String {
    peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown peer".into())
}

impl tonic::service::Interceptor for OperatorAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.check_metadata(req.metadata(), req.remote_addr())?;
        req.extensions_mut().insert(caller);
        if let Some(m) = &self.metrics {
            req.extensions_mut().insert(m.clone());
        }
        Ok(req)
    }
}

/// The caller of an operator call, if its role allows `needed`. Logs a
/// refusal with the caller's name and address.
pub fn require<T>(req: &Request<T>, needed: Role, what: &str) -> Result<Caller, Status> {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        tracing::warn!(peer = %peer_label(req.remote_addr()), what, "operator call without an authenticated caller refused");
        return Err(to_status(CoordinatorError::Unauthenticated { message: "operator token missing".into() }));
    };
    check_role(caller, req.remote_addr(), needed, what).inspect_err(|_| {
        if let Some(m) = req.extensions().get::<Arc<crate::metrics::Metrics>>() {
            m.refused(crate::metrics::RefusalReason::Role);
        }
    })
}

/// `caller` if its role allows `needed`; a refusal is logged.
pub fn check_role(
    caller: Caller,
    peer: Option<std::net::SocketAddr>,
    needed: Role,
    what: &str,
) -> Result<Caller, Status> {
    if caller.role < needed {
        tracing::warn!(peer = %peer_label(peer), name = %caller.name, role = %caller.role, what, "operator call refused: role too low");
        return Err(to_status(CoordinatorError::Forbidden {
            name: caller.name,
            message: format!("{what} needs the {needed} role; this token is a {}", caller.role),
        }));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_created_listed_checked_and_revoked_while_a_server_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let auth = OperatorAuth::new(dir.path(), crate::runtime::Clock::system());
        assert!(auth.authenticate("x").is_err());
        let alice = create(dir.path(), "alice", Role::Operator, UnixMillis(1), None).unwrap();
        let bob = create(dir.path(), "bob", Role::Viewer, UnixMillis(1), None).unwrap();
        assert_eq!(auth.authenticate(&alice).unwrap(), Caller { name: "alice".into(), role: Role::Operator });
        assert_eq!(auth.authenticate(&bob).unwrap().role, Role::Viewer);
        assert!(create(dir.path(), "alice", Role::Viewer, UnixMillis(1), None).is_err(), "names are unique");
        assert!(create(dir.path(), "a b", Role::Viewer, UnixMillis(1), None).is_err());
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 2);
        let text = std::fs::read_to_string(tokens_path(dir.path())).unwrap();
        assert!(!text.contains(&alice), "the secret is not stored");
        revoke(dir.path(), "alice").unwrap();
        // The file may change within the mtime granularity: the size differs.
        assert!(auth.authenticate(&alice).is_err(), "revoked at once");
        assert!(auth.authenticate(&bob).is_ok());
        assert!(revoke(dir.path(), "alice").is_err());
        let expired = create(dir.path(), "old", Role::Operator, UnixMillis(1), Some(UnixMillis(2))).unwrap();
        assert!(auth.authenticate(&expired).unwrap_err().to_string().contains("expired"));
    }
}

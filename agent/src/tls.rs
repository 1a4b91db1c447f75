//! The agent's TLS material and connections to the coordinator.
//!
//! Files under `<state_dir>/tls/`:
//! - `agent.key`: the agent's ECDSA P-256 private key (mode 0600). It never
//!   leaves the host: enrolment sends only a CSR. It is written *before* the
//!   first enrolment attempt and reused by every retry, so a retry (after an
//!   answer that came too late) is the same request and the coordinator
//!   admits it as such; a key without a certificate is such a pending key.
//! - `agent.pem`: the client certificate the coordinator signed; its CN is the
//!   host id, and the coordinator accepts a session only for that host id.
//! - `host_id`: the host id the certificate was issued for, so an agent whose
//!   `--host-id` changed says so instead of being refused by the coordinator
//!   for an unclear reason.
//!
//! The coordinator is always verified against the configured CA file and the
//! configured server name (not the URL's host, so agents may dial an address).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::fsutil;

/// The agent's certificate and private key, PEM-encoded.
#[derive(Clone)]
pub struct AgentIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("AgentIdentity").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Paths of the agent's TLS files.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub dir: PathBuf,
}

impl TlsPaths {
    pub fn new(tls_dir: impl Into<PathBuf>) -> TlsPaths {
        TlsPaths { dir: tls_dir.into() }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("agent.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("agent.key")
    }
    pub fn host_id(&self) -> PathBuf {
        self.dir.join("host_id")
    }
}

fn tls_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> AgentError {
    let what = what.into();
    move |e| AgentError::Tls { what, message: e.to_string() }
}

fn read_optional(path: &Path) -> Result<Option<String>, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// The saved identity, if both the certificate and the key exist. A half-saved
/// identity (a crash during enrolment) reads as none: the agent enrols again.
pub fn load_identity(paths: &TlsPaths, host_id: &str) -> Result<Option<AgentIdentity>, AgentError> {
    let (Some(cert_pem), Some(key_pem)) = (read_optional(&paths.cert())?, read_optional(&paths.key())?) else {
        return Ok(None);
    };
    if let Some(enrolled_as) = read_optional(&paths.host_id())?
        && enrolled_as.trim() != host_id
    {
        return Err(AgentError::InvalidConfig {
            field: "host id",
            message: format!(
                "the certificate in {} was issued for host {:?} but this agent runs as {host_id:?}; \
                 use that host id, or remove the directory and enrol again with a join token",
                paths.dir.display(),
                enrolled_as.trim()
            ),
        });
    }
    Ok(Some(AgentIdentity { cert_pem, key_pem }))
}

/// Saves an identity: the key (0600) first unless it is on disk already (the
/// enrolment saved it before sending the CSR), then the host id and the
/// certificate together, so a certificate on disk always has its key. The
/// two are written and fsync'd, renamed, and their directory fsync'd once:
/// three fsyncs, not six (enrolling 200 agents at once is mostly fsyncs).
pub fn save_identity(paths: &TlsPaths, host_id: &str, identity: &AgentIdentity) -> Result<(), AgentError> {
    let key = paths.key();
    if read_optional(&key)?.as_deref() != Some(identity.key_pem.as_str()) {
        fsutil::write_atomic(&key, identity.key_pem.as_bytes(), Some(0o600)).map_err(AgentError::io(&key))?;
    }
    let (id, cert) = (paths.host_id(), paths.cert());
    let id_text = format!("{host_id}\n");
    fsutil::write_atomic_all(&[(&id, id_text.as_bytes(), None), (&cert, identity.cert_pem.as_bytes(), None)])
        .map_err(|(path, source)| AgentError::Io { path, source })
}

/// The key to enrol with and a CSR for it: the pending key in `agent.key`
/// if an earlier attempt left one (so a retry is the same request), else a
/// fresh one, saved (0600) before it is used. `(key_pem, csr_pem)`.
pub fn enrolment_csr(paths: &TlsPaths, host_id: &str) -> Result<(String, String), AgentError> {
    let path = paths.key();
    if let Some(key_pem) = read_optional(&path)? {
        let key = KeyPair::from_pem(&key_pem).map_err(tls_err(format!("pending key {}", path.display())))?;
        return Ok((key_pem, csr_for(&key, host_id)?));
    }
    let (key_pem, csr_pem) = generate_csr(host_id)?;
    fsutil::write_atomic(&path, key_pem.as_bytes(), Some(0o600)).map_err(AgentError::io(&path))?;
    Ok((key_pem, csr_pem))
}

fn csr_for(key: &KeyPair, host_id: &str) -> Result<String, AgentError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CSR parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host_id);
    params.distinguished_name = dn;
    let csr = params.serialize_request(key).map_err(tls_err("create CSR"))?;
    csr.pem().map_err(tls_err("encode CSR"))
}

/// A fresh ECDSA P-256 key and a CSR with `CN = host_id`: `(key_pem, csr_pem)`.
pub fn generate_csr(host_id: &str) -> Result<(String, String), AgentError> {
    let key = KeyPair::generate().map_err(tls_err("generate key"))?;
    let csr_pem = csr_for(&key, host_id)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// Reads the CA certificate file.
pub fn read_ca(ca_file: &Path) -> Result<String, AgentError> {
    let ca = std::fs::read_to_string(ca_file).map_err(AgentError::io(ca_file))?;
    if !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(AgentError::Tls {
            what: format!("CA file {}", ca_file.display()),
            message: "no PEM certificate in it".into(),
        });
    }
    Ok(ca)
}

/// TLS that verifies the coordinator, presenting `identity` if given.
pub fn client_tls(config: &AgentConfig, ca_pem: &str, identity: Option<&AgentIdentity>) -> ClientTlsConfig {
    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(config.server_name.clone());
    match identity {
        Some(id) => tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem)),
        None => tls,
    }
}

/// `error: cause: cause…` — tonic's transport errors say little at the top.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// How often an idle channel pings the coordinator: enrolment, artifact
/// fetches, and sessions with a coordinator that does not ack heartbeats.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How often a session's channel pings a coordinator that acks heartbeats
/// (a backstop: the acks already tell a silent coordinator). At 10,000
/// agents, pings every 5 s were 2,000 a second, more than the heartbeats.
pub const SESSION_KEEPALIVE: Duration = Duration::from_secs(30);

/// Opens a channel to the coordinator, bounded by `connect_timeout`, pinging
/// it every [`KEEPALIVE_INTERVAL`].
pub async fn connect(config: &AgentConfig, tls: ClientTlsConfig) -> Result<Channel, AgentError> {
    let coordinator = crate::coordinators::current(config);
    let endpoint = tls_endpoint(&coordinator, tls)?;
    connect_endpoint(config, coordinator, endpoint, KEEPALIVE_INTERVAL).await
}

/// An endpoint for `coordinator` with its TLS configuration built (tonic
/// builds the rustls configuration here, once per endpoint).
fn tls_endpoint(coordinator: &str, tls: ClientTlsConfig) -> Result<Endpoint, AgentError> {
    Endpoint::from_shared(coordinator.to_string())
        .map_err(|e| AgentError::InvalidConfig { field: "coordinator URL", message: error_chain(&e) })?
        .tls_config(tls)
        .map_err(|e| AgentError::Tls { what: "client TLS configuration".into(), message: error_chain(&e) })
}

/// Connects `endpoint`, bounded by `connect_timeout`, pinging every
/// `keepalive` (at least [`KEEPALIVE_INTERVAL`]); a failure moves on to the
/// next coordinator of the list.
async fn connect_endpoint(
    config: &AgentConfig,
    coordinator: String,
    endpoint: Endpoint,
    keepalive: Duration,
) -> Result<Channel, AgentError> {
    let endpoint = endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // Detect a coordinator that vanished without closing the connection
        // (network cut, host power loss) even when no message is flowing.
        .http2_keep_alive_interval(keepalive.max(KEEPALIVE_INTERVAL))
        .keep_alive_timeout(config.connect_timeout)
        .keep_alive_while_idle(true);
    let r = tokio::time::timeout(config.connect_timeout, endpoint.connect()).await;
    if !matches!(r, Ok(Ok(_))) {
        crate::coordinators::next(config);
    }
    match r {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(AgentError::Transport { coordinator, message: format!("connect: {}", error_chain(&e)) }),
        Err(_) => Err(AgentError::Transport {
            coordinator,
            message: format!("connect: no connection within {:?}", config.connect_timeout),
        }),
    }
}

/// The session's TLS kept from one session to the next, so a reconnect
/// resumes the TLS session instead of a full handshake: the coordinator
/// hands out session tickets, and rustls keeps them in the configuration
/// they arrived on (tonic builds one per endpoint, so a fresh endpoint per
/// connection would throw them away). A resumed handshake skips the
/// signatures and certificate checks on both sides; after a coordinator
/// restart that is most of what a fleet reconnecting at once costs it.
///
/// Endpoints are kept per coordinator URL and dropped when the CA or the
/// agent's certificate changes (a ticket names the certificate it was
/// issued with).
#[derive(Default)]
pub struct SessionTls {
    /// The CA and certificate the endpoints were built with, and an
    /// endpoint per coordinator URL.
    kept: std::sync::Mutex<Option<Kept>>,
}

/// Coordinator URLs an agent keeps a TLS configuration for (an HA set is
/// a handful).
const MAX_KEPT_ENDPOINTS: usize = 16;

struct Kept {
    ca_pem: String,
    cert_pem: String,
    endpoints: std::collections::HashMap<String, Endpoint>,
}

impl SessionTls {
    /// [`connect`] presenting `identity`, pinging every `keepalive`, through the kept
    /// endpoint for the current coordinator.
    pub async fn connect(
        &self,
        config: &AgentConfig,
        ca_pem: &str,
        identity: &AgentIdentity,
        keepalive: Duration,
    ) -> Result<Channel, AgentError> {
        let coordinator = crate::coordinators::current(config);
        let endpoint = self.endpoint(config, &coordinator, ca_pem, identity)?;
        connect_endpoint(config, coordinator, endpoint, keepalive).await
    }

    fn endpoint(
        &self,
        config: &AgentConfig,
        coordinator: &str,
        ca_pem: &str,
        identity: &AgentIdentity,
    ) -> Result<Endpoint, AgentError> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let same = kept.as_ref().is_some_and(|k| k.ca_pem == ca_pem && k.cert_pem == identity.cert_pem);
        if !same {
            *kept = None;
        }
        let kept = kept.get_or_insert_with(|| Kept {
            ca_pem: ca_pem.to_string(),
            cert_pem: identity.cert_pem.clone(),
            endpoints: Default::default(),
        });
        if let Some(e) = kept.endpoints.get(coordinator) {
            tracing::debug!(coordinator, "reusing the kept TLS configuration");
            return Ok(e.clone());
        }
        tracing::debug!(coordinator, same, "new TLS configuration");
        // Redirects name the leader's address: a coordinator that kept
        // naming new ones must not grow this without bound.
        if kept.endpoints.len() >= MAX_KEPT_ENDPOINTS {
            kept.endpoints.clear();
        }
        let e = tls_endpoint(coordinator, client_tls(config, ca_pem, Some(identity)))?;
        kept.endpoints.insert(coordinator.to_string(), e.clone());
        Ok(e)
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.lock().unwrap().as_ref().map_or(0, |k| k.endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> AgentIdentity {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        AgentIdentity { cert_pem: c.cert.pem(), key_pem: c.signing_key.serialize_pem() }
    }

    #[test]
    fn session_tls_keeps_one_configuration_per_coordinator_until_the_identity_changes() {
        let config = AgentConfig::new("https://127.0.0.1:1", "/nonexistent/ca.pem", "web-0", "/nonexistent");
        let ca = self_signed("convoy-coordinator").cert_pem;
        let (first, second) = (self_signed("web-0"), self_signed("web-0"));
        let tls = SessionTls::default();
        tls.endpoint(&config, "https://127.0.0.1:1", &ca, &first).unwrap();
        tls.endpoint(&config, "https://127.0.0.1:1", &ca, &first).unwrap();
        assert_eq!(tls.kept(), 1, "the same coordinator's configuration is reused");
        tls.endpoint(&config, "https://127.0.0.1:2", &ca, &first).unwrap();
        assert_eq!(tls.kept(), 2, "one per coordinator");
        tls.endpoint(&config, "https://127.0.0.1:1", &ca, &second).unwrap();
        assert_eq!(tls.kept(), 1, "a new certificate drops what was kept (its tickets name the old one)");
        let other_ca = self_signed("convoy-coordinator").cert_pem;
        tls.endpoint(&config, "https://127.0.0.1:1", &other_ca, &second).unwrap();
        tls.endpoint(&config, "https://127.0.0.1:3", &other_ca, &second).unwrap();
        assert_eq!(tls.kept(), 2, "a new CA starts over too");
        for port in 10..60 {
            tls.endpoint(&config, &format!("https://127.0.0.1:{port}"), &other_ca, &second).unwrap();
            assert!(tls.kept() <= MAX_KEPT_ENDPOINTS);
        }
    }

    #[test]
    fn csr_and_identity_files() {
        let (key_pem, csr_pem) = generate_csr("web-1").unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        assert!(csr_pem.contains("CERTIFICATE REQUEST"));
        // The CSR parses back with CN = host id.
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr_pem).unwrap();
        let cn = parsed.params.distinguished_name.get(&DnType::CommonName).unwrap();
        assert!(format!("{cn:?}").contains("web-1"));

        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::new(dir.path().join("tls"));
        assert!(load_identity(&paths, "web-1").unwrap().is_none());
        let id = AgentIdentity { cert_pem: "-----BEGIN CERTIFICATE-----\n".into(), key_pem };
        save_identity(&paths, "web-1", &id).unwrap();
        let loaded = load_identity(&paths, "web-1").unwrap().unwrap();
        assert_eq!(loaded.key_pem, id.key_pem);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(paths.key()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        let err = load_identity(&paths, "web-2").unwrap_err().to_string();
        assert!(err.contains("web-1") && err.contains("web-2"), "{err}");
    }
}

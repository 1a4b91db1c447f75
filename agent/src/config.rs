//! The agent's validated configuration.
//!
//! Built by [`crate::cli::AgentArgs::into_config`] from flags and environment,
//! or directly by tests and embedders. [`AgentConfig::validate`] is the single
//! place the rules live, so every way of building a config is checked the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_common::signature::PublicKey;

use crate::error::AgentError;

/// TLS name the coordinator's server certificate is issued for by default
/// (the same default the coordinator uses when it creates its PKI).
pub const DEFAULT_SERVER_NAME: &str = "convoy-coordinator";

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://host:port` of the coordinator's agent endpoint; several,
    /// comma separated, for coordinators in HA ([`crate::coordinators`]).
    pub coordinator_url: String,
    /// Name the coordinator's certificate must carry (not the URL's host, so
    /// agents can dial an IP address or a load balancer).
    pub server_name: String,
    /// CA certificate (PEM) that signed the coordinator's certificate.
    pub ca_file: PathBuf,
    /// Needed only until the agent has a certificate of its own.
    pub join_token: Option<String>,
    /// The agent's identity; its certificate is bound to it.
    pub host_id: String,
    /// Reported in Hello; plans select hosts by these.
    pub labels: BTreeMap<String, String>,
    /// Extra facts reported in Hello (`--fact KEY=VALUE`), beside the
    /// hostname, OS and architecture the agent reads itself; catalog
    /// conditions (`when: { facts: ... }`) and `{{fact.NAME}}` read them.
    pub facts: BTreeMap<String, String>,
    /// Certificate, key and execution store live here.
    pub state_dir: PathBuf,
    /// Default root for archive installs (`<root>/<component>/current`).
    pub install_root: PathBuf,
    /// Heartbeat period, unless the coordinator's Welcome sets one.
    pub heartbeat_interval: Duration,
    /// Reconnect backoff bounds (full jitter between them).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Bound on establishing a connection, and on waiting for Welcome.
    pub connect_timeout: Duration,
    /// An archive step refuses an archive whose entries add up to more than
    /// this many bytes unpacked (`--max-unpacked-bytes`).
    pub max_unpacked_bytes: u64,
    /// Release owners' public keys (`--trusted-key`): an agent build is
    /// installed only with a valid signature from one of them, and so is any
    /// artifact whose step (or this config) requires a signature.
    pub trusted_keys: Vec<PublicKey>,
    /// `--require-signatures`: every staged artifact needs a valid signature.
    pub require_signatures: bool,
}

/// Default of [`AgentConfig::max_unpacked_bytes`]: 4 GiB.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 4 << 30;

impl AgentConfig {
    /// A config with the documented defaults; `install_root` is `<state_dir>/install`.
    pub fn new(
        coordinator_url: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        host_id: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> AgentConfig {
        let state_dir = state_dir.into();
        AgentConfig {
            coordinator_url: coordinator_url.into(),
            server_name: DEFAULT_SERVER_NAME.to_string(),
            ca_file: ca_file.into(),
            join_token: None,
            host_id: host_id.into(),
            labels: BTreeMap::new(),
            facts: BTreeMap::new(),
            install_root: state_dir.join("install"),
            state_dir,
            heartbeat_interval: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            trusted_keys: Vec::new(),
            require_signatures: false,
        }
    }

    /// Checks the rules every config must follow.
    pub fn validate(&self) -> Result<(), AgentError> {
        let urls = crate::coordinators::urls(&self.coordinator_url);
        if urls.is_empty() || urls.len() > 16 {
            return Err(invalid("coordinator URL", "give 1 to 16 URLs, comma separated"));
        }
        for url in urls {
            validate_url(url)?;
        }
        if self.server_name.trim().is_empty() {
            return Err(invalid("server name", "must not be empty"));
        }
        if self.host_id.trim().is_empty() {
            return Err(invalid("host id", "must not be empty"));
        }
        if self.max_unpacked_bytes == 0 {
            return Err(invalid("max unpacked bytes", "must be positive"));
        }
        if self.host_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("host id", format!("{:?} contains whitespace", self.host_id)));
        }
        if let Some(token) = &self.join_token
            && token.trim().is_empty()
        {
            return Err(invalid("join token", "is empty (omit it once the agent is enrolled)"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(invalid("heartbeat interval", "must be greater than zero"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(invalid(
                "reconnect backoff",
                format!("need 0 < min ({:?}) <= max ({:?})", self.reconnect_min, self.reconnect_max),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect timeout", "must be greater than zero"));
        }
        Ok(())
    }

    /// `<state_dir>/tls`: the agent's key and certificate.
    pub fn tls_dir(&self) -> PathBuf {
        self.state_dir.join("tls")
    }

    /// `<state_dir>/executions`: the local execution store.
    pub fn executions_dir(&self) -> PathBuf {
        executions_dir(&self.state_dir)
    }
}

/// `<state_dir>/executions`.
pub fn executions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("executions")
}

fn invalid(field: &'static str, message: impl Into<String>) -> AgentError {
    AgentError::InvalidConfig { field, message: message.into() }
}

/// Accepts `https://host:port` (an optional trailing `/`); the agent only
/// speaks TLS, and an explicit port avoids silently dialling 443.
fn validate_url(url: &str) -> Result<(), AgentError> {
    let field = "coordinator URL";
    let rest =
        url.strip_prefix("https://").ok_or_else(|| invalid(field, format!("{url:?} must start with https://")))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('@') {
        return Err(invalid(field, format!("{url:?} must be https://host:port with no path")));
    }
    let (host, port) =
        authority.rsplit_once(':').ok_or_else(|| invalid(field, format!("{url:?} has no port (https://host:port)")))?;
    let host_ok = !host.is_empty() && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if !host_ok {
        return Err(invalid(field, format!("{url:?} has an invalid host")));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(invalid(field, format!("{url:?} has an invalid port {port:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig::new("https://127.0.0.1:7443", "/ca.pem", "web-1", "/var/lib/convoy")
    }

    #[test]
    fn defaults_validate() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.install_root, PathBuf::from("/var/lib/convoy/install"));
        assert_eq!(c.server_name, DEFAULT_SERVER_NAME);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn urls() {
        for ok in ["https://a:1", "https://coord.example:7443/", "https://[::1]:7443"] {
            validate_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["http://a:1", "https://a", "https://a:0", "https://a:x", "https://a:1/p", "https://:1", "a:1"] {
            assert!(validate_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = cfg();
        c.host_id = "a b".into();
        assert!(c.validate().unwrap_err().to_string().contains("host id"));
        let mut c = cfg();
        c.reconnect_min = Duration::from_secs(20);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.join_token = Some(" ".into());
        assert!(c.validate().is_err());
    }
}

//! Command-line arguments of the agent.
//!
//! Lives in the library (not `main.rs`) so the operator CLI `convoy` can embed
//! the agent as a hidden subcommand with exactly the same flags. Every flag has
//! a `CONVOY_*` environment variable so a systemd unit or a container needs no
//! command line; secrets (the join token) are better passed that way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use convoy_common::signature::{MAX_FILE_BYTES, PublicKey};

use crate::config::{AgentConfig, DEFAULT_SERVER_NAME};
use crate::error::AgentError;
use crate::facts;

/// Run the Convoy agent: connect to the coordinator and run the steps it sends.
#[derive(Debug, Clone, Parser)]
#[command(name = "convoy-agent", version, about)]
pub struct AgentArgs {
    /// Coordinator agent endpoint, https://host:port; several, comma
    /// separated, for coordinators in HA (the leader is found and followed).
    #[arg(long = "coordinator", env = "CONVOY_COORDINATOR", value_name = "URL")]
    pub coordinator: String,

    /// CA certificate (PEM) the coordinator's certificate is checked against.
    #[arg(long, env = "CONVOY_CA_FILE", value_name = "PATH")]
    pub ca_file: PathBuf,

    /// Join token, needed until the agent holds a certificate. Prefer
    /// --join-token-file or the environment: a command line is readable by
    /// every local user.
    #[arg(long, env = "CONVOY_JOIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// A file holding the join token (surrounding whitespace ignored).
    #[arg(long, env = "CONVOY_JOIN_TOKEN_FILE", value_name = "PATH", conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,

    /// This host's id (default: the hostname). Its certificate is bound to it.
    #[arg(long, env = "CONVOY_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,

    /// A label reported to the coordinator, key=value; repeatable (the
    /// environment variable takes a comma-separated list).
    #[arg(long = "label", env = "CONVOY_LABELS", value_name = "KEY=VALUE", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// A fact reported to the coordinator besides the hostname, OS and
    /// architecture (e.g. edition=pro), key=value; repeatable (the
    /// environment variable takes a comma-separated list). Catalog
    /// conditions and `{{fact.KEY}}` templates read facts.
    #[arg(long = "fact", env = "CONVOY_FACTS", value_name = "KEY=VALUE", value_delimiter = ',')]
    pub facts: Vec<String>,

    /// Where the agent keeps its certificate and execution records.
    #[arg(long, env = "CONVOY_STATE_DIR", value_name = "DIR", default_value = "/var/lib/convoy-agent")]
    pub state_dir: PathBuf,

    /// Default root for archive installs (default: <state-dir>/install).
    #[arg(long, env = "CONVOY_INSTALL_ROOT", value_name = "DIR")]
    pub install_root: Option<PathBuf>,

    /// TLS name the coordinator's certificate must carry.
    #[arg(long, env = "CONVOY_SERVER_NAME", value_name = "NAME", default_value = DEFAULT_SERVER_NAME)]
    pub server_name: String,

    /// Heartbeat period in milliseconds, unless the coordinator sets one.
    #[arg(long, env = "CONVOY_HEARTBEAT_MS", value_name = "MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,

    /// An archive step refuses an archive that unpacks to more than this many bytes.
    #[arg(long, env = "CONVOY_MAX_UNPACKED_BYTES", value_name = "BYTES",
          default_value_t = crate::config::DEFAULT_MAX_UNPACKED_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_unpacked_bytes: u64,

    /// A release owner's public key file (`convoy artifact keygen` writes
    /// KEY.pub); repeatable (the environment variable takes a
    /// comma-separated list). Agent builds are installed only with a valid
    /// signature from one of these keys.
    #[arg(long = "trusted-key", env = "CONVOY_TRUSTED_KEYS", value_name = "PATH", value_delimiter = ',')]
    pub trusted_keys: Vec<PathBuf>,

    /// Install every staged artifact (archive, dpkg) only with a valid
    /// signature from a trusted key, whatever the plan says.
    #[arg(long, env = "CONVOY_REQUIRE_SIGNATURES")]
    pub require_signatures: bool,

    /// A service manager (systemd) restarts the agent when it exits: after
    /// reverting a failed self-upgrade the watchdog leaves the restart to it
    /// instead of starting the previous build itself.
    #[arg(long, env = "CONVOY_SUPERVISED")]
    pub supervised: bool,

    /// Set by an agent that started the build `<state>/current` points at
    /// (see docs/self-upgrade.md): that build does not look at it again.
    #[arg(long, env = "CONVOY_FOLLOWED_CURRENT", hide = true)]
    pub followed_current: bool,

    /// Check this binary and the configuration, print one line of JSON
    /// (version, whether the configuration is accepted) and exit: 0 when
    /// both hold, 3 otherwise. Run on a new build before switching to it.
    #[arg(long)]
    pub self_check: bool,

    /// With --self-check: the version this binary must report.
    #[arg(long, value_name = "VERSION", requires = "self_check")]
    pub expect_version: Option<String>,
}

impl AgentArgs {
    /// `--self-check`: the one line of JSON to print, and whether it passed
    /// (the version is the one expected and the configuration is accepted).
    pub fn self_check_report(self) -> (String, bool) {
        use crate::selfupgrade::identity::{SelfCheck, agent_version};
        let check = SelfCheck { version: agent_version().to_string(), expected: self.expect_version.clone() };
        let config = self.into_config().map(|_| ()).map_err(|e| e.to_string());
        let ok = check.passed() && config.is_ok();
        (check.to_json(config), ok)
    }
}

/// Reads and parses each `--trusted-key` file; an unreadable or invalid one
/// is an error naming it.
pub fn read_trusted_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, AgentError> {
    let bad = |path: &PathBuf, message: String| AgentError::InvalidConfig {
        field: "trusted-key",
        message: format!("{}: {message}", path.display()),
    };
    let mut keys: Vec<PublicKey> = Vec::new();
    if paths.len() > MAX_TRUSTED_KEYS {
        return Err(AgentError::InvalidConfig {
            field: "trusted-key",
            message: format!("{} keys given, at most {MAX_TRUSTED_KEYS}", paths.len()),
        });
    }
    for path in paths {
        let len = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?.len();
        if len > MAX_FILE_BYTES as u64 {
            return Err(bad(path, format!("{len} bytes, at most {MAX_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        let key = PublicKey::parse(&text).map_err(|e| bad(path, e.to_string()))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The most `--trusted-key`s an agent takes.
pub const MAX_TRUSTED_KEYS: usize = 64;

impl AgentArgs {
    /// Builds and validates the configuration.
    pub fn into_config(self) -> Result<AgentConfig, AgentError> {
        let host_id = match self.host_id {
            Some(id) => id,
            None => facts::hostname().ok_or_else(|| AgentError::InvalidConfig {
                field: "host id",
                message: "no --host-id given and the hostname could not be read".into(),
            })?,
        };
        let labels = parse_labels(&self.labels)?;
        // Facts follow the label rules (the same key=value shape and characters).
        let facts = parse_labels(&self.facts).map_err(|e| match e {
            AgentError::InvalidLabel { label, reason } => {
                AgentError::InvalidConfig { field: "fact", message: format!("{label:?}: {reason}") }
            }
            other => other,
        })?;
        let mut config = AgentConfig::new(self.coordinator, self.ca_file, host_id, self.state_dir);
        if let Some(root) = self.install_root {
            config.install_root = root;
        }
        config.server_name = self.server_name;
        config.join_token = match &self.join_token_file {
            Some(path) => {
                let meta = std::fs::metadata(path).map_err(|e| AgentError::InvalidConfig {
                    field: "join-token-file",
                    message: format!("{}: {e}", path.display()),
                })?;
                // A token is 64 hex characters: refuse to slurp a big file.
                if meta.len() > 4096 {
                    return Err(AgentError::InvalidConfig {
                        field: "join-token-file",
                        message: format!("{}: {} bytes is too large for a token", path.display(), meta.len()),
                    });
                }
                let text = std::fs::read_to_string(path).map_err(|e| AgentError::InvalidConfig {
                    field: "join-token-file",
                    message: format!("{}: {e}", path.display()),
                })?;
                Some(text.trim().to_string()).filter(|t| !t.is_empty())
            }
            None => self.join_token.filter(|t| !t.is_empty()),
        };
        config.labels = labels;
        config.facts = facts;
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        config.max_unpacked_bytes = self.max_unpacked_bytes;
        config.trusted_keys = read_trusted_keys(&self.trusted_keys)?;
        config.require_signatures = self.require_signatures;
        config.validate()?;
        Ok(config)
    }
}

/// Parses `key=value` labels; an empty key, a bad character or a key given
/// twice is an error naming the offending label.
pub fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>, AgentError> {
    let mut labels = BTreeMap::new();
    for label in raw {
        let bad = |reason: &str| AgentError::InvalidLabel { label: label.clone(), reason: reason.to_string() };
        let (key, value) = label.split_once('=').ok_or_else(|| bad("expected key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')) {
            return Err(bad("keys may contain only letters, digits, '-', '_', '.' and '/'"));
        }
        if value.chars().any(char::is_control) {
            return Err(bad("value contains a control character"));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(bad("key given twice"));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> AgentArgs {
        let mut argv = vec!["convoy-agent", "--coordinator", "https://c:7443", "--ca-file", "/ca.pem"];
        argv.extend_from_slice(args);
        AgentArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn builds_config() {
        let c = parse(&["--host-id", "db-1", "--label", "role=db", "--label", "dc=par", "--state-dir", "/s"])
            .into_config()
            .unwrap();
        assert_eq!(c.host_id, "db-1");
        assert_eq!(c.labels.get("role").map(String::as_str), Some("db"));
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.install_root, PathBuf::from("/s/install"));
        assert_eq!(c.server_name, DEFAULT_SERVER_NAME);
    }

    #[test]
    fn facts_are_parsed_like_labels() {
        let c = parse(&["--host-id", "h", "--fact", "edition=pro", "--fact", "dc=par"]).into_config().unwrap();
        assert_eq!(c.facts.get("edition").map(String::as_str), Some("pro"));
        assert_eq!(c.facts.len(), 2);
        assert!(c.labels.is_empty(), "facts are not labels");
        let err = parse(&["--host-id", "h", "--fact", "edition"]).into_config().unwrap_err();
        assert!(err.to_string().contains("invalid fact: \"edition\""), "{err}");
    }

    #[test]
    fn bad_label_is_named() {
        let err = parse(&["--host-id", "h", "--label", "nolabel"]).into_config().unwrap_err();
        assert!(err.to_string().contains("\"nolabel\""), "{err}");
        let err = parse(&["--host-id", "h", "--label", "a=1", "--label", "a=2"]).into_config().unwrap_err();
        assert!(err.to_string().contains("a=2"), "{err}");
    }

    #[test]
    fn trusted_keys_are_read_and_checked_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = convoy_common::signature::SecretKey::from_seed([3; 32]);
        let good = dir.path().join("release.pub");
        std::fs::write(&good, key.public().to_text()).unwrap();
        let g = good.to_str().unwrap();
        let c = parse(&["--host-id", "h", "--trusted-key", g, "--require-signatures"]).into_config().unwrap();
        assert_eq!(c.trusted_keys, [key.public()]);
        assert!(c.require_signatures);
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "convoy-public-key: 1\nkey-id: 00\ned25519: zz\n").unwrap();
        let err = parse(&["--host-id", "h", "--trusted-key", bad.to_str().unwrap()]).into_config().unwrap_err();
        assert!(err.to_string().contains("bad.pub") && err.to_string().contains("trusted-key"), "{err}");
        let missing = dir.path().join("missing.pub");
        let err = parse(&["--host-id", "h", "--trusted-key", missing.to_str().unwrap()]).into_config().unwrap_err();
        assert!(err.to_string().contains("missing.pub"), "{err}");
    }

    #[test]
    fn bad_url_rejected() {
        let args = AgentArgs::try_parse_from([
            "convoy-agent",
            "--coordinator",
            "http://c:1",
            "--ca-file",
            "/ca",
            "--host-id",
            "h",
        ])
        .unwrap();
        assert!(args.into_config().unwrap_err().to_string().contains("https://"));
    }
}

//! Enrolment: turning a join token into a client certificate, once.
//!
//! If `<state_dir>/tls` already holds a certificate and key, they are used as
//! they are. Otherwise the agent generates a key pair locally, sends a CSR with
//! `CN = host_id` and the join token over server-authenticated TLS, and saves
//! the certificate it gets back. Refusals (bad or expired token, host id not
//! allowed) are final errors; an unreachable coordinator is retryable and the
//! session loop backs off and tries again — with the same key (kept in
//! `agent.key` from the first attempt), so a retry after an answer that came
//! too late is admitted by the coordinator as the same enrolment.

use convoy_proto::v1::EnrollRequest;
use convoy_proto::v1::agent_service_client::AgentServiceClient;
use tonic::Code;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::tls::{self, AgentIdentity, TlsPaths};

/// The agent's identity, enrolling first if it has none.
pub async fn ensure_identity(config: &AgentConfig) -> Result<AgentIdentity, AgentError> {
    let paths = TlsPaths::new(config.tls_dir());
    if let Some(identity) = tls::load_identity(&paths, &config.host_id)? {
        return Ok(identity);
    }
    let token = config
        .join_token
        .as_deref()
        .ok_or_else(|| AgentError::MissingJoinToken { host_id: config.host_id.clone(), tls_dir: paths.dir.clone() })?;
    let ca = tls::read_ca(&config.ca_file)?;
    // The same key on every attempt: a retry is the same request.
    let (key_pem, csr_pem) = tls::enrolment_csr(&paths, &config.host_id)?;
    tracing::info!(host_id = %config.host_id, coordinator = %config.coordinator_url, "enrolling");
    let channel = tls::connect(config, tls::client_tls(config, &ca, None)).await?;
    let mut client = AgentServiceClient::new(channel);
    let request = EnrollRequest { host_id: config.host_id.clone(), join_token: token.to_string(), csr_pem };
    let response = match tokio::time::timeout(config.connect_timeout * 2, client.enroll(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return Err(status_error(config, &status)),
        Err(_) => {
            return Err(AgentError::Transport {
                coordinator: config.coordinator_url.clone(),
                message: "enrolment: no answer in time".into(),
            });
        }
    };
    if !response.certificate_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(AgentError::EnrollRefused {
            host_id: config.host_id.clone(),
            coordinator: config.coordinator_url.clone(),
            message: "the coordinator returned no certificate".into(),
        });
    }
    let identity = AgentIdentity { cert_pem: response.certificate_pem, key_pem };
    tls::save_identity(&paths, &config.host_id, &identity)?;
    tracing::info!(host_id = %config.host_id, dir = %paths.dir.display(), "enrolled; certificate saved");
    Ok(identity)
}

fn status_error(config: &AgentConfig, status: &tonic::Status) -> AgentError {
    crate::coordinators::follow(config, status);
    match status.code() {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Unimplemented => AgentError::EnrollRefused {
            host_id: config.host_id.clone(),
            coordinator: config.coordinator_url.clone(),
            message: format!("{:?}: {}", status.code(), status.message()),
        },
        _ => AgentError::Transport {
            coordinator: config.coordinator_url.clone(),
            message: format!("enrolment: {:?}: {}", status.code(), status.message()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_token_and_no_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = AgentConfig::new("https://127.0.0.1:1", dir.path().join("ca.pem"), "h1", dir.path());
        let err = ensure_identity(&config).await.unwrap_err();
        assert!(matches!(err, AgentError::MissingJoinToken { .. }), "{err}");
        assert!(err.to_string().contains("h1") && err.to_string().contains("join token"));
        assert!(!err.is_retryable());
    }

    /// Two attempts (the first one's answer lost) send CSRs for the same key,
    /// and that key is the one saved with the certificate.
    #[test]
    fn a_retried_enrolment_uses_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::new(dir.path().join("tls"));
        let (key1, csr1) = tls::enrolment_csr(&paths, "h1").unwrap();
        let (key2, csr2) = tls::enrolment_csr(&paths, "h1").unwrap();
        assert_eq!(key1, key2);
        assert!(csr1.contains("CERTIFICATE REQUEST") && csr2.contains("CERTIFICATE REQUEST"));
        // Another host directory gets another key.
        let (key3, _) = tls::enrolment_csr(&TlsPaths::new(dir.path().join("other")), "h1").unwrap();
        assert_ne!(key1, key3);
        // No certificate yet: still not an identity.
        assert!(tls::load_identity(&paths, "h1").unwrap().is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(paths.key()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn refusals_are_final_outages_retryable() {
        let config = AgentConfig::new("https://c:1", "/ca", "h", "/s");
        assert!(!status_error(&config, &tonic::Status::unauthenticated("bad token")).is_retryable());
        assert!(status_error(&config, &tonic::Status::unavailable("down")).is_retryable());
    }
}

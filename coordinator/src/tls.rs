//! The coordinator's certificate authority and tokens.
//!
//! `convoy-coordinator init` creates a CA, a server certificate signed by it
//! and an operator token under `<data_dir>/tls` and `<data_dir>/operator.token`.
//! Agents enrol with a short-lived join token and a CSR; the coordinator signs
//! a client certificate whose subject CN is the agent's host id, and from then
//! on an agent's session is accepted only for the host id its certificate names.
//! The CSR's own parameters are ignored (a CSR asking to be a CA gets a plain
//! client certificate): only its public key and the enrolled host id are used.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::CoordinatorError;

/// TLS name agents and operators expect the coordinator to present.
pub const DEFAULT_SERVER_NAME: &str = "convoy-coordinator";

/// Paths of the PKI files under a data directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> PkiPaths {
        PkiPaths { dir: data_dir.join("tls") }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// Path of the operator token file under a data directory.
pub fn operator_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operator.token")
}

/// What `init` produced.
#[derive(Debug, Clone)]
pub struct InitOutput {
    pub ca_file: PathBuf,
    pub operator_token: String,
    /// True when the PKI already existed and was kept as it was.
    pub existed: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |source| CoordinatorError::Io { path: path.to_path_buf(), source }
}

fn tls_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CoordinatorError {
    move |e| CoordinatorError::Tls { what: what.to_string(), message: e.to_string() }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), CoordinatorError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A random token of 32 hex-encoded bytes.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Create the CA, the server certificate (valid for `server_names`, plus the
/// default name, `localhost` and 127.0.0.1) and the operator token. Idempotent:
/// an existing PKI is kept, so re-running `init` never locks agents out.
pub fn init(data_dir: &Path, server_names: &[String]) -> Result<InitOutput, CoordinatorError> {
    let paths = PkiPaths::new(data_dir);
    std::fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    let token_path = operator_token_path(data_dir);
    if paths.ca_cert().exists() && paths.server_cert().exists() && token_path.exists() {
        let operator_token = std::fs::read_to_string(&token_path).map_err(io_err(&token_path))?;
        return Ok(InitOutput {
            ca_file: paths.ca_cert(),
            operator_token: operator_token.trim().to_string(),
            existed: true,
        });
    }

    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA params"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Convoy CA");
    ca_params.distinguished_name = dn;
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err("CA certificate"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut names: Vec<String> = vec![DEFAULT_SERVER_NAME.to_string(), "localhost".to_string()];
    for n in server_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let server_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let mut sp = CertificateParams::new(names).map_err(tls_err("server params"))?;
    sp.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DEFAULT_SERVER_NAME);
    sp.distinguished_name = dn;
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.not_before = rcgen::date_time_ymd(2024, 1, 1);
    sp.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let server_cert = sp.signed_by(&server_key, &issuer).map_err(tls_err("server certificate"))?;

    write_private(&paths.ca_key(), &ca_key.serialize_pem())?;
    write_private(&paths.ca_cert(), &ca_cert.pem())?;
    write_private(&paths.server_key(), &server_key.serialize_pem())?;
    write_private(&paths.server_cert(), &server_cert.pem())?;
    let operator_token = random_token();
    write_private(&token_path, &operator_token)?;
    Ok(InitOutput { ca_file: paths.ca_cert(), operator_token, existed: false })
}

/// The loaded CA: signs agent certificates.
pub struct CertificateAuthority {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub fn load(paths: &PkiPaths) -> Result<CertificateAuthority, CoordinatorError> {
        let ca_pem = std::fs::read_to_string(paths.ca_cert()).map_err(io_err(&paths.ca_cert()))?;
        let key_pem = std::fs::read_to_string(paths.ca_key()).map_err(io_err(&paths.ca_key()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(tls_err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(tls_err("CA certificate"))?;
        Ok(CertificateAuthority { ca_pem, issuer })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Sign a client certificate for `host_id` with the public key of `csr_pem`.
    pub fn sign_agent(&self, host_id: &str, csr_pem: &str) -> Result<String, CoordinatorError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CoordinatorError::BadRequest { field: "csr_pem".into(), message: e.to_string() })?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("agent params"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host_id);
        // Marks a certificate that has an enrolment record (see
        // crate::enrolment): one without it predates the records.
        dn.push(DnType::OrganizationalUnitName, crate::enrolment::ENROLLED_MARK);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(tls_err("agent certificate"))?;
        Ok(cert.pem())
    }
}

/// The sha256 (hex) of the public key in `csr_pem`, once the CSR's
/// signature is verified (so the caller holds the private key): what an
/// enrolment record keeps to recognise a retried enrolment.
pub fn csr_key_digest(csr_pem: &str) -> Result<String, CoordinatorError> {
    use rcgen::PublicKeyData;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CoordinatorError::BadRequest { field: "csr_pem".into(), message: e.to_string() })?;
    Ok(crate::enrolment::sha256_hex(csr.public_key.der_bytes()))
}

/// A fresh key (PEM) and a CSR (PEM) for `host`, for tests.
#[cfg(test)]
pub(crate) fn test_csr(host: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, host);
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), csr)
}

/// The subject common name of a DER certificate: the host id an agent's
/// certificate was issued for.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_signs_agent_certs_for_the_enrolled_host() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path(), &[]).unwrap();
        assert!(!first.existed);
        let second = init(dir.path(), &[]).unwrap();
        assert!(second.existed);
        assert_eq!(first.operator_token, second.operator_token);

        let ca = CertificateAuthority::load(&PkiPaths::new(dir.path())).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // The CSR claims another name and CA powers: both must be ignored.
        p.distinguished_name.push(DnType::CommonName, "someone-else");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.sign_agent("web-1", &csr).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let der = parsed.contents;
        assert_eq!(certificate_common_name(&der).as_deref(), Some("web-1"));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
    }

    #[test]
    fn garbage_csr_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        let ca = CertificateAuthority::load(&PkiPaths::new(dir.path())).unwrap();
        let err = ca.sign_agent("web-1", "not a csr").unwrap_err();
        assert!(err.to_string().contains("csr_pem"), "{err}");
    }
}

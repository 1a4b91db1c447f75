//! A minimal HTTPS client for the coordinator's dashboard listener: one
//! request per connection (HTTP/1.0, so the body ends with the connection),
//! trusting the cluster's CA, with a timeout on the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::FleetError;

/// An answer: status code, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct HttpsAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpsAnswer {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn err(url: &str) -> impl Fn(std::io::Error) -> FleetError + '_ {
    move |e| FleetError::Http(format!("{url}: {e}"))
}

/// `METHOD url` with `headers` and `body`, trusting `ca_pem`; 10 s at most.
pub async fn request(
    method: &str,
    url: &str,
    ca_pem: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpsAnswer, FleetError> {
    tokio::time::timeout(Duration::from_secs(10), exchange(method, url, ca_pem, headers, body))
        .await
        .map_err(|_| FleetError::Http(format!("{url}: no answer within 10s")))?
}

async fn exchange(
    method: &str,
    url: &str,
    ca_pem: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpsAnswer, FleetError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| FleetError::Http(format!("not an https:// URL: {url}")))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.map_err(err(url))?).map_err(|e| FleetError::Http(format!("CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FleetError::Http(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(authority).await.map_err(err(url))?;
    // The coordinator's certificate names `localhost` (and 127.0.0.1).
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| FleetError::Http(e.to_string()))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(err(url))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tls.write_all(req.as_bytes()).await.map_err(err(url))?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still gave us the answer.
    if let Err(e) = tls.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(err(url)(e));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| FleetError::Http(format!("{url}: no status line")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpsAnswer { status, headers, body: body.to_string() })
}

/// The value of the sample `series` (name and labels, as printed) in a
/// Prometheus text exposition, if there is one.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

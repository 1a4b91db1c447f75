//! TLS for the coordinator's listeners: the rustls configurations (gRPC with
//! optional client certificates, HTTPS without), and the handshakes done
//! before a connection reaches its server, a bounded number at a time.
//!
//! After a restart a whole fleet reconnects within a second. Started
//! together, 10,000 handshakes share the CPU and all finish late, together;
//! admitted a few dozen at a time, in arrival order, they finish steadily
//! from the start (the first tenth of a 10,000-agent swarm back after 5 s
//! instead of 7 s) but the last no sooner, and the coordinator ends up
//! larger: the default bound is the fleet's size (see
//! [`crate::connections::DEFAULT_HANDSHAKES_AT_ONCE`]).
//!
//! - A connection waits for its first bytes outside the bound: a silent
//!   peer costs a descriptor until the handshake timeout, never a slot.
//! - An admitted handshake holds its slot for at most [`SLOT_TIME`]; past it
//!   the handshake carries on outside the bound, so a slow client, or one
//!   stalling on purpose, does not keep the others out for long.
//! - The whole handshake, the wait for a slot included, is bounded by the
//!   handshake timeout.
//! - A handshake refused by TLS (a certificate the CA did not sign, a
//!   protocol error) is logged with the peer's address and counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::connections::Counted;
use crate::error::CoordinatorError;
use crate::metrics::{HandshakeKind, Metrics, RefusalReason};
use crate::tickets::SessionTickets;

/// How long an admitted handshake may hold its slot.
pub const SLOT_TIME: Duration = Duration::from_secs(1);

fn tls_error(what: &str) -> impl Fn(String) -> CoordinatorError + '_ {
    move |message| CoordinatorError::Tls { what: what.to_string(), message }
}

/// The certificate chain and key of a PEM pair.
fn identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CoordinatorError> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("server certificate")(e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error("server certificate")("no certificate in PEM".into()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| tls_error("server key")(e.to_string()))?
        .ok_or_else(|| tls_error("server key")("no private key in PEM".into()))?;
    Ok((certs, key))
}

/// The gRPC listener's configuration: the server's identity, HTTP/2, and
/// clients' certificates checked against `ca_pem` when presented
/// (enrolment comes before an agent has one; the services refuse callers
/// without one where it is needed).
pub fn grpc_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    tickets: Option<Arc<SessionTickets>>,
) -> Result<Arc<rustls::ServerConfig>, CoordinatorError> {
    let mut roots = RootCertStore::empty();
    let cas = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("CA certificate")(e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(tls_error("CA certificate")("no usable certificate in PEM".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error("client verifier")(e.to_string()))?;
    server_config(cert_pem, key_pem, verifier, b"h2", tickets, "grpc config")
}

/// The HTTPS listener's configuration: the server's identity, HTTP/1.1, no
/// client certificates (browsers and scrapers log in with tokens).
pub fn https_config(
    cert_pem: &str,
    key_pem: &str,
    tickets: Option<Arc<SessionTickets>>,
) -> Result<Arc<rustls::ServerConfig>, CoordinatorError> {
    server_config(cert_pem, key_pem, Arc::new(rustls::server::NoClientAuth), b"http/1.1", tickets, "https config")
}

/// ring's suites, AES-128-GCM with SHA-256 first (the coordinator's choice,
/// not the client's: see `ignore_client_order` below). It is TLS 1.3's
/// mandatory suite; what sets it apart is its hash: a handshake's transcript
/// and key schedule are hashed with SHA-256, which x86 CPUs compute in
/// hardware, where SHA-384 (rustls' first choice) runs in software — 4–5 %
/// of the coordinator's CPU while a fleet reconnects, on each side.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A listener's configuration: its identity, `clients` checking client
/// certificates, the one protocol it speaks (ALPN), and the session
/// tickets it issues and resumes from, if any (rustls' default otherwise:
/// sessions remembered in this process only).
fn server_config(
    cert_pem: &str,
    key_pem: &str,
    clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    alpn: &[u8],
    tickets: Option<Arc<SessionTickets>>,
    what: &str,
) -> Result<Arc<rustls::ServerConfig>, CoordinatorError> {
    let (certs, key) = identity(cert_pem, key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(what)(e.to_string()))?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(what)(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    config.ignore_client_order = true;
    // One ticket per connection, not rustls' two: a client holds one
    // connection and spends one ticket per reconnect, and each new
    // connection brings it the next. The second only helped an attempt
    // that failed after spending the first, and cost both sides a ticket
    // sealed, sent and stored on every reconnect of the fleet.
    config.send_tls13_tickets = 1;
    if let Some(tickets) = tickets {
        config.ticketer = tickets;
    }
    Ok(Arc::new(config))
}

/// How a listener runs its handshakes.
#[derive(Clone)]
pub struct Handshakes {
    pub config: Arc<rustls::ServerConfig>,
    /// The whole handshake, from accept, within this.
    pub timeout: Duration,
    /// Handshakes admitted at once.
    pub at_once: usize,
    /// Counts refused handshakes.
    pub metrics: Option<Arc<Metrics>>,
}

/// A connection whose handshake is done. Boxed, as tonic boxes the TLS
/// streams of its own acceptor: a TLS stream is large and sits inside each
/// connection's futures for the connection's whole life.
pub struct Tls(Box<TlsStream<Counted>>);

impl Tls {
    /// The peer's address.
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.0.get_ref().0.peer_addr()
    }
}

impl Connected for Tls {
    type ConnectInfo = <TlsStream<Counted> as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Tls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Connections whose handshake is done, in the order they finish; see the
/// module doc. Dropping it stops the handshakes under way.
pub struct TlsIncoming {
    rx: mpsc::Receiver<Tls>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<Tls>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl Handshakes {
    /// Run the handshakes of `incoming`'s connections until it ends or
    /// `stop` is cancelled.
    pub fn run<S>(self, mut incoming: S, stop: CancellationToken) -> TlsIncoming
    where
        S: Stream<Item = io::Result<Counted>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(self.at_once.max(1)));
        // Unconstrained by tokio's cooperative budget: the loop drains every
        // connection the kernel holds each time it runs instead of yielding
        // after 128 and waiting its turn behind thousands of handshakes
        // while the backlog overflows (see `crate::connections`). Each
        // iteration is an accept and a spawn; it yields once nothing is
        // waiting.
        let task = tokio::spawn(tokio::task::unconstrained(async move {
            // Dropped (aborted) with this task: no handshake outlives its listener.
            let mut running = JoinSet::new();
            loop {
                let conn = tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(_) = running.join_next(), if !running.is_empty() => continue,
                    c = incoming.next() => match c {
                        Some(Ok(conn)) => conn,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "accept failed");
                            continue;
                        }
                        None => break,
                    },
                };
                let (hs, slots, tx) = (self.clone(), slots.clone(), tx.clone());
                running.spawn(async move {
                    let peer = conn.peer_addr();
                    match tokio::time::timeout(hs.timeout, handshake(conn, &hs.config, &slots)).await {
                        Ok(Ok(tls)) => {
                            if let Some(m) = &hs.metrics {
                                let kind = match tls.get_ref().1.handshake_kind() {
                                    Some(rustls::HandshakeKind::Resumed) => HandshakeKind::Resumed,
                                    _ => HandshakeKind::Full,
                                };
                                m.handshake(kind);
                            }
                            let _ = tx.send(Tls(Box::new(tls))).await;
                        }
                        // The client gave up on us (it does not trust this
                        // server's certificate, say): not a refusal of ours.
                        Ok(Err(e)) if peer_alert(&e) => {
                            tracing::info!(%peer, error = %e, "TLS handshake ended by the client")
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                            tracing::warn!(%peer, error = %e, "TLS handshake refused");
                            if let Some(m) = &hs.metrics {
                                m.refused(RefusalReason::TlsHandshake);
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, timeout = ?hs.timeout, "TLS handshake timed out"),
                    }
                });
            }
        }));
        TlsIncoming { rx, task }
    }
}

/// Whether a handshake failed on an alert the client sent.
fn peer_alert(e: &io::Error) -> bool {
    matches!(e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()), Some(rustls::Error::AlertReceived(_)))
}

/// One handshake: the wait for the client's first bytes outside the
/// bound, the rest in a slot for at most [`SLOT_TIME`].
async fn handshake(
    conn: Counted,
    config: &Arc<rustls::ServerConfig>,
    slots: &Arc<Semaphore>,
) -> io::Result<TlsStream<Counted>> {
    // A peek, not `readable()`: a new socket starts out as "ready" in tokio
    // until a read finds nothing.
    if conn.peek(&mut [0u8; 1]).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let slot = slots.clone().acquire_owned().await.map_err(io::Error::other)?;
    let mut accept = tokio_rustls::TlsAcceptor::from(config.clone()).accept(conn);
    tokio::select! {
        done = &mut accept => return done,
        _ = tokio::time::sleep(SLOT_TIME) => {}
    }
    drop(slot);
    accept.await
}

//! What a connection may cost the coordinator: how many it holds, how long
//! a TLS handshake may take, and how long a silent peer is kept.
//!
//! - **Handshake timeout**: a peer that has not finished its TLS handshake
//!   within [`Limits::handshake_timeout`] is dropped.
//! - **Handshakes at once**: at most [`Limits::handshakes_at_once`] run
//!   together, in arrival order ([`crate::handshakes`]).
//! - **Keepalive**: HTTP/2 pings every [`Limits::keepalive_interval`]; a peer
//!   that does not answer within [`Limits::keepalive_timeout`] is dropped, so
//!   a connection that finished its handshake and then went silent does not
//!   stay forever. TCP keepalive covers vanished hosts.
//! - **Connection cap**: at most [`Limits::max_connections`] at once; past it
//!   a new connection is closed at once (and the refusal logged, at most once
//!   a second) instead of waiting in the kernel's backlog. The cap defaults to
//!   the open-file limit less [`FD_HEADROOM`], so the store, artifacts and
//!   logs always have descriptors left.
//! - **Open files**: at start the soft `RLIMIT_NOFILE` is raised to the hard
//!   limit (the usual soft 1,024 runs out at a few hundred agents).
//! - **Listen backlog**: connections the kernel has completed and the
//!   coordinator not yet accepted ([`bind`], [`DEFAULT_LISTEN_BACKLOG`]).
//!   After a restart a whole fleet connects within a fraction of a second;
//!   a connection that finds the backlog full has its SYN dropped, and the
//!   agent's kernel tries again only 1, 3, then 7 s later. Accepting is
//!   cheap next to the TLS handshake, so the accept loop drains the backlog
//!   whenever it runs (`crate::handshakes`; `crate::ha` in HA): connections wait in the
//!   handshake queue, in the coordinator, not in the kernel's.
//!
//! The cap is shared by agents and operators: a flood of connections from
//! one place can still crowd operators out until the handshake timeout
//! frees the slots. A separate operator listener is not there yet.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Silence after which a connection's peer is probed by TCP keepalive.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Descriptors kept for everything that is not a connection.
pub const FD_HEADROOM: usize = 256;

/// Handshakes admitted at once by default. Measured with 10,000 agents
/// reconnecting after a restart (docs/benchmark.md): 64 at once brought the
/// first tenth back after 5 s instead of 7 s, but all of them no sooner
/// (13 s either way on 2 shared cores) and left the idle coordinator
/// 75 MiB larger, so the default only bounds what a flood may start.
pub const DEFAULT_HANDSHAKES_AT_ONCE: usize = 10_000;

/// The listen backlog asked for by default: the most Linux takes. The
/// kernel caps it at `net.core.somaxconn` (4,096 by default since Linux
/// 5.4), which is what a restarted coordinator of a fleet larger than that
/// needs raised (docs/operations.md).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` (`host:port`; each address it resolves to is tried in turn)
/// with room for `backlog` connections not yet accepted, where
/// `TcpListener::bind` leaves room for 128 (the standard library's choice).
pub async fn bind(addr: &str, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As TcpListener::bind does: a restarted coordinator binds its port
        // again while the old connections are still in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing")))
}

/// The kernel's cap on listen backlogs (`net.core.somaxconn`), if it can be read.
pub fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// Connection limits, validated by the binary's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// TLS handshakes admitted at once (see [`crate::handshakes`]).
    pub handshakes_at_once: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// `None`: from the open-file limit.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            handshakes_at_once: DEFAULT_HANDSHAKES_AT_ONCE,
            // Agents' sessions are watched by their heartbeats: pings here
            // only clear connections that went silent otherwise, and every
            // 20 s they were 500 a second at 10,000 agents.
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: None,
        }
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now
/// in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let (soft, hard) = (lim.current, lim.maximum);
    if let (Some(s), hard) = (soft, hard)
        && hard.is_none_or(|h| h > s)
    {
        let target = hard.unwrap_or(1 << 20);
        let raised = rustix::process::Rlimit { current: Some(target), maximum: hard };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = s, to = target, "raised the open-file limit");
                return target;
            }
            Err(e) => tracing::warn!(soft = s, error = %e, "could not raise the open-file limit"),
        }
    }
    soft.unwrap_or(1 << 20)
}

/// The cap for `limits` given the open-file limit `fds`.
pub fn effective_cap(limits: &Limits, fds: u64) -> usize {
    limits.max_connections.unwrap_or_else(|| (fds as usize).saturating_sub(FD_HEADROOM).max(16))
}

/// A TCP connection counted against the cap until it is dropped.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    live: Arc<AtomicUsize>,
}

impl Counted {
    /// Waits until the peer has sent something and copies its first bytes
    /// into `buf` without consuming them; 0 if it closed first.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.peek(buf).await
    }

    /// The peer's address (unspecified if the socket no longer knows it).
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.inner.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepted connections, at most `cap` alive at once.
pub struct CappedIncoming {
    listener: TcpListener,
    live: Arc<AtomicUsize>,
    cap: usize,
    last_refusal_log: Option<std::time::Instant>,
    /// After an accept error (out of descriptors), wait before the next try.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts connections refused at the cap.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl CappedIncoming {
    pub fn new(listener: TcpListener, cap: usize) -> CappedIncoming {
        CappedIncoming { listener, live: Arc::default(), cap, last_refusal_log: None, backoff: None, metrics: None }
    }

    /// Count refused connections in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> CappedIncoming {
        self.metrics = Some(metrics);
        self
    }

    /// Connections alive now.
    pub fn live(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

impl Stream for CappedIncoming {
    type Item = io::Result<Counted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.backoff.as_mut() {
                if b.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.backoff = None;
            }
            let (stream, peer) = match self.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                // Out of descriptors and the like: keep serving (tonic would
                // stop on this error) and try again a little later.
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed; retrying in 50ms");
                    self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                    continue;
                }
                Poll::Ready(Ok(accepted)) => accepted,
            };
            if self.live.load(Ordering::Relaxed) >= self.cap {
                let now = std::time::Instant::now();
                if self.last_refusal_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    self.last_refusal_log = Some(now);
                    tracing::warn!(%peer, cap = self.cap, "connection refused: the connection cap is reached");
                }
                if let Some(m) = &self.metrics {
                    m.refused(crate::metrics::RefusalReason::ConnectionCap);
                }
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            // Vanished hosts: probed after a minute of silence, dropped
            // after about three more.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(TCP_KEEPALIVE)
                .with_interval(Duration::from_secs(20))
                .with_retries(9);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            self.live.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Counted { inner: stream, live: self.live.clone() })));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections queued for the listener on `port` (the accept queue's
    /// length), from /proc/net/tcp.
    fn queued(port: u16) -> Option<usize> {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            // State 0A is LISTEN; for a listener, rx_queue is its accept queue.
            (local_port == port && f.get(3) == Some(&"0A"))
                .then(|| usize::from_str_radix(f.get(4)?.rsplit_once(':')?.1, 16).ok())?
        })
    }

    /// A fleet reconnecting at once waits in the backlog instead of having
    /// its SYNs dropped (and retried a second later): with tokio's own
    /// `bind` the queue stops at 129 and the rest hang in SYN retries.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog_not_in_syn_retries() {
        raise_fd_limit();
        let burst = 1_500usize;
        let listener = bind("127.0.0.1:0", DEFAULT_LISTEN_BACKLOG).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The kernel holds at most somaxconn + 1.
        let expected = burst.min(kernel_backlog_cap().unwrap_or(4096) as usize + 1);
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut clients = Vec::with_capacity(burst);
        for _ in 0..burst {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
                Err(e) => panic!("connect: {e}"),
            }
            clients.push(s);
        }
        // Nothing accepts: every connection the kernel completed is queued.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = queued(port);
        while seen != Some(expected) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = queued(port);
        }
        assert_eq!(seen, Some(expected), "connections queued for the listener (of {burst} opened)");
        assert!(expected > 129, "this kernel's somaxconn is too small to tell the backlogs apart");
        drop(listener);
    }

    #[tokio::test]
    async fn bind_names_what_it_could_not_resolve_or_bind() {
        assert!(bind("no-such-host.invalid:1", 16).await.is_err());
        let taken = bind("127.0.0.1:0", 16).await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        assert_eq!(bind(&addr, 16).await.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }
}

//! Loopback networking for local fleets: a free port for a service to bind a
//! moment later, and a plain HTTP GET to ask a service itself.

use std::path::Path;
use std::time::Duration;

use crate::FleetError;

/// A free port on 127.0.0.1, for a demo or example service to bind a moment
/// later (the local fleets only: tests bind port 0 themselves).
///
/// Chosen *below* the kernel's ephemeral range (`ip_local_port_range`), at
/// random: a port the kernel handed out for port 0 is also one it hands to
/// the next outgoing connection (an agent dialling the coordinator, a
/// health check), which then holds it when the service comes to bind it.
/// That lost one demo run in about fifty. Falls back to port 0 when the
/// range leaves no room below it.
pub fn free_port() -> Result<u16, FleetError> {
    let ephemeral_start = ephemeral_start();
    // Clear of the well-known and most registered service ports.
    const LOWEST: u16 = 10_000;
    if ephemeral_start > LOWEST {
        for _ in 0..100 {
            let port = rand::random_range(LOWEST..ephemeral_start);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(FleetError::io(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr().map_err(FleetError::io(Path::new("127.0.0.1:0")))?.port())
}

/// The first port of the kernel's ephemeral range (Linux's default if unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A plain HTTP GET of `http://HOST:PORT/PATH` with a 2 s timeout: the
/// status line and the body.
pub fn http_get(url: &str) -> Result<(String, String), FleetError> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| FleetError::Http(format!("not an http:// URL: {url}")))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(authority).map_err(|e| FleetError::Http(format!("{url}: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| FleetError::Http(e.to_string()))?;
    // One write: the demo service reads the request with a single read.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| FleetError::Http(e.to_string()))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| FleetError::Http(format!("{url}: {e}")))?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn a_free_port_is_below_the_ephemeral_range_and_bindable() {
        let start = super::ephemeral_start();
        for _ in 0..20 {
            let p = super::free_port().unwrap();
            if start > 10_000 {
                assert!((10_000..start).contains(&p), "{p} not below the ephemeral range starting at {start}");
            }
            // Free at the time of asking: bindable (SO_REUSEADDR, as services do).
            let l = std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
            drop(l);
        }
    }
}

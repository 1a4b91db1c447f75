//! A deliberately tiny HTTP/1.1 client for health checks.
//!
//! Health endpoints are plain HTTP on the host or its neighbours; pulling in a
//! full client (and its TLS stack) for `GET /health` is not worth it. Only
//! `http://` URLs are accepted. The request is `GET <path> HTTP/1.1` with
//! `Host` and `Connection: close`; the response is read until EOF or until
//! `Content-Length` bytes of body have arrived, capped at [`MAX_RESPONSE`].
//! A chunked body is decoded when it is well-formed and used raw otherwise:
//! good enough for "does the body contain `ok`".

use std::time::Duration;

use convoy_common::capture;
use convoy_common::model::{CaptureFrom, CaptureSpec, HttpCheckSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::check::Observed;

/// Bytes of response read at most.
pub const MAX_RESPONSE: usize = 1 << 20;

/// Characters of body quoted in messages.
const BODY_SHOWN: usize = 200;

/// Bytes of body kept (its end) in the outcome's `stdout_tail`.
const BODY_KEPT: usize = 4096;

/// The last `max` bytes of `s` at most, cut on a character boundary.
fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// Host as given, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Value of the `Host` header.
    pub authority: String,
}

pub(crate) fn parse_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url}: invalid host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{url}: unterminated IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_string(), p),
            None if after.is_empty() => (h.to_string(), "80"),
            None => return Err(format!("{url}: invalid host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "80"),
        }
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("{url}: invalid port {port:?}"))?;
    if host.is_empty() {
        return Err(format!("{url}: invalid host"));
    }
    Ok(HttpUrl { host, port, path, authority: authority.to_string() })
}

/// A response: status code and (decoded, lossy UTF-8) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: String,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/") => s,
        _ => return Err(format!("not an HTTP response: {:?}", truncate(status_line, 80))),
    };
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.parse().ok();
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    Ok(Head { status, content_length, chunked })
}

/// Decodes a chunked body; `None` if it is malformed or incomplete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `GET` `url`. The caller bounds the time it may take.
pub(crate) async fn get(url: &HttpUrl) -> Result<Response, String> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: convoy-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut head: Option<(usize, Head)> = None;
    loop {
        if let Some((body_start, h)) = &head
            && let Some(len) = h.content_length
            && buf.len() >= body_start + len
        {
            buf.truncate(body_start + len);
            break;
        }
        if buf.len() >= MAX_RESPONSE {
            break;
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A reset after a complete head still gives a usable answer.
            Err(e) if head.is_some() => {
                tracing::debug!("http read after head: {e}");
                0
            }
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none()
            && let Some(end) = find(&buf, b"\r\n\r\n")
        {
            head = Some((end + 4, parse_head(&buf[..end])?));
        }
    }
    let (body_start, h) = match head {
        Some(h) => h,
        None if buf.is_empty() => return Err("connection closed without a response".to_string()),
        None => return Err(format!("incomplete response head: {:?}", truncate(&String::from_utf8_lossy(&buf), 80))),
    };
    let raw = &buf[body_start.min(buf.len())..];
    let body = if h.chunked { dechunk(raw).unwrap_or_else(|| raw.to_vec()) } else { raw.to_vec() };
    Ok(Response { status: h.status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { s.chars().take(max).collect::<String>() + "..." }
}

/// One attempt of an HTTP check.
pub(crate) async fn http_attempt(spec: &HttpCheckSpec, url: &HttpUrl, budget: Duration) -> Result<Observed, Observed> {
    let response = match tokio::time::timeout(budget, get(url)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(Observed::detail(format!("{}: {e}", spec.url))),
        Err(_) => return Err(Observed::detail(format!("{}: no complete response within {budget:?}", spec.url))),
    };
    let seen =
        format!("{}: status {}, body {:?}", spec.url, response.status, truncate(response.body.trim(), BODY_SHOWN));
    // A leader check reads the member's role from the status and the body.
    let answer = |detail: String| Observed {
        detail,
        http_status: Some(response.status),
        stdout_tail: tail(&response.body, BODY_KEPT),
        ..Observed::default()
    };
    let status_ok = response.status == spec.expect_status;
    let body_ok = spec.body_contains.as_deref().is_none_or(|needle| response.body.contains(needle));
    // The JSON field is read with the same path rules as captures.
    let json_seen = spec.json.as_ref().map(|j| {
        let capture = CaptureSpec { name: j.path.clone(), from: CaptureFrom::Json(j.path.clone()) };
        match capture::extract(&capture, &response.body) {
            Ok(v) if v == j.equals => Ok(()),
            Ok(v) => Err(format!(" (expected {} = {:?}, found {v:?})", j.path, j.equals)),
            Err(e) => Err(format!(" ({e})")),
        }
    });
    let json_ok = !matches!(json_seen, Some(Err(_)));
    if status_ok && body_ok && json_ok {
        Ok(answer(format!("{}: status {}", spec.url, response.status)))
    } else {
        let mut detail = seen;
        if !status_ok {
            detail.push_str(&format!(" (expected status {})", spec.expect_status));
        }
        if let (false, Some(needle)) = (body_ok, spec.body_contains.as_deref()) {
            detail.push_str(&format!(" (expected body containing {needle:?})"));
        }
        if let Some(Err(why)) = json_seen {
            detail.push_str(&why);
        }
        Err(answer(detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/health?x=1"));
        let u = parse_url("http://example").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.authority.as_str()), (80, "/", "example"));
        let u = parse_url("http://[::1]:9000/a#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 9000, "/a"));
        let u = parse_url("http://h?q").unwrap();
        assert_eq!(u.path, "/?q");
        for bad in ["https://h/", "http://", "http://h:0/", "http://h:x/", "http://u@h/", "ftp://h"] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn an_answer_reports_its_status_and_body_for_leader_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await.unwrap();
            conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nrole=replica")
                .await
                .unwrap();
        });
        let spec = HttpCheckSpec {
            url: format!("http://{addr}/primary"),
            expect_status: 200,
            body_contains: None,
            json: None,
            policy: Default::default(),
        };
        let url = parse_url(&spec.url).unwrap();
        let seen = http_attempt(&spec, &url, Duration::from_secs(10)).await.expect_err("503 is not 200");
        assert_eq!(seen.http_status, Some(503));
        assert_eq!(seen.stdout_tail, "role=replica");
        server.await.unwrap();
        assert_eq!(tail("aé", 1), "", "cut on a character boundary");
    }

    #[test]
    fn chunked() {
        assert_eq!(dechunk(b"2\r\nok\r\n3;x=1\r\n!!!\r\n0\r\n\r\n").unwrap(), b"ok!!!");
        assert_eq!(dechunk(b"zz\r\n"), None);
        assert_eq!(dechunk(b"5\r\nab"), None);
    }

    #[test]
    fn heads() {
        let h =
            parse_head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nTransfer-Encoding: Chunked").unwrap();
        assert_eq!((h.status, h.content_length, h.chunked), (503, Some(4), true));
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
    }
}

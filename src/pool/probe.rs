//! One active health probe, on fulcrum's own HTTP/1 engine: the connection is opened as
//! the backend connects (TLS, the PROXY header — a LOCAL one, no client), the request head
//! written by hand, the answer read with [`ServerConn::poll_response_head`] and, for
//! `expect_body`, a bounded part of its body with [`BodyDecoder`].

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::Server;
use super::agent;
use crate::config::{self, Dur, HealthKind, StatusRange};
use crate::h1::BodyDecoder;
use crate::upstream::ConnectError;
use crate::upstream::h1::ServerConn;

/// The most body bytes read to look for `expect_body`: a health page is small, and a
/// server that streams forever must not hold the check.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The result of one probe: passed, or why not.
pub type Probe = Result<(), ProbeFailure>;

/// Why one health probe failed. The `server_down` event quotes it, so its text says what
/// an operator would look at first: the address that refused, or the status that came back.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// Nothing (connect, handshake, answer) within the check's `timeout`.
    #[error("no answer within {0}")]
    TimedOut(Dur),
    /// The TCP connect failed: refused, unreachable, reset.
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (a certificate that does not verify names why).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The request could not be written.
    #[error("sending the check: {0}")]
    Send(#[source] std::io::Error),
    /// The connection ended before a whole response head, or the head was malformed.
    #[error("no valid answer: {0}")]
    Answer(String),
    /// An answer outside `expect_status`.
    #[error("status {status}, expected {expected}")]
    Status { status: u16, expected: StatusRange },
    /// The body (its first [`BODY_LIMIT`] bytes) lacks `expect_body`.
    #[error("the answer's body does not contain `{0}`")]
    Body(String),
}

impl ProbeFailure {
    /// Whether the probe failed because fulcrum itself is out of fds (EMFILE/ENFILE on its
    /// own socket), which says nothing about the server.
    pub fn is_local_fd_exhaustion(&self) -> bool {
        matches!(self, ProbeFailure::Connect { source, .. } if crate::fds::is_exhaustion(source))
    }
}

/// What one probe found: its result, and the `fulcrum-agent` header when an HTTP answer
/// came (`None`: no answer to read one from; `Some(None)`: an answer without it).
#[derive(Debug)]
pub struct Probed {
    pub result: Probe,
    pub agent: Option<Option<String>>,
}

/// Runs one check of `server` as `settings` describe, within the timeout.
pub async fn probe(server: &Server, settings: &config::Health) -> Probed {
    let timeout = settings.timeout.get();
    let mut agent = None;
    let result =
        match tokio::time::timeout(timeout, probe_inner(server, settings, &mut agent)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeFailure::TimedOut(settings.timeout)),
        };
    Probed { result, agent }
}

/// Where the check goes: the server's address, or its host at `port` when set.
fn check_addr(server: &Server, settings: &config::Health) -> SocketAddr {
    let addr = server.addr();
    match u16::try_from(settings.port) {
        Ok(p) if p != 0 => SocketAddr::new(addr.ip(), p),
        _ => addr,
    }
}

async fn probe_inner(
    server: &Server,
    settings: &config::Health,
    agent: &mut Option<Option<String>>,
) -> Probe {
    let addr = check_addr(server, settings);
    let target = server.target().clone();
    let stream = crate::upstream::connect::open(addr, &target, None, settings.timeout.get())
        .await
        .map_err(|e| match e {
            ConnectError::Failed(source) | ConnectError::Proxy(source) => {
                ProbeFailure::Connect { addr, source }
            }
            ConnectError::TimedOut => ProbeFailure::TimedOut(settings.timeout),
            ConnectError::Tls(source) => ProbeFailure::Tls { addr, source },
        })?;
    if settings.kind == HealthKind::Tcp {
        return Ok(());
    }
    let mut conn = ServerConn::fresh(stream);
    let head = request_head(server, settings);
    conn.stream
        .write_all(&head)
        .await
        .map_err(ProbeFailure::Send)?;
    let mut answered = false;
    let resp = std::future::poll_fn(|cx| conn.poll_response_head(cx, false, &mut answered))
        .await
        .map_err(|e| ProbeFailure::Answer(e.to_string()))?;
    let said = resp
        .headers
        .named(conn.buf.pending(), agent::HEADER)
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    *agent = Some(said);
    if !settings.expect_status.contains(resp.status) {
        return Err(ProbeFailure::Status {
            status: resp.status,
            expected: settings.expect_status,
        });
    }
    if settings.expect_body.is_empty() {
        return Ok(());
    }
    conn.buf.consume(resp.head_len);
    let body = conn
        .read_body(BodyDecoder::for_response(resp.body), BODY_LIMIT)
        .await
        .map_err(ProbeFailure::Answer)?;
    if memchr_find(&body, settings.expect_body.as_bytes()) {
        Ok(())
    } else {
        Err(ProbeFailure::Body(settings.expect_body.clone()))
    }
}

/// The check's request head. The Host is `host`, else the server's address as written; a
/// `headers` entry replaces the default User-Agent of the same name.
fn request_head(server: &Server, settings: &config::Health) -> Vec<u8> {
    let host = if settings.host.is_empty() {
        server.address.as_str()
    } else {
        settings.host.as_str()
    };
    let mut out = Vec::with_capacity(256);
    for part in [
        "GET ",
        settings.path.as_str(),
        " HTTP/1.1\r\nhost: ",
        host,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    let named = |n: &str| settings.headers.keys().any(|k| k.eq_ignore_ascii_case(n));
    if !named("user-agent") {
        out.extend_from_slice(b"user-agent: fulcrum-health-check\r\n");
    }
    for (name, value) in &settings.headers {
        if ["host", "connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        for part in [name.as_str(), ": ", value.as_str(), "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

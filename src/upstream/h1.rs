//! fulcrum's own HTTP/1.1 connections to servers: a socket and a read buffer, checked out
//! of its server's idle pool by the request that uses it and checked back in by the same
//! request when the exchange ended cleanly (no dispatcher task, no channels).
//!
//! An idle connection is its socket alone: the read buffer goes back to the thread's pool
//! (see [`crate::buffers`]) before the connection is pooled, and one whose buffer still
//! holds bytes (the server sent more than its response) is never pooled.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ClientAddrs, ConnectError, Target, UpStream};
use crate::buffers::ReadBuf;
use crate::h1::{BodyDecoder, Limits, Parsed, ResponseError, ResponseHead, parse_response};

/// The largest server response head accepted (a larger one is a 502).
pub const RESPONSE_HEAD_LIMIT: usize = 64 * 1024;

/// Why no response head could be read. Its text is what health checks and fulcrum's own
/// calls report.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The connection ended before the first byte of a response: a pooled connection the
    /// server closed as we used it, or a server that took the request and hung up.
    #[error("the connection closed before an answer")]
    Closed,
    /// It ended or failed after the server had started answering.
    #[error("the connection closed within the answer's head")]
    Broken,
    /// The head broke the framing rules, or is over [`RESPONSE_HEAD_LIMIT`].
    #[error("{0}")]
    Malformed(ResponseError),
}

/// What [`ServerConn::poll_head`] does with an interim (1xx) response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interim {
    /// Skipped: the caller has no client to show it to (health checks, webhooks), or a
    /// client that must not get one (HTTP/1.0, RFC 9110 §15.2).
    Skip,
    /// Returned, for an HTTP/1.1 client to get it before the final answer.
    Return,
}

/// One connection to a server.
#[derive(Debug)]
pub struct ServerConn {
    /// Plain or TLS, as the backend connects.
    pub stream: UpStream,
    /// What the server sent and the exchange has not used yet.
    pub buf: ReadBuf,
    /// Came from the idle pool: the server may have closed it just before we used it, and a
    /// request it fails before any answer may go on a fresh connection.
    pub reused: bool,
    /// The client whose addresses the PROXY header at its start carried: the connection
    /// may only serve that client's requests again (`None`: any request, no header sent).
    /// Boxed: only connections with the PROXY protocol hold one, and every exchange's
    /// future carries the connection.
    pub for_client: Option<Box<ClientAddrs>>,
}

impl ServerConn {
    /// Reads until a final response head is pending at the front of the buffer; interim
    /// (1xx but 101) heads are skipped. `answered`: some response byte has arrived (kept
    /// by the caller across polls).
    pub fn poll_response_head(
        &mut self,
        cx: &mut std::task::Context<'_>,
        was_head: bool,
        answered: &mut bool,
    ) -> std::task::Poll<Result<ResponseHead, HeadError>> {
        self.poll_head(cx, was_head, answered, Interim::Skip)
    }

    /// Reads until a response head is pending at the front of the buffer: a final one,
    /// or (`Interim::Return`) an interim one other than `100 Continue` for the caller to
    /// relay and consume (103 Early Hints, 102 Processing). A `100` is always skipped:
    /// fulcrum answers `Expect` itself.
    pub fn poll_head(
        &mut self,
        cx: &mut std::task::Context<'_>,
        was_head: bool,
        answered: &mut bool,
        interim: Interim,
    ) -> std::task::Poll<Result<ResponseHead, HeadError>> {
        use std::task::Poll;
        let limits = Limits {
            max_head_bytes: RESPONSE_HEAD_LIMIT,
        };
        loop {
            if !self.buf.is_empty() {
                *answered = true;
                match parse_response(self.buf.pending(), &limits, was_head) {
                    Ok(Parsed::Complete(h))
                        if h.is_interim() && (interim == Interim::Skip || h.status == 100) =>
                    {
                        self.buf.consume(h.head_len);
                        continue;
                    }
                    Ok(Parsed::Complete(h)) => return Poll::Ready(Ok(h)),
                    Ok(Parsed::Partial) => {}
                    Err(e) => return Poll::Ready(Err(HeadError::Malformed(e))),
                }
            }
            let ended = if *answered {
                HeadError::Broken
            } else {
                HeadError::Closed
            };
            match self
                .buf
                .poll_fill(&mut self.stream, cx, RESPONSE_HEAD_LIMIT + 1)
            {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ended)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Poll::Ready(Err(HeadError::Malformed(ResponseError::HeadTooLarge)));
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(ended)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ServerConn {
    /// A connection just opened, for any client (no PROXY header sent on it).
    pub fn fresh(stream: UpStream) -> Self {
        ServerConn {
            stream,
            buf: ReadBuf::large_first(),
            reused: false,
            for_client: None,
        }
    }

    /// Up to `limit` bytes of the body that follows in the buffer (its head consumed),
    /// decoded from its framing: for the one-shot exchanges (health checks, webhooks,
    /// `fulcrum ctl`) that want a body whole rather than relayed. The error says what broke.
    pub async fn read_body(
        &mut self,
        mut decoder: BodyDecoder,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            if !self.buf.is_empty() {
                let step = decoder
                    .decode(self.buf.pending())
                    .map_err(|e| format!("bad body: {e}"))?;
                if let Some(r) = step.data.clone() {
                    body.extend_from_slice(self.buf.pending().get(r).unwrap_or_default());
                }
                self.buf.consume(step.consumed);
                if step.done || body.len() >= limit {
                    body.truncate(limit);
                    return Ok(body);
                }
                if step.consumed > 0 && !self.buf.is_empty() {
                    // The decoder yields one chunk's data at a time: what follows is
                    // decoded before reading more (the server may have closed already).
                    continue;
                }
            } else if decoder.is_done() {
                return Ok(body);
            }
            let n = std::future::poll_fn(|cx| {
                self.buf
                    .poll_fill(&mut self.stream, cx, crate::buffers::SIZE)
            })
            .await;
            if matches!(n, Ok(0) | Err(_)) {
                decoder
                    .finish()
                    .map_err(|e| format!("body cut short: {e}"))?;
                return Ok(body);
            }
        }
    }
}

/// How long an idle connection is kept. Servers commonly close after 60–75 s (nginx: 75 s);
/// closing first avoids sending a request on a connection the server is about to close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The most idle connections kept per server; beyond that a finished connection is closed.
const MAX_IDLE: usize = 512;

/// Idle connections to one server, one list per worker (see [`crate::workers`]): a
/// connection is used by the worker whose reactor it is registered with. In each list the
/// most recently used is at the back.
///
/// A std `Mutex` (never held across an `.await`): the critical section is a push or a pop,
/// and only the worker's own thread and the health checker ever take it.
#[derive(Debug)]
pub struct IdleConns {
    /// Worker 0's list (the only one with `threads = 1`).
    first: Mutex<Idle>,
    /// Workers 1 and up.
    others: Box<[Mutex<Idle>]>,
}

impl Default for IdleConns {
    fn default() -> Self {
        IdleConns {
            first: Mutex::default(),
            others: (1..crate::workers::count())
                .map(|_| Mutex::default())
                .collect(),
        }
    }
}

/// An idle connection: its stream, since when it idles, and whose it is (see
/// [`ServerConn::for_client`]).
type Idle = VecDeque<(UpStream, Instant, Option<Box<ClientAddrs>>)>;

fn lock(m: &Mutex<Idle>) -> std::sync::MutexGuard<'_, Idle> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IdleConns {
    fn all(&self) -> impl Iterator<Item = &Mutex<Idle>> {
        std::iter::once(&self.first).chain(self.others.iter())
    }

    /// This worker's list.
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        let i = crate::workers::current();
        match i.checked_sub(1).and_then(|k| self.others.get(k)) {
            Some(m) => lock(m),
            None => lock(&self.first),
        }
    }

    /// An idle connection still open that may serve `client` (see
    /// [`ServerConn::for_client`]; `None` when no PROXY header is sent), the most recently
    /// used first (the least likely to have been closed by the server meanwhile).
    pub fn checkout(&self, client: Option<ClientAddrs>) -> Option<ServerConn> {
        loop {
            let (mut stream, since, for_client) = {
                let mut idle = self.lock();
                let i = idle
                    .iter()
                    .rposition(|(_, _, k)| k.as_deref() == client.as_ref())?;
                idle.remove(i)?
            };
            if since.elapsed() < IDLE_TIMEOUT && stream.still_open() {
                return Some(ServerConn {
                    reused: true,
                    for_client,
                    ..ServerConn::fresh(stream)
                });
            }
        }
    }

    /// Keeps a connection whose exchange ended cleanly for the next request; one with bytes
    /// left over is closed instead.
    pub fn checkin(&self, conn: ServerConn) {
        if !conn.buf.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since, _)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        // A connection private to one client (PROXY header) outlives its client unseen:
        // when the list is full, the least recently used goes rather than the newest.
        if idle.len() >= MAX_IDLE && conn.for_client.is_some() {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((conn.stream, now, conn.for_client));
        }
    }

    /// Closes idle connections that the server has closed, or that have been idle too
    /// long; the health checker calls it after each check, so a server's FIN is noticed
    /// before a request would use the connection.
    pub fn prune(&self) {
        for m in self.all() {
            lock(m).retain_mut(|(stream, since, _)| {
                since.elapsed() < IDLE_TIMEOUT && stream.still_open()
            });
        }
    }

    /// Closes every idle connection (the server left or its address changed).
    pub fn clear(&self) {
        for m in self.all() {
            lock(m).clear();
        }
    }

    /// Idle connections held now, on every worker.
    pub fn idle_count(&self) -> usize {
        self.all().map(|m| lock(m).len()).sum()
    }
}

/// Opens a new connection to `addr` as `target` says (TLS, the PROXY header for `client`)
/// within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    target: &Target,
    client: Option<ClientAddrs>,
    timeout: Duration,
) -> Result<ServerConn, ConnectError> {
    let stream = super::connect::open(addr, target, client, timeout).await?;
    let proxied = target.connector.proxy != crate::config::SendProxy::Off;
    Ok(ServerConn {
        for_client: client.filter(|_| proxied).map(Box::new),
        ..ServerConn::fresh(stream)
    })
}

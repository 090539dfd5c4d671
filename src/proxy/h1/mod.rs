//! fulcrum's own HTTP/1.1 engine, client side: one task per connection reads request heads
//! with the sans-IO codec ([`crate::h1`]), and runs each exchange with a server on the same
//! task ([`exchange`]), with no channel and no second task.
//!
//! Memory: the read buffer comes from the thread's pool while bytes are pending and goes
//! back when a request and its answer are done and nothing more has arrived, so an idle
//! keep-alive connection holds its socket, its task and its timer entry, and no buffer.
//! Each busy spell (from the first bytes after an idle wait to the last answer, pipelined
//! requests included) is boxed for its duration: the idle connection's own future is only
//! the loop below waiting for readiness.
//!
//! Pipelined requests are answered in order: what follows a request in the buffer is the
//! next head, parsed when the previous exchange is done.

mod attempt;
mod exchange;
mod heads;
mod io;
mod relay;
mod routed;
mod to_h2;
mod to_h2_answer;
mod to_h2_pump;
mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::conn::Activity;
use super::error::Refusal;
use super::frontend::Frontend;
use crate::buffers::ReadBuf;
use crate::h1::{Limits, Parsed, RequestError, RequestHead, parse_request};

pub use io::ClientIo;

/// One client connection on the engine.
#[derive(Debug)]
pub struct Client<S> {
    pub io: S,
    pub buf: ReadBuf,
    pub peer: SocketAddr,
    pub tls: bool,
    pub activity: Arc<Activity>,
}

/// What waiting for a request head gave (the head is moved into its exchange at once).
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    /// The client closed or went silent for good.
    Closed,
    /// The head cannot be accepted; answered, then the connection closes.
    Refused(RequestError),
}

/// Serves requests on one client connection until it closes, a request leaves it
/// unusable, one of the client timeouts passes, or fulcrum stops (the request in progress
/// is answered first).
///
/// This future is most of an idle connection's memory, so it holds only the wait for the
/// next bytes: everything from there until the connection is idle again (reading a head,
/// the exchange, pipelined requests after it) is [`busy`], boxed for that time. One box per
/// busy spell, as there was one per exchange before, and the idle task is sized for a
/// readiness wait rather than for a request. Everything is borrowed from the connection's
/// task. The client timeouts are watched here, by the flag the deadlines set in the
/// connection's activity, rather than by a `select!` around this future (136 bytes where
/// this one is 80).
// Not an async fn: an async block holds the three references once (24 bytes less).
#[allow(clippy::manual_async_fn)]
pub fn serve<'a, S: ClientIo>(
    fe: &'a Arc<Frontend>,
    client: &'a mut Client<S>,
    stop: &'a CancellationToken,
) -> impl Future<Output = ()> + 'a {
    async move {
        loop {
            if client.buf.is_empty() {
                // Idle between requests: wait for bytes without holding a buffer, and leave at
                // once if a timeout passes or fulcrum stops meanwhile. The stop is checked
                // after registering with the connection's activity, which the accept loop's
                // deadlines wake at expiry and at shutdown: no timer or cancellation future of
                // its own in every idle task.
                let idle = std::future::poll_fn(|cx| {
                    if client.activity.poll_expired(cx).is_ready() {
                        return Poll::Ready(End::Expired);
                    }
                    if stop.is_cancelled() {
                        return Poll::Ready(End::Closed);
                    }
                    client.io.poll_idle(cx).map(|r| match r {
                        Ok(()) => End::Open,
                        Err(_) => End::Closed,
                    })
                });
                match idle.await {
                    End::Open => {}
                    End::Closed => break,
                    End::Expired => return log_expired(client),
                }
            }
            // The spell borrows the client: the activity is watched through a second handle.
            let activity = Arc::clone(&client.activity);
            let mut spell = Box::pin(busy(fe, client, stop));
            let keep = std::future::poll_fn(|cx| {
                // Only the timeouts: a stop lets the request in progress finish.
                if activity.poll_expired(cx).is_ready() {
                    return Poll::Ready(None);
                }
                spell.as_mut().poll(cx).map(Some)
            });
            match keep.await {
                Some(true) => {}
                Some(false) => break,
                None => {
                    drop(spell);
                    return log_expired(client);
                }
            }
        }
        client.buf.release();
        let _ = client.io.shutdown().await;
    }
}

/// How an idle wait ended.
enum End {
    /// Bytes arrived (or the socket is readable): a busy spell starts.
    Open,
    /// The client closed, or fulcrum stops.
    Closed,
    /// One of the client timeouts passed.
    Expired,
}

/// A timeout passed: the connection is dropped as it is, whatever it was doing.
fn log_expired<S>(client: &Client<S>) {
    tracing::debug!(client = %client.peer, "closing an idle or stalled connection");
}

/// Serves the requests that have started arriving, until nothing is pending and the last
/// answer is sent (`true`: the connection may idle for the next) or the connection is to
/// close (`false`).
async fn busy<S: ClientIo>(
    fe: &Arc<Frontend>,
    client: &mut Client<S>,
    stop: &CancellationToken,
) -> bool {
    loop {
        let limits = Limits {
            max_head_bytes: fe.settings().max_header_bytes,
        };
        let head = match next_head(client, &limits).await {
            Next::Head(head) => head,
            Next::Closed => return false,
            Next::Refused(e) => {
                tracing::debug!(client = %client.peer, "refused a request: {e}");
                let refusal = match e.status() {
                    414 => Refusal::UriTooLong,
                    431 => Refusal::HeaderTooLarge,
                    _ => Refusal::BadRequest,
                };
                let _ = relay::answer(client, refusal, 1, true).await;
                return false;
            }
        };
        if !exchange::run(fe, client, &head, stop).await {
            return false;
        }
        if client.buf.is_empty() {
            return true;
        }
    }
}

/// Reads until a whole request head is pending (or it fails the limits or the rules).
async fn next_head<S: ClientIo>(client: &mut Client<S>, limits: &Limits) -> Next {
    loop {
        if !client.buf.is_empty() {
            match parse_request(client.buf.pending(), limits) {
                Ok(Parsed::Complete(head)) => return Next::Head(head),
                Ok(Parsed::Partial) => {}
                Err(e) => return Next::Refused(e),
            }
        }
        // One byte past the limit lets the codec tell a long head (431) from a long
        // request line (414).
        match client
            .buf
            .fill(&mut client.io, limits.max_head_bytes + 1)
            .await
        {
            Ok(0) => return Next::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Next::Refused(RequestError::HeadTooLarge);
            }
            Err(e) => {
                tracing::debug!(client = %client.peer, "connection ended: {e}");
                return Next::Closed;
            }
        }
    }
}

//! Answers to the client on the HTTP/1 engine: fulcrum's own short answers, the server's
//! response relayed (head rewritten, body decoded and framed for the client), and the bytes
//! of an upgraded connection both ways.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::heads::{self, ClientFraming, Relaying};
use super::{Client, ClientIo};
use crate::buffers::{self, ReadBuf};
use crate::h1::{self, BodyDecoder, BodyError, ResponseFraming, ResponseHead};
use crate::proxy::body::Finish;
use crate::proxy::error::Refusal;
use crate::proxy::tunnel::{self, Relayed};
use crate::upstream::h1::{IdleConns, ServerConn};

/// Writes `bytes` to the client and flushes them (TLS holds records until a flush).
async fn send<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Appends fulcrum's own answer for `refusal`: its status, `x-fulcrum-error`, a one-line
/// body, `Retry-After` on 503, and `Connection: close` when the connection ends after it.
pub fn own_answer(out: &mut Vec<u8>, refusal: Refusal, retry_after: u64, close: bool) {
    let status = refusal.status();
    let body = refusal.body();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nx-fulcrum-error: {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        refusal.code(),
        body.len()
    );
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        let _ = write!(out, "retry-after: {}\r\n", retry_after.max(1));
    }
    if close || refusal.closes() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Sends fulcrum's own answer to the client.
pub async fn answer<S: ClientIo>(
    client: &mut Client<S>,
    refusal: Refusal,
    retry_after: u64,
    close: bool,
) -> std::io::Result<()> {
    let mut out = buffers::take_write();
    own_answer(&mut out, refusal, retry_after, close);
    let r = send(&mut client.io, &out).await;
    buffers::give_write(out);
    r
}

/// Sends a route's redirect: `status`, `Location`, the route's response header lines
/// (rendered), an empty body.
pub async fn redirect<S: ClientIo>(
    client: &mut Client<S>,
    status: u16,
    location: &[u8],
    lines: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut out = buffers::take_write();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\nlocation: ");
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\ncontent-length: 0\r\n");
    out.extend_from_slice(lines);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let r = send(&mut client.io, &out).await;
    buffers::give_write(out);
    r
}

/// Why relaying a response stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the server's body is malformed: {0}")]
    Body(#[from] BodyError),
    #[error("the server closed before the end of its body")]
    Truncated,
    #[error("the server sent nothing for {0:?} in the middle of its body")]
    Stalled(Duration),
    #[error("reading from the server failed: {0}")]
    Server(std::io::Error),
    #[error("writing to the client failed: {0}")]
    Client(std::io::Error),
    /// The server's body failed before any byte of the response went to the client: the
    /// client can still be told, with fulcrum's own 502.
    #[error("{0} (before anything was sent)")]
    Unsent(Box<RelayError>),
}

/// Reads once more from the server, failing when it stays silent for `limit`. The timer is
/// made only when a read has to wait (most small bodies never do), then reset per read.
async fn fill_within(
    buf: &mut ReadBuf,
    io: &mut TcpStream,
    limit: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> Result<usize, RelayError> {
    std::future::poll_fn(|cx| match buf.poll_fill(io, cx, buffers::SIZE) {
        Poll::Ready(r) => {
            if let Some(t) = timer.as_mut() {
                t.as_mut().reset(tokio::time::Instant::now() + limit);
            }
            Poll::Ready(r.map_err(RelayError::Server))
        }
        Poll::Pending => {
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            match t.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(RelayError::Stalled(limit))),
                Poll::Pending => Poll::Pending,
            }
        }
    })
    .await
}

/// Relays the response whose head `resp` is at the front of `conn`'s buffer: its head as
/// [`heads::response`] writes it, then its body, decoded and framed for the client.
/// `Ok` once the whole body went out.
///
/// With `reuse`, the connection goes back to that pool as soon as the server's body has
/// been read to its end, before the last bytes go to the client (another request may have
/// it meanwhile); otherwise it is handed back.
pub async fn response<S: ClientIo>(
    client: &mut Client<S>,
    mut conn: ServerConn,
    reuse: Option<&IdleConns>,
    resp: &ResponseHead,
    relaying: &Relaying<'_>,
    stall: Duration,
    finish: &mut Finish,
) -> Result<Option<ServerConn>, RelayError> {
    let mut out = buffers::take_write();
    heads::response(&mut out, conn.buf.pending(), resp, relaying);
    conn.buf.consume(resp.head_len);
    let framing = relaying.framing;
    let mut sent = false;
    let r = match body(
        client,
        &mut conn,
        (resp.body, framing),
        stall,
        finish,
        &mut out,
        &mut sent,
    )
    .await
    {
        Ok(()) => {
            let kept = match reuse {
                Some(pool) => {
                    pool.checkin(conn);
                    None
                }
                None => Some(conn),
            };
            if out.is_empty() {
                Ok(kept)
            } else {
                send(&mut client.io, &out)
                    .await
                    .map(|()| kept)
                    .map_err(RelayError::Client)
            }
        }
        // The head is still in `out`: nothing went to the client yet.
        Err(e) if !sent && !matches!(e, RelayError::Client(_)) => {
            Err(RelayError::Unsent(Box::new(e)))
        }
        Err(e) => {
            // What was validated before the failure still goes (the client then sees the
            // body cut short: no last chunk, or fewer bytes than its length).
            if !out.is_empty() {
                let _ = send(&mut client.io, &out).await;
            }
            Err(e)
        }
    };
    buffers::give_write(out);
    r
}

async fn body<S: ClientIo>(
    client: &mut Client<S>,
    conn: &mut ServerConn,
    (from, framing): (ResponseFraming, ClientFraming),
    stall: Duration,
    finish: &mut Finish,
    out: &mut Vec<u8>,
    sent: &mut bool,
) -> Result<(), RelayError> {
    let mut decoder = BodyDecoder::for_response(from);
    let chunked = framing == ClientFraming::Chunked;
    let mut timer = None;
    loop {
        while !decoder.is_done() && !conn.buf.is_empty() {
            let input = conn.buf.pending();
            let step = decoder.decode(input)?;
            if let Some(data) = step.data.and_then(|r| input.get(r)) {
                finish.add_bytes(data.len());
                if chunked {
                    h1::encode_chunk(data, out);
                } else if out.is_empty() && data.len() >= buffers::SIZE / 4 {
                    // A large piece goes straight from the server's buffer.
                    {
                        *sent = true;
                        send(&mut client.io, data)
                    }
                    .await
                    .map_err(RelayError::Client)?;
                } else {
                    out.extend_from_slice(data);
                }
            }
            conn.buf.consume(step.consumed);
            if out.len() >= buffers::SIZE {
                {
                    *sent = true;
                    send(&mut client.io, out)
                }
                .await
                .map_err(RelayError::Client)?;
                out.clear();
            }
        }
        if decoder.is_done() {
            // The caller sends what is left, once the connection is back in its pool.
            if chunked {
                out.extend_from_slice(h1::body::LAST_CHUNK);
            }
            return Ok(());
        }
        if !out.is_empty() {
            {
                *sent = true;
                send(&mut client.io, out)
            }
            .await
            .map_err(RelayError::Client)?;
            out.clear();
        }
        if fill_within(&mut conn.buf, &mut conn.stream, stall, &mut timer).await? == 0 {
            match decoder.finish() {
                Ok(()) => decoder = BodyDecoder::Done(None),
                Err(_) => return Err(RelayError::Truncated),
            }
        }
    }
}

/// A `101 Switching Protocols`: its head to the client, then what either side sent early,
/// then bytes both ways until both close or both are silent for `idle`.
pub async fn tunnel<S: ClientIo>(
    client: &mut Client<S>,
    request_head_len: usize,
    mut conn: ServerConn,
    resp: &ResponseHead,
    idle: Duration,
) -> (Relayed, Option<tunnel::TunnelEnd>) {
    let relaying = Relaying {
        framing: ClientFraming::None,
        close: false,
        keep_alive_10: false,
        set_cookie: None,
        switching: true,
        rules: &crate::route::NO_RULES,
        lines: b"",
    };
    let mut out = buffers::take_write();
    heads::response(&mut out, conn.buf.pending(), resp, &relaying);
    out.extend_from_slice(conn.buf.pending().get(resp.head_len..).unwrap_or_default());
    conn.buf.release();
    let early = client
        .buf
        .pending()
        .get(request_head_len..)
        .unwrap_or_default();
    let ready = async {
        send(&mut client.io, &out).await?;
        if !early.is_empty() {
            conn.stream.write_all(early).await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    buffers::give_write(out);
    client.buf.release();
    if let Err(e) = ready {
        return (Relayed::default(), Some(tunnel::TunnelEnd::Io(e)));
    }
    tunnel::relay(&mut client.io, &mut conn.stream, idle).await
}

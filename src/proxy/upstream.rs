//! Connections to servers: a pool of idle keep-alive HTTP/1.1 connections per server.
//!
//! fulcrum connects and hands a request over in two separate steps, so a failed connect
//! has consumed nothing and the request can go to another server whatever its method.
//! A pooled connection that the server closed just before we used it hands the request
//! back unsent (`try_send_request`), and we try a fresh connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request body sent upstream: the client's body streamed as it arrives, or nothing.
///
/// `Empty` is what makes a retry possible after a request was sent: a request without a
/// body can be sent again from its head alone, whereas the client's body is gone once sent.
pub enum UpstreamBody {
    /// The client's body, streamed (sent once: it cannot be replayed).
    Client(Incoming),
    /// No body: a bodiless request, which may be sent again on another server.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A ready connection to one server.
pub type Sender = SendRequest<UpstreamBody>;

/// How long an idle connection is kept. Servers commonly close after 60–75 s (nginx: 75 s);
/// closing first avoids sending a request on a connection the server is about to close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The most idle connections kept per server; beyond that a finished connection is closed.
const MAX_IDLE: usize = 512;

/// Idle connections to one server.
///
/// A std `Mutex` (never held across an `.await`): the critical section is a push or a pop.
#[derive(Default)]
pub struct ConnPool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    TimedOut,
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::TimedOut => write!(f, "connect timed out"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

impl ConnPool {
    /// An idle connection that is still open, if there is one. The most recently used
    /// comes first: it is the least likely to have been closed by the server meanwhile.
    /// The caller awaits `ready()` on it: right after a response ends, the connection task
    /// may not have noticed yet that it can take the next request.
    pub fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((tx, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && !tx.is_closed() {
                return Some(tx);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin(&self, tx: Sender) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((tx, Instant::now()));
        }
    }

    /// Closes every idle connection (the server left or its address changed).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Opens a new HTTP/1.1 connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::TimedOut),
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // The connection ends when the server closes it or the last sender drops; the
        // request that was using it sees the error itself.
        let _ = conn.await;
    });
    Ok(tx)
}

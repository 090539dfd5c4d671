//! Connections to servers, shared by the data path and the servers' live state: a pool of idle
//! keep-alive HTTP/1.1 connections per server.
//!
//! fulcrum connects and hands a request over in two separate steps, so a failed connect
//! has consumed nothing and the request can go to another server whatever its method.
//! A pooled connection that the server closed just before we used it hands the request
//! back unsent (`try_send_request`), and we try a fresh connection.
//!
//! A connection has no task of its own: the request using it drives it (see [`Upstream`]).
//!
//! This hyper-based client serves requests that arrive over HTTP/2; HTTP/1 clients go
//! through fulcrum's own engine and its connections ([`h1`]).

pub mod h1;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request body sent upstream: the client's body streamed as it arrives, or nothing.
///
/// `Empty` is what makes a retry possible after a request was sent: a request without a
/// body can be sent again from its head alone, whereas the client's body is gone once sent.
#[derive(Debug)]
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

/// One HTTP/1.1 connection to a server, driven by whichever request is using it.
///
/// hyper's usual client spawns a task per connection and reaches it through channels, so
/// every request costs two task switches and their wake-ups. Here the connection's future
/// travels with the request instead: [`send`](Self::send) polls it while waiting for the
/// response head, the response body polls it while streaming ([`poll_body`](Self::poll_body)),
/// and an idle connection waits in its server's pool unpolled.
#[derive(Debug)]
pub struct Upstream {
    tx: SendRequest<UpstreamBody>,
    /// `None` once the connection has ended (dropping it fails what it still held, so a
    /// request it never sent comes back to us).
    conn: Option<Pin<Box<Driver>>>,
}

/// The future that performs a connection's IO.
type Driver = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// What became of a request handed to a connection.
#[derive(Debug)]
pub enum Sent {
    Answered(Response<Incoming>),
    /// The connection closed before taking the request: it can go elsewhere as it is.
    Returned(Request<UpstreamBody>),
    /// Sent, and the connection failed before a response head.
    Failed,
    /// No response head within the time allowed.
    TimedOut,
}

impl Upstream {
    /// Advances the connection (reads and writes on its socket); a connection that has
    /// ended is dropped.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut()
            && conn.as_mut().poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Whether the connection has ended (the server closed it, or it failed).
    fn is_closed(&self) -> bool {
        self.conn.is_none() || self.tx.is_closed()
    }

    /// Brings a connection whose response has ended to rest before it is pooled: hyper
    /// finishes the exchange and waits for the next request. Polled with a no-op waker,
    /// so nothing is woken on its behalf while it idles, not even when the server closes
    /// it: that is found out when it is next driven.
    fn settle(&mut self) {
        self.drive(&mut Context::from_waker(Waker::noop()));
    }

    /// Whether the connection can take a request now.
    fn is_ready(&self) -> bool {
        !self.is_closed() && self.tx.is_ready()
    }

    /// Drives the connection until it can take a request (`true`) or has ended.
    async fn finish_exchange(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            self.drive(cx);
            match (self.is_ready(), self.is_closed()) {
                (true, _) => Poll::Ready(true),
                (false, true) => Poll::Ready(false),
                (false, false) => Poll::Pending,
            }
        })
        .await
    }

    /// Sends `req` and waits up to `timeout` for the response head.
    pub async fn send(&mut self, req: Request<UpstreamBody>, timeout: Duration) -> Sent {
        // Unconstrained: out of tokio's cooperative budget, the oneshot behind this future
        // would ask for a wake-up later, from the no-op waker it is polled with below.
        let mut response = std::pin::pin!(tokio::task::coop::unconstrained(
            self.tx.try_send_request(req)
        ));
        let waiting = std::future::poll_fn(|cx| {
            // A connection that ends is dropped, which answers the pending request (with
            // the request itself if it was never sent).
            self.drive(cx);
            // Only the connection's progress, made just above in this same task, or its
            // end completes the response: polling it with a no-op waker spares the task a
            // needless wake-up by itself (a whole extra poll of the client connection).
            response
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        });
        match tokio::time::timeout(timeout, waiting).await {
            Err(_) => Sent::TimedOut,
            Ok(Ok(resp)) => Sent::Answered(resp),
            Ok(Err(mut e)) => match e.take_message() {
                Some(req) => Sent::Returned(req),
                None => Sent::Failed,
            },
        }
    }

    /// Polls a response `body` of this connection, advancing the connection as needed.
    pub fn poll_body(
        &mut self,
        body: Pin<&mut Incoming>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut body = body;
        if self.conn.is_none() {
            return body.poll_frame(cx);
        }
        // As for the response head: the body is only fed by driving the connection, here,
        // so polling it with a no-op waker spares the task waking itself.
        let quiet = &mut Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = body.as_mut().poll_frame(quiet) {
            return Poll::Ready(r);
        }
        self.drive(cx);
        match self.conn {
            Some(_) => body.poll_frame(quiet),
            // Ended: the body has its end or its error now.
            None => body.poll_frame(cx),
        }
    }
}

/// How long an idle connection is kept. Servers commonly close after 60–75 s (nginx: 75 s);
/// closing first avoids sending a request on a connection the server is about to close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The most idle connections kept per server; beyond that a finished connection is closed.
const MAX_IDLE: usize = 512;

/// Idle connections to one server, the most recently used at the back.
///
/// A std `Mutex` (never held across an `.await`): the critical section is a push or a pop.
#[derive(Debug, Default)]
pub struct ConnPool {
    idle: Mutex<VecDeque<(Upstream, Instant)>>,
}

/// Why no connection to a server could be had. The request path logs it and feeds passive
/// health with it (`pool::outlier::Outcome` converts from it), then tries another server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed: refused, unreachable, reset.
    #[error("connect failed: {0}")]
    Failed(#[source] std::io::Error),
    /// No connection within `connect_timeout`.
    #[error("connect timed out")]
    TimedOut,
    /// Connected, but the HTTP/1.1 connection could not be set up.
    #[error("handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

impl ConnPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Upstream, Instant)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection ready for a request, if there is one. The most recently used
    /// comes first: it is the least likely to have been closed by the server meanwhile.
    /// One that is not ready (its previous client is still uploading a body the server
    /// already answered) is dropped rather than waited for. One the server closed while it
    /// idled may still come out: sending on it returns the request unsent.
    pub fn checkout(&self) -> Option<Upstream> {
        let mut idle = self.lock();
        while let Some((up, since)) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && up.is_ready() {
                return Some(up);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to the end, and closes those
    /// idle for too long.
    ///
    /// A connection still sending its request body (the server answered before reading
    /// all of it) gets a task that drives it until the upload ends, then pools it: the
    /// client's upload goes on as the server expects, and nothing unpolled holds it.
    pub fn checkin(self: &Arc<Self>, mut up: Upstream) {
        up.settle();
        if up.is_closed() {
            return;
        }
        if !up.tx.is_ready() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let pool = Arc::clone(self);
                rt.spawn(async move {
                    if up.finish_exchange().await {
                        pool.checkin(up);
                    }
                });
            }
            return;
        }
        self.put(up);
    }

    fn put(&self, up: Upstream) {
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((up, now));
        }
    }

    /// Closes idle connections that the server has closed, or that have been idle too
    /// long. Idle connections are not polled (nothing wakes for them), so without this a
    /// server's FIN would only be noticed at the next checkout; the health checker calls
    /// it after each check.
    pub fn prune(&self) {
        let mut idle = self.lock();
        idle.retain_mut(|(up, since)| {
            up.settle();
            !up.is_closed() && since.elapsed() < IDLE_TIMEOUT
        });
    }

    /// Closes every idle connection (the server left or its address changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

/// Opens a new HTTP/1.1 connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Failed(e)),
        Err(_) => return Err(ConnectError::TimedOut),
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    Ok(Upstream {
        tx,
        conn: Some(Box::pin(conn)),
    })
}

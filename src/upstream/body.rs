//! The request body sent to a server, whichever protocol carries it: the HTTP/1 bridge
//! frames it itself, the HTTP/2 client ([`super::h2`]) hands it to hyper as a `Body`.
//!
//! An HTTP/1 client's body on fulcrum's engine is read by its exchange's own task (it owns
//! the client's socket and buffer), while hyper polls a request body on the connection's
//! task: the exchange pumps what it decoded through a small channel ([`pumped`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    /// An HTTP/1 client's body, pumped in by its exchange (HTTP/2 servers only).
    Pumped(Pumped),
    /// An HTTP/2 client's body held to `max_body_bytes` (HTTP/2 servers only; see
    /// [`UpstreamBody::capped`]).
    Capped(Capped),
}

/// A client's body that may not grow past a limit. The HTTP/1 bridge counts the bytes it
/// writes itself; for an HTTP/2 server hyper polls the body, so the cut is made here: a
/// frame that would pass the limit is never handed on, and the stream fails instead.
#[derive(Debug)]
pub struct Capped {
    body: Incoming,
    left: u64,
    over: Arc<AtomicBool>,
}

/// Set once a [`Capped`] body passed its limit: tells the request's task that its stream
/// failed for that reason (a 413), not because the server broke (a 502).
#[derive(Clone, Debug)]
pub struct OverLimit(Arc<AtomicBool>);

impl OverLimit {
    pub fn passed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl UpstreamBody {
    /// The client's body held to `limit` bytes, and the flag that says it passed them;
    /// any other body as it is (a pumped one counts its own bytes).
    pub fn capped(self, limit: u64) -> (Self, Option<OverLimit>) {
        match self {
            UpstreamBody::Client(body) => {
                let over = Arc::new(AtomicBool::new(false));
                let flag = OverLimit(Arc::clone(&over));
                let capped = Capped {
                    body,
                    left: limit,
                    over,
                };
                (UpstreamBody::Capped(capped), Some(flag))
            }
            other => (other, None),
        }
    }
}

impl Capped {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other.map(|f| f.map(|r| r.map_err(BoxError::from))),
        };
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        if len > self.left {
            self.over.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("the client's body is over max_body_bytes".into())));
        }
        self.left -= len;
        Poll::Ready(Some(Ok(frame)))
    }
}

/// What an exchange pumps: a piece of body, or its end (without `End`, a closed channel
/// is a body cut short, never a complete one).
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    End,
}

/// The receiving end of a pumped body.
#[derive(Debug)]
pub struct Pumped {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    exact: Option<u64>,
    ended: bool,
}

/// A body fed through the returned sender; `exact`: its declared length. Two pieces of
/// room: the client is read a little ahead of the server, not without bound.
pub fn pumped(exact: Option<u64>) -> (tokio::sync::mpsc::Sender<Piece>, UpstreamBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let body = Pumped {
        rx,
        exact,
        ended: false,
    };
    (tx, UpstreamBody::Pumped(body))
}

/// Why a request body could not be read.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Pumped {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Piece::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err("the client's body ended early".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    /// The client's frames as they come, trailers included (gRPC sends its own).
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Pumped(p) => p.poll_frame(cx),
            UpstreamBody::Capped(c) => c.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
            UpstreamBody::Pumped(p) => p.ended,
            UpstreamBody::Capped(c) => c.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Pumped(p) => p.exact.map(SizeHint::with_exact).unwrap_or_default(),
            UpstreamBody::Capped(c) => c.body.size_hint(),
        }
    }
}

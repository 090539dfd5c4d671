//! The response body sent to clients: either fulcrum's own short answer or the server's
//! body streamed through frame by frame (memory stays bounded whatever its size).
//!
//! When the server's body ends, its connection goes back to the pool, the server's slot is
//! released and the access log line is written: at the end, so it can say how many bytes
//! went out and how long the whole exchange took.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::bridge::ServerBody;
use super::conn::Busy;
use super::stall::Watch;
use crate::metrics::Tally;
use crate::pool::{Backend, Slot};

/// The response body type of the proxy.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    finish: Option<Box<Finish>>,
    /// HTTP/2: tells the stream's watchdog whether hyper keeps taking frames (see
    /// [`super::stall`]); `None` on HTTP/1, where a client that stops reading blocks the
    /// socket and the client timeouts (`super::deadlines`) close the connection.
    watch: Option<Arc<Watch>>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream(Streamed),
}

/// The server's body, and how long it may go without sending anything.
#[derive(Debug)]
struct Streamed {
    /// Read from its connection, which goes back to its server's pool once the body has
    /// been read to the end.
    body: ServerBody,
    /// `response_timeout`, applied again between frames: a server that sends its head and
    /// then stalls must not hold the client and its slot forever.
    limit: std::time::Duration,
    /// Armed the first time the body is not ready (most small bodies never are): one timer
    /// per slow response, reset at each frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Streamed {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            Poll::Ready(r) => {
                if let Some(stall) = self.stall.as_mut() {
                    stall
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.limit);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::from(format!(
                        "the server sent nothing for {limit:?} in the middle of its body"
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Why a response body ended early.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What to do once the body has been sent (or abandoned).
#[derive(Debug)]
pub struct Finish {
    /// The server slot this request holds until its response is done.
    pub slot: Option<Slot>,
    /// The access log line to write, when access logs are on.
    pub log: Option<AccessLog>,
    /// Marks the client connection busy until the response is done (idle timeout).
    pub busy: Option<Busy>,
    bytes: u64,
    /// Where to count the request for metrics, once its status is known.
    count: Option<(Arc<str>, Arc<Backend>)>,
    /// The route's own counts (`fulcrum_route_requests_total`), by frontend.
    route: Option<(Arc<str>, Arc<Tally>)>,
    status: u16,
    start: Instant,
}

impl Finish {
    pub fn new(busy: Busy, log: Option<AccessLog>) -> Self {
        // One clock read per request: the log line's start serves the metrics too.
        let start = log.as_ref().map_or_else(Instant::now, |l| l.start);
        Finish {
            slot: None,
            log,
            busy: Some(busy),
            bytes: 0,
            count: None,
            route: None,
            status: 0,
            start,
        }
    }

    /// Counts the request in the metrics of `frontend` and `backend` when it is done. In
    /// place: the HTTP/1 engine boxes its `Finish` at once, so its exchange's future does
    /// not keep a 312-byte copy of it.
    pub fn count_in(&mut self, frontend: &Arc<str>, backend: &Arc<Backend>) {
        self.count = Some((Arc::clone(frontend), Arc::clone(backend)));
    }

    /// Counts the request in its route's metrics too when it is done.
    pub fn routed(mut self, counts: &Arc<Tally>, frontend: &Arc<str>) -> Self {
        self.route = Some((Arc::clone(frontend), Arc::clone(counts)));
        self
    }

    /// Records the request in lock-free per-server counters (or the backend's own-answer
    /// counters when no server answered).
    fn record(&self) {
        if let Some((frontend, counts)) = &self.route {
            counts.count(frontend, self.status);
        }
        let Some((frontend, backend)) = &self.count else {
            return;
        };
        match self.slot.as_ref().map(Slot::server) {
            Some(server) => {
                server.stats.requests.count(frontend, self.status);
                server.stats.duration.observe(self.start.elapsed());
            }
            None => backend.refusals.count(frontend, self.status),
        }
    }

    /// The status of the answer, for the metrics and the log line.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
        if let Some(log) = self.log.as_mut() {
            log.status = status;
        }
    }

    /// Counts body bytes sent to the client.
    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// The exchange is over (`complete`: the whole answer went out): releases the slot,
    /// counts the request and writes its log line.
    // Boxed for the request's whole life (see `http::handle`), and ended here.
    #[allow(clippy::boxed_local)]
    pub fn complete(mut self: Box<Self>, complete: bool) {
        self.finish(complete);
    }

    /// Releases what the request holds, counts it and writes its log line; runs once (it
    /// takes `busy`, which marks it as not yet run).
    fn finish(&mut self, complete: bool) {
        self.record();
        drop(self.slot.take());
        if let Some(log) = self.log.take() {
            log.write(self.bytes, complete);
        }
        drop(self.busy.take());
    }
}

/// The status logged and counted for a request whose client left before it was answered
/// (while queued or waiting for the server): nginx's convention, known to log tooling.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Finish {
    /// A request dropped before its response existed (the client went away) is still
    /// counted and logged, as `499`.
    fn drop(&mut self) {
        if self.busy.is_some() {
            if self.status == 0 {
                self.status = CLIENT_CLOSED;
                if let Some(log) = self.log.as_mut() {
                    log.status = CLIENT_CLOSED;
                }
            }
            self.finish(false);
        }
    }
}

/// One access log line's facts (written by [`super::access_log`]).
pub type AccessLog = super::access_log::Line;

impl ProxyBody {
    /// A short fixed body.
    pub fn text(s: &'static str) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(Bytes::from_static(s.as_bytes()))),
            finish: None,
            watch: None,
        }
    }

    /// A body from bytes.
    pub fn full(b: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(b)),
            finish: None,
            watch: None,
        }
    }

    /// The server's body, streamed from `conn`; `limit` is the longest the server may pause.
    pub fn upstream(body: ServerBody, limit: std::time::Duration) -> Self {
        ProxyBody {
            kind: Kind::Upstream(Streamed {
                body,
                limit,
                stall: None,
            }),
            finish: None,
            watch: None,
        }
    }

    /// Attaches what to do once the body is done; from now on the body is hyper's to send,
    /// and on HTTP/2 its stream's watchdog starts watching it.
    pub fn on_finish(&mut self, finish: Box<Finish>) {
        self.finish = Some(finish);
        self.watch = Watch::current();
        if let Some(w) = &self.watch {
            w.waiting();
        }
    }

    /// Sets the status in the pending access log line.
    pub fn log_status(&mut self, status: u16) {
        if let Some(f) = self.finish.as_mut() {
            f.status = status;
        }
        if let Some(log) = self.finish.as_mut().and_then(|f| f.log.as_mut()) {
            log.status = status;
        }
    }

    fn done(&mut self, complete: bool) {
        if let Some(f) = self.finish.take() {
            f.complete(complete);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A stream reset for not moving did not deliver what the body held, and its
        // upstream connection is not to be reused.
        let complete = self.is_end_stream() && !self.watch.as_ref().is_some_and(|w| w.abandoned());
        self.done(complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(w) = &this.watch {
            w.polled();
        }
        let polled = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(up) => up.poll(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(f), Some(data)) = (this.finish.as_mut(), frame.data_ref()) {
                    f.bytes += data.len() as u64;
                }
                if let Some(w) = &this.watch {
                    w.waiting();
                }
            }
            Poll::Ready(None) => this.done(true),
            Poll::Ready(Some(Err(_))) => this.done(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(up) => up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(up) => up.body.size_hint(),
        }
    }
}

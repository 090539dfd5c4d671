//! HTTP/2 connections to servers (`protocol = "h2"`): hyper's HTTP/2 client over any
//! established stream, a few multiplexed connections per server and worker, another opened
//! only when every open one has as many streams in flight as the server allows
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection last heard it).
//!
//! A connection's driver task runs on the worker that opened it (each worker is its own
//! current-thread runtime, see [`crate::workers`]), so, like [`super::h1::IdleConns`], the
//! connections are kept in one list per worker and a request only uses its own worker's.
//! A connection the server closed (or sent GOAWAY on) is dropped at the next checkout;
//! one without streams for [`IDLE_TIMEOUT`] is closed.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::body::UpstreamBody;

/// The sending half of one HTTP/2 connection (cheap to clone: a channel to its driver).
pub type Sender = SendRequest<UpstreamBody>;

/// How long a connection without streams is kept: shorter than servers' usual idle
/// timeouts, as for HTTP/1 (see `super::h1`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The most streams fulcrum puts on one connection when the server sets no limit (or a
/// larger one): past it another connection is opened, so one connection's flow-control
/// window and TCP stream do not carry everything.
pub const MAX_STREAMS_PER_CONN: usize = 100;

/// The most connections kept per server and worker; past it a new connection serves its
/// request and is not pooled.
const MAX_CONNS: usize = 64;

/// What a connection's users and its driver share: streams in flight and the limit.
#[derive(Debug)]
struct ConnState {
    in_flight: AtomicUsize,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` (capped), updated by the driver each
    /// time it runs, so a change of the setting mid-connection is seen too.
    limit: AtomicUsize,
    /// Wakes the driver to read the limit again when a stream is claimed or released:
    /// hyper's connection task is otherwise only woken by requests, not by the server's
    /// SETTINGS (h2 reads those in a task of its own).
    refresh: Notify,
}

/// One pooled connection.
#[derive(Debug)]
struct Pooled {
    tx: Sender,
    state: Arc<ConnState>,
    last_used: Instant,
}

/// A request's claim on one stream of a connection, released when dropped (when the
/// response body is done or abandoned).
#[derive(Debug)]
pub struct StreamClaim {
    state: Arc<ConnState>,
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state.refresh.notify_one();
    }
}

type List = Vec<Pooled>;

/// One server's HTTP/2 connections, one list per worker. A std `Mutex`, never held across
/// an `.await`: checkout is a scan of a handful of entries.
#[derive(Debug)]
pub struct H2Conns {
    first: Mutex<List>,
    others: Box<[Mutex<List>]>,
}

impl Default for H2Conns {
    fn default() -> Self {
        H2Conns {
            first: Mutex::default(),
            others: (1..crate::workers::count())
                .map(|_| Mutex::default())
                .collect(),
        }
    }
}

fn lock(m: &Mutex<List>) -> std::sync::MutexGuard<'_, List> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl H2Conns {
    fn all(&self) -> impl Iterator<Item = &Mutex<List>> {
        std::iter::once(&self.first).chain(self.others.iter())
    }

    /// This worker's list.
    fn lock(&self) -> std::sync::MutexGuard<'_, List> {
        let i = crate::workers::current();
        match i.checked_sub(1).and_then(|k| self.others.get(k)) {
            Some(m) => lock(m),
            None => lock(&self.first),
        }
    }

    /// A stream on an open connection of this worker with room for one more, claimed;
    /// dead connections and ones idle too long are dropped on the way.
    pub fn checkout(&self) -> Option<(Sender, StreamClaim)> {
        let now = Instant::now();
        let mut list = self.lock();
        list.retain(|c| {
            !c.tx.is_closed()
                && (c.state.in_flight.load(Ordering::Relaxed) > 0
                    || now.duration_since(c.last_used) < IDLE_TIMEOUT)
        });
        let c = list.iter_mut().find(|c| {
            c.tx.is_ready()
                && c.state.in_flight.load(Ordering::Relaxed) < c.state.limit.load(Ordering::Relaxed)
        })?;
        c.state.in_flight.fetch_add(1, Ordering::Relaxed);
        c.state.refresh.notify_one();
        c.last_used = now;
        Some((
            c.tx.clone(),
            StreamClaim {
                state: Arc::clone(&c.state),
            },
        ))
    }

    /// Starts HTTP/2 (prior knowledge: the preface at once) on an established stream —
    /// plain TCP, or TLS that negotiated `h2` by ALPN — spawns its driver on this worker,
    /// pools the connection and returns a first stream claimed on it.
    pub async fn open<S>(&self, io: S) -> Result<(Sender, StreamClaim), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake::<_, UpstreamBody>(TokioIo::new(io))
            .await?;
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(1),
            limit: AtomicUsize::new(cap(conn.current_max_send_streams())),
            refresh: Notify::new(),
        });
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = loop {
                let refresh = shared.refresh.notified();
                let drive = std::future::poll_fn(|cx| {
                    let polled = conn.as_mut().poll(cx);
                    shared
                        .limit
                        .store(cap(conn.current_max_send_streams()), Ordering::Relaxed);
                    polled
                });
                tokio::select! {
                    ended = drive => break ended,
                    () = refresh => {}
                }
            };
            if let Err(e) = ended {
                tracing::debug!("HTTP/2 connection to a server ended: {e}");
            }
        });
        let mut list = self.lock();
        if list.len() < MAX_CONNS {
            list.push(Pooled {
                tx: tx.clone(),
                state: Arc::clone(&state),
                last_used: Instant::now(),
            });
        }
        Ok((tx, StreamClaim { state }))
    }

    /// Closes every connection not in use (the server left or its address changed); the
    /// ones carrying streams end once those are done.
    pub fn clear(&self) {
        for m in self.all() {
            lock(m).clear();
        }
    }

    /// Connections held now, on every worker.
    pub fn conn_count(&self) -> usize {
        self.all().map(|m| lock(m).len()).sum()
    }
}

/// The streams fulcrum uses on one connection for a server's limit `n`.
fn cap(n: usize) -> usize {
    n.clamp(1, MAX_STREAMS_PER_CONN)
}

//! The admin listener: its own accept loop over hyper's HTTP/1.1 connection, with the limits
//! a plane that anyone on the network may reach needs (`axum::serve` has none of them).
//!
//! - A request head must arrive within [`Limits::head_timeout`] of the connection being
//!   accepted, or of its first byte on a kept-alive connection (the slowloris guard; the
//!   same rule as a frontend's `client_header_timeout`).
//! - A kept-alive connection with no request for [`Limits::idle_timeout`] is closed.
//! - At most [`Limits::max_connections`] connections are open; one more is accepted and
//!   closed at once, so the backlog never fills with clients nobody will serve.
//! - A request body larger than [`Limits::max_body_bytes`] gets 413, one slower than the head
//!   timeout 408 (see `guard`).
//!
//! hyper's own header timer is not used: it starts whenever the connection waits for a
//! request, so it would close idle keep-alive connections after the short head timeout. One
//! timer per connection reads what the IO wrapper and the service note instead (as the
//! frontends do); an admin connection is rare enough that its simplicity matters more than
//! the polls it costs.
//!
//! Every connection is a serving task of the instance (`App::tasks`): at shutdown the accept
//! loop stops and closes its socket, idle connections close, and requests in flight finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::proxy::conn::{self, Activity, Busy, Tracked};

/// The admin listener's limits. The defaults are what `fulcrum run` uses; only tests build
/// other values (through [`super::serve_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// 10 s, as a frontend's `client_header_timeout` and HAProxy's `timeout http-request`
    /// default to: `curl`, `fulcrum ctl` and a browser send a head in one write, so this only
    /// ever closes a client that is not sending one (a slowloris holds a connection for this
    /// long, at most).
    pub head_timeout: Duration,
    /// 60 s: longer than the dashboard's refresh period (a few seconds) so its connection is
    /// reused rather than reopened, short enough that forgotten keep-alive connections do not
    /// pile up against [`max_connections`](Self::max_connections).
    pub idle_timeout: Duration,
    /// 256: a handful of operators, `fulcrum ctl`, one or two Prometheus scrapers and
    /// dashboards with their event streams need a few dozen; 256 leaves ample room for them
    /// while costing at most 256 file descriptors and a few MiB when an attacker fills it.
    pub max_connections: usize,
    /// 64 KiB: every admin call's body is a small JSON object (under 1 KiB); a larger body is
    /// a mistake or an attack and gets 413 before it is read.
    pub max_body_bytes: usize,
    /// 64 open `GET /api/v1/events` streams: one per dashboard tab or `curl -N`, so dozens
    /// at most. Each holds a connection and a place in the event bus; 64 is a quarter of
    /// [`max_connections`](Self::max_connections), so event streams alone can never lock
    /// the API out. One more gets 503.
    pub max_event_streams: usize,
}

/// The largest request head the admin plane reads (hyper answers 431 past it): 64 KiB, the
/// frontends' default `max_header_bytes`, since a browser sends every cookie of `localhost`
/// (whatever port set it) to the dashboard.
const MAX_HEAD_BYTES: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_body_bytes: 64 * 1024,
            max_event_streams: 64,
        }
    }
}

/// The address a connection was accepted on, for the `Host` check (a client that names the
/// listener by the address it connected to is no DNS-rebinding page).
#[derive(Clone, Copy, Debug)]
pub struct Local(pub SocketAddr);

/// Accepts admin connections until shutdown begins, then closes the listening socket.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    limits: Limits,
) {
    let stop = app.tasks().stopping().clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("admin listener cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: the client sees the connection end rather than hang.
            if !std::mem::replace(&mut full, true) {
                tracing::warn!(
                    client = %peer,
                    "admin listener has {} connections open, its limit: closing new ones until one ends",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        full = false;
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let conn = connection(stream, local, router.clone(), limits, stop.clone(), permit);
        app.tasks().spawn(conn);
    }
}

/// Serves one admin connection until the client leaves, a limit closes it, or shutdown ends
/// it (after the request in flight).
async fn connection(
    stream: TcpStream,
    local: SocketAddr,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity)));
    let inner = TowerToHyperService::new(router);
    let noted = Arc::clone(&activity);
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(Local(local));
        let busy = noted.begin();
        let answer = inner.call(req);
        async move {
            let resp = answer.await?;
            Ok::<_, Infallible>(resp.map(|body| Guarded { body, _busy: busy }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // `expired` below enforces both timeouts (see the module's documentation).
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let timeout = expired(Arc::clone(&activity), limits);
    tokio::pin!(timeout);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("admin connection ended: {e}");
            }
            return;
        }
        _ = &mut timeout => {
            tracing::debug!("admin connection closed: no request head in time, or idle too long");
            return;
        }
        _ = stop.cancelled() => {}
    }
    // Shutdown: an idle connection closes now, one with a request in flight after its answer.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = timeout => {}
    }
}

/// The connection's head and idle limits, enforced by the data path's own timer
/// (`proxy::conn`): the same rules as a frontend's `client_header_timeout` and
/// `client_idle_timeout`, with the admin listener's values.
async fn expired(activity: Arc<Activity>, limits: Limits) {
    conn::expired(activity, limits.idle_timeout, limits.head_timeout).await
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until hyper drops it.
    #[derive(Debug)]
    struct Guarded {
        #[pin]
        body: axum::body::Body,
        _busy: Busy,
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// The deadline is kept in whole milliseconds since a process-wide epoch (see
    /// `pool::clock`), so with paused time it can fall up to 1 ms after the exact value,
    /// depending on the sub-millisecond phase between this runtime's clock and the epoch.
    fn about(elapsed: Duration, expected: Duration) {
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
            "{elapsed:?}, expected {expected:?}"
        );
    }

    fn limits() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_a_head_within_the_head_timeout() {
        let a = Activity::new();
        let t0 = Instant::now();
        expired(Arc::clone(&a), limits()).await;
        about(t0.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_a_response_then_a_head_clock_from_its_first_byte() {
        let a = Activity::new();
        drop(a.begin());
        let t0 = Instant::now();
        let timer = tokio::spawn(expired(Arc::clone(&a), limits()));
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.on_bytes();
        timer.await.unwrap();
        about(t0.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_never_expires() {
        let a = Activity::new();
        let busy = a.begin();
        let timer = tokio::spawn(expired(Arc::clone(&a), limits()));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!timer.is_finished());
        drop(busy);
        let t0 = Instant::now();
        timer.await.unwrap();
        about(t0.elapsed(), Duration::from_secs(60));
    }
}

//! Client connection timeouts: an idle keep-alive limit (`client_idle_timeout`) separate
//! from the slowloris guard (`client_header_timeout`), for fulcrum's HTTP/1.1 engine and
//! for hyper's HTTP/2 (whose own header-read timer is off).
//!
//! The IO wrapper notes when bytes arrive, the request path notes when requests start and
//! end, all in a connection's [`Activity`] (atomics only), and a timer reads it: the
//! accept loop's [`Deadlines`](super::deadlines::Deadlines) for the proxy's connections, or
//! [`expired`], one timer per connection, for the admin plane's. Either checks a
//! connection at its next deadline, or after the shorter of the two timeouts at the latest.
//!
//! That cap is what lets the request path never wake the timer: a head that starts while
//! the timer sleeps has its deadline (start + header timeout) after the timer's wake-up,
//! and so has a request that ends (end + idle timeout). Waking it on each of
//! those (as an earlier version did) cost two extra polls of the connection per request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::pool::now_ms;

/// What a connection is doing, written by the IO wrapper and the service, read by the timer.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests received and not yet fully answered.
    busy: AtomicU32,
    /// When the connection last made progress (bytes in, or a response finished).
    last_ms: AtomicU64,
    /// When the first byte of a request head arrived while nothing was in progress; 0 if none.
    head_since_ms: AtomicU64,
    /// Since when the client has accepted no bytes we had to send (its socket buffer is
    /// full: it stopped reading); 0 while writes go through.
    write_blocked_ms: AtomicU64,
    /// HTTP/2: frames between requests (PING, SETTINGS, WINDOW_UPDATE) are neither a
    /// request head (no header clock) nor use (they do not postpone the idle limit).
    multiplexed: AtomicBool,
    /// A timeout passed: the connection is to be closed ([`Activity::expired`]).
    expired: AtomicBool,
    /// The connection has ended (its [`Deadlines`](super::deadlines::Deadlines) entry is
    /// stale).
    gone: AtomicBool,
    /// The connection's task, woken when a timeout passes.
    waker: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        let a = Activity::default();
        let now = now_ms();
        a.last_ms.store(now, Ordering::Relaxed);
        // A new connection owes us a request head: the slowloris clock runs from accept.
        a.head_since_ms.store(now, Ordering::Relaxed);
        Arc::new(a)
    }

    /// The connection speaks HTTP/2 (see the `multiplexed` field).
    pub fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.head_since_ms.store(0, Ordering::Relaxed);
    }

    /// Bytes arrived from the client.
    pub fn on_bytes(&self) {
        if self.multiplexed.load(Ordering::Relaxed) {
            // HTTP/2 control frames are no sign of use: idle means no request since the
            // last one finished, even if the client keeps pinging.
            return;
        }
        let now = now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_since_ms.load(Ordering::Relaxed) == 0
        {
            self.head_since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Notes whether a write had to wait for the client; one relaxed load when it did not.
    fn on_write(&self, blocked: bool) {
        let since = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked && since == 0 {
            self.write_blocked_ms.store(now_ms(), Ordering::Relaxed);
        } else if !blocked && since != 0 {
            self.write_blocked_ms.store(0, Ordering::Relaxed);
        }
    }

    /// A request head has arrived; the guard marks the request done when dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(0, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// A timeout passed: wakes the connection's [`expired`](Self::expired).
    pub(super) fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a timeout passed.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Resolves when one of the client timeouts passed for this connection (the
    /// [`Deadlines`](super::deadlines::Deadlines) it is watched by decides). A reference
    /// and a poll function: far smaller in the connection's task than a timer of its own.
    pub fn expired(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_expired(cx))
    }

    /// [`expired`](Self::expired) as a poll, for a future that watches the timeouts
    /// itself. `Pending` leaves the task registered, so a stop (which wakes every watched
    /// connection) is seen by a check made after this one.
    pub fn poll_expired(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.is_expired() {
            return Poll::Ready(());
        }
        self.register(cx.waker());
        if self.is_expired() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Registers the connection's task to be woken when a timeout passes, or when fulcrum
    /// stops (the [`Deadlines`](super::deadlines::Deadlines) then wakes every connection).
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Wakes the connection's task without expiring it.
    pub(super) fn wake(&self) {
        self.waker.wake();
    }

    pub(super) fn set_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// How long the timer may sleep: until the next deadline, and no longer than the shorter
    /// timeout (see the module's doc); `None` when a limit is crossed.
    pub(super) fn remaining(&self, idle: Duration, header: Duration) -> Option<Duration> {
        let cap = idle.min(header);
        let now = now_ms();
        if self.busy.load(Ordering::Relaxed) > 0 {
            // A request in progress never expires while it moves; but a client that stopped
            // reading its response would hold the server's slot forever: it gets
            // `client_idle_timeout` to accept a byte, like an idle client.
            let blocked = self.write_blocked_ms.load(Ordering::Relaxed);
            if blocked != 0 && now.saturating_sub(blocked) >= idle.as_millis() as u64 {
                return None;
            }
            return Some(cap);
        }
        let head = self.head_since_ms.load(Ordering::Relaxed);
        let deadline = if head != 0 {
            head.saturating_add(header.as_millis() as u64)
        } else {
            (self.last_ms.load(Ordering::Relaxed)).saturating_add(idle.as_millis() as u64)
        };
        (deadline > now).then(|| Duration::from_millis(deadline - now).min(cap))
    }
}

/// One request in progress on a connection.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when the connection has been idle longer than `idle`, has taken longer than
/// `header` to send a request head, or has not read its response for `idle`.
pub async fn expired(activity: Arc<Activity>, idle: Duration, header: Duration) {
    let Some(wait) = activity.remaining(idle, header) else {
        return;
    };
    // One timer entry per connection, moved rather than re-created.
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let Some(wait) = activity.remaining(idle, header) else {
            return;
        };
        sleep.as_mut().reset(Instant::now() + wait);
    }
}

/// A stream that reports incoming bytes to its connection's [`Activity`].
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }

    /// The stream itself (to peek at it without consuming bytes).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream itself (to read the PROXY header, which is no request's activity).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_bytes();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.on_write(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.on_write(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

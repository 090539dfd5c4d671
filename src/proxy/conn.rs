//! Client connection timeouts that hyper alone does not give: an idle keep-alive limit
//! (`client_idle_timeout`) separate from the slowloris guard (`client_header_timeout`).
//!
//! hyper's header-read timer starts as soon as a connection waits for a request, so alone
//! it would close idle keep-alive connections after the (short) header timeout. We turn
//! hyper's timer off (it would also cost a boxed sleep per request) and enforce the two
//! limits here: the IO wrapper notes
//! when bytes arrive, the service notes when requests start and end, and one timer per
//! connection wakes at the next deadline, or after the shorter of the two timeouts at the
//! latest.
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

    /// How long the timer may sleep: until the next deadline, and no longer than the shorter
    /// timeout (see the module's doc); `None` when a limit is crossed.
    fn remaining(&self, idle: Duration, header: Duration) -> Option<Duration> {
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

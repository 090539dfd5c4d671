//! HTTP/2 streams that cannot make progress because the client opens no window.
//!
//! hyper's HTTP/2 server polls a response body only while its stream may send: a client
//! that never sends WINDOW_UPDATE leaves the body, and the server slot and upstream
//! connection it holds, parked forever, and the connection never looks idle (the request
//! is still in progress). The connection's own timers cannot help: they would close every
//! other stream with it.
//!
//! So each stream's task is wrapped here. hyper spawns one task per stream through its
//! executor; [`StreamExec`] runs that task inside a task-local [`Watch`], which the
//! stream's [`super::body::ProxyBody`] finds when it is created and marks each time it
//! hands hyper a frame ("waiting to be polled again") and each time it is polled again.
//! When a body has waited `client_idle_timeout` without being polled, the wrapper ends the
//! task: dropping hyper's stream handles makes h2 send RST_STREAM(CANCEL), and dropping
//! the body frees its slot and closes its upstream connection (marked abandoned, so it is
//! never reused). One timer per stream, armed only when a body first waits and re-armed
//! when it fires, never reset per frame (the manner of `super::deadlines`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::pool::now_ms;

tokio::task_local! {
    /// The watch of the HTTP/2 stream whose task is running (none on HTTP/1).
    static STREAM: Arc<Watch>;
}

/// Whether a stream's response body is waiting for hyper to poll it, and since when.
#[derive(Debug, Default)]
pub struct Watch {
    /// When the body last handed hyper a frame (or was handed to hyper) and has not been
    /// polled since; 0 while hyper is polling it (waiting for the server is not a stall
    /// of the client: `response_timeout` covers that).
    waiting_since_ms: AtomicU64,
    /// The stream was reset for making no progress: its body was not sent whole.
    abandoned: AtomicBool,
}

impl Watch {
    /// The watch of the current HTTP/2 stream, if this runs in one.
    pub fn current() -> Option<Arc<Watch>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// The body has something hyper has not taken further yet.
    pub fn waiting(&self) {
        self.waiting_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// hyper polls the body again: the stream moves.
    pub fn polled(&self) {
        if self.waiting_since_ms.load(Ordering::Relaxed) != 0 {
            self.waiting_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the stream was reset for making no progress.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// How long until the body has waited `idle`; `None` when it is not waiting, zero
    /// when the time is up.
    fn left(&self, idle: Duration) -> Option<Duration> {
        let since = self.waiting_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let waited = now_ms().saturating_sub(since);
        Some(Duration::from_millis(
            (idle.as_millis() as u64).saturating_sub(waited),
        ))
    }
}

/// The executor the HTTP/2 server spawns its stream tasks with: each runs watched.
#[derive(Clone, Debug)]
pub struct StreamExec {
    /// `client_idle_timeout`: how long a body may wait for the client's window.
    pub idle: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = Arc::new(Watch::default());
        tokio::spawn(Watched {
            task: Box::pin(STREAM.scope(Arc::clone(&watch), fut)),
            watch,
            idle: self.idle,
            timer: None,
        });
    }
}

/// A stream task and the timer that ends it when its body stalls.
struct Watched<F> {
    task: Pin<Box<tokio::task::futures::TaskLocalFuture<Arc<Watch>, F>>>,
    watch: Arc<Watch>,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F> std::fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("watch", &self.watch)
            .field("idle", &self.idle)
            .finish()
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.task.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            let Some(left) = this.watch.left(this.idle) else {
                // Not waiting: the timer, if any, fires later and finds nothing to do.
                return Poll::Pending;
            };
            if left.is_zero() {
                this.watch.abandoned.store(true, Ordering::Relaxed);
                tracing::debug!(
                    "resetting an HTTP/2 stream whose client opened no window for {:?}",
                    this.idle
                );
                // Dropping the task (when this future completes) resets the stream.
                return Poll::Ready(());
            }
            match this.timer.as_mut() {
                None => {
                    this.timer = Some(Box::pin(tokio::time::sleep(left)));
                }
                Some(t) if t.is_elapsed() => t.as_mut().reset(Instant::now() + left),
                Some(_) => {}
            }
            let Some(timer) = this.timer.as_mut() else {
                return Poll::Pending;
            };
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }
}

//! Relaying bytes both ways with an idle limit: a tunnel (a `mode = "tcp"` connection, and
//! with the HTTP/1 engine an Upgrade) silent in both directions for `tunnel_idle_timeout`
//! is closed, so silent peers cannot hold server slots forever.
//!
//! Both streams are wrapped so that every read that brings bytes notes the time in one
//! shared timestamp; one sleep per tunnel wakes at the earliest possible deadline, looks at
//! the timestamp and re-arms (no timer per read, as `super::deadlines` does for HTTP).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::pool::now_ms;

/// How a tunnel ended.
#[derive(Debug, thiserror::Error)]
pub enum TunnelEnd {
    /// Neither side sent anything for the idle limit.
    #[error("both directions were silent for {0:?}")]
    Idle(Duration),
    /// Reading or writing one side failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Bytes relayed: from `a` to `b` and from `b` to `a`, whatever ended the tunnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Copies `a` to `b` and `b` to `a` until both have closed, one fails, or neither sends a
/// byte for `idle`.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> (Relayed, Option<TunnelEnd>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = AtomicU64::new(now_ms());
    let mut a = Active::new(a, &last);
    let mut b = Active::new(b, &last);
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
        tokio::pin!(copy);
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                r = &mut copy => break r.err().map(TunnelEnd::from),
                () = &mut sleep => {
                    let quiet = Duration::from_millis(now_ms().saturating_sub(last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        break Some(TunnelEnd::Idle(idle));
                    }
                    sleep.as_mut().reset(Instant::now() + (idle - quiet));
                }
            }
        }
    };
    let relayed = Relayed {
        a_to_b: a.read,
        b_to_a: b.read,
    };
    (relayed, end)
}

/// A stream that notes when bytes arrive on it, and how many.
#[derive(Debug)]
struct Active<'a, S> {
    inner: &'a mut S,
    last: &'a AtomicU64,
    read: u64,
}

impl<'a, S> Active<'a, S> {
    fn new(inner: &'a mut S, last: &'a AtomicU64) -> Self {
        Active {
            inner,
            last,
            read: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_closes_after_the_idle_limit_and_activity_postpones_it() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let t = tokio::spawn(async move { relay(&mut a, &mut b, idle).await });
        tokio::time::sleep(Duration::from_secs(7)).await;
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!t.is_finished(), "activity at 7 s postpones the limit");
        server.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        let started = Instant::now();
        let (relayed, end) = t.await.unwrap();
        assert!(matches!(end, Some(TunnelEnd::Idle(_))), "{end:?}");
        assert_eq!(started.elapsed(), idle);
        assert_eq!(
            relayed,
            Relayed {
                a_to_b: 4,
                b_to_a: 5
            }
        );
    }
}

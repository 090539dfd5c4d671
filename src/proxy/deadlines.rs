//! The client timeouts of every connection of one accept loop, kept by one timer task
//! instead of one timer per connection.
//!
//! Why: a per-connection `tokio::time::Sleep` and the future that re-arms it were about
//! 220 bytes of every connection's task, a fifth of an idle keep-alive connection's memory
//! (bench/README.md). Here a connection costs one heap entry (24 bytes) and a waker slot in
//! its [`Activity`]; HAProxy keeps its timers in one tree per thread the same way.
//!
//! The logic is the one a per-connection timer had: each connection has a next check time,
//! no later than the shorter of its two timeouts away; at that time the sweeper asks the
//! connection's [`Activity`] how long it may still wait, and either marks it expired (its
//! task wakes and closes it) or schedules the next check. The request path never touches
//! the heap: it only writes the activity's atomics, and deadlines only move later with
//! activity, which a check at the capped time finds.
//!
//! At shutdown the sweeper wakes every connection it watches, so that an idle one sees the
//! stop token cancelled and closes: the idle wait checks the token after registering the
//! connection's waker instead of holding a cancellation future (72 bytes) of its own.
//!
//! A connection that ends leaves its entry behind until the entry's time comes; when such
//! entries are more than half of the heap (and more than a few), the heap is compacted, so
//! a stream of short connections (`Connection: close` at tens of thousands a second) keeps
//! memory proportional to the connections open, not to those opened in the last timeout.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::Activity;
use crate::pool::now_ms;

/// Ended connections' entries tolerated in the heap before it is compacted.
const STALE_SLACK: usize = 64;

/// The timeouts of the connections of one accept loop (one per worker thread and frontend
/// generation, so every entry is checked on the runtime its connection runs on).
#[derive(Debug)]
pub struct Deadlines {
    state: Mutex<State>,
    /// An entry earlier than the sweeper's next wake-up was added.
    earlier: Notify,
    /// fulcrum's stop token: when cancelled, every watched connection is woken.
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    heap: BinaryHeap<Entry>,
    /// Entries whose connection has ended (counted when it ends, until removed).
    stale: usize,
    /// The sweeper task runs (it stops when the heap is empty). It sleeps until the
    /// heap's earliest entry, so that entry is its next wake-up.
    sweeping: bool,
}

/// One connection's next check: 24 bytes (timeouts in milliseconds, as the checks are).
#[derive(Debug)]
struct Entry {
    at_ms: u64,
    idle_ms: u32,
    header_ms: u32,
    activity: Arc<Activity>,
}

/// A timeout in milliseconds for an [`Entry`] (the configuration's are far below 49 days;
/// longer ones are that).
fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest check must be on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at_ms.cmp(&self.at_ms)
    }
}

/// A connection's place in its [`Deadlines`]; dropping it (the connection ended) marks the
/// entry stale.
#[derive(Debug)]
pub struct Watched {
    deadlines: Arc<Deadlines>,
    activity: Arc<Activity>,
}

impl Watched {
    /// The connection's activity, which the timeouts are read from.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut s = self.deadlines.lock();
        self.activity.set_gone();
        // An expired connection's entry left the heap when it expired (under this lock).
        if self.activity.is_expired() {
            return;
        }
        s.stale += 1;
        if s.stale > STALE_SLACK && s.stale * 2 > s.heap.len() {
            s.heap.retain(|e| !e.activity.is_gone());
            s.stale = 0;
        }
    }
}

impl Deadlines {
    /// The deadlines of connections that close when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Arc<Self> {
        Arc::new(Deadlines {
            state: Mutex::default(),
            earlier: Notify::new(),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `activity` for the client timeouts `idle` and `header` until the returned
    /// guard is dropped; when one passes, [`Activity::expired`] resolves. Must be called
    /// on the runtime the connection runs on (the sweeper is spawned there).
    pub fn watch(
        self: &Arc<Self>,
        activity: &Arc<Activity>,
        idle: Duration,
        header: Duration,
    ) -> Watched {
        let now = now_ms();
        let wait = activity.remaining(idle, header).unwrap_or(Duration::ZERO);
        let at_ms = now + wait.as_millis() as u64;
        let mut s = self.lock();
        // Earlier than the sweeper's wake-up: the heap's top, or anything if compaction
        // emptied the heap while it sleeps.
        let earlier = s.heap.peek().is_none_or(|top| at_ms < top.at_ms);
        s.heap.push(Entry {
            at_ms,
            idle_ms: ms(idle),
            header_ms: ms(header),
            activity: Arc::clone(activity),
        });
        if !s.sweeping {
            s.sweeping = true;
            tokio::spawn(Arc::clone(self).sweep());
        } else if earlier {
            self.earlier.notify_one();
        }
        Watched {
            deadlines: Arc::clone(self),
            activity: Arc::clone(activity),
        }
    }

    /// Checks every entry whose time has come; the next wake-up, or `None` (and the
    /// sweeper stops) when no connection is left.
    fn check_due(&self) -> Option<u64> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = now_ms();
        while s.heap.peek().is_some_and(|top| top.at_ms <= now) {
            let Some(e) = s.heap.pop() else { break };
            if e.activity.is_gone() {
                s.stale = s.stale.saturating_sub(1);
                continue;
            }
            let (idle, header) = (e.idle_ms.into(), e.header_ms.into());
            match e
                .activity
                .remaining(Duration::from_millis(idle), Duration::from_millis(header))
            {
                None => e.activity.expire(),
                // Later than `now`, so this loop meets it only after the entries due.
                Some(wait) => s.heap.push(Entry {
                    at_ms: now + (wait.as_millis() as u64).max(1),
                    ..e
                }),
            }
        }
        match s.heap.peek() {
            Some(top) => Some(top.at_ms),
            None => {
                s.sweeping = false;
                s.stale = 0;
                None
            }
        }
    }

    /// The sweeper: sleeps until the earliest check, runs the checks due, and stops when
    /// the heap is empty (the next [`watch`](Self::watch) starts another).
    async fn sweep(self: Arc<Self>) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        // `cancelled()` is ready at once if fulcrum was stopping before this sweeper began.
        let mut stopped = false;
        while let Some(at_ms) = self.check_due() {
            let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
            sleep.as_mut().reset(Instant::now() + wait);
            tokio::select! {
                () = sleep.as_mut() => {}
                () = self.earlier.notified() => {}
                () = self.stop.cancelled(), if !stopped => {
                    stopped = true;
                    self.wake_all();
                }
            }
        }
    }

    /// Wakes every watched connection (fulcrum is stopping: the idle ones close).
    fn wake_all(&self) {
        for e in self.lock().heap.iter() {
            e.activity.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_connection_expires_after_its_timeout_and_not_before() {
        let d = Deadlines::new(CancellationToken::new());
        let a = Activity::new();
        drop(a.begin()); // a request came and went
        let _w = d.watch(&a, Duration::from_millis(150), Duration::from_secs(10));
        let started = std::time::Instant::now();
        a.expired().await;
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_busy_connection_never_expires_and_the_sweeper_stops_when_all_have_ended() {
        let d = Deadlines::new(CancellationToken::new());
        let a = Activity::new();
        let busy = a.begin();
        let w = d.watch(&a, Duration::from_millis(20), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a.is_expired());
        drop(busy);
        drop(w);
        until("the sweeper stops", || !d.lock().sweeping).await;
        assert!(d.lock().heap.is_empty());
    }

    #[tokio::test]
    async fn ended_connections_do_not_pile_up() {
        let d = Deadlines::new(CancellationToken::new());
        let live: Vec<_> = (0..10)
            .map(|_| {
                let a = Activity::new();
                let w = d.watch(&a, Duration::from_secs(60), Duration::from_secs(60));
                (a, w)
            })
            .collect();
        for _ in 0..1000 {
            let a = Activity::new();
            drop(d.watch(&a, Duration::from_secs(60), Duration::from_secs(60)));
        }
        let s = d.lock();
        assert!(
            s.heap.len() <= live.len() + 2 * STALE_SLACK + 2,
            "{}",
            s.heap.len()
        );
    }

    #[tokio::test]
    async fn expired_connections_leave_no_stale_count_behind() {
        let d = Deadlines::new(CancellationToken::new());
        let a = Activity::new();
        let w = d.watch(&a, Duration::from_millis(10), Duration::from_millis(10));
        a.expired().await;
        drop(w);
        assert_eq!(d.lock().stale, 0);
    }

    #[tokio::test]
    async fn stopping_wakes_every_watched_connection() {
        let stop = CancellationToken::new();
        let d = Deadlines::new(stop.clone());
        let a = Activity::new();
        let _w = d.watch(&a, Duration::from_secs(60), Duration::from_secs(60));
        let idle = tokio::spawn({
            let (a, stop) = (Arc::clone(&a), stop.clone());
            async move {
                std::future::poll_fn(|cx| {
                    a.register(cx.waker());
                    if stop.is_cancelled() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("woken at stop")
            .unwrap();
    }

    #[tokio::test]
    async fn an_earlier_entry_wakes_the_sweeper() {
        let d = Deadlines::new(CancellationToken::new());
        let slow = Activity::new();
        let _ws = d.watch(&slow, Duration::from_secs(60), Duration::from_secs(60));
        let fast = Activity::new();
        let _wf = d.watch(&fast, Duration::from_millis(50), Duration::from_millis(50));
        until("the short timeout fires", || fast.is_expired()).await;
        assert!(!slow.is_expired());
    }
}

//! The retry budget: at most 20 % of a backend's requests in a 10-second window may be
//! retries, so that a struggling backend is not hit by a retry storm on top of its load.
//!
//! Ten one-second buckets of atomic counters, reused in a ring: no lock on the request path.
//! Under heavy concurrency a few retries may slip past the exact ratio at the same instant
//! (check and count are two steps); that is the price of no lock, and a handful is harmless.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::clock;

/// The window and its resolution.
const BUCKETS: u64 = 10;
const BUCKET_MS: u64 = 1000;
/// Retries allowed per request in the window: one in five (20 %).
const RATIO_DIVISOR: u64 = 5;
/// Retries always allowed in the window, so that a lone request on a quiet backend is still
/// retried (20 % of 1 would be none). Small enough not to matter at any real load.
const MIN_RETRIES: u64 = 1;

#[derive(Debug, Default)]
struct Bucket {
    /// Which second (`clock::now_ms() / 1000`) the counts belong to.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Requests and retries of one backend over the last ten seconds.
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; BUCKETS as usize],
}

impl RetryBudget {
    fn current(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % BUCKETS) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    /// (requests, retries) in the window ending at `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| second.saturating_sub(b.second.load(Ordering::Acquire)) < BUCKETS)
            .fold((0, 0), |(rq, rt), b| {
                (
                    rq + u64::from(b.requests.load(Ordering::Acquire)),
                    rt + u64::from(b.retries.load(Ordering::Acquire)),
                )
            })
    }

    /// Counts one client request.
    pub fn record_request(&self) {
        let second = clock::now_ms() / BUCKET_MS;
        self.current(second).requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget if there is room; `false` means do not retry.
    pub fn try_retry(&self) -> bool {
        let second = clock::now_ms() / BUCKET_MS;
        let (requests, retries) = self.totals(second);
        if retries >= (requests / RATIO_DIVISOR).max(MIN_RETRIES) {
            return false;
        }
        self.current(second).retries.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// (requests, retries) in the last ten seconds, for status and tests.
    pub fn window(&self) -> (u64, u64) {
        self.totals(clock::now_ms() / BUCKET_MS)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_a_fifth_of_requests_are_retries() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.record_request();
        }
        let allowed = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(allowed, 20);
        assert_eq!(b.window(), (100, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_may_be_retried_once() {
        let b = RetryBudget::default();
        b.record_request();
        assert!(b.try_retry());
        assert!(!b.try_retry());
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let b = RetryBudget::default();
        for _ in 0..10 {
            b.record_request();
        }
        assert!(b.try_retry() && b.try_retry());
        assert!(!b.try_retry(), "2 of 10 spent");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.window(), (0, 0), "old seconds no longer count");
        for _ in 0..10 {
            b.record_request();
        }
        assert!(b.try_retry());
    }
}

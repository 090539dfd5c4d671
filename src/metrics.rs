//! Metrics kept on the request path without a lock. The admin plane's scrape-time
//! collector (`admin::metrics`) turns them, and the live atomics of servers and backends,
//! into Prometheus families.
//!
//! prometheus-client's `Family` and `Histogram` take a lock on every update; a proxy records
//! one observation per request, so the hot path writes plain atomics held by each server
//! and the collector reads them only when `/metrics` is scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

/// Upper bounds (seconds) of the request-duration buckets: from a fast cache hit to a
/// response that hits the default `response_timeout`.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram made of atomics: `observe` is a few relaxed adds, no lock. A scrape may see
/// a count and a sum from slightly different instants, which Prometheus tolerates.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// One count per bucket of [`DURATION_BUCKETS`], then one for `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// The sum in nanoseconds: integer adds need no compare-and-swap loop.
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds, `+Inf` last).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                count += n;
                (DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n)
            })
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// The lowest status code counted; codes are kept in a flat array indexed from here.
const FIRST_CODE: u16 = 100;
/// How many distinct codes are counted (100..=599); anything else counts as 599.
const CODES: usize = 500;

/// Requests by status code for one frontend: a flat array of counters, so counting is one
/// index and one atomic add.
#[derive(Debug)]
pub struct CodeCounts {
    pub frontend: Arc<str>,
    counts: Box<[AtomicU64]>,
}

impl CodeCounts {
    fn new(frontend: &Arc<str>) -> Self {
        CodeCounts {
            frontend: Arc::clone(frontend),
            counts: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Every code counted at least once, with its count.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            (n > 0).then_some((FIRST_CODE + i as u16, n))
        })
    }
}

/// Requests by (frontend, status code). The per-frontend tables are found by a lock-free
/// load and a scan of a list that holds one entry per frontend feeding the backend (almost
/// always one); a new frontend is added once, off the common path, by copy-and-swap.
#[derive(Debug, Default)]
pub struct Tally {
    by_frontend: ArcSwap<Vec<Arc<CodeCounts>>>,
}

impl Tally {
    /// Counts one request answered with `code` through `frontend`.
    pub fn count(&self, frontend: &Arc<str>, code: u16) {
        let i = usize::from(code.clamp(FIRST_CODE, FIRST_CODE + CODES as u16 - 1) - FIRST_CODE);
        if let Some(t) = self
            .by_frontend
            .load()
            .iter()
            .find(|t| t.frontend == *frontend)
        {
            t.counts[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fresh = Arc::new(CodeCounts::new(frontend));
        let mut added = Arc::clone(&fresh);
        self.by_frontend.rcu(|list| {
            if let Some(t) = list.iter().find(|t| t.frontend == *frontend) {
                added = Arc::clone(t);
                return Arc::clone(list);
            }
            added = Arc::clone(&fresh);
            let mut next = Vec::clone(list);
            next.push(Arc::clone(&fresh));
            Arc::new(next)
        });
        added.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (every request counted, those with a 5xx status), over all frontends.
    pub fn totals(&self) -> (u64, u64) {
        let (mut all, mut errors) = (0, 0);
        for t in self.by_frontend.load().iter() {
            for (code, n) in t.nonzero() {
                all += n;
                if (500..600).contains(&code) {
                    errors += n;
                }
            }
        }
        (all, errors)
    }

    /// The per-frontend tables, for the collector.
    pub fn tables(&self) -> Arc<Vec<Arc<CodeCounts>>> {
        self.by_frontend.load_full()
    }
}

/// What the request path records about one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: Tally,
    pub duration: AtomicHistogram,
}

/// Open client connections of one frontend.
#[derive(Debug, Default)]
pub struct ClientCount(AtomicU64);

impl ClientCount {
    /// Counts a connection open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenClient {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenClient(Arc::clone(self))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open client connection; dropping it uncounts it.
#[derive(Debug)]
pub struct OpenClient(Arc<ClientCount>);

impl Drop for OpenClient {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.read();
        assert_eq!(count, 2);
        assert!((sum - 60.003).abs() < 1e-6);
        assert_eq!(buckets[2], (0.005, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn tally_counts_per_frontend_and_code() {
        let t = Tally::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        t.count(&a, 200);
        t.count(&a, 200);
        t.count(&b, 503);
        t.count(&a, 999);
        let tables = t.tables();
        assert_eq!(tables.len(), 2);
        let a_codes: Vec<_> = tables[0].nonzero().collect();
        assert_eq!(a_codes, vec![(200, 2), (599, 1)]);
        assert_eq!(tables[1].nonzero().collect::<Vec<_>>(), vec![(503, 1)]);
        assert_eq!(t.totals(), (4, 2));
    }
}

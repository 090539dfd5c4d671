//! Peak EWMA, as linkerd balances: cost = a peak-sensitive moving average of the server's
//! response time × (requests in flight + 1) / weight; two weighted random draws, the cheaper
//! one wins.
//!
//! "Peak-sensitive": a response slower than the average replaces it at once, faster ones pull
//! it down slowly, so a server that just got slow is avoided immediately and trusted again
//! only gradually. A server with no recent responses drifts back toward a default, so it is
//! tried again rather than starved forever on old bad news.

use std::sync::atomic::{AtomicU64, Ordering};

use super::power_of_two::better_of_two;
use super::random::Cumulative;
use super::{Candidate, Request, Select, clock};
use crate::config;

/// The estimate a server starts from and returns to without data (linkerd's default too).
const DEFAULT_RTT_NS: f64 = 30_000_000.0;
/// The time constant: after this long, old samples weigh 1/e. linkerd uses 10 s as well:
/// long enough to ride out one slow response, short enough to notice a recovery.
const DECAY_NS: f64 = 10_000_000_000.0;

/// e^-x, the weight of data `x` time constants old. This is on the request path twice per
/// pick: a busy server's data is fresh (x below 1e-3, where 1 - x + x²/2 is exact to 1e-10)
/// and a long-idle one has decayed away (x above 40, e^-40 ≈ 4e-18), so `exp` is only
/// paid in between.
fn decay(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x + x * x / 2.0
    } else if x > 40.0 {
        0.0
    } else {
        (-x).exp()
    }
}

/// One server's response-time estimate: two atomics, no lock. Concurrent updates may lose
/// one sample to the other, which an average of thousands does not notice.
#[derive(Debug)]
pub struct Ewma {
    /// The estimate in nanoseconds, as `f64` bits.
    rtt: AtomicU64,
    /// When it was last updated, on [`clock::now_ns`]; 0 = never.
    stamp: AtomicU64,
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma {
            rtt: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }
}

impl Ewma {
    /// The estimate at `now`, decayed toward the default for the time without samples.
    pub fn estimate_at(&self, now: u64) -> f64 {
        let stamp = self.stamp.load(Ordering::Relaxed);
        if stamp == 0 {
            return DEFAULT_RTT_NS;
        }
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let x = now.saturating_sub(stamp) as f64 / DECAY_NS;
        DEFAULT_RTT_NS + (rtt - DEFAULT_RTT_NS) * decay(x)
    }

    /// Records one response time (request sent → response head), now.
    pub fn observe(&self, rtt_ns: u64) {
        self.observe_at(rtt_ns, clock::now_ns());
    }

    /// Records the response time of a request sent at `sent_at` (on [`clock::now_ns`]).
    pub fn observe_since(&self, sent_at: u64) {
        let now = clock::now_ns();
        self.observe_at(now.saturating_sub(sent_at), now);
    }

    /// Records one response time at `now`.
    pub fn observe_at(&self, rtt_ns: u64, now: u64) {
        let rtt = rtt_ns as f64;
        let old = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        let new = if rtt > old || stamp == 0 {
            rtt
        } else {
            let w = decay(now.saturating_sub(stamp) as f64 / DECAY_NS);
            old * w + rtt * (1.0 - w)
        };
        self.rtt.store(new.to_bits(), Ordering::Relaxed);
        self.stamp.store(now.max(1), Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct PeakEwma {
    table: Cumulative,
}

/// The cost of sending one more request to `c` at `now`.
fn cost(c: &Candidate, now: u64) -> f64 {
    let pending = f64::from(c.server.active()) + 1.0;
    c.server.ewma.estimate_at(now) * pending / f64::from(c.weight.max(1))
}

impl Select for PeakEwma {
    fn build(candidates: &[Candidate], _settings: &config::Backend) -> Self {
        PeakEwma {
            table: Cumulative::build(candidates),
        }
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let now = clock::now_ns();
        better_of_two(&self.table, candidates, accept, |x, y| {
            cost(x, now) < cost(y, now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, spread};

    const MS: u64 = 1_000_000;

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = Ewma::default();
        e.observe_at(10 * MS, 1_000 * MS);
        assert!(
            (e.estimate_at(1_000 * MS) - 10e6).abs() < 1.0,
            "first sample is taken"
        );
        e.observe_at(500 * MS, 1_001 * MS);
        assert!(
            (e.estimate_at(1_001 * MS) - 500e6).abs() < 1.0,
            "a peak is taken at once"
        );
        e.observe_at(10 * MS, 1_002 * MS);
        assert!(
            e.estimate_at(1_002 * MS) > 490e6,
            "a fast sample pulls down slowly"
        );
    }

    #[test]
    fn no_data_drifts_back_to_the_default() {
        let e = Ewma::default();
        e.observe_at(2_000 * MS, 1_000 * MS);
        let later = e.estimate_at(1_000 * MS + 120_000 * MS);
        assert!(
            (later - DEFAULT_RTT_NS).abs() < 0.01 * DEFAULT_RTT_NS,
            "{later}"
        );
    }

    #[test]
    fn the_slow_server_is_avoided() {
        fastrand::seed(4);
        clock::set_virtual(Some(5_000 * MS));
        let c = candidates(&[1, 1, 1]);
        c[0].server.ewma.observe_at(1_000 * MS, 5_000 * MS);
        c[1].server.ewma.observe_at(10 * MS, 5_000 * MS);
        c[2].server.ewma.observe_at(10 * MS, 5_000 * MS);
        let p = PeakEwma::build(&c, &settings("peak_ewma", ""));
        let counts = spread(&p, &c, 300);
        clock::set_virtual(None);
        // s0 wins only when both draws are s0.
        assert!(counts[0] < 20, "{counts:?}");
    }
}

//! Smooth weighted round-robin, precomputed.
//!
//! nginx's smooth algorithm interleaves weights 3:1 as a-a-b-a instead of a-a-a-b, but it
//! needs a lock and O(n) work per pick. We run it once, off the hot path, to produce the
//! whole cycle (sum of weights / gcd entries), and the request path only advances an atomic
//! counter into that table: O(1) and lock-free at any number of servers.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Request, Select};
use crate::config;

#[derive(Debug)]
pub struct RoundRobin {
    /// One full cycle of candidate indices in smooth order.
    cycle: Vec<u32>,
    next: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smooth weighted round-robin order for `weights` (zero weights never appear).
pub fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let reduced: Vec<i64> = weights.iter().map(|&w| i64::from(w / g)).collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..current.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    debug_assert!(
        current.iter().all(|&c| c == 0),
        "a full cycle returns to zero"
    );
    cycle
}

impl Select for RoundRobin {
    fn build(candidates: &[Candidate], _settings: &config::Backend) -> Self {
        let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
        // Start each new table at a random point so that several fulcrum processes (or a
        // rebuild) do not all send their next request to the first server.
        let cycle = smooth_cycle(&weights);
        let start = if cycle.is_empty() {
            0
        } else {
            fastrand::usize(..cycle.len())
        };
        RoundRobin {
            cycle,
            next: AtomicUsize::new(start),
        }
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A refused candidate (full, already tried) passes its turn to the next in the cycle.
        // After `len` refusals every candidate has been asked at least once.
        for step in 0..len {
            let idx = self.cycle[(start.wrapping_add(step)) % len] as usize;
            if accept(&candidates[idx]) {
                return Some(idx);
            }
        }
        None
    }
}

impl RoundRobin {
    /// Restarts the cycle at its beginning, for tests that check an exact order.
    pub fn reset(&self) {
        self.next.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, with_request};

    #[test]
    fn weights_interleave_smoothly() {
        assert_eq!(smooth_cycle(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_cycle(&[1, 1]), vec![0, 1]);
        assert_eq!(
            smooth_cycle(&[2, 2]),
            vec![0, 1],
            "gcd keeps the table small"
        );
        assert_eq!(smooth_cycle(&[0, 3]), vec![1]);
        assert!(smooth_cycle(&[0, 0]).is_empty());
    }

    #[test]
    fn shares_follow_weights() {
        let c = candidates(&[5, 3, 2]);
        let rr = RoundRobin::build(&c, &settings("round_robin", ""));
        let mut counts = [0; 3];
        with_request(|req| {
            for _ in 0..1000 {
                counts[rr.pick(req, &c, &mut |_| true).unwrap()] += 1;
            }
        });
        assert_eq!(counts, [500, 300, 200]);
    }

    #[test]
    fn refused_candidates_pass_their_turn() {
        let c = candidates(&[1, 1, 1]);
        let rr = RoundRobin::build(&c, &settings("round_robin", ""));
        with_request(|req| {
            for _ in 0..10 {
                let i = rr.pick(req, &c, &mut |c| &*c.server.name != "s1").unwrap();
                assert_ne!(i, 1);
            }
            assert_eq!(rr.pick(req, &c, &mut |_| false), None);
        });
    }
}

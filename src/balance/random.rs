//! Weighted random: each pick lands on a server with probability weight / total weight.
//!
//! The structure is the running sum of weights; a pick draws one number below the total and
//! finds its server by binary search: O(log n) at any number of servers, no lock.

use super::{Candidate, Request, Select, scan_from};
use crate::config;

/// Cumulative weights, shared with power-of-two and peak EWMA (which draw two of these).
#[derive(Debug)]
pub struct Cumulative {
    /// `ends[i]` is the sum of the weights of candidates `0..=i`.
    ends: Vec<u64>,
}

impl Cumulative {
    /// The table for `candidates`; zero weights take no share.
    pub fn build(candidates: &[Candidate]) -> Self {
        let mut sum = 0u64;
        let ends = candidates
            .iter()
            .map(|c| {
                sum += u64::from(c.weight);
                sum
            })
            .collect();
        Cumulative { ends }
    }

    /// A candidate index drawn in proportion to weight; `None` when every weight is zero.
    pub fn sample(&self) -> Option<usize> {
        let total = *self.ends.last()?;
        if total == 0 {
            return None;
        }
        let r = fastrand::u64(..total);
        Some(self.ends.partition_point(|&end| end <= r))
    }
}

/// Weighted rotation over the cumulative table: the `k`-th request goes to the candidate
/// whose weight range holds `k mod total`. Not interleaved like the smooth round-robin,
/// but built in O(n) and picked in O(log n): the hash algorithms' fallback for requests
/// without a key, so their rebuilds stay cheap at thousands of servers.
#[derive(Debug)]
pub struct Rotation {
    table: Cumulative,
    next: std::sync::atomic::AtomicU64,
}

impl Rotation {
    pub fn build(candidates: &[Candidate]) -> Self {
        Rotation {
            table: Cumulative::build(candidates),
            next: std::sync::atomic::AtomicU64::new(fastrand::u64(..)),
        }
    }

    /// The next candidate in rotation, then the others once each if it is refused.
    pub fn pick(
        &self,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let total = *self.table.ends.last()?;
        if total == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % total;
        let i = self.table.ends.partition_point(|&end| end <= k);
        if accept(&candidates[i]) {
            return Some(i);
        }
        scan_from(i, candidates, accept)
    }
}

#[derive(Debug)]
pub struct Random {
    table: Cumulative,
}

impl Select for Random {
    fn build(candidates: &[Candidate], _settings: &config::Backend) -> Self {
        Random {
            table: Cumulative::build(candidates),
        }
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let i = self.table.sample()?;
        if accept(&candidates[i]) {
            return Some(i);
        }
        // Refused (full, tried): the others once each, starting after the draw.
        scan_from(i, candidates, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, spread, with_request};

    #[test]
    fn shares_follow_weights() {
        fastrand::seed(1);
        let c = candidates(&[1, 3, 0, 4]);
        let r = Random::build(&c, &settings("random", ""));
        let counts = spread(&r, &c, 8000);
        assert_eq!(counts[2], 0, "zero weight is never drawn");
        for (i, want) in [(0, 1000), (1, 3000), (3, 4000)] {
            let got = counts[i] as i64;
            assert!((got - want).abs() < want / 8, "{i}: {got} vs {want}");
        }
    }

    #[test]
    fn refusal_falls_through_to_others_then_none() {
        let c = candidates(&[1, 1, 1]);
        let r = Random::build(&c, &settings("random", ""));
        with_request(|req| {
            for _ in 0..20 {
                let got = r.pick(req, &c, &mut |c| &*c.server.name == "s2");
                assert_eq!(got, Some(2));
            }
            assert_eq!(r.pick(req, &c, &mut |_| false), None);
        });
        let empty = Random::build(&[], &settings("random", ""));
        with_request(|req| assert_eq!(empty.pick(req, &[], &mut |_| true), None));
    }
}

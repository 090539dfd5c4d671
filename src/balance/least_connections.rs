//! Weighted least-connections: the candidate with the fewest requests in flight relative to
//! its weight; ties are broken by rotation so equal servers share evenly.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Request, Select};
use crate::config;

pub struct LeastConnections {
    next: AtomicUsize,
}

impl Select for LeastConnections {
    fn build(_candidates: &[Candidate], _settings: &config::Backend) -> Self {
        LeastConnections {
            next: AtomicUsize::new(0),
        }
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Scan once, keeping the best by (active+1)/weight compared by cross-multiplying;
        // the rotating start makes the first of equals change every pick.
        let mut order: Vec<usize> = Vec::new();
        let mut best: Option<(usize, u64, u64)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            let c = &candidates[i];
            let load = u64::from(c.server.active()) + 1;
            let weight = u64::from(c.weight.max(1));
            let better = match best {
                None => true,
                Some((_, bl, bw)) => load * bw < bl * weight,
            };
            if better {
                best = Some((i, load, weight));
            }
        }
        let (first, _, _) = best?;
        if accept(&candidates[first]) {
            return Some(first);
        }
        // The least loaded was refused: fall back to the others in load order.
        order.extend((0..n).map(|s| (start + s) % n).filter(|&i| i != first));
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            let la = (u64::from(ca.server.active()) + 1) * u64::from(cb.weight.max(1));
            let lb = (u64::from(cb.server.active()) + 1) * u64::from(ca.weight.max(1));
            la.cmp(&lb)
        });
        order.into_iter().find(|&i| accept(&candidates[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, with_request};

    #[test]
    fn picks_the_least_loaded_relative_to_weight() {
        let c = candidates(&[1, 1, 2]);
        let lc = LeastConnections::build(&c, &settings("least_connections", ""));
        let _a = c[0].server.try_acquire();
        let _b = c[1].server.try_acquire();
        let _c1 = c[2].server.try_acquire();
        let _c2 = c[2].server.try_acquire();
        // s0: 2/1, s1: 2/1, s2: 3/2 -> s2
        with_request(|req| assert_eq!(lc.pick(req, &c, &mut |_| true), Some(2)));
    }

    #[test]
    fn ties_rotate() {
        let c = candidates(&[1, 1, 1]);
        let lc = LeastConnections::build(&c, &settings("least_connections", ""));
        let mut seen = [0; 3];
        with_request(|req| {
            for _ in 0..30 {
                seen[lc.pick(req, &c, &mut |_| true).unwrap()] += 1;
            }
        });
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn refused_falls_back_in_load_order() {
        let c = candidates(&[1, 1, 1]);
        let lc = LeastConnections::build(&c, &settings("least_connections", ""));
        let _a = c[1].server.try_acquire();
        with_request(|req| {
            let got = lc.pick(req, &c, &mut |c| {
                &*c.server.name != "s0" && &*c.server.name != "s2"
            });
            assert_eq!(got, Some(1));
        });
    }
}

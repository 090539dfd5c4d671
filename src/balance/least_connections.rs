//! Weighted least-connections: the candidate with the fewest requests in flight relative to
//! its weight; ties are broken by rotation so equal servers share evenly.
//!
//! The least load is read from a [`LoadTree`] that the candidates' servers keep current as
//! their slots are taken and released, so a pick is O(log n) whatever the number of servers.
//! Only when the caller refuses the tree's choice (at its limit, already tried) does the pick
//! fall back to the exact O(n log n) walk in load order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::load_tree::{LoadHook, LoadTree};
use super::{Candidate, Request, Select};
use crate::config;

#[derive(Debug)]
pub struct LeastConnections {
    next: AtomicUsize,
    tree: Arc<LoadTree>,
}

impl Select for LeastConnections {
    /// Builds the tree and points each candidate's server at its leaf. The hooks go in
    /// before the leaves are filled, so a slot taken or freed meanwhile is counted by the
    /// fill or by the hook (at worst, one that reads the hook's flag a moment late is missed
    /// until that server's next slot change refreshes its leaf; the pick's `accept` and the
    /// exact fallback cover that moment).
    fn build(candidates: &[Candidate], _settings: &config::Backend) -> Self {
        let tree = LoadTree::new(candidates.iter().map(|c| c.weight).collect());
        for (index, c) in candidates.iter().enumerate() {
            c.server.set_load_hook(Some(Arc::new(LoadHook {
                tree: Arc::clone(&tree),
                index,
            })));
            c.server.refresh_load_hook();
        }
        LeastConnections {
            next: AtomicUsize::new(0),
            tree,
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
        // The first of the least loaded at or after a rotating start, in ring order: the same
        // choice as a scan from `start` keeping the first strictly better, so equal servers
        // take turns. A tree for another set (never, by the `Select` contract) is not read.
        let chosen = if self.tree.len() == n {
            let least = self.tree.least();
            self.tree
                .first_at_most(start, least)
                .or_else(|| self.tree.first_at_most(0, least))
        } else {
            None
        };
        let first = chosen.unwrap_or_else(|| exact_least(start, candidates));
        if accept(&candidates[first]) {
            return Some(first);
        }
        // The least loaded was refused: fall back to the others in load order.
        let mut order: Vec<usize> = (0..n)
            .map(|s| (start + s) % n)
            .filter(|&i| i != first)
            .collect();
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            let la = (u64::from(ca.server.active()) + 1) * u64::from(cb.weight.max(1));
            let lb = (u64::from(cb.server.active()) + 1) * u64::from(ca.weight.max(1));
            la.cmp(&lb)
        });
        order.into_iter().find(|&i| accept(&candidates[i]))
    }
}

/// The first least loaded by `(active + 1) / weight` scanning from `start`: the O(n) answer
/// the tree gives in O(log n).
fn exact_least(start: usize, candidates: &[Candidate]) -> usize {
    let n = candidates.len();
    let mut best: Option<(usize, u64, u64)> = None;
    for step in 0..n {
        let i = (start + step) % n;
        let c = &candidates[i];
        let load = u64::from(c.server.active()) + 1;
        let weight = u64::from(c.weight.max(1));
        if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
            best = Some((i, load, weight));
        }
    }
    best.map_or(start, |(i, _, _)| i)
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

    #[test]
    fn the_tree_follows_slots_and_picks_like_the_scan() {
        let c = candidates(&[1, 2, 3, 1, 5, 1, 2]);
        let lc = LeastConnections::build(&c, &settings("least_connections", ""));
        let mut held = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        with_request(|req| {
            for _ in 0..2000 {
                if held.is_empty() || rng.bool() {
                    let i = lc.pick(req, &c, &mut |_| true).unwrap();
                    let start = (lc.next.load(Ordering::Relaxed) + c.len() - 1) % c.len();
                    assert_eq!(i, exact_least(start, &c), "tree and scan disagree");
                    held.push(c[rng.usize(..c.len())].server.try_acquire().unwrap());
                } else {
                    held.swap_remove(rng.usize(..held.len()));
                }
            }
        });
    }

    /// Many threads take and free slots on the same servers at once; when they stop, the
    /// tree must match the servers' counts exactly (races may only delay, never lose, an
    /// update).
    #[test]
    fn the_tree_is_exact_after_concurrent_acquire_and_release() {
        let weights: Vec<u32> = (0..37).map(|i| 1 + i % 4).collect();
        let c = candidates(&weights);
        let lc = LeastConnections::build(&c, &settings("least_connections", ""));
        let kept: Vec<crate::pool::Slot> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let c = &c;
                    s.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(t);
                        let mut held = Vec::new();
                        for _ in 0..20_000 {
                            if held.len() < 8 && (held.is_empty() || rng.bool()) {
                                // Crowd a few servers so that leaves and paths collide.
                                let i = rng.usize(..c.len()) % if rng.bool() { 4 } else { c.len() };
                                held.push(c[i].server.try_acquire().unwrap());
                            } else {
                                held.swap_remove(rng.usize(..held.len()));
                            }
                        }
                        // Keep some in flight so the final counts are not all zero.
                        held.truncate(t as usize % 3 + 1);
                        held
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let actives: Vec<u32> = c.iter().map(|c| c.server.active()).collect();
        assert!(actives.iter().any(|&a| a > 0));
        lc.tree.assert_consistent(&actives);
        assert_eq!(actives.iter().sum::<u32>() as usize, kept.len());
        with_request(|req| {
            let i = lc.pick(req, &c, &mut |_| true).unwrap();
            let start = (lc.next.load(Ordering::Relaxed) + c.len() - 1) % c.len();
            assert_eq!(i, exact_least(start, &c));
        });
    }
}

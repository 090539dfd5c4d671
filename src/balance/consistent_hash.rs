//! Consistent hashing on a ketama ring: each server owns points on a 64-bit circle in
//! proportion to its weight, a request's key goes to the first point at or after its hash.
//!
//! A server's points depend only on its name and weight, so when it leaves only the keys on
//! its points move (to the next point's server), and when it returns they come back; raising
//! a weight adds points and only pulls keys toward that server. A request without the key
//! falls back to weighted round-robin.
//!
//! With `hash_balance_factor` > 0 the ring has bounded loads (Mirrokni et al., as HAProxy's
//! `hash-balance-factor`): a server already carrying more than factor × its weighted share of
//! the requests in flight passes the key on along the ring. That needs the sum of in-flight
//! requests, an O(n) pass per pick: the price of the option, paid only when it is on.

use super::key::{self, request_key};
use super::random::Rotation;
use super::{Candidate, Request, Select};
use crate::config::{self, HashKey};

/// Points per unit of weight. ketama uses 160 per server; 100 per weight unit keeps each
/// server's share within a few percent of its weight while a ring of 4,096 servers stays
/// a few megabytes and rebuilds in milliseconds.
const POINTS_PER_WEIGHT: u32 = 100;
/// The seed of ring points (request keys use another).
const POINT_SEED: u64 = 0x6b65_7461_6d61_0001;

#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, candidate index), sorted by point.
    ring: Vec<(u64, u32)>,
    key: HashKey,
    factor: f64,
    total_weight: u64,
    fallback: Rotation,
}

/// The hash of a server's `p`-th point: its name and the point number, nothing else.
/// (The point number goes in the seed: no buffer to build for each of a ring's points.)
pub(crate) fn point(name: &str, p: u32) -> u64 {
    key::hash(name.as_bytes(), POINT_SEED.wrapping_add(u64::from(p)))
}

impl Select for ConsistentHash {
    fn build(candidates: &[Candidate], settings: &config::Backend) -> Self {
        let points: usize = candidates
            .iter()
            .map(|c| (c.weight * POINTS_PER_WEIGHT) as usize)
            .sum();
        let mut ring = Vec::with_capacity(points);
        for (i, c) in candidates.iter().enumerate() {
            for p in 0..c.weight * POINTS_PER_WEIGHT {
                ring.push((point(&c.server.name, p), i as u32));
            }
        }
        // Equal points (vanishingly rare) are ordered by candidate so the ring is the same
        // whatever order the candidates came in.
        ring.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                candidates[a.1 as usize]
                    .server
                    .name
                    .cmp(&candidates[b.1 as usize].server.name)
            })
        });
        ConsistentHash {
            ring,
            key: settings.hash_key.clone(),
            factor: settings.hash_balance_factor,
            total_weight: candidates.iter().map(|c| u64::from(c.weight)).sum(),
            fallback: Rotation::build(candidates),
        }
    }

    fn pick(
        &self,
        req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let Some(h) = request_key(req, &self.key) else {
            return self.fallback.pick(candidates, accept);
        };
        let start = self.ring.partition_point(|&(p, _)| p < h);
        if self.factor > 0.0 {
            let in_flight: u64 = candidates
                .iter()
                .map(|c| u64::from(c.server.active()))
                .sum();
            let factor = self.factor;
            let total_weight = self.total_weight.max(1) as f64;
            let bounded = self.walk(start, candidates, &mut |c: &Candidate| {
                // Counting this request: no server above factor × its share of the total.
                let cap =
                    (factor * (in_flight + 1) as f64 * f64::from(c.weight) / total_weight).ceil();
                f64::from(c.server.active()) + 1.0 <= cap && accept(c)
            });
            if bounded.is_some() {
                return bounded;
            }
        }
        self.walk(start, candidates, accept)
    }
}

impl ConsistentHash {
    /// Asks each server once, in ring order from `start`.
    fn walk(
        &self,
        start: usize,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let len = self.ring.len();
        let first = self.ring[start % len].1 as usize;
        if accept(&candidates[first]) {
            return Some(first);
        }
        // Refused: go on along the ring, asking each further server once.
        let mut asked = vec![false; candidates.len()];
        asked[first] = true;
        let mut left = candidates.iter().filter(|c| c.weight > 0).count() - 1;
        for step in 1..len {
            if left == 0 {
                break;
            }
            let i = self.ring[(start + step) % len].1 as usize;
            if asked[i] {
                continue;
            }
            asked[i] = true;
            left -= 1;
            if accept(&candidates[i]) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use http::HeaderMap;

    use super::*;
    use crate::balance::test_support::{candidate, settings, with_key_request};

    /// Which server name each of `keys` client addresses maps to.
    pub fn owners(sel: &dyn Select, c: &[Candidate], keys: u32) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let ip = IpAddr::from(k.to_be_bytes());
                with_key_request(ip, "/", &HeaderMap::new(), |r| {
                    let i = sel.pick(r, c, &mut |_| true).expect("a pick");
                    c[i].server.name.to_string()
                })
            })
            .collect()
    }

    fn servers(spec: &[(&str, u32)]) -> Vec<Candidate> {
        spec.iter()
            .enumerate()
            .map(|(i, (n, w))| candidate(n, *w, i as u16))
            .collect()
    }

    #[test]
    fn shares_follow_weights() {
        let c = servers(&[("a", 1), ("b", 1), ("c", 2)]);
        let ring = ConsistentHash::build(&c, &settings("consistent_hash", ""));
        let o = owners(&ring, &c, 20_000);
        let n = |s: &str| o.iter().filter(|x| *x == s).count() as f64 / 20_000.0;
        assert!((n("a") - 0.25).abs() < 0.05, "{}", n("a"));
        assert!((n("c") - 0.5).abs() < 0.05, "{}", n("c"));
    }

    #[test]
    fn only_the_leaving_servers_keys_move_and_they_come_back() {
        let all = servers(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let s = settings("consistent_hash", "");
        let before = owners(&ConsistentHash::build(&all, &s), &all, 5000);
        let without: Vec<_> = all
            .iter()
            .filter(|c| &*c.server.name != "c")
            .cloned()
            .collect();
        let after = owners(&ConsistentHash::build(&without, &s), &without, 5000);
        for (b, a) in before.iter().zip(&after) {
            if b != "c" {
                assert_eq!(a, b, "a key of a staying server moved");
            }
        }
        let back = owners(&ConsistentHash::build(&all, &s), &all, 5000);
        assert_eq!(back, before, "keys return with their server");
    }

    #[test]
    fn a_weight_change_only_moves_keys_toward_that_server() {
        let s = settings("consistent_hash", "");
        let one = servers(&[("a", 1), ("b", 1), ("c", 1)]);
        let two = servers(&[("a", 1), ("b", 3), ("c", 1)]);
        let before = owners(&ConsistentHash::build(&one, &s), &one, 5000);
        let after = owners(&ConsistentHash::build(&two, &s), &two, 5000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(moved > 1000, "b gains keys: {moved}");
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || a == "b", "a key moved {b} -> {a}");
        }
    }

    #[test]
    fn no_key_falls_back_to_round_robin() {
        let c = servers(&[("a", 1), ("b", 1)]);
        let ring = ConsistentHash::build(
            &c,
            &settings("consistent_hash", "hash_key = \"header:x-user\""),
        );
        let counts = crate::balance::test_support::spread(&ring, &c, 100);
        assert_eq!(counts, vec![50, 50]);
    }

    #[test]
    fn bounded_load_moves_keys_off_a_full_server() {
        let c = servers(&[("a", 1), ("b", 1), ("c", 1)]);
        let s = settings("consistent_hash", "hash_balance_factor = 1.25");
        let ring = ConsistentHash::build(&c, &s);
        // Hold every slot taken so load accumulates; one key only.
        let mut held = Vec::new();
        let ip = IpAddr::from([10, 1, 2, 3]);
        for _ in 0..30 {
            with_key_request(ip, "/", &HeaderMap::new(), |r| {
                let i = ring.pick(r, &c, &mut |_| true).unwrap();
                held.extend(c[i].server.try_acquire());
            });
        }
        let max = c.iter().map(|c| c.server.active()).max().unwrap();
        assert!(max <= 13, "1.25 × 10 rounded up: {max}");
    }
}

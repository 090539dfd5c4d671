//! Maglev hashing (Google, NSDI 2016): a lookup table of prime size M where each server
//! fills slots along its own permutation, in turns proportional to its weight. A pick is one
//! hash and one array read: O(1) at any number of servers.
//!
//! Compared with the ketama ring it balances more evenly and picks faster; the price is that
//! when a server leaves a small fraction of other keys move too (the paper measures a few
//! percent), not only the leaving server's. A request without the key falls back to
//! weighted rotation.

use super::key::{self, request_key};
use super::random::Rotation;
use super::{Candidate, Request, Select, scan_from};
use crate::config::{self, HashKey};

/// Table slots per server at least: the paper's rule of M ≫ N (100×) keeps every server's
/// share within about 1% of its weight.
const SLOTS_PER_SERVER: usize = 100;
/// The smallest table, so small pools still get fine-grained weights.
const MIN_SLOTS: usize = 5003;
const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
    key: HashKey,
    fallback: Rotation,
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The smallest prime at or above `n`.
fn next_prime(n: usize) -> usize {
    (n..).find(|&m| is_prime(m)).unwrap_or(n)
}

/// The lookup table for `candidates`: slot → candidate index.
pub fn populate(candidates: &[Candidate]) -> Vec<u32> {
    let live: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].weight > 0)
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let m = next_prime((live.len() * SLOTS_PER_SERVER).max(MIN_SLOTS));
    let perm: Vec<(u64, u64)> = live
        .iter()
        .map(|&i| {
            let name = candidates[i].server.name.as_bytes();
            let offset = key::hash(name, OFFSET_SEED) % m as u64;
            let skip = key::hash(name, SKIP_SEED) % (m as u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let w_max = live
        .iter()
        .map(|&i| candidates[i].weight)
        .max()
        .unwrap_or(1);
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u32; live.len()];
    let mut table = vec![EMPTY; m];
    let mut filled = 0;
    // Each round every server earns its weight in credit and takes a turn per w_max earned:
    // the heaviest takes a turn every round, so the loop always progresses.
    'fill: loop {
        for (j, &i) in live.iter().enumerate() {
            credit[j] += candidates[i].weight;
            if credit[j] < w_max {
                continue;
            }
            credit[j] -= w_max;
            let (offset, skip) = perm[j];
            loop {
                let slot = ((offset + next[j] * skip) % m as u64) as usize;
                next[j] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

impl Select for Maglev {
    fn build(candidates: &[Candidate], settings: &config::Backend) -> Self {
        Maglev {
            table: populate(candidates),
            key: settings.hash_key.clone(),
            fallback: Rotation::build(candidates),
        }
    }

    fn pick(
        &self,
        req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let Some(h) = request_key(req, &self.key) else {
            return self.fallback.pick(candidates, accept);
        };
        let i = self.table[(h % self.table.len() as u64) as usize] as usize;
        if accept(&candidates[i]) {
            return Some(i);
        }
        scan_from(i, candidates, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::consistent_hash::tests::owners;
    use crate::balance::test_support::{candidate, settings};

    fn servers(spec: &[(&str, u32)]) -> Vec<Candidate> {
        spec.iter()
            .enumerate()
            .map(|(i, (n, w))| candidate(n, *w, i as u16))
            .collect()
    }

    #[test]
    fn table_is_prime_and_full_and_weighted() {
        assert!(is_prime(5003) && !is_prime(5001));
        let c = servers(&[("a", 1), ("b", 3), ("z", 0)]);
        let t = populate(&c);
        assert!(is_prime(t.len()));
        let count = |i: u32| t.iter().filter(|&&x| x == i).count() as f64 / t.len() as f64;
        assert!((count(0) - 0.25).abs() < 0.01, "{}", count(0));
        assert!((count(1) - 0.75).abs() < 0.01);
        assert_eq!(count(2), 0.0, "zero weight owns nothing");
    }

    #[test]
    fn a_leaving_server_moves_few_other_keys() {
        let s = settings("maglev", "");
        let all = servers(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]);
        let before = owners(&Maglev::build(&all, &s), &all, 5000);
        let without: Vec<_> = all
            .iter()
            .filter(|c| &*c.server.name != "c")
            .cloned()
            .collect();
        let after = owners(&Maglev::build(&without, &s), &without, 5000);
        let others_moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| *b != "c" && a != b)
            .count();
        // Maglev's promise is "few", not "none": under 5% of the staying keys.
        assert!(
            others_moved < 200,
            "{others_moved} keys of staying servers moved"
        );
        let back = owners(&Maglev::build(&all, &s), &all, 5000);
        assert_eq!(back, before, "the table is a function of the server set");
    }

    #[test]
    fn a_weight_change_moves_keys_mostly_toward_that_server() {
        let s = settings("maglev", "");
        let one = servers(&[("a", 1), ("b", 1), ("c", 1)]);
        let two = servers(&[("a", 1), ("b", 2), ("c", 1)]);
        let before = owners(&Maglev::build(&one, &s), &one, 5000);
        let after = owners(&Maglev::build(&two, &s), &two, 5000);
        let to_b = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a != b && *a == "b")
            .count();
        let elsewhere = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a != b && *a != "b")
            .count();
        assert!(
            to_b > 500 && elsewhere < to_b / 5,
            "{to_b} to b, {elsewhere} elsewhere"
        );
    }
}

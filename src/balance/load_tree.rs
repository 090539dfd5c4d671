//! The least-loaded candidate in O(log n): a tournament tree over a candidate set, kept up to
//! date by the servers themselves as slots are taken and released.
//!
//! Scanning every candidate's in-flight count costs O(n) atomic loads per pick (~575 ns at
//! 256 servers). Instead each leaf holds one candidate's load, `(active + 1) / weight` in
//! fixed point, and each inner node the least key below it, so the root is the least load
//! and a descent finds who has it. The pick only reads; the O(log n) writes happen on the
//! server's acquire/release, through a [`LoadHook`] the server holds while the backend uses
//! least-connections (other algorithms install none and pay one relaxed load of a flag).
//!
//! # Concurrency
//! Many threads update leaves and shared ancestors at once without a lock. A node is
//! recomputed by *refresh*: read the node, read its children, compare-and-swap the node to
//! their minimum. Each node also carries a 16-bit version bumped by every swap, so a swap
//! based on stale reads cannot succeed by coincidence (ABA) unless 65,536 other swaps hit that
//! node in between. An updater refreshes each node twice when the first fails (Jayanti's
//! double refresh): if both fail, another thread's successful swap read the children after
//! ours changed, so our change is in the node either way. An updater stops climbing when its
//! swap left the node's key as it was: the ancestors depend only on that key, and whoever
//! last changed it climbs on. So once updates stop, every node equals the minimum of its
//! children and the root is exact (the multi-threaded test checks this); while they run, a
//! node can lag for the length of one update, which `pick` tolerates because its choice is
//! still checked by the caller's `accept`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bits of the fixed-point fraction of a load key. 26 keeps distinct ratios distinct for
/// every weight fulcrum allows (up to 256 × the slow-start scale of 20 = 5,120: two different
/// ratios with such denominators differ by at least 1/5120², more than 2⁻²⁶).
const FRAC_BITS: u32 = 26;
/// Keys use the high 48 bits of a node; the low 16 are its version.
const VERSION_BITS: u32 = 16;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;
/// The key of a padding leaf (the tree is a power of two wide): never the least.
const EMPTY: u64 = (1 << (64 - VERSION_BITS)) - 1;

/// `(active + 1) / weight` in fixed point; a weight of 0 counts as 1, as in the exact scan.
/// Saturates below [`EMPTY`] (at 4 million requests in flight on a weight-1 server).
fn load_key(active: u32, weight: u32) -> u64 {
    let num = (u128::from(active) + 1) << FRAC_BITS;
    let key = num / u128::from(weight.max(1));
    key.min(u128::from(EMPTY - 1)) as u64
}

fn key_of(node: u64) -> u64 {
    node >> VERSION_BITS
}

/// `key` with the version after that of `old`.
fn next_node(old: u64, key: u64) -> u64 {
    (key << VERSION_BITS) | (old.wrapping_add(1) & VERSION_MASK)
}

/// The tree over one candidate set, built with the selection structure.
#[derive(Debug)]
pub struct LoadTree {
    /// Leaves in use (the number of candidates).
    len: usize,
    /// Leaves in the tree: `len` rounded up to a power of two.
    width: usize,
    /// Heap order: node 1 is the root, node `i` has children `2i` and `2i + 1`, leaves are
    /// `width..2 * width`. Node 0 is unused.
    nodes: Box<[AtomicU64]>,
    /// The weight each candidate was built with.
    weights: Box<[u32]>,
}

impl LoadTree {
    /// A tree for candidates of these weights, every leaf empty until
    /// [`refresh_leaf`](Self::refresh_leaf) fills it.
    pub fn new(weights: Vec<u32>) -> Arc<Self> {
        let len = weights.len();
        let width = len.max(1).next_power_of_two();
        let nodes = (0..2 * width)
            .map(|_| AtomicU64::new(EMPTY << VERSION_BITS))
            .collect();
        Arc::new(LoadTree {
            len,
            width,
            nodes,
            weights: weights.into_boxed_slice(),
        })
    }

    /// The number of candidates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree is over no candidate.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn key(&self, node: usize) -> u64 {
        key_of(self.nodes[node].load(Ordering::Relaxed))
    }

    /// The least key in the tree.
    pub fn least(&self) -> u64 {
        self.key(1)
    }

    /// The first candidate at or after `start` (no wrap) whose key is at most `k`, in
    /// O(log n): climb to the first subtree to the right holding such a key, then descend
    /// into its leftmost such leaf. A node that lags (see the module doc) can send the
    /// descent down a branch without one; it then follows the smaller child, so the answer
    /// is always a real candidate and the caller's `accept` has the last word.
    pub fn first_at_most(&self, start: usize, k: u64) -> Option<usize> {
        if start >= self.len {
            return None;
        }
        let mut i = self.width + start;
        while self.key(i) > k {
            // The next subtree to the right: up while a right child, then the sibling.
            while i & 1 == 1 {
                if i == 1 {
                    return None;
                }
                i >>= 1;
            }
            i += 1;
        }
        while i < self.width {
            let (l, r) = (2 * i, 2 * i + 1);
            let (kl, kr) = (self.key(l), self.key(r));
            i = if kl <= k || (kr > k && kl <= kr) {
                l
            } else {
                r
            };
        }
        let leaf = i - self.width;
        (leaf < self.len).then_some(leaf)
    }

    /// Recomputes leaf `index` from `active` (the server's in-flight counter) and carries the
    /// change up. Called after every change of the counter, and once at build.
    pub fn refresh_leaf(&self, index: usize, active: &AtomicU32) {
        if index >= self.len {
            return;
        }
        let weight = self.weights[index];
        let mut node = self.width + index;
        let changed = self.refresh_twice(node, || load_key(active.load(Ordering::SeqCst), weight));
        if !changed {
            return;
        }
        while node > 1 {
            node >>= 1;
            let (l, r) = (2 * node, 2 * node + 1);
            let changed = self.refresh_twice(node, || {
                let kl = key_of(self.nodes[l].load(Ordering::SeqCst));
                let kr = key_of(self.nodes[r].load(Ordering::SeqCst));
                kl.min(kr)
            });
            if !changed {
                return;
            }
        }
    }

    /// Refreshes `node` to `compute()`, a second time if the first swap lost a race; returns
    /// whether this thread must carry on to the parent (its swap changed the key). When both
    /// swaps lose, the winner read after our change and carries it on (module doc).
    fn refresh_twice(&self, node: usize, compute: impl Fn() -> u64) -> bool {
        for _ in 0..2 {
            let old = self.nodes[node].load(Ordering::SeqCst);
            let key = compute();
            if self.nodes[node]
                .compare_exchange(old, next_node(old, key), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return key_of(old) != key;
            }
        }
        false
    }

    /// Checks that every inner node is the least of its children and every leaf matches
    /// `key(index)`; for tests, after updates have stopped.
    #[cfg(test)]
    pub fn assert_consistent(&self, actives: &[u32]) {
        for (i, &a) in actives.iter().enumerate() {
            assert_eq!(
                self.key(self.width + i),
                load_key(a, self.weights[i]),
                "leaf {i}"
            );
        }
        for node in 1..self.width {
            assert_eq!(
                self.key(node),
                self.key(2 * node).min(self.key(2 * node + 1)),
                "node {node}"
            );
        }
    }
}

/// A server's link to the tree of the candidate set it is in: which tree, which leaf.
#[derive(Debug)]
pub struct LoadHook {
    pub tree: Arc<LoadTree>,
    pub index: usize,
}

impl LoadHook {
    /// The server's in-flight count changed: bring its leaf and the path above up to date.
    pub fn refresh(&self, active: &AtomicU32) {
        self.tree.refresh_leaf(self.index, active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_cross_multiplication() {
        // Every pair of ratios with weights up to the largest allowed compares the same way
        // in fixed point as exactly (sampled: a full sweep is 10^13 pairs).
        let ws = [1u32, 2, 3, 7, 255, 256, 5119, 5120];
        for &wa in &ws {
            for &wb in &ws {
                for a in [0u32, 1, 2, 9, 100, 4095] {
                    for b in [0u32, 1, 2, 9, 100, 4095] {
                        let exact = ((u64::from(a) + 1) * u64::from(wb))
                            .cmp(&((u64::from(b) + 1) * u64::from(wa)));
                        assert_eq!(
                            load_key(a, wa).cmp(&load_key(b, wb)),
                            exact,
                            "{a}/{wa} vs {b}/{wb}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn first_at_most_finds_the_leftmost_from_start() {
        let weights = vec![1; 5];
        let tree = LoadTree::new(weights);
        let actives: Vec<AtomicU32> = [3, 0, 2, 0, 5].into_iter().map(AtomicU32::new).collect();
        for (i, a) in actives.iter().enumerate() {
            tree.refresh_leaf(i, a);
        }
        let k = tree.least();
        assert_eq!(k, load_key(0, 1));
        assert_eq!(tree.first_at_most(0, k), Some(1));
        assert_eq!(tree.first_at_most(2, k), Some(3));
        assert_eq!(tree.first_at_most(4, k), None);
        assert_eq!(tree.first_at_most(4, load_key(5, 1)), Some(4));
    }
}

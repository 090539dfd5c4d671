//! Power of two choices: draw two servers by weight, send to the one with fewer requests in
//! flight relative to its weight.
//!
//! Nearly as good as least-connections at spreading load, but O(log n) per pick and without
//! the herd effect of every balancer instance choosing the same "least" server.

use super::random::Cumulative;
use super::{Candidate, Request, Select, less_loaded, scan_from};
use crate::config;

#[derive(Debug)]
pub struct PowerOfTwo {
    table: Cumulative,
}

/// Two draws, distinct when the weights allow it (a few redraws, then accept the repeat).
fn two_draws(table: &Cumulative, n: usize) -> Option<(usize, usize)> {
    let a = table.sample()?;
    let mut b = a;
    for _ in 0..4 {
        if n < 2 || b != a {
            break;
        }
        b = table.sample()?;
    }
    Some((a, b))
}

impl Select for PowerOfTwo {
    fn build(candidates: &[Candidate], _settings: &config::Backend) -> Self {
        PowerOfTwo {
            table: Cumulative::build(candidates),
        }
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        better_of_two(&self.table, candidates, accept, less_loaded)
    }
}

/// Two weighted draws; the one `better` prefers is offered first, then the other, then
/// (both refused) every candidate once: the pick that power-of-two and peak-EWMA share,
/// differing only in what "better" means.
pub(crate) fn better_of_two(
    table: &Cumulative,
    candidates: &[Candidate],
    accept: &mut dyn FnMut(&Candidate) -> bool,
    better: impl Fn(&Candidate, &Candidate) -> bool,
) -> Option<usize> {
    let (a, b) = two_draws(table, candidates.len())?;
    let (win, lose) = if better(&candidates[b], &candidates[a]) {
        (b, a)
    } else {
        (a, b)
    };
    if accept(&candidates[win]) {
        return Some(win);
    }
    if lose != win && accept(&candidates[lose]) {
        return Some(lose);
    }
    scan_from(win, candidates, accept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, spread, with_request};

    #[test]
    fn idle_servers_share_by_weight() {
        fastrand::seed(2);
        let c = candidates(&[1, 1, 2]);
        let p = PowerOfTwo::build(&c, &settings("power_of_two", ""));
        let counts = spread(&p, &c, 4000);
        // With nothing in flight ties go to the first draw: shares follow weight.
        assert!(counts[2] > counts[0] && counts[2] > counts[1], "{counts:?}");
    }

    #[test]
    fn the_busier_of_two_loses() {
        fastrand::seed(3);
        let c = candidates(&[1, 1]);
        let p = PowerOfTwo::build(&c, &settings("power_of_two", ""));
        let _busy: Vec<_> = (0..5).filter_map(|_| c[0].server.try_acquire()).collect();
        let counts = spread(&p, &c, 200);
        // s0 only wins when both draws are s0 (1 in 4 ... minus redraws): about 1 in 32.
        assert!(counts[1] > 180, "{counts:?}");
    }

    #[test]
    fn refused_winner_passes_to_the_other() {
        let c = candidates(&[1, 1, 1]);
        let p = PowerOfTwo::build(&c, &settings("power_of_two", ""));
        with_request(|req| {
            for _ in 0..20 {
                assert_eq!(p.pick(req, &c, &mut |c| &*c.server.name == "s1"), Some(1));
            }
            assert_eq!(p.pick(req, &c, &mut |_| false), None);
        });
    }
}

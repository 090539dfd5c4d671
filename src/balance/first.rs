//! First: the first server in file order that has a free slot.
//!
//! It packs requests onto as few servers as possible (HAProxy's `first`), so the rest can be
//! scaled down or kept cold; it only makes sense with `max_connections` set, otherwise the
//! first server takes everything.

use super::{Candidate, Request, Select};
use crate::config;

#[derive(Debug)]
pub struct First;

impl Select for First {
    fn build(_candidates: &[Candidate], _settings: &config::Backend) -> Self {
        First
    }

    fn pick(
        &self,
        _req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        // Candidates are in file order (the snapshot keeps it).
        candidates.iter().position(|c| c.weight > 0 && accept(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{candidates, settings, with_request};

    #[test]
    fn fills_in_file_order() {
        let c = candidates(&[1, 1, 1]);
        for s in &c {
            s.server.set_max_connections(2);
        }
        let f = First::build(&c, &settings("first", ""));
        let mut held = Vec::new();
        let mut order = Vec::new();
        with_request(|req| {
            for _ in 0..7 {
                let got = f.pick(req, &c, &mut |c| match c.server.try_acquire() {
                    Some(s) => {
                        held.push(s);
                        true
                    }
                    None => false,
                });
                order.push(got);
            }
        });
        assert_eq!(
            order,
            vec![Some(0), Some(0), Some(1), Some(1), Some(2), Some(2), None]
        );
        held.remove(0);
        with_request(|req| assert_eq!(f.pick(req, &c, &mut |c| c.server.has_slot()), Some(0)));
    }
}

//! Selection: which server takes a request.
//!
//! Like Pingora's, selection is split in two: a structure *built* from the candidate set off
//! the hot path (when health, weights or membership change), and a cheap `pick` on the
//! request path that walks candidates in the algorithm's order and lets the caller refuse
//! each one (at its limit, already tried). One enum dispatches to one file per algorithm.

mod least_connections;
mod round_robin;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::config::Algorithm;
use crate::pool::Server;

pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;

/// What an algorithm may look at in a request.
pub struct Request<'a> {
    pub client: IpAddr,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// A candidate as the selection structure sees it: the server and the weight it was built with.
#[derive(Clone)]
pub struct Candidate {
    pub server: Arc<Server>,
    pub weight: u32,
}

/// One algorithm: built once per candidate set, picked from on every request.
pub trait Select: Send + Sync {
    /// Builds the structure for `candidates` (non-empty or empty; never changes afterwards).
    fn build(candidates: &[Candidate]) -> Self
    where
        Self: Sized;

    /// The index in `candidates` of the chosen server, visiting candidates in the algorithm's
    /// order until `accept` says yes; `None` when every candidate was refused.
    fn pick(
        &self,
        req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize>;
}

/// The configured algorithm, dispatched without a vtable.
pub enum Selector {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
}

impl Selector {
    /// The structure for `algorithm` over `candidates`.
    ///
    /// Algorithms that have not been built yet fall back to round-robin, which is always safe.
    pub fn build(algorithm: Algorithm, candidates: &[Candidate]) -> Self {
        match algorithm {
            Algorithm::LeastConnections => {
                Selector::LeastConnections(LeastConnections::build(candidates))
            }
            _ => Selector::RoundRobin(RoundRobin::build(candidates)),
        }
    }

    /// See [`Select::pick`].
    pub fn pick(
        &self,
        req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        match self {
            Selector::RoundRobin(s) => s.pick(req, candidates, accept),
            Selector::LeastConnections(s) => s.pick(req, candidates, accept),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::config;

    /// Candidates named s0, s1, ... with the given weights, for unit tests.
    pub fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let cfg = config::Server {
                    name: format!("s{i}"),
                    address: format!("127.0.0.1:{}", 10000 + i),
                    weight: w,
                    max_connections: 0,
                    backup: false,
                };
                Candidate {
                    server: Arc::new(Server::new(
                        "b",
                        &cfg,
                        ([127, 0, 0, 1], 10000 + i as u16).into(),
                    )),
                    weight: w,
                }
            })
            .collect()
    }

    /// A request with no key material.
    pub fn with_request<R>(f: impl FnOnce(&Request<'_>) -> R) -> R {
        let uri = Uri::from_static("/");
        let headers = HeaderMap::new();
        let req = Request {
            client: IpAddr::from([127, 0, 0, 1]),
            uri: &uri,
            headers: &headers,
        };
        f(&req)
    }
}

//! Selection: which server takes a request.
//!
//! Like Pingora's, selection is split in two: a structure *built* from the candidate set off
//! the hot path (when health, weights or membership change), and a cheap `pick` on the
//! request path that walks candidates in the algorithm's order and lets the caller refuse
//! each one (at its limit, already tried). One enum dispatches to one file per algorithm;
//! sticky cookies sit in front of any of them.

pub mod clock;
mod consistent_hash;
mod first;
pub mod key;
mod least_connections;
mod load_tree;
mod maglev;
mod peak_ewma;
mod power_of_two;
mod random;
mod round_robin;
pub mod sticky;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::config::{self, Algorithm};
use crate::pool::Server;

pub use consistent_hash::ConsistentHash;
pub use first::First;
pub use least_connections::LeastConnections;
pub use load_tree::{LoadHook, LoadTree};
pub use maglev::Maglev;
pub use peak_ewma::{Ewma, PeakEwma};
pub use power_of_two::PowerOfTwo;
pub use random::Random;
pub use round_robin::RoundRobin;

/// What an algorithm may look at in a request: who sent it and, for HTTP, its target and
/// headers. A TCP connection has only its client, so selection for TCP needs no made-up
/// HTTP request; a hash key it does not carry falls back as a missing header does.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub http: Option<HttpParts<'a>>,
}

/// The parts of an HTTP request that hash keys and sticky cookies read.
#[derive(Clone, Copy, Debug)]
pub struct HttpParts<'a> {
    /// The path and query, as sent (`/a/b?c=d`).
    pub target: &'a [u8],
    pub fields: Fields<'a>,
}

/// A request's header fields as the request path holds them: an HTTP/2 request's
/// `HeaderMap`, or an HTTP/1 head still in the connection's read buffer (so that choosing
/// a server never copies a header).
#[derive(Clone, Copy, Debug)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    Head {
        buf: &'a [u8],
        headers: &'a crate::h1::Headers,
    },
}

impl<'a> Fields<'a> {
    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.find_map(name, Some)
    }

    /// The first `f(value)` that is `Some`, over every line named `name`, in order.
    pub fn find_map<T>(&self, name: &str, mut f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        match *self {
            Fields::Map(m) => m.get_all(name).iter().find_map(|v| f(v.as_bytes())),
            Fields::Head { buf, headers } => headers
                .as_slice()
                .iter()
                .filter(|h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
                .find_map(|h| f(h.value.of(buf))),
        }
    }
}

impl<'a> Request<'a> {
    /// A whole connection (TCP mode): only the client is known.
    pub fn connection(client: IpAddr) -> Self {
        Request { client, http: None }
    }

    /// An HTTP request from `client` (HTTP/2, or built for simulation and tests).
    pub fn http(client: IpAddr, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let target = uri
            .path_and_query()
            .map_or(&b"/"[..], |p| p.as_str().as_bytes());
        Request {
            client,
            http: Some(HttpParts {
                target,
                fields: Fields::Map(headers),
            }),
        }
    }

    /// An HTTP/1 request from `client`, read in place from its head.
    pub fn head(client: IpAddr, target: &'a [u8], fields: Fields<'a>) -> Self {
        Request {
            client,
            http: Some(HttpParts { target, fields }),
        }
    }

    /// The path, for HTTP.
    pub fn path(&self) -> Option<&'a [u8]> {
        let t = self.http?.target;
        Some(t.split(|&b| b == b'?').next().unwrap_or(t))
    }

    /// The query (after `?`), for HTTP requests that have one.
    pub fn query(&self) -> Option<&'a str> {
        let t = self.http?.target;
        let at = t.iter().position(|&b| b == b'?')?;
        std::str::from_utf8(t.get(at + 1..)?).ok()
    }

    /// The request headers, for HTTP.
    pub fn fields(&self) -> Option<Fields<'a>> {
        self.http.map(|h| h.fields)
    }
}

/// A candidate as the selection structure sees it: the server and the weight it was built with.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub server: Arc<Server>,
    pub weight: u32,
}

/// One algorithm: built once per candidate set, picked from on every request.
pub trait Select: Send + Sync {
    /// Builds the structure for `candidates` (non-empty or empty; never changes afterwards)
    /// with the backend's settings (hash key, balance factor).
    fn build(candidates: &[Candidate], settings: &config::Backend) -> Self
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
#[derive(Debug)]
pub enum Algo {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
    Random(Random),
    PowerOfTwo(PowerOfTwo),
    PeakEwma(PeakEwma),
    ConsistentHash(ConsistentHash),
    Maglev(Maglev),
    First(First),
}

/// The selection structure of one snapshot: the algorithm, and the sticky-cookie index in
/// front of it when `sticky_cookie` is set.
#[derive(Debug)]
pub struct Selector {
    algo: Algo,
    sticky: Option<sticky::Index>,
}

impl Selector {
    /// The structure for the backend's algorithm over `candidates`.
    pub fn build(settings: &config::Backend, candidates: &[Candidate]) -> Self {
        let c = candidates;
        let s = settings;
        let algo = match settings.algorithm {
            Algorithm::RoundRobin => Algo::RoundRobin(RoundRobin::build(c, s)),
            Algorithm::LeastConnections => Algo::LeastConnections(LeastConnections::build(c, s)),
            Algorithm::Random => Algo::Random(Random::build(c, s)),
            Algorithm::PowerOfTwo => Algo::PowerOfTwo(PowerOfTwo::build(c, s)),
            Algorithm::PeakEwma => Algo::PeakEwma(PeakEwma::build(c, s)),
            Algorithm::ConsistentHash => Algo::ConsistentHash(ConsistentHash::build(c, s)),
            Algorithm::Maglev => Algo::Maglev(Maglev::build(c, s)),
            Algorithm::First => Algo::First(First::build(c, s)),
        };
        let sticky = (!settings.sticky_cookie.is_empty())
            .then(|| sticky::Index::build(&settings.sticky_cookie, candidates));
        Selector { algo, sticky }
    }

    /// See [`Select::pick`]. A valid sticky cookie naming an eligible candidate is asked
    /// first; when it refuses (or names nobody) the algorithm chooses.
    pub fn pick(
        &self,
        req: &Request<'_>,
        candidates: &[Candidate],
        accept: &mut dyn FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        if let Some(i) = self
            .sticky
            .as_ref()
            .zip(req.fields())
            .and_then(|(s, h)| s.lookup(&h))
            && accept(&candidates[i])
        {
            return Some(i);
        }
        match &self.algo {
            Algo::RoundRobin(s) => s.pick(req, candidates, accept),
            Algo::LeastConnections(s) => s.pick(req, candidates, accept),
            Algo::Random(s) => s.pick(req, candidates, accept),
            Algo::PowerOfTwo(s) => s.pick(req, candidates, accept),
            Algo::PeakEwma(s) => s.pick(req, candidates, accept),
            Algo::ConsistentHash(s) => s.pick(req, candidates, accept),
            Algo::Maglev(s) => s.pick(req, candidates, accept),
            Algo::First(s) => s.pick(req, candidates, accept),
        }
    }
}

/// Asks candidates once each starting after `from`, in ring order, skipping zero weights:
/// the shared fallback when an algorithm's own choice was refused.
pub(crate) fn scan_from(
    from: usize,
    candidates: &[Candidate],
    accept: &mut dyn FnMut(&Candidate) -> bool,
) -> Option<usize> {
    let n = candidates.len();
    (1..=n)
        .map(|step| (from + step) % n)
        .find(|&i| candidates[i].weight > 0 && accept(&candidates[i]))
}

/// `(active + 1) / weight` of `a` is below that of `b`: the load comparison that
/// least-connections and power-of-two share, by cross-multiplying (no division).
pub(crate) fn less_loaded(a: &Candidate, b: &Candidate) -> bool {
    let la = (u64::from(a.server.active()) + 1) * u64::from(b.weight.max(1));
    let lb = (u64::from(b.server.active()) + 1) * u64::from(a.weight.max(1));
    la < lb
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Backend settings for `algorithm` with everything else at its default.
    pub fn settings(algorithm: &str, extra: &str) -> config::Backend {
        toml::from_str(&format!(
            "algorithm = \"{algorithm}\"\n{extra}\nservers = []\n"
        ))
        .expect("test settings parse")
    }

    /// Candidates named s0, s1, ... with the given weights, for unit tests.
    pub fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| candidate(&format!("s{i}"), w, i as u16))
            .collect()
    }

    /// One candidate named `name`.
    pub fn candidate(name: &str, weight: u32, port_offset: u16) -> Candidate {
        let cfg = config::Server {
            name: name.to_string(),
            address: format!("127.0.0.1:{}", 10000 + port_offset),
            weight,
            max_connections: 0,
            backup: false,
            discovered: false,
        };
        Candidate {
            server: Arc::new(Server::new(
                "b",
                &cfg,
                ([127, 0, 0, 1], 10000 + port_offset).into(),
            )),
            weight,
        }
    }

    /// A request with no key material.
    pub fn with_request<R>(f: impl FnOnce(&Request<'_>) -> R) -> R {
        with_key_request(IpAddr::from([127, 0, 0, 1]), "/", &HeaderMap::new(), f)
    }

    /// A request from `client` for `uri` with `headers`.
    pub fn with_key_request<R>(
        client: IpAddr,
        uri: &str,
        headers: &HeaderMap,
        f: impl FnOnce(&Request<'_>) -> R,
    ) -> R {
        let uri: Uri = uri.parse().expect("test uri");
        f(&Request::http(client, &uri, headers))
    }

    /// Counts picks per candidate over `n` picks with everything accepted.
    pub fn spread(sel: &dyn Select, c: &[Candidate], n: usize) -> Vec<usize> {
        let mut counts = vec![0; c.len()];
        with_request(|req| {
            for _ in 0..n {
                counts[sel.pick(req, c, &mut |_| true).expect("a pick")] += 1;
            }
        });
        counts
    }
}

//! The cost of one pick per algorithm at 2, 16, 256 and 4,096 servers, and of rebuilding
//! each structure after a health change (what `Backend::rebuild` does off the request path).
//!
//! Run: `cargo bench --bench select -- --warm-up-time 1 --measurement-time 2`.
//! Target: every pick under 100 ns at 256 servers.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balance::{Candidate, Request, Selector};
use fulcrum::config::{self, Algorithm};
use fulcrum::pool::Server;
use http::{HeaderMap, Uri};

const SIZES: [usize; 4] = [2, 16, 256, 4096];

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let cfg = config::Server {
                name: format!("web-{i:04}"),
                address: format!("10.0.{}.{}:80", i / 256, i % 256),
                weight: 1 + (i % 3) as u32,
                max_connections: 0,
                backup: false,
                discovered: false,
            };
            let addr = ([10, 0, (i / 256) as u8, (i % 256) as u8], 80).into();
            let server = Arc::new(Server::new("bench", &cfg, addr));
            Candidate {
                weight: server.weight(),
                server,
            }
        })
        .collect()
}

fn settings(alg: Algorithm) -> config::Backend {
    let mut s: config::Backend = match toml::from_str("servers = []") {
        Ok(s) => s,
        Err(e) => panic!("default backend settings: {e}"),
    };
    s.algorithm = alg;
    s
}

fn picks(c: &mut Criterion) {
    let uri = Uri::from_static("/");
    let headers = HeaderMap::new();
    for alg in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("pick/{alg}"));
        for n in SIZES {
            let cands = candidates(n);
            let sel = Selector::build(&settings(alg), &cands);
            let mut k: u32 = 0;
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    // A new client each time, so the hash algorithms hash a fresh key.
                    k = k.wrapping_add(0x9e37_79b9);
                    let req = Request::http(IpAddr::from(k.to_be_bytes()), &uri, &headers);
                    black_box(sel.pick(&req, &cands, &mut |_| true))
                })
            });
        }
        group.finish();
    }
}

fn rebuilds(c: &mut Criterion) {
    for alg in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("rebuild/{alg}"));
        group.sample_size(10);
        for n in [16, 256, 4096] {
            // A health change: the same set less one server.
            let mut cands = candidates(n);
            cands.remove(n / 2);
            let s = settings(alg);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| black_box(Selector::build(&s, &cands)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, picks, rebuilds);
criterion_main!(benches);

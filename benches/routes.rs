//! Choosing a route among 1,000 (500 hosts, two path prefixes under each, plus wildcard
//! hosts), including the host and path normalization every request goes through.
//!
//! Run: `cargo bench --bench routes -- --warm-up-time 1 --measurement-time 2`.
//! Target (issue 12): under 200 ns per choice.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::config;
use fulcrum::events::Bus;
use fulcrum::pool::{Backend, Server};
use fulcrum::route::{self, Routing};

fn backend(name: &str) -> Arc<Backend> {
    let text = "[[servers]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n";
    let cfg: config::Backend = toml::from_str(text).expect("bench backend parses");
    let servers = vec![Arc::new(Server::new(
        name,
        &cfg.servers[0],
        ([127, 0, 0, 1], 1).into(),
    ))];
    Backend::new(name, cfg, servers, Bus::new(), fulcrum::tasks::Tasks::new())
}

fn routing() -> Routing {
    let mut text = String::from("name = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n");
    for h in 0..500 {
        for prefix in ["/api/", "/static/"] {
            let _ = write!(
                text,
                "[[routes]]\nhost = [\"site{h}.example.com\", \"*.site{h}.example.net\"]\npath_prefix = \"{prefix}\"\nmethods = [\"GET\", \"POST\"]\nbackend = \"b\"\n"
            );
        }
    }
    let fe: config::Frontend = toml::from_str(&text).expect("bench frontend parses");
    assert_eq!(fe.routes.len(), 1000);
    let backends: BTreeMap<String, Arc<Backend>> = [("b".to_string(), backend("b"))].into();
    Routing::build(&fe, &backends, None).expect("bench routing builds")
}

fn choose(r: &Routing, host: &[u8], target: &[u8], headers: &http::HeaderMap) -> usize {
    let host = route::normalize_host(host);
    let path = route::normalize_path(target);
    let req = route::Request {
        host: &host,
        path: &path,
        method: b"GET",
        headers,
    };
    r.select(&req).name.len()
}

fn bench(c: &mut Criterion) {
    // The runtime Backend::new's timers need, though nothing here awaits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    let r = routing();
    let headers = http::HeaderMap::new();
    let mut g = c.benchmark_group("route_1000");
    g.bench_function("exact_host_second_prefix", |b| {
        b.iter(|| {
            choose(
                &r,
                black_box(b"site499.example.com:443"),
                black_box(b"/static/css/site.css?v=3"),
                &headers,
            )
        })
    });
    g.bench_function("wildcard_host", |b| {
        b.iter(|| {
            choose(
                &r,
                black_box(b"cdn.eu.site250.example.net"),
                black_box(b"/api/books/17"),
                &headers,
            )
        })
    });
    g.bench_function("no_match", |b| {
        b.iter(|| {
            choose(
                &r,
                black_box(b"unknown.example.org"),
                black_box(b"/index.html"),
                &headers,
            )
        })
    });
    g.bench_function("dot_segments", |b| {
        b.iter(|| {
            choose(
                &r,
                black_box(b"site7.example.com"),
                black_box(b"/static/../api/%62ooks"),
                &headers,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

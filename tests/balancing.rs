//! Selection through the real data path: smooth weighted round-robin order and
//! least-connections steering away from a slow server.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Weights 3:1 interleave a-a-b-a (smooth), not a-a-a-b. The cycle starts at a random
/// offset, so the check is that the sequence is one rotation of `aaba` repeated.
#[tokio::test]
async fn weighted_round_robin_is_smooth_and_exact() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new()
        .server(&a, |s| s.weight(3))
        .server(&b, |s| s.weight(1))
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let mut seen = String::new();
    for _ in 0..40 {
        let (status, body, _) = get(&c, &url).await;
        assert_eq!(status, 200);
        seen += &body;
    }
    let pattern = b"aaba";
    let offset = (0..4).find(|&off| {
        seen.bytes()
            .enumerate()
            .all(|(i, ch)| ch == pattern[(i + off) % 4])
    });
    assert!(
        offset.is_some(),
        "not a rotation of the smooth cycle aaba: {seen}"
    );
    // The same thing said as the issue says it: every window of 4 holds 3 a and 1 b, and
    // b never follows b.
    for w in seen.as_bytes().windows(4) {
        assert_eq!(w.iter().filter(|&&x| x == b'a').count(), 3, "{seen}");
    }
    assert!(!seen.contains("bb"), "{seen}");
    assert_eq!((a.hits(), b.hits()), (30, 10));
    f.shutdown().await;
}

/// Equal weights alternate strictly.
#[tokio::test]
async fn equal_weights_alternate() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let cc = TestServer::start("c").await;
    let f = Setup::new().servers(&[&a, &b, &cc]).start().await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(get(&c, &url).await.1);
    }
    for w in seen.windows(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, ["a", "b", "c"], "{seen:?}");
    }
    f.shutdown().await;
}

/// Under concurrency, least-connections sends few requests to a server that holds each one
/// for 100 ms, and most to the fast one; round-robin would split them evenly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_slow_server() {
    let slow = TestServer::start("slow").await;
    let fast = TestServer::start("fast").await;
    slow.set_delay(Duration::from_millis(100));
    let f = Setup::new()
        .backend("b", |b| b.algorithm("least_connections"))
        .servers(&[&slow, &fast])
        .start()
        .await;
    let url = Arc::new(format!("http://{}/", f.frontend("www")));
    let c = reqwest::Client::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), Arc::clone(&url));
        workers.spawn(async move {
            for _ in 0..25 {
                let r = c.get(url.as_str()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let (s, q) = (slow.hits(), fast.hits());
    assert_eq!(s + q, 200);
    assert!(
        s * 4 < q,
        "least_connections should favour the fast server: slow {s}, fast {q}"
    );
    f.shutdown().await;
}

//! The algorithms end to end over real sockets: the slow server avoided by the load-aware
//! algorithms, `first` filling in order, hash keys staying put, sticky cookies.
mod common;

use std::time::Duration;

use common::*;

async fn all_up(f: &fulcrum::runtime::Running, n: usize) {
    let b = f.app.backend("b").expect("backend b");
    eventually("every server up", Duration::from_secs(5), || {
        b.snapshot().candidates.len() == n
    })
    .await;
}

/// `tasks` clients each sending `each` requests one after another.
async fn load(url: &str, tasks: usize, each: usize) {
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let url = url.to_string();
        handles.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..each {
                let (status, _, _) = get(&c, &url).await;
                assert_eq!(status, 200);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_algorithms_avoid_the_slow_server() {
    for alg in ["least_connections", "power_of_two", "peak_ewma"] {
        let fast = TestServer::start("fast").await;
        let slow = TestServer::start("slow").await;
        fast.set_delay(Duration::from_millis(5));
        slow.set_delay(Duration::from_millis(250));
        let f = Setup::new()
            .backend("b", |b| b.algorithm(alg))
            .servers(&[&fast, &slow])
            .start()
            .await;
        all_up(&f, 2).await;
        load(&format!("http://{}/", f.frontend("www")), 8, 8).await;
        let (a, b) = (fast.hits(), slow.hits());
        // Round-robin would give the slow server half (32 of 64). A load-aware pick still
        // sends it a request whenever it is no busier than the fast one (it holds several of
        // the 8 clients at a time), so "a few" is under a quarter of the requests.
        assert!(b * 3 < a, "{alg}: fast {a}, slow {b}");
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fills_servers_in_file_order() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    for s in [&a, &b, &c] {
        s.set_delay(Duration::from_millis(300));
    }
    let f = Setup::new()
        .backend("b", |be| be.algorithm("first"))
        .server(&a, |s| s.max_connections(2))
        .server(&b, |s| s.max_connections(2))
        .server(&c, |s| s.max_connections(2))
        .start()
        .await;
    all_up(&f, 3).await;
    load(&format!("http://{}/", f.frontend("www")), 3, 1).await;
    assert_eq!((a.hits(), b.hits(), c.hits()), (2, 1, 0));
    // Idle again: everything goes to the first.
    load(&format!("http://{}/", f.frontend("www")), 1, 3).await;
    assert_eq!((a.hits(), b.hits(), c.hits()), (5, 1, 0));
    f.shutdown().await;
}

#[tokio::test]
async fn hash_algorithms_keep_a_key_on_one_server() {
    for alg in ["consistent_hash", "maglev"] {
        let a = TestServer::start("a").await;
        let b = TestServer::start("b").await;
        let c = TestServer::start("c").await;
        let f = Setup::new()
            .backend("b", |b| b.algorithm(alg).hash_key("header:x-user"))
            .servers(&[&a, &b, &c])
            .start()
            .await;
        all_up(&f, 3).await;
        let url = format!("http://{}/", f.frontend("www"));
        let cl = client();
        let mut owners = std::collections::BTreeSet::new();
        for user in 0..12 {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..3 {
                let r = cl
                    .get(&url)
                    .header("x-user", format!("u{user}"))
                    .send()
                    .await
                    .unwrap();
                seen.insert(r.text().await.unwrap());
            }
            assert_eq!(seen.len(), 1, "{alg}: user {user} went to {seen:?}");
            owners.extend(seen);
        }
        assert!(
            owners.len() >= 2,
            "{alg}: keys spread over servers: {owners:?}"
        );
        f.shutdown().await;
    }
}

#[tokio::test]
async fn sticky_cookie_pins_then_moves_when_its_server_goes() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new()
        .backend("b", |b| b.sticky_cookie("srv"))
        .servers(&[&a, &b])
        .start()
        .await;
    all_up(&f, 2).await;
    let url = format!("http://{}/", f.frontend("www"));
    let cl = client();
    let (status, first, headers) = get(&cl, &url).await;
    assert_eq!(status, 200);
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(
        cookie.starts_with("srv=") && !set.contains("127.0.0.1"),
        "{set}"
    );
    for _ in 0..6 {
        let r = cl.get(&url).header("cookie", &cookie).send().await.unwrap();
        assert!(
            r.headers().get("set-cookie").is_none(),
            "an accepted cookie is not re-set"
        );
        assert_eq!(r.text().await.unwrap(), first);
    }
    // Its server fails its health checks: the cookie is ignored and replaced.
    let (pinned, other) = if first == "a" { (&a, &b) } else { (&b, &a) };
    pinned.set_healthy(false);
    let backend = f.app.backend("b").unwrap();
    eventually("the pinned server is out", Duration::from_secs(5), || {
        backend.snapshot().candidates.len() == 1
    })
    .await;
    let r = cl.get(&url).header("cookie", &cookie).send().await.unwrap();
    let replaced = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert_ne!(replaced.split(';').next().unwrap(), cookie);
    assert_eq!(r.text().await.unwrap(), other.name);
    f.shutdown().await;
}

//! fulcrum's own answers (the README's "What fulcrum answers itself"): 502 connect_failed / upstream_broken, 503 no_server
//! with Retry-After, 504 upstream_timeout; and the retry of a refused connect on another
//! server, whatever the method.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// Checks a fulcrum answer: status, `x-fulcrum-error`, a short one-line body.
async fn expect_refusal(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert_eq!(
        headers.get("x-fulcrum-error").and_then(|v| v.to_str().ok()),
        Some(code),
        "headers: {headers:?}"
    );
    let body = resp.text().await.unwrap();
    assert!(!body.is_empty() && body.len() < 120, "body: {body:?}");
    assert_eq!(body.trim_end().lines().count(), 1, "one line: {body:?}");
    assert!(!body.contains("127.0.0.1"), "no internal details: {body:?}");
    headers
}

/// A server fulcrum checks at start-up (health interval 60s) and which the test then
/// stops: connections to it are refused and only the data path can notice.
async fn vanished(name: &str) -> TestServer {
    TestServer::start(name).await
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_server_for_any_method() {
    let dead = vanished("dead").await;
    let b = TestServer::start("b").await;
    let f = Setup::new()
        .backend("b", |be| be.retries(1).health_slow())
        .servers(&[&dead, &b])
        .start()
        .await;
    dead.stop();
    wait_refused(dead.addr).await;
    let base = format!("http://{}", f.frontend("www"));
    let c = client();
    for i in 0..6 {
        let (status, body, _) = get(&c, &format!("{base}/get{i}")).await;
        assert_eq!((status, body.as_str()), (200, "b"));
        // POST with a body: nothing was sent to the dead server, so it is safe to retry.
        let r = c
            .post(format!("{base}/upload"))
            .body("hello, world")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "12");
    }
    assert_eq!(b.hits(), 12);
    f.shutdown().await;
}

#[tokio::test]
async fn refused_connect_on_the_only_server_is_502_connect_failed() {
    let dead = vanished("dead").await;
    let f = Setup::new()
        .backend("b", |b| b.retries(1).health_slow())
        .servers(&[&dead])
        .start()
        .await;
    dead.stop();
    wait_refused(dead.addr).await;
    let url = format!("http://{}/", f.frontend("www"));
    let r = client().get(&url).send().await.unwrap();
    expect_refusal(r, 502, "connect_failed").await;
    let r = client().post(&url).body("x").send().await.unwrap();
    expect_refusal(r, 502, "connect_failed").await;
    f.shutdown().await;
}

/// A raw TCP server that reads a request head and then either sends garbage or closes.
async fn broken_server(garbage: bool) -> SocketAddr {
    raw_server(move |mut s| async move {
        if garbage {
            let _ = s.write_all(b"this is not HTTP at all\r\n\r\n").await;
        }
        let _ = s.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn garbage_from_the_server_is_502_upstream_broken() {
    let addr = broken_server(true).await;
    let f = fulcrum_before_raw("junk", addr).await;
    let url = format!("http://{}/", f.frontend("www"));
    let r = client().get(&url).send().await.unwrap();
    expect_refusal(r, 502, "upstream_broken").await;
    f.shutdown().await;
}

#[tokio::test]
async fn server_closing_without_answer_is_502_upstream_broken() {
    let addr = broken_server(false).await;
    let f = fulcrum_before_raw("mute", addr).await;
    let url = format!("http://{}/", f.frontend("www"));
    let r = client().get(&url).send().await.unwrap();
    expect_refusal(r, 502, "upstream_broken").await;
    f.shutdown().await;
}

#[tokio::test]
async fn all_servers_down_is_503_no_server_with_retry_after() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new().servers(&[&a, &b]).start().await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    a.set_healthy(false);
    b.set_healthy(false);
    eventually_async("503 once both are down", Duration::from_secs(5), || async {
        get(&c, &url).await.0 == 503
    })
    .await;
    let hits = a.hits() + b.hits();
    let r = c.get(&url).send().await.unwrap();
    let h = expect_refusal(r, 503, "no_server").await;
    let retry: u64 = h
        .get("retry-after")
        .expect("Retry-After on 503")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.hits() + b.hits(), hits, "a 503 reaches no server");
    // A 503 is not a dead end: the servers come back and so does service.
    a.set_healthy(true);
    eventually_async("200 once a is back", Duration::from_secs(5), || async {
        get(&c, &url).await.0 == 200
    })
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn slow_response_head_is_504_upstream_timeout() {
    let slow = TestServer::start("slow").await;
    slow.set_delay(Duration::from_secs(2));
    let f = Setup::new()
        .backend("b", |b| b.response_timeout("200ms"))
        .servers(&[&slow])
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let t0 = Instant::now();
    let r = client().get(&url).send().await.unwrap();
    let took = t0.elapsed();
    expect_refusal(r, 504, "upstream_timeout").await;
    assert!(took >= Duration::from_millis(190), "504 after {took:?}");
    assert!(
        took < Duration::from_millis(1900),
        "504 only after {took:?}"
    );
    // A 504 is not retried elsewhere (the request was sent) and is not a 503.
    assert_eq!(slow.hits(), 1);
    f.shutdown().await;
}

/// A server's own error status is the server's answer: passed through, not relabelled.
#[tokio::test]
async fn server_error_status_passes_through() {
    let a = TestServer::start("a").await;
    a.set_status(500);
    let f = Setup::new().servers(&[&a]).start().await;
    let r = client()
        .get(format!("http://{}/", f.frontend("www")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.headers().get("x-fulcrum-error").is_none());
    assert_eq!(r.text().await.unwrap(), "a");
    f.shutdown().await;
}

/// A server that closes its keep-alive connections soon after answering: fulcrum's pooled
/// connection is dead by the next request, which goes out on a fresh one.
#[tokio::test]
async fn pooled_connection_closed_by_the_server_is_replaced() {
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let cl = std::sync::Arc::clone(&closed);
    let addr = raw_server(move |mut s| {
        let cl = std::sync::Arc::clone(&cl);
        async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce")
                .await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(s);
            cl.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .await;
    let f = fulcrum_before_raw("once", addr).await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    for i in 1..=5 {
        let (status, body, _) = get(&c, &url).await;
        assert_eq!((status, body.as_str()), (200, "once"));
        // The server closes the connection fulcrum keeps in its pool.
        eventually("the server closed its side", Duration::from_secs(5), || {
            closed.load(std::sync::atomic::Ordering::SeqCst) == i
        })
        .await;
    }
    f.shutdown().await;
}

/// Idle upstream connections have no task watching them: the health checker lets go of
/// those the server closed, so they do not linger in CLOSE_WAIT until the next request.
#[tokio::test]
async fn idle_upstream_connection_closed_by_the_server_is_let_go() {
    let addr = raw_server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce")
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    })
    .await;
    let f = Setup::new()
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("100ms").timeout("100ms"))
        })
        .server_at("once", addr, |s| s)
        .start()
        .await;
    let (status, body, _) = get(&client(), &format!("http://{}/", f.frontend("www"))).await;
    assert_eq!((status, body.as_str()), (200, "once"));
    let server = live_server(&f, "once");
    eventually(
        "the closed connection leaves the pool",
        Duration::from_secs(5),
        || server.idle.idle_count() == 0,
    )
    .await;
    f.shutdown().await;
}

/// A server that answers before it has read the whole request body (an ingest endpoint
/// acknowledging early) still receives the rest: the upload goes on after the response.
#[tokio::test]
async fn upload_continues_after_an_early_response() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    const BODY: usize = 200_000;
    let received = Arc::new(AtomicUsize::new(0));
    let got = Arc::clone(&received);
    let addr = raw_server(move |mut s| {
        let got = Arc::clone(&got);
        async move {
            let _ = s
                .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                got.fetch_add(n, Ordering::SeqCst);
            }
        }
    })
    .await;
    let f = fulcrum_before_raw("ingest", addr).await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(format!("POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").as_bytes())
        .await;
    conn.send(&[b'x'; 1000]).await;
    let r = conn.read_response().await.expect("the early answer");
    assert_eq!(r.status, 202);
    conn.send(&vec![b'x'; BODY - 1000]).await;
    // raw_server consumed some body bytes with the head; the rest is counted here.
    eventually(
        "the server has the whole body",
        Duration::from_secs(5),
        || received.load(Ordering::SeqCst) >= BODY - 16 * 1024,
    )
    .await;
    f.shutdown().await;
}

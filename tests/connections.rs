//! Client connections: keep-alive, the idle limit, the slowloris guard, and the global
//! `max_connections` limit (accepting pauses, nothing crashes).
mod common;

use std::time::Duration;

use common::*;

/// fulcrum in front of `a` alone.
fn cfg(a: &TestServer) -> Setup {
    Setup::new().servers(&[a])
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// A keep-alive connection to fulcrum that has had one request answered: what the
/// timeout tests start from.
async fn answered_once(f: &fulcrum::runtime::Running) -> RawConn {
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(GET).await;
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    conn
}

#[tokio::test]
async fn many_requests_on_one_keep_alive_connection() {
    let a = TestServer::start("a").await;
    let f = cfg(&a).start().await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    for i in 0..50 {
        conn.send(format!("GET /n{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = conn
            .read_response()
            .await
            .expect("answer on the same connection");
        assert_eq!((r.status, r.text().as_str()), (200, "a"), "request {i}");
        assert_ne!(r.header("connection"), Some("close"));
    }
    // Pipelined: three requests written at once, three answers in order.
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.extend_from_slice(
            format!("GET /p{i} HTTP/1.1\r\nHost: x\r\nX-Id: p{i}\r\n\r\n").as_bytes(),
        );
    }
    conn.send(&batch).await;
    for _ in 0..3 {
        assert_eq!(conn.read_response().await.unwrap().status, 200);
    }
    assert_eq!(a.hits(), 53);
    f.shutdown().await;
}

/// With reqwest's own pool too: sequential requests reuse one connection.
#[tokio::test]
async fn keep_alive_with_a_pooling_client() {
    let a = TestServer::start("a").await;
    let f = cfg(&a).start().await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = reqwest::Client::new();
    for _ in 0..20 {
        let (status, body, _) = get(&c, &url).await;
        assert_eq!((status, body.as_str()), (200, "a"));
    }
    f.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_closes_after_client_idle_timeout() {
    let a = TestServer::start("a").await;
    let f = cfg(&a)
        .frontend(|f| f.client_idle_timeout("300ms").client_header_timeout("10s"))
        .start()
        .await;
    let mut conn = answered_once(&f).await;
    let took = conn.closed_within(Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?}: the idle limit, not the 10s header limit"
    );
    f.shutdown().await;
}

/// A short header timeout must not cut a keep-alive connection that is merely idle between
/// requests: that is the idle limit's business.
#[tokio::test]
async fn header_timeout_does_not_close_an_idle_keep_alive_connection() {
    let a = TestServer::start("a").await;
    let f = cfg(&a)
        .frontend(|f| f.client_idle_timeout("10s").client_header_timeout("200ms"))
        .start()
        .await;
    let mut conn = answered_once(&f).await;
    // Idle for more than three header timeouts (asserting an absence needs a wait).
    assert!(
        conn.read_response_within(Duration::from_millis(700))
            .await
            .is_err(),
        "the idle connection was closed"
    );
    conn.send(GET).await;
    let r = conn
        .read_response_within(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the connection is still open");
    assert_eq!(r.status, 200);
    f.shutdown().await;
}

/// Slowloris: part of a head, then nothing. The connection is closed after the header timeout
/// even though the idle limit is long, and the server never sees a request.
#[tokio::test]
async fn stalled_request_head_is_cut_after_client_header_timeout() {
    let a = TestServer::start("a").await;
    let f = cfg(&a)
        .frontend(|f| f.client_idle_timeout("10s").client_header_timeout("300ms"))
        .start()
        .await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let took = conn.closed_within(Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(a.hits(), 0);

    // Dripping a byte at a time does not extend the deadline.
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(b"GET / HTTP/1.1\r\n").await;
    let start = tokio::time::Instant::now();
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tokio::io::AsyncWriteExt::write_all(&mut conn.stream, b"X")
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        if conn
            .read_response_within(Duration::from_millis(1))
            .await
            .is_ok()
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripping head kept the connection open");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // A connection that sends nothing at all is cut the same way.
    let mut conn = RawConn::connect(f.frontend("www")).await;
    let took = conn.closed_within(Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "silent connection closed after {took:?}"
    );

    // And fulcrum still serves.
    let r = raw_exchange(f.frontend("www"), GET).await;
    assert_eq!(r.status, 200);
    f.shutdown().await;
}

/// The slowloris guard holds for the second request on a keep-alive connection too: a
/// partial head after an answered request is cut after the header timeout, not the (long)
/// idle limit.
#[tokio::test]
async fn stalled_second_head_on_a_keep_alive_connection_is_cut() {
    let a = TestServer::start("a").await;
    let f = cfg(&a)
        .frontend(|f| f.client_idle_timeout("10s").client_header_timeout("300ms"))
        .start()
        .await;
    let mut conn = answered_once(&f).await;
    conn.send(b"GET /second HTTP/1.1\r\nHost: x\r\n").await;
    let took = conn.closed_within(Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?}: the header limit, not the 10s idle limit"
    );
    assert_eq!(a.hits(), 1);
    f.shutdown().await;
}

/// A request whose server is slow is not an idle connection: a response that takes longer
/// than the idle limit still arrives.
#[tokio::test]
async fn slow_response_is_not_cut_by_the_idle_limit() {
    let a = TestServer::start("a").await;
    a.set_delay(Duration::from_millis(600));
    let f = cfg(&a)
        .frontend(|f| {
            f.client_idle_timeout("200ms")
                .client_header_timeout("200ms")
        })
        .start()
        .await;
    let r = raw_exchange(f.frontend("www"), GET).await;
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    f.shutdown().await;
}

#[tokio::test]
async fn global_max_connections_pauses_accepting() {
    let a = TestServer::start("a").await;
    let f = cfg(&a).global("max_connections", 2).start().await;
    let addr = f.frontend("www");
    let mut one = RawConn::connect(addr).await;
    one.send(GET).await;
    assert_eq!(one.read_response().await.unwrap().status, 200);
    let mut two = RawConn::connect(addr).await;
    two.send(GET).await;
    assert_eq!(two.read_response().await.unwrap().status, 200);

    // The kernel completes the handshake, but fulcrum does not take the connection.
    let mut three = RawConn::connect(addr).await;
    three.send(GET).await;
    assert!(
        three
            .read_response_within(Duration::from_millis(400))
            .await
            .is_err(),
        "a third connection was served past max_connections = 2"
    );
    // The two held ones still work.
    two.send(GET).await;
    assert_eq!(two.read_response().await.unwrap().status, 200);

    drop(one);
    let r = three
        .read_response_within(Duration::from_secs(5))
        .await
        .expect("served once a connection closed")
        .expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(a.hits(), 4);
    f.shutdown().await;
}

/// A client whose first bytes are a prefix of the HTTP/2 preface ("P…") and then pause is
/// still an HTTP/1.1 client once the rest arrives: fulcrum waits for the deciding byte.
#[tokio::test]
async fn request_pausing_inside_the_http2_preface_prefix_is_served() {
    let a = TestServer::start("a").await;
    let f = cfg(&a).start().await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(b"P").await;
    // The pause is what is tested: the deciding byte arrives in a later segment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.send(b"OST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    let r = conn.read_response().await.expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    f.shutdown().await;
}

/// Requests in sequence reuse one upstream connection (keep-alive to the server), even
/// though no task watches the connection between requests.
#[tokio::test]
async fn upstream_connection_is_reused_between_requests() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let accepted = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&accepted);
    // Answers the head raw_server has read, then every further head on the connection.
    let addr = raw_server(move |mut s| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(reply).await.is_err() {
                    return;
                }
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.clear();
            }
        }
    })
    .await;
    let f = fulcrum_before_raw("ka", addr).await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    for i in 0..20 {
        conn.send(GET).await;
        let r = conn.read_response().await.expect("an answer");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    assert_eq!(live_server(&f, "ka").idle.idle_count(), 1);
    f.shutdown().await;
}

/// A client that sends part of the HTTP/2 preface and then half-closes will never send
/// the deciding byte: it is handed to HTTP/1.1 at once (which closes it), not left to spin
/// until the header timeout.
#[tokio::test]
async fn half_closed_inside_the_http2_preface_prefix_is_closed_at_once() {
    let a = TestServer::start("a").await;
    let f = cfg(&a)
        .frontend(|f| f.client_idle_timeout("30s").client_header_timeout("30s"))
        .start()
        .await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(b"PRI * HTTP").await;
    {
        use tokio::io::AsyncWriteExt;
        conn.stream.shutdown().await.unwrap();
    }
    let took = conn.closed_within(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    f.shutdown().await;
}

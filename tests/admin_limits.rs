//! The admin listener's limits over real sockets: a slowloris is closed after the head
//! timeout (the shipped 10 s), an idle keep-alive connection after the idle timeout (short
//! limits through `admin::serve_with`), the connection past the cap is closed at once while
//! admin keeps answering, a body over the limit gets 413, the event stream past its cap 503.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admin_common::*;
use common::*;
use fulcrum::admin::Limits;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn fulcrum() -> (TestServer, Fulcrum) {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    (a, f)
}

/// Reads until the peer closes; returns how long after `since` that was.
async fn closed(s: &mut TcpStream, since: Instant, within: Duration) -> Duration {
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection still open after {within:?}");
    since.elapsed()
}

fn get(path: &str, token: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn a_slowloris_is_closed_after_the_head_timeout() {
    let (_a, f) = fulcrum().await;
    let api = Api::new(&f);
    let head_timeout = Limits::default().head_timeout;
    let t0 = Instant::now();
    let s = TcpStream::connect(f.admin).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // One byte of a head every second, never finishing it.
    let drip = tokio::spawn(async move {
        for b in b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Meanwhile the admin plane answers everybody else.
    let status = api.status().await;
    assert!(status["backends"].is_array());
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(head_timeout + Duration::from_secs(3), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "slowloris still connected after {:?}",
        t0.elapsed()
    );
    let took = t0.elapsed();
    assert!(
        took >= head_timeout - Duration::from_millis(200),
        "closed after {took:?}, before the head timeout"
    );
    drip.abort();
}

/// A second admin listener of `f`'s instance with short limits.
async fn short_limits(f: &Fulcrum, limits: Limits) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::clone(&f.app);
    f.app.tasks().spawn(fulcrum::admin::serve_with(
        listener,
        app,
        token(f.state_dir()),
        limits,
    ));
    addr
}

#[tokio::test]
async fn idle_and_head_timeouts_are_separate() {
    let (_a, f) = fulcrum().await;
    let limits = Limits {
        head_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let addr = short_limits(&f, limits).await;
    let tok = token(f.state_dir());

    // Silent from accept: closed after the head timeout.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let took = closed(&mut s, t0, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1400),
        "{took:?}"
    );

    // Kept alive after an answer: the idle timeout, not the head timeout, closes it.
    let mut c = RawConn::connect(addr).await;
    c.send(&get("/api/v1/status", &tok)).await;
    let r = c
        .read_response_within(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    let took = c.closed_within(Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(1400),
        "idle connection closed after {:?}",
        t0.elapsed()
    );

    // A second request on a kept-alive connection is served.
    let mut c = RawConn::connect(addr).await;
    for _ in 0..2 {
        c.send(&get("/healthz", &tok)).await;
        let r = c
            .read_response_within(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn the_connection_past_the_cap_is_closed_at_once() {
    let (_a, f) = fulcrum().await;
    let cap = Limits::default().max_connections;
    let tok = Api::new(&f).token;
    // One kept-alive connection that has been served, then cap - 1 silent ones.
    let mut served = RawConn::connect(f.admin).await;
    served.send(&get("/healthz", &tok)).await;
    assert_eq!(served.read_response().await.unwrap().status, 200);
    let mut held = Vec::new();
    for _ in 1..cap {
        held.push(TcpStream::connect(f.admin).await.unwrap());
    }
    // The cap + 1-th is accepted and closed at once (well before any timeout).
    let t0 = Instant::now();
    let mut extra = TcpStream::connect(f.admin).await.unwrap();
    let _ = extra.write_all(&get("/healthz", &tok)).await;
    let took = closed(&mut extra, t0, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(3));
    // Admin still answers on the connections it holds.
    served.send(&get("/api/v1/status", &tok)).await;
    assert_eq!(served.read_response().await.unwrap().status, 200);
    // Once one leaves, a new connection is served again.
    drop(held.pop());
    let api = Api::new(&f);
    eventually_async(
        "a new admin connection is served",
        Duration::from_secs(5),
        || async {
            let mut c = TcpStream::connect(f.admin).await.unwrap();
            if c.write_all(&get("/healthz", &api.token)).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(c.read(&mut buf).await, Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let (_a, f) = fulcrum().await;
    let api = Api::new(&f);
    let limit = Limits::default().max_body_bytes;
    let path = "/api/v1/backends/b/servers/a/maintenance";
    let big = format!(
        "{{\"for\":\"1m\",\"reason\":\"{}\"}}",
        "x".repeat(limit + 1)
    );
    // Declared by Content-Length: refused before it is read.
    let r = api
        .c
        .post(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    // Chunked, without a length: refused once the limit is crossed.
    let mut c = RawConn::connect(f.admin).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        api.token
    );
    c.send(head.as_bytes()).await;
    for piece in big.as_bytes().chunks(8192) {
        c.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
        c.send(piece).await;
        c.send(b"\r\n").await;
    }
    c.send(b"0\r\n\r\n").await;
    let r = c
        .read_response_within(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    // Nothing was applied.
    assert_eq!(api.server("b", "a").await["state"], "up");
    // A body within the limit still works.
    let (code, v) = api.maintenance("a", serde_json::json!({"for": "1m"})).await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test]
async fn the_event_stream_past_its_cap_gets_503() {
    let (_a, f) = fulcrum().await;
    let api = Api::new(&f);
    let cap = Limits::default().max_event_streams;
    let open = || async {
        api.c
            .get(format!("{}/api/v1/events", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..cap {
        let r = open().await;
        assert_eq!(r.status().as_u16(), 200);
        streams.push(r.bytes_stream());
    }
    let r = open().await;
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("event streams"),
        "{v}"
    );
    // The API itself is unaffected, and the streams deliver.
    let (code, _) = api.maintenance("a", serde_json::json!({"for": "1m"})).await;
    assert_eq!(code, 200);
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !text.contains("maintenance_started") {
            let chunk = streams[0].next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no maintenance_started on the stream: {text}"));
    // A subscriber that leaves frees its place.
    drop(streams.pop());
    eventually_async("a place frees up", Duration::from_secs(5), || async {
        open().await.status().as_u16() == 200
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_finishes_the_admin_request_in_flight() {
    let (_a, f) = fulcrum().await;
    let api = Api::new(&f);
    let admin = f.admin;
    let body = br#"{"for":"1m","reason":"in flight at shutdown"}"#;
    let mut c = RawConn::connect(admin).await;
    let head = format!(
        "POST /api/v1/backends/b/servers/a/maintenance HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.token,
        body.len()
    );
    c.send(head.as_bytes()).await;
    c.send(&body[..10]).await;
    // An idle kept-alive connection, served once.
    let mut idle = RawConn::connect(admin).await;
    idle.send(&get("/healthz", &api.token)).await;
    assert_eq!(idle.read_response().await.unwrap().status, 200);
    let app = Arc::clone(&f.app);
    let done = tokio::spawn(f.shutdown());
    wait_refused(admin).await;
    idle.closed_within(Duration::from_secs(3)).await;
    // The request in flight is still answered.
    c.send(&body[10..]).await;
    let r = c
        .read_response_within(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        done.await.unwrap(),
        "everything finished within the grace period"
    );
    assert!(app.tasks().is_empty());
}

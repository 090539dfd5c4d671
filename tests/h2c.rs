//! HTTP/2 cleartext with prior knowledge: clients that speak h2 without TLS are served too,
//! and their requests reach HTTP/1.1 servers with a proper Host header.
mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn serves_h2_prior_knowledge() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new().servers(&[&a, &b]).start().await;
    let tcp = tokio::net::TcpStream::connect(f.frontend("www"))
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    // Several streams on the one connection, concurrently.
    let mut pending = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get("http://books.example/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        pending.push(tx.send_request(req));
    }
    for p in pending {
        let resp = p.await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body().collect().await.unwrap().to_bytes());
    }
    assert_eq!(bodies.iter().filter(|b| b.as_ref() == b"a").count(), 2);
    assert_eq!(bodies.iter().filter(|b| b.as_ref() == b"b").count(), 2);
    let h = a.last_headers();
    assert_eq!(h["host"], "books.example");
    assert_eq!(h["x-forwarded-proto"], "http");
    f.shutdown().await;
}

/// An idle HTTP/2 connection whose client sends PINGs (hyper's keep-alive) lives by the
/// idle timeout, not the slowloris guard: frames between requests are not a request head
/// that is late.
#[tokio::test]
async fn idle_h2_connection_with_pings_outlives_the_header_timeout() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.client_header_timeout("300ms").client_idle_timeout("30s"))
        .servers(&[&a])
        .start()
        .await;
    let (mut tx, conn) = pinging_client(f.frontend("www")).await;
    for i in 0..2 {
        let req = http::Request::get("http://books.example/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.expect("the connection is open");
        assert_eq!(resp.status(), 200, "request {i}");
        resp.into_body().collect().await.unwrap();
        if i == 0 {
            // Idle, pinging, for several header timeouts: what is tested is that nothing
            // closes the connection meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            assert!(!conn.is_finished(), "the idle connection was closed");
        }
    }
    f.shutdown().await;
}

/// PINGs are no use of the connection: an HTTP/2 client that only pings is closed after
/// `client_idle_timeout`, like an idle HTTP/1.1 one.
#[tokio::test]
async fn h2_connection_that_only_pings_is_closed_after_the_idle_timeout() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.client_header_timeout("10s").client_idle_timeout("400ms"))
        .servers(&[&a])
        .start()
        .await;
    let (mut tx, conn) = pinging_client(f.frontend("www")).await;
    let req = http::Request::get("http://books.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    eventually(
        "the idle connection is closed",
        std::time::Duration::from_secs(5),
        || conn.is_finished(),
    )
    .await;
    f.shutdown().await;
}

/// An HTTP/2 client that PINGs every 100 ms, even while idle; the handle ends with the
/// connection.
async fn pinging_client(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(std::time::Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    (tx, tokio::spawn(conn))
}

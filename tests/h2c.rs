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
    let f = start_fulcrum(&simple_config("", &[(&a, ""), (&b, "")])).await;
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

//! `threads > 1`: one single-threaded runtime per worker, each with its own `SO_REUSEPORT`
//! socket per frontend. Many clients are served whichever worker the kernel hands them to,
//! keep-alive pools stay per worker, and graceful shutdown waits for every worker's
//! in-flight request.
mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn three_workers_serve_every_client_and_shut_down_gracefully() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .global("threads", 3)
        .servers(&[&a])
        .start()
        .await;
    let addr = f.frontend("www");
    // Separate connections, each with keep-alive requests: the kernel spreads them over
    // the three sockets, and each is answered by the worker that accepted it.
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            for _ in 0..3 {
                conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
                let r = conn.read_response().await.expect("an answer");
                assert_eq!((r.status, r.text().as_str()), (200, "a"));
            }
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
    let server = live_server(&f, "a");
    assert!(server.idle.idle_count() >= 1, "connections kept for reuse");
    a.set_delay(Duration::from_millis(300));
    let in_flight = tokio::spawn(async move {
        let mut conn = RawConn::connect(addr).await;
        conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
        conn.read_response().await.map(|r| r.status)
    });
    eventually(
        "the slow request reached the server",
        Duration::from_secs(5),
        || a.state.active.load(std::sync::atomic::Ordering::SeqCst) == 1,
    )
    .await;
    assert!(
        f.shutdown().await,
        "every worker finished within the grace period"
    );
    assert_eq!(in_flight.await.expect("client task"), Some(200));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

//! Graceful shutdown: in-flight requests finish, new connections are refused.
mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_request_and_refuses_new_connections() {
    let a = TestServer::start("a").await;
    a.set_delay(Duration::from_millis(500));
    let f = Setup::new().servers(&[&a]).start().await;
    let addr = f.frontend("www");
    let url = format!("http://{addr}/slow");
    let c = client();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move {
            let r = c.get(&url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    eventually(
        "the request reached the server",
        Duration::from_secs(5),
        || a.state.active.load(std::sync::atomic::Ordering::SeqCst) == 1,
    )
    .await;
    let finished = f.shutdown().await;
    assert!(finished, "everything finished within the grace period");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "a"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}

/// An idle keep-alive connection does not hold shutdown up.
#[tokio::test]
async fn idle_keep_alive_connection_does_not_delay_shutdown() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let addr = f.frontend("www");
    let mut conn = RawConn::connect(addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = conn.read_response().await.unwrap();
    assert_eq!(r.status, 200);
    let t0 = std::time::Instant::now();
    assert!(f.shutdown().await);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "shutdown took {:?} (grace period 5s)",
        t0.elapsed()
    );
    conn.closed_within(Duration::from_secs(2)).await;
}

/// A request that outlives the grace period does not keep fulcrum up: shutdown reports it
/// and returns after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_shutdown() {
    let a = TestServer::start("a").await;
    a.set_delay(Duration::from_secs(5));
    let f = Setup::new()
        .global("grace_period", "300ms")
        .servers(&[&a])
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let pending = tokio::spawn(async move { c.get(&url).send().await.map(|r| r.status()) });
    eventually(
        "the request reached the server",
        Duration::from_secs(5),
        || a.hits() == 1,
    )
    .await;
    let t0 = std::time::Instant::now();
    let finished = f.shutdown().await;
    let took = t0.elapsed();
    assert!(!finished, "the slow request could not finish");
    assert!(
        took >= Duration::from_millis(290),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    pending.abort();
}

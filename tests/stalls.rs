//! Nobody holds a server slot forever: a client that stops reading its response, and a
//! server that stops in the middle of its body, are both cut off, and the slot returns.
mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.client_idle_timeout("300ms"))
        .backend("b", |b| b.health_slow())
        .server(&a, |s| s.max_connections(1))
        .start()
        .await;
    let live = live_server(&f, "a");
    let mut conn = tokio::net::TcpStream::connect(f.frontend("www"))
        .await
        .unwrap();
    // 256 MiB that this client never reads: the socket buffers fill, writes block.
    conn.write_all(b"GET /big?bytes=268435456 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    eventually("the request holds the slot", Duration::from_secs(5), || {
        live.active() == 1
    })
    .await;
    eventually("the slot comes back", Duration::from_secs(5), || {
        live.active() == 0
    })
    .await;
    // And the server can serve again at once.
    let (status, body, _) = get(&client(), &format!("http://{}/", f.frontend("www"))).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    f.shutdown().await;
}

/// A server that sends its head and 10 bytes of a 1000-byte body, then nothing.
async fn stalling_server() -> std::net::SocketAddr {
    raw_server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

#[tokio::test]
async fn a_server_that_stalls_mid_body_is_cut_after_the_response_timeout() {
    let addr = stalling_server().await;
    let f = Setup::new()
        .backend("b", |b| {
            b.response_timeout("300ms")
                .health(|h| h.reset().tcp().interval("60s"))
        })
        .server_at("stall", addr, |s| s.max_connections(1))
        .start()
        .await;
    let live = live_server(&f, "stall");
    let r = client()
        .get(format!("http://{}/", f.frontend("www")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the head arrived in time");
    let body = tokio::time::timeout(Duration::from_secs(5), r.bytes()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the body must end in an error, not hang or pass as complete: {body:?}"
    );
    eventually("the slot comes back", Duration::from_secs(5), || {
        live.active() == 0
    })
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_while_queued_is_counted_as_499() {
    let a = TestServer::start("a").await;
    a.set_delay(Duration::from_millis(800));
    let f = Setup::new()
        .server(&a, |s| s.max_connections(1))
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let busy = tokio::spawn({
        let url = url.clone();
        async move { client().get(&url).send().await.map(|r| r.status().as_u16()) }
    });
    let live = live_server(&f, "a");
    eventually("the slot is taken", Duration::from_secs(5), || {
        live.active() == 1
    })
    .await;
    // This one waits in the queue, then gives up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(impatient.get(&url).send().await.is_err());
    assert_eq!(busy.await.unwrap().unwrap(), 200);
    let metrics_url = format!("http://{}/metrics", f.admin);
    let mut text = String::new();
    for _ in 0..100 {
        text = client()
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("code=\"499\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("fulcrum_requests_total") && l.contains("code=\"499\""))
        .unwrap_or_else(|| panic!("no 499 counted:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    f.shutdown().await;
}

//! Webhooks over real sockets: a receiver gets the event as JSON; a dead receiver neither
//! slows publishing nor grows memory, and what it misses is counted.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use admin_common::*;
use bytes::Bytes;
use common::*;
use fulcrum::events::{Event, EventKind};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A webhook receiver that hands every body it gets to the returned channel.
async fn receiver() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((path, body));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn webhook_receives_matching_events_as_json() {
    let a = TestServer::start("a").await;
    let (addr, mut rx) = receiver().await;
    let url = format!("http://{addr}/hook");
    let f = Setup::new()
        .alerts(|al| al.webhook(&url, |w| w.events(&["maintenance_started"])))
        .servers(&[&a])
        .start()
        .await;
    // Not asked for: must not arrive.
    f.app.events().publish(Event::new(
        EventKind::ConfigRejected,
        None,
        None,
        "not wanted",
    ));
    let api = Api::new(&f);
    let (code, _) = api
        .maintenance("a", json!({"for": "10m", "reason": "webhook test"}))
        .await;
    assert_eq!(code, 200);
    let (path, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a webhook call within 5 s")
        .unwrap();
    assert_eq!(path, "/hook");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"], "maintenance_started");
    assert_eq!(v["backend"], "b");
    assert_eq!(v["server"], "a");
    assert!(v["at"].is_string());
    assert!(v["detail"].as_str().unwrap().contains("webhook test"));
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("[fulcrum] maintenance_started b/a:"),
        "{text}"
    );
    // Only the one event it asked for.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
    f.shutdown().await;
}

#[tokio::test]
async fn dead_webhook_never_blocks_and_drops_are_counted() {
    let a = TestServer::start("a").await;
    // Accepts connections and never answers: the worst kind of receiver.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    let url = format!("http://{addr}/hook");
    let f = Setup::new()
        .alerts(|al| al.webhook(&url, |w| w))
        .servers(&[&a])
        .start()
        .await;
    let n = fulcrum::alerts::QUEUE + 200;
    let t = Instant::now();
    for i in 0..n {
        f.app.events().publish(Event::new(
            EventKind::CapacityLow,
            Some("b"),
            None,
            format!("{i}"),
        ));
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "publishing took {:?}",
        t.elapsed()
    );
    // The data path is unaffected.
    let c = client();
    let www = format!("http://{}/", f.frontend("www"));
    assert_eq!(get(&c, &www).await.0, 200);
    let api = Api::new(&f);
    let needle = format!("fulcrum_alerts_dropped_total{{webhook=\"http://{addr}/hook\"}} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = api.metrics().await;
        let dropped: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        // At most QUEUE wait and one is being tried; the rest must be dropped.
        if dropped >= 199 {
            assert!(dropped <= 200, "{dropped}");
            break;
        }
        assert!(Instant::now() < deadline, "dropped only {dropped}:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.shutdown().await;
}

//! The admin API over real sockets: auth, status, maintenance (drain, DELETE, limits,
//! persistence across a restart, expiry found at start-up), weight, events, metrics.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::time::Duration;

use admin_common::*;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn token_is_required_except_on_public_pages() {
    let a = TestServer::start("a").await;
    let state = tempfile::tempdir().unwrap();
    let setup = Setup::new().state_dir(state.path()).servers(&[&a]);
    let f = setup.start().await;
    let api = Api::new(&f);
    let url = |p: &str| format!("{}{p}", api.base);
    let r = api.c.get(url("/api/v1/status")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .c
        .get(url("/api/v1/status"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .c
        .post(url("/api/v1/backends/b/servers/a/maintenance"))
        .body(r#"{"for":"1m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(api.status().await["backends"][0]["name"], "b");
    for public in ["/", "/healthz", "/metrics"] {
        let r = api.c.get(url(public)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{public}");
    }
    // The generated token is private and reused by the next start.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = api.token.clone();
    f.shutdown().await;
    let f = setup.start().await;
    assert_eq!(token(state.path()), first);
    f.shutdown().await;
}

#[tokio::test]
async fn status_has_every_interface_field() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new()
        .backend("b", |be| be.min_healthy(1))
        .server(&a, |s| s.weight(2))
        .server(&b, |s| s.backup())
        .start()
        .await;
    let api = Api::new(&f);
    let st = api.status().await;
    let be = &st["backends"][0];
    assert_eq!(be["name"], "b");
    assert_eq!(be["algorithm"], "round_robin");
    assert_eq!(be["healthy_primaries"], 1);
    assert_eq!(be["min_healthy"], 1);
    let s = &be["servers"][0];
    for key in [
        "name",
        "address",
        "state",
        "backup",
        "weight",
        "active",
        "requests_total",
        "maintenance_until",
        "maintenance_reason",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    assert_eq!(s["name"], "a");
    assert_eq!(s["address"], a.addr.to_string());
    assert_eq!(s["state"], "up");
    assert_eq!(s["weight"], 2);
    assert_eq!(s["backup"], false);
    assert_eq!(be["servers"][1]["backup"], true);
    assert!(s["maintenance_until"].is_null());
    f.shutdown().await;
}

#[tokio::test]
async fn maintenance_drains_then_delete_restores() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new()
        .admin("max_maintenance", "2h")
        // No slow start, so the server is fully back the moment maintenance ends.
        .backend("b", |be| be.slow_start("0s"))
        .servers(&[&a, &b])
        .start()
        .await;
    let api = Api::new(&f);
    let www = format!("http://{}/", f.frontend("www"));
    // One slow request in flight on `a`.
    a.set_delay(Duration::from_millis(600));
    let c = client();
    let mut inflight = Vec::new();
    for _ in 0..2 {
        let (c, www) = (c.clone(), www.clone());
        inflight.push(tokio::spawn(async move { get(&c, &www).await }));
    }
    eventually("a request in flight on a", Duration::from_secs(5), || {
        a.state.active.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let (code, v) = api
        .maintenance("a", json!({"for": "1h", "reason": "kernel upgrade"}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["server"]["state"], "draining");
    assert_eq!(v["server"]["maintenance_reason"], "kernel upgrade");
    assert!(v["server"]["maintenance_until"].is_string());
    // The in-flight request finishes normally.
    let mut bodies = Vec::new();
    for h in inflight {
        let (status, body, _) = h.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "b"]);
    // The slot is let go when the exchange ends, which may be just after the client read it.
    eventually_async(
        "a drained into maintenance",
        Duration::from_secs(5),
        || async { api.server("b", "a").await["state"] == "maintenance" },
    )
    .await;
    // No new request goes to `a`.
    a.set_delay(Duration::ZERO);
    let before = a.hits();
    for _ in 0..4 {
        assert_eq!(get(&c, &www).await.1, "b");
    }
    assert_eq!(a.hits(), before);
    // DELETE puts it back at once.
    let (code, v) = api
        .send(
            Method::DELETE,
            "/api/v1/backends/b/servers/a/maintenance",
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ended"], true);
    assert_eq!(v["server"]["state"], "up");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&c, &www).await.1);
    }
    assert!(seen.contains(&"a".to_string()), "{seen:?}");
    let metrics = api.metrics().await;
    for e in ["maintenance_started", "maintenance_ended"] {
        assert!(
            metrics.contains(&format!("fulcrum_events_total{{event=\"{e}\"}} 1")),
            "{e} not counted:\n{metrics}"
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn maintenance_requests_are_validated() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .admin("max_maintenance", "1h")
        .servers(&[&a])
        .start()
        .await;
    let api = Api::new(&f);
    for (body, expect) in [
        (json!({"reason": "no for"}), 400),
        (json!({"for": "2h"}), 400),
        (json!({"for": "soon"}), 400),
        (json!({"for": "0s"}), 400),
    ] {
        let (code, v) = api.maintenance("a", body.clone()).await;
        assert_eq!(code, expect, "{body} -> {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (code, v) = api.maintenance("nope", json!({"for": "1m"})).await;
    assert_eq!(code, 404, "{v}");
    let (code, _) = api
        .send(
            Method::POST,
            "/api/v1/backends/nope/servers/a/maintenance",
            Some(json!({"for": "1m"})),
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(api.server("b", "a").await["state"], "up");
    f.shutdown().await;
}

#[tokio::test]
async fn maintenance_survives_a_restart() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    // One setup started twice: both starts share its state_dir.
    let setup = Setup::new().servers(&[&a, &b]);
    let f = setup.start().await;
    let api = Api::new(&f);
    let (code, v) = api
        .maintenance("a", json!({"for": "3h", "reason": "rack move"}))
        .await;
    assert_eq!(code, 200, "{v}");
    let until = v["server"]["maintenance_until"].clone();
    f.shutdown().await;

    let f = setup.start().await;
    let api = Api::new(&f);
    let s = api.server("b", "a").await;
    assert_eq!(s["state"], "maintenance");
    assert_eq!(s["maintenance_reason"], "rack move");
    assert_eq!(s["maintenance_until"], until);
    let c = client();
    let www = format!("http://{}/", f.frontend("www"));
    for _ in 0..3 {
        assert_eq!(get(&c, &www).await.1, "b");
    }
    f.shutdown().await;
}

#[tokio::test]
async fn maintenance_expired_while_stopped_ends_at_start_up() {
    let a = TestServer::start("a").await;
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("maintenance.json"),
        r#"{"version":1,"maintenance":[{"backend":"b","server":"a",
            "since":"2020-01-01T00:00:00Z","until":"2020-01-01T01:00:00Z","reason":"old"}]}"#,
    )
    .unwrap();
    let f = Setup::new()
        .state_dir(state.path())
        .servers(&[&a])
        .start()
        .await;
    let api = Api::new(&f);
    assert_eq!(api.server("b", "a").await["state"], "up");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("fulcrum_events_total{event=\"maintenance_expired\"} 1"),
        "{metrics}"
    );
    let saved = std::fs::read_to_string(state.path().join("maintenance.json")).unwrap();
    assert!(!saved.contains("\"old\""), "{saved}");
    f.shutdown().await;
}

#[tokio::test]
async fn weight_change_applies_at_once() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new().servers(&[&a, &b]).start().await;
    let api = Api::new(&f);
    let path = "/api/v1/backends/b/servers/a/weight";
    for bad in [
        json!({"weight": 0}),
        json!({"weight": 257}),
        json!({"weight": -1}),
        json!({}),
    ] {
        let (code, v) = api.send(Method::PUT, path, Some(bad.clone())).await;
        assert_eq!(code, 400, "{bad} -> {v}");
    }
    let (code, v) = api
        .send(
            Method::PUT,
            "/api/v1/backends/b/servers/zz/weight",
            Some(json!({"weight": 2})),
        )
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = api
        .send(Method::PUT, path, Some(json!({"weight": 3})))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["server"]["weight"], 3);
    let c = client();
    let www = format!("http://{}/", f.frontend("www"));
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..8 {
        assert_eq!(get(&c, &www).await.0, 200);
    }
    assert_eq!((a.hits() - a0, b.hits() - b0), (6, 2));
    f.shutdown().await;
}

#[tokio::test]
async fn event_stream_delivers_json_events() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let api = Api::new(&f);
    let resp = api
        .c
        .get(format!("{}/api/v1/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let (code, _) = api
        .maintenance("a", json!({"for": "5m", "reason": "sse"}))
        .await;
    assert_eq!(code, 200);
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(line) = text.lines().find(|l| l.contains("maintenance_started")) {
                return line.to_string();
            }
        }
        panic!("stream ended: {text}");
    })
    .await
    .expect("an event within 5 s");
    let json: serde_json::Value =
        serde_json::from_str(found.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(json["event"], "maintenance_started");
    assert_eq!(json["backend"], "b");
    assert_eq!(json["server"], "a");
    assert!(json["at"].as_str().unwrap().ends_with('Z'));
    assert!(json["detail"].as_str().unwrap().contains("sse"));
    f.shutdown().await;
}

#[tokio::test]
async fn metrics_have_every_interface_family() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let api = Api::new(&f);
    let c = client();
    let www = format!("http://{}/", f.frontend("www"));
    assert_eq!(get(&c, &www).await.0, 200);
    // A request fulcrum answers itself: nothing in rotation.
    let (code, _) = api.maintenance("a", json!({"for": "5m"})).await;
    assert_eq!(code, 200);
    assert_eq!(get(&c, &www).await.0, 503);
    api.metrics_showing(&[
        "fulcrum_requests_total{frontend=\"www\",backend=\"b\",server=\"a\",code=\"200\"} 1",
        "fulcrum_requests_total{frontend=\"www\",backend=\"b\",server=\"-\",code=\"503\"} 1",
        "fulcrum_request_duration_seconds_bucket{le=\"+Inf\",backend=\"b\",server=\"a\"} 1",
        "fulcrum_request_duration_seconds_count{backend=\"b\",server=\"a\"} 1",
        "fulcrum_server_up{backend=\"b\",server=\"a\"} 0",
        "fulcrum_server_active_requests{backend=\"b\",server=\"a\"} 0",
        "fulcrum_backend_queue_length{backend=\"b\"} 0",
        "fulcrum_backend_healthy_primaries{backend=\"b\"} 0",
        "fulcrum_health_checks_total{backend=\"b\",server=\"a\",result=\"ok\"}",
        "fulcrum_client_connections{frontend=\"www\"}",
        "fulcrum_events_total{event=\"maintenance_started\"} 1",
    ])
    .await;
    f.shutdown().await;
}

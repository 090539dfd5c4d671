//! The admin plane's guards over real sockets: the `Host` check (421 for a rebound name, 200
//! for loopback, the bind address and `[admin] allowed_hosts`, which a reload changes;
//! `/healthz` for any Host), the dashboard's framing headers, and a maintenance call whose
//! state cannot be saved (500, nothing changed, no event).
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::time::Duration;

use admin_common::*;
use common::*;
use futures_util::StreamExt;
use serde_json::json;

/// `GET path` with `host` as Host and the token, on a new connection.
async fn with_host(f: &Fulcrum, path: &str, host: &str, token: &str) -> RawResponse {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(f.admin, req.as_bytes()).await
}

#[tokio::test]
async fn host_must_name_this_listener() {
    let a = TestServer::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fulcrum.toml");
    let setup = Setup::new()
        .state_dir(dir.path())
        .admin("allowed_hosts", vec!["admin.example.com"])
        .servers(&[&a]);
    let f = setup.start_from(&file).await;
    let tok = token(f.state_dir());
    let port = f.admin.port();
    for path in ["/api/v1/status", "/metrics", "/"] {
        let r = with_host(&f, path, "evil.example", &tok).await;
        assert_eq!(r.status, 421, "{path}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("evil.example"), "{v}");
        let r = with_host(&f, path, &format!("evil.example:{port}"), &tok).await;
        assert_eq!(r.status, 421, "{path}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("{}", f.admin),
        format!("[::1]:{port}"),
        "admin.example.com".to_string(),
        format!("ADMIN.example.com:{port}"),
    ] {
        let r = with_host(&f, "/api/v1/status", &host, &tok).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    // A liveness probe may name the pod by any name.
    let r = with_host(&f, "/healthz", "10.1.2.3:9900", &tok).await;
    assert_eq!(r.status, 200);
    // A request that names no host at all is refused too.
    let r = raw_exchange(f.admin, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 421);

    // allowed_hosts follows a reload.
    let next = Setup::new()
        .state_dir(dir.path())
        .admin("allowed_hosts", vec!["ops.example:8443"])
        .servers(&[&a]);
    std::fs::write(&file, next.toml()).unwrap();
    let api = Api::new(&f);
    let (code, v) = api
        .send(reqwest::Method::POST, "/api/v1/reload", None)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        with_host(&f, "/metrics", "admin.example.com", &tok)
            .await
            .status,
        421
    );
    assert_eq!(
        with_host(&f, "/metrics", "ops.example:8443", &tok)
            .await
            .status,
        200
    );
    assert_eq!(
        with_host(&f, "/metrics", "ops.example:9900", &tok)
            .await
            .status,
        421
    );
}

#[tokio::test]
async fn a_bad_allowed_host_is_refused_with_its_key() {
    let text = "[admin]\nallowed_hosts = [\"localhost\", \"http://admin.example.com/\"]\n";
    let e = fulcrum::config::parse_str(text, std::path::Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.allowed_hosts[1]") || e.contains("allowed_hosts"),
        "{e}"
    );
    assert!(e.contains("f.toml:2"), "{e}");
}

#[tokio::test]
async fn the_dashboard_cannot_be_framed() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let (code, body, headers) = get(&client(), &format!("http://{}/", f.admin)).await;
    assert_eq!(code, 200);
    assert!(body.contains("<script>"));
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
}

#[tokio::test]
async fn maintenance_that_cannot_be_saved_is_not_applied() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    // The state directory's parent is a regular file: nothing can be written there.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "test-token-0123456789\n").unwrap();
    let f = Setup::new()
        .state_dir(blocker.join("state"))
        .admin("token_file", token_file.to_str().unwrap())
        .servers(&[&a, &b])
        .start_from(&dir.path().join("fulcrum.toml"))
        .await;
    let api = Api {
        base: format!("http://{}", f.admin),
        token: "test-token-0123456789".into(),
        c: client(),
    };
    let events = api
        .c
        .get(format!("{}/api/v1/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let (code, v) = api
        .maintenance("a", json!({"for": "10m", "reason": "disk"}))
        .await;
    assert_eq!(code, 500, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("cannot save state: "), "{msg}");
    let s = api.server("b", "a").await;
    assert_eq!(s["state"], "up", "{s}");
    assert!(s["maintenance_until"].is_null(), "{s}");
    // Still in rotation: requests reach it.
    let c = client();
    let url = format!("http://{}/", f.frontend("www"));
    eventually_async("server a still serves", Duration::from_secs(5), || {
        let (c, url, a) = (&c, &url, &a);
        async move {
            let _ = get(c, url).await;
            a.hits() > 0
        }
    })
    .await;
    // No maintenance_started was published: the next event is the reload's.
    let (code, v) = api
        .send(reqwest::Method::POST, "/api/v1/reload", None)
        .await;
    assert_eq!(code, 200, "{v}");
    let mut stream = events.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !text.contains("config_reloaded") {
            let chunk = stream.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no config_reloaded: {text}"));
    assert!(!text.contains("maintenance_started"), "{text}");
    // Ending a window that does not exist needs no save and answers as before.
    let (code, v) = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/backends/b/servers/a/maintenance",
            None,
        )
        .await;
    assert_eq!((code, &v["ended"]), (200, &json!(false)), "{v}");
}

//! Health checks that fit real apps: `host`, `headers`, `expect_body`, `port`, and agent
//! feedback (`fulcrum-agent: weight=N%` / `drain` / `ready` in a check's answer) with the
//! last value in status (`agent`). Real HTTP servers on 127.0.0.1 whose health answer the
//! test changes while fulcrum runs.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admin_common::Api;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a test app answers to its health path, and what it saw.
struct App {
    addr: SocketAddr,
    health_status: AtomicU16,
    health_body: Mutex<String>,
    agent: Mutex<Option<String>>,
    /// The headers of each health request, in order.
    checks: Mutex<Vec<http::HeaderMap>>,
    hits: AtomicU64,
}

impl App {
    async fn start() -> Arc<App> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = Arc::new(App {
            addr: listener.local_addr().unwrap(),
            health_status: AtomicU16::new(200),
            health_body: Mutex::new("ok".into()),
            agent: Mutex::new(None),
            checks: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
        });
        let a = Arc::clone(&app);
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let a = Arc::clone(&a);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let a = Arc::clone(&a);
                            async move { Ok::<_, Infallible>(a.answer(&req)) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        app
    }

    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/healthz" {
            self.hits.fetch_add(1, Ordering::SeqCst);
            return Response::new(Full::new(Bytes::from("data")));
        }
        self.checks.lock().unwrap().push(req.headers().clone());
        let body = self.health_body.lock().unwrap().clone();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() =
            http::StatusCode::from_u16(self.health_status.load(Ordering::SeqCst)).unwrap();
        if let Some(v) = self.agent.lock().unwrap().clone() {
            r.headers_mut().insert("fulcrum-agent", v.parse().unwrap());
        }
        r
    }

    fn set_agent(&self, v: Option<&str>) {
        *self.agent.lock().unwrap() = v.map(str::to_string);
    }

    fn last_check(&self) -> Option<http::HeaderMap> {
        self.checks.lock().unwrap().last().cloned()
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

fn state_of(f: &Fulcrum, name: &str) -> fulcrum::pool::ServerState {
    live_server(f, name).state()
}

#[tokio::test]
async fn host_and_headers_go_with_the_check() {
    let app = App::start().await;
    let mut headers = toml::Table::new();
    headers.insert("x-token".into(), "s3cret".into());
    headers.insert("user-agent".into(), "my-checker".into());
    let f = Setup::new()
        .backend("b", |b| {
            b.health(|h| h.set("host", "api.internal").set("headers", headers))
                .server_at("a", app.addr, |s| s)
        })
        .start()
        .await;
    eventually("a check", Duration::from_secs(5), || {
        app.last_check().is_some()
    })
    .await;
    let h = app.last_check().unwrap();
    assert_eq!(h["host"], "api.internal");
    assert_eq!(h["x-token"], "s3cret");
    assert_eq!(h["user-agent"], "my-checker");
    assert_eq!(h.get_all("user-agent").iter().count(), 1);
    f.shutdown().await;

    // By default the Host is the server's address as written.
    let app = App::start().await;
    let f = Setup::new()
        .backend("b", |b| b.server_at("a", app.addr, |s| s))
        .start()
        .await;
    eventually("a check", Duration::from_secs(5), || {
        app.last_check().is_some()
    })
    .await;
    assert_eq!(
        app.last_check().unwrap()["host"],
        app.addr.to_string().as_str()
    );
    f.shutdown().await;
}

#[tokio::test]
async fn expect_body_must_be_in_the_answer() {
    let app = App::start().await;
    *app.health_body.lock().unwrap() = "status: all good".into();
    let f = Setup::new()
        .backend("b", |b| {
            b.health(|h| h.set("expect_body", "all good"))
                .server_at("a", app.addr, |s| s)
        })
        .start()
        .await;
    use fulcrum::pool::Health::{Down, Up};
    let health = |f: &Fulcrum| live_server(f, "a").health();
    eventually("up", Duration::from_secs(5), || health(&f) == Up).await;
    // A 200 that says it is degraded fails the check.
    *app.health_body.lock().unwrap() = "status: degraded".into();
    eventually("down", Duration::from_secs(5), || health(&f) == Down).await;
    *app.health_body.lock().unwrap() = "status: all good".into();
    eventually("up again", Duration::from_secs(5), || health(&f) == Up).await;
    f.shutdown().await;
}

#[tokio::test]
async fn port_checks_another_port_of_the_server() {
    let data = App::start().await;
    data.health_status.store(503, Ordering::SeqCst);
    let mgmt = App::start().await;
    let port = i64::from(mgmt.addr.port());
    let f = Setup::new()
        .backend("b", |b| {
            b.health(|h| h.set("port", port))
                .server_at("a", data.addr, |s| s)
        })
        .start()
        .await;
    // The data port's own health path says 503; the management port's 200 counts.
    eventually("up", Duration::from_secs(5), || {
        state_of(&f, "a") == fulcrum::pool::ServerState::Up
    })
    .await;
    assert!(mgmt.last_check().is_some());
    assert!(data.last_check().is_none());
    let (status, body, _) = get(&client(), &format!("http://{}/x", f.frontend("www"))).await;
    assert_eq!((status, body.as_str()), (200, "data"));
    f.shutdown().await;
}

#[tokio::test]
async fn agent_feedback_sets_weight_drains_and_restores() {
    use fulcrum::pool::ServerState::{Draining, Up};
    let (a, b) = (App::start().await, App::start().await);
    let f = Setup::new()
        .backend("b", |be| {
            be.server_at("a", a.addr, |s| s)
                .server_at("b", b.addr, |s| s)
        })
        .start()
        .await;
    let api = Api::new(&f);
    eventually("both up", Duration::from_secs(5), || {
        state_of(&f, "a") == Up && state_of(&f, "b") == Up
    })
    .await;
    assert_eq!(api.server("b", "a").await["agent"], serde_json::Value::Null);
    let url = format!("http://{}/x", f.frontend("www"));
    let c = client();

    // weight=25%: a takes a quarter of its weight, so 1 request in 5.
    a.set_agent(Some("weight=25%"));
    eventually_async("agent seen", Duration::from_secs(5), || {
        let api = &api;
        async move { api.server("b", "a").await["agent"] == "weight=25%" }
    })
    .await;
    let before = a.hits();
    for _ in 0..100 {
        assert_eq!(get(&c, &url).await.0, 200);
    }
    let share = a.hits() - before;
    assert!((10..=30).contains(&share), "a took {share} of 100");

    // drain: no new requests; status says draining; announced as maintenance.
    let mut events = f.app.events().subscribe();
    a.set_agent(Some("drain"));
    let started = next_event(&mut events, fulcrum::events::EventKind::MaintenanceStarted).await;
    assert_eq!(started.server.as_deref(), Some("a"));
    assert!(
        started.detail.contains("drained by its agent"),
        "{}",
        started.detail
    );
    eventually("drained", Duration::from_secs(5), || {
        state_of(&f, "a") == Draining
    })
    .await;
    let s = api.server("b", "a").await;
    assert_eq!(
        (s["agent"].as_str(), s["state"].as_str()),
        (Some("drain"), Some("draining"))
    );
    let before = a.hits();
    for _ in 0..20 {
        assert_eq!(get(&c, &url).await.0, 200);
    }
    assert_eq!(a.hits(), before, "a drained server takes no new requests");

    // ready: back in rotation with its full weight.
    a.set_agent(Some("ready"));
    next_event(&mut events, fulcrum::events::EventKind::MaintenanceEnded).await;
    eventually("ready", Duration::from_secs(5), || state_of(&f, "a") == Up).await;
    assert_eq!(api.server("b", "a").await["agent"], "ready");
    let before = a.hits();
    for _ in 0..20 {
        assert_eq!(get(&c, &url).await.0, 200);
    }
    assert!(a.hits() - before >= 8, "a back to an even share");

    // No header: null again.
    a.set_agent(None);
    eventually_async("agent gone", Duration::from_secs(5), || {
        let api = &api;
        async move { api.server("b", "a").await["agent"].is_null() }
    })
    .await;
    f.shutdown().await;
}

/// The next event of `kind` (others are skipped), within 5 s.
async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<fulcrum::events::Event>,
    kind: fulcrum::events::EventKind,
) -> fulcrum::events::Event {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if e.event == kind => return e,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event"))
}

/// `fulcrum check`'s errors for a health table holding `health`: (key, message) each.
fn problems(health: &str) -> Vec<(String, String)> {
    let text = format!(
        "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
         [backends.b]\n[[backends.b.servers]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n\n\
         [backends.b.health]\n{health}\n"
    );
    match fulcrum::config::parse_str(&text, std::path::Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| (e.key, e.message)).collect(),
    }
}

#[test]
fn bad_health_settings_are_located_errors() {
    let p = problems("port = 70000");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "backends.b.health.port");
    let p = problems("headers = { \"bad name\" = \"x\" }");
    assert_eq!(p[0].0, "backends.b.health.headers");
    assert!(p[0].1.contains("not a header name"), "{p:?}");
    let p = problems("headers = { \"x-ok\" = \"a\\nb\" }");
    assert_eq!(p[0].0, "backends.b.health.headers.x-ok");
    assert!(problems("host = \"api.internal\"\nexpect_body = \"ok\"\nport = 8080").is_empty());
}

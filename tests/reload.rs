//! Hot reload over real sockets: a bad file is refused with the old configuration still
//! serving; servers added (traffic only after a passing check), removed (draining), reweighted
//! and kept (state preserved); a frontend moved to a new address; reloads under continuous
//! keep-alive load with no failed request; and SIGHUP on the real binary.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use admin_common::*;
use common::*;
use fulcrum::events::EventKind;
use reqwest::Method;
use serde_json::json;

/// A fulcrum started from a file on disk (so that reload has a file to re-read).
struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    f: Fulcrum,
    api: Api,
}

impl Rig {
    async fn start(setup: Setup) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.toml");
        let f = setup.start_from(&path).await;
        let api = Api::new(&f);
        Rig {
            _dir: dir,
            path,
            f,
            api,
        }
    }

    /// The configuration text of `setup`, with this rig's state_dir.
    fn text(&self, setup: Setup) -> String {
        setup.state_dir(self.f.state_dir()).toml()
    }

    /// Writes `text` and asks for a reload through the API.
    async fn reload(&self, text: &str) -> (u16, serde_json::Value) {
        std::fs::write(&self.path, text).unwrap();
        self.api.send(Method::POST, "/api/v1/reload", None).await
    }

    async fn reload_ok(&self, text: &str) {
        let (code, body) = self.reload(text).await;
        assert_eq!((code, &body), (200, &json!({"ok": true})));
    }

    async fn url(&self, path: &str) -> String {
        let addrs = self.f.app.frontend_addrs().await;
        format!("http://{}{path}", addrs["www"])
    }
}

/// Sends `n` requests (one connection each) and asserts each is answered 200.
async fn send_ok(url: &str, n: usize) {
    let c = client();
    for _ in 0..n {
        let (code, body, _) = get(&c, url).await;
        assert_eq!(code, 200, "{body}");
    }
}

/// Names of the servers the status API lists for backend `b`.
async fn listed(api: &Api) -> Vec<String> {
    api.status().await["backends"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The next event of `kind` on `rx`, within 5 s.
async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<fulcrum::events::Event>,
    kind: EventKind,
) -> fulcrum::events::Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(e)) if e.event == kind => return e,
            Ok(Ok(_)) => {}
            other => panic!("no {kind:?} event: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_old_configuration_serves_on() {
    let a = TestServer::start("a").await;
    let rig = Rig::start(Setup::new().servers(&[&a])).await;
    let mut events = rig.f.app.events().subscribe();
    let good = std::fs::read_to_string(&rig.path).unwrap();
    // A valid TOML file with an invalid value: the error names file, line and key.
    let bad = good.replace("name = \"a\"", "name = \"a\"\nweight = \"heavy\"");
    let (code, body) = rig.reload(&bad).await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("fulcrum.toml:"), "{error}");
    assert!(error.contains("weight"), "{error}");
    let e = next_event(&mut events, EventKind::ConfigRejected).await;
    assert!(e.detail.contains("weight"), "{}", e.detail);
    // Not even TOML.
    let (code, body) = rig.reload("[[frontends\n").await;
    assert_eq!(code, 400, "{body}");
    next_event(&mut events, EventKind::ConfigRejected).await;
    send_ok(&rig.url("/").await, 3).await;
    assert_eq!(listed(&rig.api).await, ["a"]);
    // A valid file afterwards applies.
    let b = TestServer::start("b").await;
    rig.reload_ok(&rig.text(Setup::new().servers(&[&a, &b])))
        .await;
    let e = next_event(&mut events, EventKind::ConfigReloaded).await;
    assert!(e.detail.contains("servers added: b/b"), "{}", e.detail);
}

#[tokio::test]
async fn an_added_server_takes_traffic_only_after_a_passing_check() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    b.set_healthy(false);
    let rig = Rig::start(
        Setup::new()
            .backend("b", |be| be.slow_start("0s"))
            .servers(&[&a]),
    )
    .await;
    rig.reload_ok(
        &rig.text(
            Setup::new()
                .backend("b", |be| be.slow_start("0s"))
                .servers(&[&a, &b]),
        ),
    )
    .await;
    // The reload answered after b's first check, which failed.
    assert_eq!(rig.api.server("b", "b").await["state"], "down");
    let url = rig.url("/").await;
    send_ok(&url, 20).await;
    assert_eq!(b.hits(), 0, "an unchecked or failing server got traffic");
    b.set_healthy(true);
    let c = client();
    eventually_async("b to take traffic", Duration::from_secs(5), || async {
        let (code, _, _) = get(&c, &url).await;
        assert_eq!(code, 200);
        b.hits() > 0
    })
    .await;
}

#[tokio::test]
async fn a_removed_server_drains_its_in_flight_request_then_gets_nothing() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    b.set_delay(Duration::from_millis(800));
    let rig = Rig::start(Setup::new().servers(&[&a, &b])).await;
    let url = rig.url("/").await;
    // Round robin: of two concurrent requests one lands on b and stays in flight there.
    let slow = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = client();
            let (x, y) = tokio::join!(get(&c, &url), get(&c, &url));
            vec![(x.0, x.1), (y.0, y.1)]
        })
    };
    eventually("a request in flight on b", Duration::from_secs(5), || {
        b.state.active.load(Ordering::SeqCst) == 1
    })
    .await;
    rig.reload_ok(&rig.text(Setup::new().servers(&[&a]))).await;
    assert_eq!(listed(&rig.api).await, ["a"]);
    let answers = slow.await.unwrap();
    assert!(answers.contains(&(200, "b".to_string())), "{answers:?}");
    let before = b.hits();
    send_ok(&url, 10).await;
    assert_eq!(b.hits(), before, "a removed server got new traffic");
}

#[tokio::test]
async fn weights_follow_the_file_only_where_the_file_changed_them() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let rig = Rig::start(Setup::new().servers(&[&a, &b])).await;
    // A weight set at run time...
    let (code, body) = rig
        .api
        .send(
            Method::PUT,
            "/api/v1/backends/b/servers/a/weight",
            Some(json!({"weight": 5})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // ...survives a reload that leaves a's configured weight alone but changes b's.
    rig.reload_ok(&rig.text(Setup::new().servers(&[&a]).server(&b, |s| s.weight(3))))
        .await;
    assert_eq!(rig.api.server("b", "a").await["weight"], 5);
    assert_eq!(rig.api.server("b", "b").await["weight"], 3);
    // Writing the default out is no change; a changed configured weight wins.
    rig.reload_ok(
        &rig.text(
            Setup::new()
                .server(&a, |s| s.weight(1))
                .server(&b, |s| s.weight(3)),
        ),
    )
    .await;
    assert_eq!(rig.api.server("b", "a").await["weight"], 5);
    rig.reload_ok(
        &rig.text(
            Setup::new()
                .server(&a, |s| s.weight(2))
                .server(&b, |s| s.weight(6)),
        ),
    )
    .await;
    assert_eq!(rig.api.server("b", "a").await["weight"], 2);
    let (a0, b0) = (a.hits(), b.hits());
    send_ok(&rig.url("/").await, 40).await;
    let (da, db) = (a.hits() - a0, b.hits() - b0);
    assert!(db >= 2 * da && da > 0, "weights 2:6 gave a={da} b={db}");
}

#[tokio::test]
async fn a_frontend_moved_to_a_new_address_binds_it_before_the_old_one_closes() {
    let a = TestServer::start("a").await;
    let rig = Rig::start(Setup::new().servers(&[&a])).await;
    let old = rig.f.frontend("www");
    // A keep-alive connection opened before the reload.
    let mut conn = RawConn::connect(old).await;
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    let port = closed_port().port();
    let text = rig.text(
        Setup::new()
            .frontend(|f| f.bind(format!("127.0.0.1:{port}")))
            .servers(&[&a]),
    );
    rig.reload_ok(&text).await;
    let new = rig.f.app.frontend_addrs().await["www"];
    assert_eq!(new.port(), port);
    send_ok(&format!("http://{new}/"), 3).await;
    wait_refused(old).await;
    // The connection accepted on the old address is still served.
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let r = conn.read_response().await.unwrap();
    assert_eq!((r.status, r.text()), (200, "a".to_string()));
}

#[tokio::test]
async fn servers_that_stay_keep_health_counters_and_maintenance() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    let rig = Rig::start(Setup::new().servers(&[&a, &b])).await;
    send_ok(&rig.url("/").await, 6).await;
    let (code, body) = rig
        .api
        .maintenance("b", json!({"for": "10m", "reason": "disk swap"}))
        .await;
    assert_eq!(code, 200, "{body}");
    let before_a = live_server(&rig.f, "a");
    let a_total = rig.api.server("b", "a").await["requests_total"].clone();
    let b_total = rig.api.server("b", "b").await["requests_total"].clone();
    assert_eq!(a_total, 3);
    rig.reload_ok(
        &rig.text(
            Setup::new()
                .backend("b", |be| be.connect_timeout("1s"))
                .servers(&[&a, &b, &c]),
        ),
    )
    .await;
    assert!(Arc::ptr_eq(&before_a, &live_server(&rig.f, "a")));
    let sb = rig.api.server("b", "b").await;
    assert_eq!(sb["state"], "maintenance");
    assert_eq!(sb["maintenance_reason"], "disk swap");
    assert_eq!(sb["requests_total"], b_total);
    let sa = rig.api.server("b", "a").await;
    assert_eq!(
        (sa["state"].clone(), sa["requests_total"].clone()),
        (json!("up"), a_total)
    );
    let b_hits = b.hits();
    send_ok(&rig.url("/").await, 6).await;
    assert_eq!(
        b.hits(),
        b_hits,
        "a server in maintenance got traffic after a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_continuous_load_fail_no_request() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    for s in [&a, &b, &c] {
        s.set_delay(Duration::from_millis(2));
    }
    let rig = Rig::start(Setup::new().servers(&[&a, &b])).await;
    let one = rig.text(Setup::new().servers(&[&a, &b]));
    let two = rig.text(
        Setup::new()
            .server(&a, |s| s.weight(2))
            .server(&b, |s| s.weight(3))
            .servers(&[&c]),
    );
    let url = rig.url("/").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, stop, done) = (url.clone(), Arc::clone(&stop), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client, reused for every request.
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut failures = Vec::new();
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(_) => {}
                        Err(e) => failures.push(format!("body: {e}")),
                    },
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    for i in 0..6 {
        // Let traffic flow between reloads.
        let at = done.load(Ordering::SeqCst);
        eventually("requests between reloads", Duration::from_secs(10), || {
            done.load(Ordering::SeqCst) >= at + 50
        })
        .await;
        rig.reload_ok(if i % 2 == 0 { &two } else { &one }).await;
    }
    let at = done.load(Ordering::SeqCst);
    eventually(
        "requests after the last reload",
        Duration::from_secs(10),
        || done.load(Ordering::SeqCst) >= at + 50,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for t in clients {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(c.hits() > 0, "the added server never served");
    assert_eq!(listed(&rig.api).await, ["a", "b"]);
}

/// A port free right now (bound and released).
fn free_port() -> u16 {
    closed_port().port()
}

/// The binary's configuration: frontend and admin on fixed ports, state in `state`.
fn binary_config(state: &Path, front: u16, admin: u16, servers: &[&TestServer]) -> String {
    Setup::new()
        .state_dir(state)
        .admin("bind", format!("127.0.0.1:{admin}"))
        .frontend(|f| f.bind(format!("127.0.0.1:{front}")))
        .servers(servers)
        .toml()
}

/// Sends `signal` (e.g. `-HUP`) to `pid` with kill(1).
fn kill(signal: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid} failed");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = dir.path().join("fulcrum.toml");
    // Fixed ports picked free; a collision with another process is retried.
    let mut attempt = 0;
    let (mut child, front, admin) = loop {
        attempt += 1;
        let (front, admin) = (free_port(), free_port());
        std::fs::write(&path, binary_config(&state, front, admin, &[&a])).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(["run", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let c = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let up = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false;
            }
            if let Ok(r) = c
                .get(format!("http://127.0.0.1:{admin}/healthz"))
                .send()
                .await
                && r.status() == 200
            {
                break true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fulcrum did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if up {
            break (child, front, admin);
        }
        let _ = child.kill();
        assert!(attempt < 5, "fulcrum could not bind its ports");
    };
    let api = Api {
        base: format!("http://127.0.0.1:{admin}"),
        token: token(&state),
        c: client(),
    };
    assert_eq!(listed(&api).await, ["a"]);
    // Same ports, one more server.
    std::fs::write(&path, binary_config(&state, front, admin, &[&a, &b])).unwrap();
    kill("-HUP", child.id());
    eventually_async("the reload to add b", Duration::from_secs(10), || async {
        listed(&api).await == ["a", "b"]
    })
    .await;
    kill("-TERM", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fulcrum did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_mode_change_restarts_the_frontend_on_the_same_socket() {
    let a = TestServer::start("a").await;
    let rig = Rig::start(Setup::new().servers(&[&a])).await;
    let addr = rig.f.frontend("www");
    let mut conn = RawConn::connect(addr).await;
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    assert!(a.last_headers().contains_key("x-forwarded-for"));
    let text = rig.text(Setup::new().frontend(|f| f.mode_tcp()).servers(&[&a]));
    rig.reload_ok(&text).await;
    assert_eq!(rig.f.app.frontend_addrs().await["www"], addr);
    // A new connection is relayed as bytes: fulcrum adds no forwarding header.
    let r = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.text()), (200, "a".to_string()));
    assert!(!a.last_headers().contains_key("x-forwarded-for"));
    // The HTTP connection from before is still served.
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.read_response().await.unwrap().status, 200);
}

#[tokio::test]
async fn a_frontend_moved_to_a_new_backend_never_answers_503() {
    let a = TestServer::start("a").await;
    let c = TestServer::start("c").await;
    let rig = Rig::start(Setup::new().servers(&[&a])).await;
    let text = rig.text(
        Setup::new()
            .frontend(|f| f.backend("c"))
            .servers(&[&a])
            .backend("c", |be| be.servers(&[&c])),
    );
    let mut events = rig.f.app.events().subscribe();
    rig.reload_ok(&text).await;
    let e = next_event(&mut events, EventKind::ConfigReloaded).await;
    assert!(e.detail.contains("backends added: c"), "{}", e.detail);
    // The new backend's server was checked before the frontend pointed at it.
    let url = rig.url("/").await;
    let client = client();
    for _ in 0..5 {
        let (code, body, _) = get(&client, &url).await;
        assert_eq!((code, body.as_str()), (200, "c"));
    }
}

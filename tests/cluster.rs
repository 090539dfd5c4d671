//! `[cluster]` against a real etcd (Debian's `etcd-server`, started by each test on free
//! loopback ports): several real fulcrum instances in one process share maintenance and
//! weights, one leader sends the alerts, members see each other come and go, and an etcd
//! outage neither fails a request nor lets a change through.
#[path = "common/admin.rs"]
mod admin_common;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use admin_common::*;
use bytes::Bytes;
use common::*;
use etcd::{Etcd, Link};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PREFIX: &str = "/fulcrum-test";

/// A webhook receiver: every JSON body it gets goes to the channel.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
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
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let _ = tx.send(v);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), rx)
}

/// One instance of the cluster in front of `servers`, alerting `hook` when given.
fn member(etcd: &Etcd, name: &str, servers: &[&TestServer], hook: Option<&str>) -> Setup {
    let mut s = Setup::new()
        .servers(servers)
        .backend("b", |b| b.min_healthy(1))
        .cluster(&etcd.endpoints(), PREFIX, name);
    if let Some(url) = hook {
        s = s.alerts(|a| a.set("remind_every", "1h").webhook(url, |w| w));
    }
    s
}

/// The state of server `s` as instance `api` sees it.
async fn state(api: &Api, s: &str) -> String {
    api.server("b", s).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn cluster(api: &Api) -> Value {
    let (code, v) = api
        .send(reqwest::Method::GET, "/api/v1/cluster", None)
        .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Waits until every instance sees `n` members and agrees on one leader; returns its name.
async fn settled(apis: &[&Api], n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut leaders = Vec::new();
        let mut ok = true;
        for a in apis {
            let v = cluster(a).await;
            ok &= v["instances"].as_array().unwrap().len() == n;
            leaders.push(v["leader"].as_str().unwrap_or("").to_string());
        }
        if ok && !leaders[0].is_empty() && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects the events named `name` the webhook gets within `within`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    name: &str,
    within: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if v["event"] == name {
            out.push(v);
        }
    }
    out
}

/// Waits for the first event named `name`, then for any copy of it for `quiet` more.
async fn exactly_one(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    name: &str,
    first: Duration,
    quiet: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + first;
    let one = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if v["event"] == name => break v,
            Ok(Some(_)) => continue,
            _ => panic!("no {name} alert within {first:?}"),
        }
    };
    let more = collect(rx, name, quiet).await;
    assert!(
        more.is_empty(),
        "{name} was sent more than once: {one} then {more:?}"
    );
    one
}

async fn events_total(api: &Api, name: &str) -> u64 {
    let text = api.metrics().await;
    let needle = format!("fulcrum_events_total{{event=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_set_on_one_is_obeyed_by_all_and_expires_once_with_one_alert() {
    let etcd = Etcd::start().await;
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let (hook, mut rx) = receiver().await;
    let mut fs = Vec::new();
    for name in ["one", "two", "three"] {
        fs.push(member(&etcd, name, &[&a, &b], Some(&hook)).start().await);
    }
    let apis: Vec<Api> = fs.iter().map(Api::new).collect();
    settled(&apis.iter().collect::<Vec<_>>(), 3).await;

    let asked = Instant::now();
    let (code, v) = apis[1]
        .maintenance("a", json!({"for": "2s", "reason": "kernel"}))
        .await;
    assert_eq!(code, 200, "{v}");
    for api in &apis {
        eventually_async(
            "every instance obeys the window",
            Duration::from_secs(1),
            || async { state(api, "a").await == "maintenance" },
        )
        .await;
    }
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // No traffic reaches the server in maintenance through any instance.
    let before = a.hits();
    let c = client();
    for f in &fs {
        for _ in 0..4 {
            let (code, body, _) = get(&c, &format!("http://{}/", f.frontend("www"))).await;
            assert_eq!((code, body.as_str()), (200, "b"));
        }
    }
    assert_eq!(a.hits(), before);

    let started = exactly_one(
        &mut rx,
        "maintenance_started",
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    assert!(
        started["detail"].as_str().unwrap().contains("kernel"),
        "{started}"
    );
    let expired = exactly_one(
        &mut rx,
        "maintenance_expired",
        Duration::from_secs(6),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        (expired["backend"].as_str(), expired["server"].as_str()),
        (Some("b"), Some("a"))
    );
    for api in &apis {
        eventually_async(
            "every instance puts it back",
            Duration::from_secs(2),
            || async { state(api, "a").await != "maintenance" },
        )
        .await;
    }
    assert!(
        collect(&mut rx, "maintenance_started", Duration::ZERO)
            .await
            .is_empty()
    );

    // A weight set on one is the weight everywhere.
    let (code, v) = apis[2]
        .send(
            reqwest::Method::PUT,
            "/api/v1/backends/b/servers/b/weight",
            Some(json!({"weight": 7})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    for api in &apis {
        eventually_async(
            "every instance has the weight",
            Duration::from_secs(1),
            || async { api.server("b", "b").await["weight"] == 7 },
        )
        .await;
    }
    // The members see each other, the metric says how many.
    let v = cluster(&apis[0]).await;
    let names: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "three", "two"]);
    assert_eq!(v["instances"][0]["healthy_primaries"]["b"], 2);
    assert!(
        v["instances"][0]["admin"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        apis[0]
            .metrics()
            .await
            .contains("fulcrum_cluster_instances 3")
    );
    for f in fs {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_stops_and_another_takes_over_and_says_so() {
    let etcd = Etcd::start().await;
    let a = TestServer::start("a").await;
    let (hook, mut rx) = receiver().await;
    let mut fs = vec![
        member(&etcd, "left", &[&a], Some(&hook)).start().await,
        member(&etcd, "right", &[&a], Some(&hook)).start().await,
    ];
    let apis: Vec<Api> = fs.iter().map(Api::new).collect();
    let leader = settled(&apis.iter().collect::<Vec<_>>(), 2).await;
    let i = usize::from(leader == "right");
    let other = 1 - i;
    let dead = fs.remove(i);
    let stopped = Instant::now();
    dead.shutdown().await;
    let survivor = &apis[other];
    eventually_async("the survivor leads", Duration::from_secs(5), || async {
        let v = cluster(survivor).await;
        v["leader"].as_str() != Some(&leader)
            && v["leader"].is_string()
            && v["instances"].as_array().unwrap().len() == 1
    })
    .await;
    assert!(stopped.elapsed() < fulcrum::cluster::LEASE_TTL + Duration::from_secs(2));
    let down = exactly_one(
        &mut rx,
        "instance_down",
        Duration::from_secs(5),
        Duration::from_secs(1),
    )
    .await;
    assert!(down["detail"].as_str().unwrap().contains(&leader), "{down}");
    // The new leader speaks: a window set now is announced (once).
    let (code, _) = survivor.maintenance("a", json!({"for": "1m"})).await;
    assert_eq!(code, 200);
    exactly_one(
        &mut rx,
        "maintenance_started",
        Duration::from_secs(3),
        Duration::from_millis(500),
    )
    .await;
    fs.remove(0).shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_etcd_is_replaced_within_the_lease_and_reported_down() {
    let etcd = Etcd::start().await;
    let a = TestServer::start("a").await;
    let (hook, mut rx) = receiver().await;
    // Each instance reaches etcd through a link the test can cut: to the other, an
    // instance whose link is cut has died.
    let links = [Link::to(etcd.client).await, Link::to(etcd.client).await];
    let mut fs = Vec::new();
    for (name, link) in ["first", "second"].iter().zip(&links) {
        let f = Setup::new()
            .servers(&[&a])
            .backend("b", |b| b.min_healthy(1))
            .cluster(&link.endpoints(), PREFIX, name)
            .alerts(|al| al.set("remind_every", "1h").webhook(&hook, |w| w))
            .start()
            .await;
        fs.push(f);
    }
    let apis: Vec<Api> = fs.iter().map(Api::new).collect();
    let leader = settled(&[&apis[0], &apis[1]], 2).await;
    let (dead, alive) = if leader == "first" { (0, 1) } else { (1, 0) };
    let survivor = ["first", "second"][alive];

    // An alert left in the outbox is sent once by the leader, then marked sent.
    let mut kv = etcd.client().await;
    let entry = json!({"event": "config_reloaded", "backend": null, "server": null,
                       "at": "2025-06-01T14:00:00Z", "detail": "left in the outbox"});
    kv.put(format!("{PREFIX}/outbox/test-1"), entry.to_string(), None)
        .await
        .unwrap();
    let sent = exactly_one(
        &mut rx,
        "config_reloaded",
        Duration::from_secs(3),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(sent["detail"], "left in the outbox");
    let left = kv
        .get(format!("{PREFIX}/outbox/test-1"), None)
        .await
        .unwrap();
    assert!(left.kvs().is_empty());
    let mark = kv.get(format!("{PREFIX}/sent/test-1"), None).await.unwrap();
    assert_eq!(mark.kvs().len(), 1);

    let cut = Instant::now();
    links[dead].cut();
    eventually_async(
        "the survivor leads",
        fulcrum::cluster::LEASE_TTL + Duration::from_secs(6),
        || async {
            let v = cluster(&apis[alive]).await;
            v["leader"] == survivor && v["instances"].as_array().unwrap().len() == 1
        },
    )
    .await;
    assert!(
        cut.elapsed() < fulcrum::cluster::LEASE_TTL + Duration::from_secs(6),
        "{:?}",
        cut.elapsed()
    );
    let down = exactly_one(
        &mut rx,
        "instance_down",
        Duration::from_secs(3),
        Duration::from_secs(1),
    )
    .await;
    assert!(down["detail"].as_str().unwrap().contains(&leader), "{down}");
    // The cut-off instance serves on, refuses changes and said once that it lost etcd.
    assert_eq!(cluster(&apis[dead]).await["store"], "unreachable");
    assert_eq!(
        apis[dead].maintenance("a", json!({"for": "1m"})).await.0,
        503
    );
    let (code, _, _) = get(&client(), &format!("http://{}/", fs[dead].frontend("www"))).await;
    assert_eq!(code, 200);
    assert_eq!(events_total(&apis[dead], "cluster_unavailable").await, 1);
    for f in fs {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_outage_fails_no_request_refuses_changes_and_converges_after() {
    let mut etcd = Etcd::start().await;
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let fs = [
        member(&etcd, "x", &[&a, &b], None).start().await,
        member(&etcd, "y", &[&a, &b], None).start().await,
    ];
    let apis: Vec<Api> = fs.iter().map(Api::new).collect();
    settled(&apis.iter().collect::<Vec<_>>(), 2).await;

    // Traffic through both instances for the whole outage.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for f in &fs {
        let (url, stop, ok, failed) = (
            format!("http://{}/", f.frontend("www")),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    etcd.stop();
    for api in &apis {
        eventually_async(
            "the instance notices etcd is gone",
            Duration::from_secs(5),
            || async { cluster(api).await["store"] == "unreachable" },
        )
        .await;
    }
    let (code, v) = apis[0].maintenance("a", json!({"for": "10m"})).await;
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("cluster store unreachable: "),
        "{v}"
    );
    let (code, _) = apis[1]
        .send(
            reqwest::Method::PUT,
            "/api/v1/backends/b/servers/a/weight",
            Some(json!({"weight": 5})),
        )
        .await;
    assert_eq!(code, 503);
    let (code, _) = apis[1]
        .send(
            reqwest::Method::DELETE,
            "/api/v1/backends/b/servers/a/maintenance",
            None,
        )
        .await;
    assert_eq!(code, 503);
    for api in &apis {
        let s = api.server("b", "a").await;
        assert_eq!(
            (s["state"].as_str(), s["weight"].as_u64()),
            (Some("up"), Some(1)),
            "nothing changed"
        );
    }

    etcd.resume().await;
    eventually_async(
        "a change is accepted again",
        Duration::from_secs(10),
        || async { apis[0].maintenance("a", json!({"for": "10m"})).await.0 == 200 },
    )
    .await;
    let asked = Instant::now();
    eventually_async(
        "the other instance obeys it",
        Duration::from_secs(1),
        || async { state(&apis[1], "a").await == "maintenance" },
    )
    .await;
    assert!(asked.elapsed() < Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} ok",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    for api in &apis {
        assert_eq!(events_total(api, "cluster_unavailable").await, 1);
        assert_eq!(events_total(api, "cluster_restored").await, 1);
    }
    for f in fs {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_at_start_serves_alone_and_joins_when_it_answers() {
    let mut etcd = Etcd::start().await;
    etcd.stop();
    let a = TestServer::start("a").await;
    let f = member(&etcd, "alone", &[&a], None).start().await;
    let api = Api::new(&f);
    let (code, body, _) = get(&client(), &format!("http://{}/", f.frontend("www"))).await;
    assert_eq!((code, body.as_str()), (200, "a"));
    assert_eq!(cluster(&api).await["store"], "unreachable");
    assert_eq!(api.maintenance("a", json!({"for": "1m"})).await.0, 503);
    etcd.resume().await;
    eventually_async("it joins", Duration::from_secs(10), || async {
        cluster(&api).await["store"] == "reachable"
    })
    .await;
    assert_eq!(api.maintenance("a", json!({"for": "1m"})).await.0, 200);
    assert_eq!(events_total(&api, "cluster_unavailable").await, 1);
    assert_eq!(events_total(&api, "cluster_restored").await, 1);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_under_the_prefix_are_ignored() {
    let etcd = Etcd::start().await;
    let mut kv = etcd.client().await;
    // Present before the instance starts (the snapshot) ...
    kv.put(format!("{PREFIX}/maintenance/b/a"), "not json", None)
        .await
        .unwrap();
    kv.put(format!("{PREFIX}/instances/ghost"), "{", None)
        .await
        .unwrap();
    let a = TestServer::start("a").await;
    let f = member(&etcd, "m", &[&a], None).start().await;
    let api = Api::new(&f);
    settled(&[&api], 1).await;
    // ... and while it watches.
    kv.put(format!("{PREFIX}/weight/b/a"), r#"{"weight":-3}"#, None)
        .await
        .unwrap();
    kv.put(
        format!("{PREFIX}/maintenance/b/a"),
        r#"{"since":"x"}"#,
        None,
    )
    .await
    .unwrap();
    kv.put(format!("{PREFIX}/outbox/junk"), "[]", None)
        .await
        .unwrap();
    // A good value after the bad ones still applies: the watch survived them.
    kv.put(format!("{PREFIX}/weight/b/a"), r#"{"weight":4}"#, None)
        .await
        .unwrap();
    eventually_async(
        "the good weight applies",
        Duration::from_secs(2),
        || async { api.server("b", "a").await["weight"] == 4 },
    )
    .await;
    assert_eq!(state(&api, "a").await, "up");
    assert_eq!(
        cluster(&api).await["instances"].as_array().unwrap().len(),
        1
    );
    f.shutdown().await;
}

#[tokio::test]
async fn without_cluster_there_is_no_cluster_endpoint() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let (code, v) = Api::new(&f)
        .send(reqwest::Method::GET, "/api/v1/cluster", None)
        .await;
    assert_eq!(code, 404, "{v}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cluster_prints_the_members_and_a_split_view() {
    let etcd = Etcd::start().await;
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("one.toml"), dir.path().join("two.toml"));
    // Instance one reaches server a at an address where nothing listens: it sees a down,
    // instance two sees it up.
    let f1 = Setup::new()
        .admin("bind", closed_port().to_string())
        .server_at("a", closed_port(), |s| s)
        .server(&b, |s| s)
        .backend("b", |b| b.min_healthy(1))
        .cluster(&etcd.endpoints(), PREFIX, "one")
        .start_from(&p1)
        .await;
    let f2 = member(&etcd, "two", &[&a, &b], None)
        .admin("bind", closed_port().to_string())
        .start_from(&p2)
        .await;
    let (api1, api2) = (Api::new(&f1), Api::new(&f2));
    settled(&[&api1, &api2], 2).await;
    eventually_async("the split is visible", Duration::from_secs(3), || async {
        let out = fulcrum::ctl::run(&p2, &fulcrum::ctl::Action::Cluster)
            .await
            .unwrap();
        out.contains("split view: b/a is down on one and up on two")
    })
    .await;
    let out = fulcrum::ctl::run(&p1, &fulcrum::ctl::Action::Cluster)
        .await
        .unwrap();
    assert!(out.starts_with("INSTANCE"), "{out}");
    assert!(
        out.contains("one") && out.contains("two") && out.contains("leader"),
        "{out}"
    );
    f1.shutdown().await;
    f2.shutdown().await;
}

#[test]
fn cluster_settings_are_checked_with_file_line_and_key() {
    let base = "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
                [[backends.b.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
    let good = format!("{base}[cluster]\netcd = [\"http://10.0.0.5:2379\"]\ninstance = \"lb-1\"\n");
    let cfg = fulcrum::config::parse_str(&good, std::path::Path::new("c.toml")).unwrap();
    let c = cfg.cluster.unwrap();
    assert_eq!(
        (c.prefix.as_str(), c.instance.as_str()),
        ("/fulcrum", "lb-1")
    );
    let bad = format!(
        "{base}[cluster]\netcd = [\"10.0.0.5\"]\nprefix = \"fulcrum/\"\ninstance = \"a/b\"\n"
    );
    let e = fulcrum::config::parse_str(&bad, std::path::Path::new("c.toml")).unwrap_err();
    let keys: Vec<(&str, usize)> = e.0.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [
            ("cluster.etcd[0]", 9),
            ("cluster.prefix", 10),
            ("cluster.instance", 11)
        ],
        "{e}"
    );
    let unknown = format!("{base}[cluster]\nlease = \"3s\"\n");
    assert!(fulcrum::config::parse_str(&unknown, std::path::Path::new("c.toml")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_instance_brings_its_saved_windows_into_an_empty_cluster() {
    let etcd = Etcd::start().await;
    let a = TestServer::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let until =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(600));
    let saved = json!({"version": 1, "maintenance": [{"backend": "b", "server": "a",
        "since": "2025-01-01T00:00:00Z", "until": until.to_string(), "reason": "before the cluster"}]});
    std::fs::write(dir.path().join("maintenance.json"), saved.to_string()).unwrap();
    let first = member(&etcd, "first", &[&a], None)
        .state_dir(dir.path())
        .start()
        .await;
    let second = member(&etcd, "second", &[&a], None).start().await;
    let api2 = Api::new(&second);
    eventually_async(
        "the second instance has the window",
        Duration::from_secs(3),
        || async { api2.server("b", "a").await["maintenance_reason"] == "before the cluster" },
    )
    .await;
    assert_eq!(state(&Api::new(&first), "a").await, "maintenance");
    first.shutdown().await;
    second.shutdown().await;
}

//! How long a maintenance call on one instance takes to be obeyed by every instance of a
//! `[cluster]`: a real etcd (Debian's `etcd-server`) on free loopback ports with a temporary
//! data directory, three real fulcrum instances in this process, one TCP server behind them.
//! Each round POSTs a window to instance one's admin API and times, from the moment the call
//! is sent, until the server is out of rotation on the last instance (read from the live
//! server state, polled every 200 µs); then it DELETEs the window and waits for every
//! instance to put it back. Prints p50, p99 and max over ROUNDS (default 100).
//!
//! `cargo run --release --example cluster-propagation` (bench/README.md has the figures).
//! Bounded: every wait gives up after 10 s, etcd is killed by PID at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let (client, peer) = (free(), free());
    let (client_url, peer_url) = (format!("http://{client}"), format!("http://{peer}"));
    let mut etcd = Command::new("etcd")
        .args(["--name", "b", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("b={peer_url}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcd (apt-get install etcd-server): {e}"));
    until("etcd", || std::net::TcpStream::connect(client).is_ok()).await;

    // The server behind the instances: accepts TCP and closes (health kind = "tcp").
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let backend_addr = backend.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { while backend.accept().await.is_ok() {} });

    let mut instances = Vec::new();
    for name in ["one", "two", "three"] {
        let state = dir.path().join(name);
        let text = format!(
            "[global]\nstate_dir = {state:?}\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\naccess_log = false\n\
             [backends.b]\nmin_healthy = 1\n[backends.b.health]\nkind = \"tcp\"\ninterval = \"1s\"\n\
             [[backends.b.servers]]\nname = \"a\"\naddress = \"{backend_addr}\"\n\
             [cluster]\netcd = [\"{client_url}\"]\nprefix = \"/bench\"\ninstance = \"{name}\"\n"
        );
        let cfg = fulcrum::config::parse_str(&text, Path::new("bench.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let running = fulcrum::runtime::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let token = std::fs::read_to_string(state.join("admin.token")).unwrap_or_default();
        instances.push((running, token.trim().to_string()));
    }
    let servers: Vec<_> = instances
        .iter()
        .map(|(r, _)| {
            r.app
                .backend("b")
                .and_then(|b| b.server("a"))
                .unwrap_or_else(|| panic!("no server"))
        })
        .collect();
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/api/v1/backends/b/servers/a/maintenance",
        instances[0].0.admin
    );
    let token = instances[0].1.clone();
    // Every instance must be in the cluster before the first round.
    until("three members", || {
        instances.iter().all(|(r, _)| {
            r.app
                .cluster()
                .is_some_and(|c| c.view().instances.len() == 3)
        })
    })
    .await;

    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let sent = Instant::now();
        let call = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"for":"10m","reason":"bench"}"#)
            .send();
        let resp = call.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        until("every instance obeys", || {
            servers.iter().all(|s| s.maintenance.is_on())
        })
        .await;
        times.push(sent.elapsed());
        let resp = http
            .delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        until("every instance puts it back", || {
            servers.iter().all(|s| !s.maintenance.is_on())
        })
        .await;
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "maintenance call on one instance -> obeyed by all 3, over {rounds} calls: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    for (r, _) in instances {
        r.shutdown().await;
    }
    let _ = etcd.kill();
    let _ = etcd.wait();
}

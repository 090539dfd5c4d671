//! A full fd table (issue 14, point 4), on the real binary: `fulcrum run` started by
//! `sh -c 'ulimit -n 256; exec fulcrum run -c FILE'`, 300 idle clients against it.
//!
//! fulcrum must lower its client limit to what 256 fds hold (and say so at start, in
//! `check` and in the status), so that health checks keep passing and the admin API keeps
//! answering while clients fill their share; once the clients leave, a request is served at
//! once. A soft limit under the hard one is raised at start.
//!
//! The servers are [`TestServer`]s of this process; the fulcrum's ports are fixed free
//! ports written in its file.

#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `fulcrum run` child under a shell `ulimit`; killed when dropped.
struct Limited {
    child: Child,
    log: PathBuf,
    admin: String,
    www: String,
    state: PathBuf,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    /// Writes `setup` (with fixed ports) to `dir` and starts `fulcrum run` after `ulimit`.
    async fn start(dir: &Path, setup: Setup, ulimit: &str) -> Limited {
        let (admin, www) = (free_port(), free_port());
        let setup = setup
            .state_dir(dir.join("state"))
            .admin("bind", format!("127.0.0.1:{admin}"))
            .frontend(|f| {
                f.bind(format!("127.0.0.1:{www}"))
                    .client_header_timeout("60s")
                    .client_idle_timeout("60s")
            });
        let state = setup.state_path();
        let path = dir.join("fulcrum.toml");
        std::fs::write(&path, setup.toml()).unwrap();
        let log = dir.join("fulcrum.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" run -c \"$1\""))
            .arg(BIN)
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let mut f = Limited {
            child,
            log,
            admin: format!("http://127.0.0.1:{admin}"),
            www: format!("http://127.0.0.1:{www}"),
            state,
        };
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = f.child.try_wait() {
                panic!("fulcrum exited with {status}:\n{}", f.log());
            }
            let up = c.get(format!("{}/healthz", f.admin)).send().await;
            if up.is_ok_and(|r| r.status() == 200) {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "fulcrum did not start:\n{}",
                f.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/status`, which must answer within 5 s.
    async fn status(&self) -> serde_json::Value {
        let token = admin_common::token(&self.state);
        let r = client()
            .get(format!("{}/api/v1/status", self.admin))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the admin API did not answer: {e}\n{}", self.log()));
        assert_eq!(r.status(), 200);
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    /// The sum of a metric family's samples whose line contains `filter`.
    async fn metric(&self, family: &str, filter: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(family) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn setup(a: &TestServer, b: &TestServer) -> Setup {
    Setup::new()
        .global("threads", 1)
        .backend("b", |b| {
            b.health(|h| h.interval("500ms").timeout("500ms").rise(1).fall(2))
        })
        .servers(&[a, b])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fd_table_is_not_taken_for_dead_servers() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let f = Limited::start(dir.path(), setup(&a, &b), "-n 256").await;

    // 256 fds: 32 of fulcrum's own, 2 listeners, a reserve of 34 (16 admin connections,
    // 2 checks, 16 spare): (256 - 68) / 2 clients.
    let limit = 93;
    let process = f.status().await["process"].clone();
    assert_eq!(process["fds"]["fd_limit"], 256, "{process}");
    assert_eq!(
        process["fds"]["effective_max_connections"], limit,
        "{process}"
    );
    assert_eq!(process["fds"]["max_connections"], 20000, "{process}");
    let warning = process["fd_warning"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.contains("at most 93 client connections"),
        "{process}"
    );
    assert!(
        f.log().contains("cannot hold max_connections = 20000"),
        "{}",
        f.log()
    );

    // So does `fulcrum ctl status`, under its table.
    let ctl = Command::new(BIN)
        .args(["ctl", "-c"])
        .arg(dir.path().join("fulcrum.toml"))
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert!(
        table.contains("of 256 fds open, up to 93 client connections"),
        "{table}"
    );
    assert!(
        table.contains("WARNING: the open files limit (256)"),
        "{table}"
    );

    // `check` says the same under the same limit.
    let check = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" check -c \"$1\"")
        .arg(BIN)
        .arg(dir.path().join("fulcrum.toml"))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{summary}");
    assert!(summary.contains("open files limit 256"), "{summary}");
    assert!(
        summary.contains("WARNING") && summary.contains("at most 93"),
        "{summary}"
    );

    // 300 idle clients: 93 are accepted, the rest wait in the backlog.
    let www: std::net::SocketAddr = f.www.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(www).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = f.metric("fulcrum_client_connections", "www").await;
        if open == f64::from(limit) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} client connections open, not {limit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Checks go on (several intervals of them), the servers stay up, the admin API answers.
    let ok_before = f
        .metric("fulcrum_health_checks_total", "result=\"ok\"")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ok_after = f
        .metric("fulcrum_health_checks_total", "result=\"ok\"")
        .await;
    assert!(
        ok_after >= ok_before + 4.0,
        "checks stalled: {ok_before} -> {ok_after}"
    );
    let failed = f
        .metric("fulcrum_health_checks_total", "result=\"failed\"")
        .await;
    assert_eq!(failed, 0.0, "{}", f.log());
    let status = f.status().await;
    for s in status["backends"][0]["servers"].as_array().unwrap() {
        assert_eq!(s["state"], "up", "{s}");
    }
    assert!(!f.log().contains("server_down"), "{}", f.log());
    assert!(!f.log().contains("Too many open files"), "{}", f.log());

    // The clients leave: the next request is served at once.
    drop(idle);
    let start = Instant::now();
    let (code, _, headers) = get(&client(), &format!("{}/", f.www)).await;
    assert_eq!(code, 200, "{headers:?}\n{}", f.log());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_fd_limit_is_raised_to_the_hard_limit() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let Some(hard) = hard.filter(|h| *h >= 4096) else {
        eprintln!("skipped: the hard fd limit ({hard:?}) is too low to tell a raise");
        return;
    };
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(&a, &b).global("max_connections", 1000);
    let f = Limited::start(dir.path(), setup, "-S -n 256").await;
    let process = f.status().await["process"].clone();
    assert_eq!(process["fds"]["soft_limit_at_start"], 256, "{process}");
    assert_eq!(process["fds"]["fd_limit"], hard, "{process}");
    assert_eq!(
        process["fds"]["effective_max_connections"], 1000,
        "{process}"
    );
    assert!(process["fd_warning"].is_null(), "{process}");
    assert!(
        f.log()
            .contains(&format!("open files limit raised from 256 to {hard}")),
        "{}",
        f.log()
    );
    let (code, body, _) = get(&client(), &format!("{}/", f.www)).await;
    assert_eq!(code, 200, "{body}");
}

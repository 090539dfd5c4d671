//! Name resolution never stalls the data path and always has a time limit (issue 14, point
//! 8), on the real binary with `threads = 1` and a DNS server that never answers.
//!
//! The system resolver reads `/etc/resolv.conf` and `/etc/hosts`; to make it hang for one
//! process only, the binary runs in a mount namespace of its own (`unshare -m`) where those
//! two paths are bind-mounted from files the test writes: `nameserver 127.0.0.15x`, where
//! the test holds UDP and TCP port 53 open and never answers. This needs root (port 53,
//! `unshare`), as scripts/test does.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use admin_common::*;
use common::*;

/// A DNS server that reads every query and answers none, on port 53 (glibc's resolver
/// asks no other) of an address of its own, so tests can run side by side.
struct SilentDns {
    ip: std::net::Ipv4Addr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl SilentDns {
    fn start(last: u8) -> SilentDns {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, last);
        let at = (ip, 53);
        let udp = std::net::UdpSocket::bind(at)
            .unwrap_or_else(|e| panic!("bind {ip}:53/udp (needs root): {e}"));
        let tcp = std::net::TcpListener::bind(at)
            .unwrap_or_else(|e| panic!("bind {ip}:53/tcp (needs root): {e}"));
        // Queries pile up in the socket buffers, unanswered; TCP connections are accepted by
        // the kernel's backlog and never read.
        SilentDns {
            ip,
            _udp: udp,
            _tcp: tcp,
        }
    }
}

/// The fulcrum binary in its own mount namespace, seeing `resolv` and `hosts` as the
/// system's files; killed by PID when dropped.
struct Isolated {
    child: Child,
}

impl Isolated {
    fn start(config: &Path, resolv: &Path, hosts: &Path) -> Isolated {
        let script = r#"mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && exec "$3" run -c "$4""#;
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(resolv)
            .arg(hosts)
            .arg(env!("CARGO_BIN_EXE_fulcrum"))
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare runs (util-linux)");
        Isolated { child }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with the configuration, the resolver files and the state dir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(dns: &SilentDns, hosts_text: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let nameserver = dns.ip;
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:30 attempts:1\n"),
        )
        .unwrap();
        let f = Files { dir };
        f.set_hosts(hosts_text);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rewrites the hosts file in place (the bind mount follows the inode, not the name).
    fn set_hosts(&self, text: &str) {
        std::fs::write(self.path("hosts"), format!("127.0.0.1 localhost\n{text}")).unwrap();
    }
}

/// The configuration: one worker thread, frontend and admin on fixed ports, `servers` as
/// `(name, address)`.
fn config(files: &Files, front: u16, admin: u16, servers: &[(&str, String)]) -> String {
    let mut setup = Setup::new()
        .global("threads", 1)
        .state_dir(files.path("state"))
        .admin("bind", format!("127.0.0.1:{admin}"))
        .frontend(|f| f.bind(format!("127.0.0.1:{front}")));
    for (name, address) in servers {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let address = address.clone();
        setup = setup.server_at(name, addr, |s| s.set("address", address));
    }
    setup.toml()
}

/// Starts the isolated binary with `servers`; returns it with its frontend URL and API.
async fn launch(files: &Files, servers: &[(&str, String)]) -> (Isolated, String, Api) {
    for _ in 0..5 {
        let (front, admin) = (closed_port().port(), closed_port().port());
        std::fs::write(
            files.path("fulcrum.toml"),
            config(files, front, admin, servers),
        )
        .unwrap();
        let mut bin = Isolated::start(
            &files.path("fulcrum.toml"),
            &files.path("resolv.conf"),
            &files.path("hosts"),
        );
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(15);
        let up = loop {
            if let Ok(Some(_)) = bin.child.try_wait() {
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
            assert!(Instant::now() < deadline, "fulcrum did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if up {
            let api = Api {
                base: format!("http://127.0.0.1:{admin}"),
                token: token(&files.path("state")),
                c: client(),
            };
            return (bin, format!("http://127.0.0.1:{front}/"), api);
        }
    }
    panic!("fulcrum could not start (ports taken?)");
}

/// Sends requests one after another until `until` is done; each must answer 200 within
/// 500 ms. Returns how many were sent.
async fn serve_meanwhile<F: std::future::Future>(url: &str, until: F) -> (usize, F::Output) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    tokio::pin!(until);
    let mut sent = 0;
    loop {
        tokio::select! {
            out = &mut until => return (sent, out),
            r = c.get(url).send() => {
                let r = r.unwrap_or_else(|e| panic!("request {sent} failed meanwhile: {e}"));
                assert_eq!(r.status(), 200, "request {sent}");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_naming_a_server_that_never_resolves_times_out_while_requests_are_served() {
    let dns = SilentDns::start(153);
    let a = TestServer::start("a").await;
    let files = Files::new(&dns, "");
    let (_bin, url, api) = launch(&files, &[("a", a.addr.to_string())]).await;
    send(&url).await;

    // The new file names a server the resolver never answers for.
    let text = config(
        &files,
        url_port(&url),
        api_port(&api),
        &[
            ("a", a.addr.to_string()),
            ("slow", "never.fulcrum.test:80".into()),
        ],
    );
    std::fs::write(files.path("fulcrum.toml"), text).unwrap();
    let started = Instant::now();
    let (sent, (code, body)) = serve_meanwhile(
        &url,
        api.send(reqwest::Method::POST, "/api/v1/reload", None),
    )
    .await;
    let took = started.elapsed();
    // Refused at the time limit, at the key, not after the resolver's own 30 s.
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("backends.b.servers[1].address") && error.contains("did not resolve within"),
        "{error}"
    );
    assert!(took < Duration::from_secs(10), "the reload took {took:?}");
    // One worker thread served all the while.
    assert!(sent >= 20, "only {sent} requests answered during {took:?}");
    send(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_name_stops_resolving_keeps_its_last_address() {
    let dns = SilentDns::start(154);
    let a = TestServer::start("a").await;
    let files = Files::new(&dns, "127.0.0.1 web.fulcrum.test\n");
    let address = format!("web.fulcrum.test:{}", a.addr.port());
    let (_bin, url, api) = launch(&files, &[("a", address)]).await;
    send(&url).await;
    // The name now goes to the silent DNS server at every check: each re-resolution times
    // out, the server keeps 127.0.0.1 and stays up.
    files.set_hosts("");
    let last = || async { api.status().await["backends"][0]["servers"][0].clone() };
    let first = last().await["last_check"].clone();
    let (sent, ()) = serve_meanwhile(&url, async {
        // Ten checks later (every 100 ms, each with a 100 ms lookup limit).
        let mut seen = 0;
        let mut prev = first.clone();
        while seen < 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = last().await["last_check"].clone();
            if now != prev {
                seen += 1;
                prev = now;
            }
        }
    })
    .await;
    assert!(sent > 0);
    let s = last().await;
    assert_eq!(s["state"], "up", "{s}");
    assert_eq!(s["last_check_ok"], true, "{s}");
}

async fn send(url: &str) {
    let (code, body, _) = get(&client(), url).await;
    assert_eq!(code, 200, "{body}");
}

fn url_port(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn api_port(api: &Api) -> u16 {
    api.base.rsplit(':').next().unwrap().parse().unwrap()
}

//! DNS discovery against a real DNS server on loopback: Debian's dnsmasq, started by each
//! test on a free port with its own hosts and configuration files (scripts/test installs
//! it). Address records live in an `addn-hosts` file, which dnsmasq re-reads on SIGHUP; SRV
//! records live in its configuration file, which it reads only at start, so an SRV change
//! restarts it on the same port (the lookups in between fail, which discovery must ride out).
//!
//! Covered: A/AAAA discovery (`name:port`), SRV discovery (target, port, weight), servers
//! added and removed under load with no failed request, a new server checked before it takes
//! traffic, a failed lookup and an empty answer keeping the last set, an SRV target without
//! an address skipped, a reload keeping what was found and restarting a changed
//! `[discovery]`, and validation of every key.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use admin_common::*;
use common::*;
use fulcrum::events::EventKind;

/// A dnsmasq serving the records of its files, stopped (by PID) when dropped.
struct Dnsmasq {
    dir: tempfile::TempDir,
    port: u16,
    srv: Vec<String>,
    child: Option<Child>,
}

/// The dnsmasq binary: on the PATH, or in /usr/sbin where Debian puts it (not on a normal
/// user's PATH).
fn dnsmasq_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d: PathBuf| d.join("dnsmasq"))
        .find(|p| p.is_file())
        .expect("dnsmasq is installed (scripts/test installs dnsmasq-base)")
}

/// An `srv-host` line: `name` served by `target:port` with `weight`.
fn srv(name: &str, target: &str, port: u16, weight: u16) -> String {
    format!("srv-host={name},{target},{port},0,{weight}")
}

/// Hosts-file lines giving `name` each address of `ips`.
fn hosts(name: &str, ips: &[std::net::IpAddr]) -> String {
    ips.iter().map(|ip| format!("{ip} {name}\n")).collect()
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (hosts-file text) and `srv` lines.
    fn start(hosts: &str, srv: &[String]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq drops root for `nobody`, who must still read the files on SIGHUP.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut d = Dnsmasq {
            dir,
            port: 0,
            srv: srv.to_vec(),
            child: None,
        };
        d.write_hosts(hosts);
        for _ in 0..5 {
            d.port = free_udp_and_tcp_port();
            if d.spawn() {
                return d;
            }
        }
        panic!("dnsmasq did not start:\n{}", d.log());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    fn write_hosts(&self, text: &str) {
        let tmp = self.path("hosts.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path("hosts")).unwrap();
    }

    /// Runs dnsmasq on `self.port`; whether it answers (false: the port was taken).
    fn spawn(&mut self) -> bool {
        let mut conf = format!(
            "local=/test/\nlocal-ttl=0\naddn-hosts={}\npid-file={}\n",
            self.path("hosts").display(),
            self.path("pid").display()
        );
        for line in &self.srv {
            conf += line;
            conf.push('\n');
        }
        std::fs::write(self.path("dnsmasq.conf"), conf).unwrap();
        let log = std::fs::File::create(self.path("log")).unwrap();
        let child = Command::new(dnsmasq_binary())
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                &format!("--port={}", self.port),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                &format!("--conf-file={}", self.path("dnsmasq.conf").display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq runs");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq does not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `IP:port` for `[discovery] nameserver`.
    fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the address records and has dnsmasq re-read them (SIGHUP).
    fn set_hosts(&self, text: &str) {
        self.write_hosts(text);
        let pid = self.child.as_ref().expect("dnsmasq runs").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP {pid}");
    }

    /// Replaces the SRV records: dnsmasq reads them only at start, so it restarts.
    fn set_srv(&mut self, srv: &[String]) {
        self.stop();
        self.srv = srv.to_vec();
        assert!(
            self.spawn(),
            "dnsmasq restarts on its port:\n{}",
            self.log()
        );
    }

    /// Restarts it on its port, with its files as they are now.
    fn restart(&mut self) {
        assert!(
            self.spawn(),
            "dnsmasq restarts on its port:\n{}",
            self.log()
        );
    }

    /// Stops it: lookups fail until it starts again.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Test servers on the same port of 127.0.0.2, .3, ... (A records carry no port).
async fn servers_on_one_port(names: &[&str]) -> Vec<TestServer> {
    'again: loop {
        let first = TestServer::restart(names[0], "127.0.0.2:0".parse().unwrap()).await;
        let port = first.addr.port();
        let mut out = vec![first];
        for (i, name) in names.iter().enumerate().skip(1) {
            let addr = SocketAddr::from(([127, 0, 0, 2 + i as u8], port));
            match std::net::TcpListener::bind(addr) {
                Ok(probe) => drop(probe),
                Err(_) => continue 'again,
            }
            out.push(TestServer::restart(name, addr).await);
        }
        return out;
    }
}

fn ips(servers: &[&TestServer]) -> Vec<std::net::IpAddr> {
    servers.iter().map(|s| s.addr.ip()).collect()
}

/// Backend `b` of the status: its servers' names (sorted) and the whole backend.
async fn backend(api: &Api) -> serde_json::Value {
    api.status().await["backends"][0].clone()
}

async fn names(api: &Api) -> Vec<String> {
    let mut v: Vec<String> = backend(api).await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn named(servers: &[&TestServer]) -> Vec<String> {
    let mut v: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    v.sort();
    v
}

/// The server of backend `b` named `name` in the status.
async fn server(api: &Api, name: &str) -> serde_json::Value {
    backend(api).await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Discovery rounds done and the last outcome, from the status.
async fn rounds(api: &Api) -> (u64, String) {
    let d = backend(api).await["discovery"].clone();
    (
        d["rounds"].as_u64().unwrap_or(0),
        d["last"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until `n` more rounds have finished whose last outcome starts with `last`.
async fn rounds_pass(api: &Api, n: u64, last: &str) {
    let (start, _) = rounds(api).await;
    eventually_async(
        &format!("{n} discovery rounds ending `{last}`"),
        Duration::from_secs(20),
        || async {
            let (now, outcome) = rounds(api).await;
            now >= start + n && outcome.starts_with(last)
        },
    )
    .await;
}

/// Waits for a `discovery_changed` event whose detail contains `text`.
async fn changed(
    events: &mut tokio::sync::broadcast::Receiver<fulcrum::events::Event>,
    text: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.event == EventKind::DiscoveryChanged && e.detail.contains(text) {
                return e;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no discovery_changed saying `{text}`");
}

async fn url(f: &Fulcrum) -> String {
    format!("http://{}/", f.frontend("www"))
}

/// Sends `n` requests and asserts each is answered 200.
async fn send_ok(url: &str, n: usize) {
    let c = client();
    for _ in 0..n {
        let (code, body, _) = get(&c, url).await;
        assert_eq!(code, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_become_servers_checked_before_traffic_and_follow_the_name() {
    let s = servers_on_one_port(&["a", "b", "c"]).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    let port = a.addr.port();
    let dns = Dnsmasq::start(&hosts("api.test", &ips(&[a, b])), &[]);
    let f = Setup::new()
        .backend("b", |be| {
            be.slow_start("3s")
                .discovery(&format!("api.test:{port}"), |d| {
                    d.interval("200ms").nameserver(dns.nameserver())
                })
        })
        .start()
        .await;
    let api = Api::new(&f);
    // Found at start, before the first client: both serve at once.
    assert_eq!(names(&api).await, named(&[a, b]));
    for s in backend(&api).await["servers"].as_array().unwrap() {
        assert_eq!(s["discovered"], true, "{s}");
        assert_eq!(s["state"], "up", "{s}");
    }
    send_ok(&url(&f).await, 20).await;
    assert!(a.hits() > 0 && b.hits() > 0);

    // A new address, failing its checks: listed, but no traffic until it passes.
    c.set_healthy(false);
    let mut events = f.app.events().subscribe();
    dns.set_hosts(&hosts("api.test", &ips(&[a, b, c])));
    changed(&mut events, &format!("added {}", c.addr)).await;
    assert_eq!(names(&api).await, named(&[a, b, c]));
    let c_name = c.addr.to_string();
    eventually_async("c checked and down", Duration::from_secs(5), || async {
        server(&api, &c_name).await["state"] == "down"
    })
    .await;
    send_ok(&url(&f).await, 30).await;
    assert_eq!(c.hits(), 0, "a server that failed its checks got traffic");
    // Passing now: it comes up ramping (slow start), then serves.
    c.set_healthy(true);
    eventually_async("c slow-starting", Duration::from_secs(5), || async {
        server(&api, &c_name).await["state"] == "starting"
    })
    .await;
    let u = url(&f).await;
    eventually_async("c serving", Duration::from_secs(10), || async {
        send_ok(&u, 10).await;
        c.hits() > 0
    })
    .await;

    // An address gone from DNS leaves rotation.
    dns.set_hosts(&hosts("api.test", &ips(&[b, c])));
    changed(&mut events, &format!("removed {}", a.addr)).await;
    assert_eq!(names(&api).await, named(&[b, c]));
    let before = a.hits();
    send_ok(&u, 20).await;
    assert_eq!(a.hits(), before, "a removed server still got traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_target_port_and_weight_and_skip_targets_without_address() {
    let s1 = TestServer::start("s1").await;
    let s2 = TestServer::start("s2").await;
    let name = "_http._tcp.api.test";
    let records = |w2: u16| {
        vec![
            srv(name, "s1.test", s1.addr.port(), 1),
            srv(name, "s2.test", s2.addr.port(), w2),
            // No address anywhere: skipped with a WARN.
            srv(name, "ghost.test", 9, 5),
        ]
    };
    let text = "127.0.0.1 s1.test\n127.0.0.1 s2.test\n";
    let mut dns = Dnsmasq::start(text, &records(3));
    let f = Setup::new()
        .backend("b", |be| {
            be.discovery(name, |d| d.interval("200ms").nameserver(dns.nameserver()))
        })
        .start()
        .await;
    let api = Api::new(&f);
    let n1 = format!("s1.test:{}", s1.addr.port());
    let n2 = format!("s2.test:{}", s2.addr.port());
    let mut expected = vec![n1.clone(), n2.clone()];
    expected.sort();
    assert_eq!(names(&api).await, expected);
    assert_eq!(server(&api, &n1).await["weight"], 1);
    assert_eq!(server(&api, &n2).await["weight"], 3);
    assert_eq!(server(&api, &n2).await["address"], s2.addr.to_string());
    send_ok(&url(&f).await, 80).await;
    assert!(
        s2.hits() >= 2 * s1.hits() && s1.hits() > 0,
        "weights 1:3 gave {}:{}",
        s1.hits(),
        s2.hits()
    );

    // A weight changed in DNS follows (dnsmasq restarts: lookups fail meanwhile).
    let mut events = f.app.events().subscribe();
    dns.set_srv(&records(1));
    changed(&mut events, &format!("{n2} weight 3 -> 1")).await;
    assert_eq!(server(&api, &n2).await["weight"], 1);
    assert_eq!(names(&api).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_and_an_empty_answer_keep_the_last_set() {
    let s = servers_on_one_port(&["a", "b"]).await;
    let (a, b) = (&s[0], &s[1]);
    let port = a.addr.port();
    let mut dns = Dnsmasq::start(&hosts("api.test", &ips(&[a, b])), &[]);
    let f = Setup::new()
        .backend("b", |be| {
            be.discovery(&format!("api.test:{port}"), |d| {
                d.interval("200ms").nameserver(dns.nameserver())
            })
        })
        .start()
        .await;
    let api = Api::new(&f);
    let u = url(&f).await;
    rounds_pass(&api, 1, "ok").await;

    // The DNS server is gone: every lookup fails, the servers stay and serve.
    dns.stop();
    rounds_pass(&api, 2, "failed").await;
    assert_eq!(names(&api).await, named(&[a, b]));
    send_ok(&u, 10).await;

    // Back, but the name has no records now: kept too.
    dns.write_hosts("127.0.0.9 other.test\n");
    dns.restart();
    rounds_pass(&api, 2, "empty").await;
    assert_eq!(names(&api).await, named(&[a, b]));
    send_ok(&u, 10).await;

    // A real answer applies again.
    dns.set_hosts(&hosts("api.test", &ips(&[b])));
    eventually_async("only b listed", Duration::from_secs(10), || async {
        names(&api).await == named(&[b])
    })
    .await;
    assert_eq!(rounds(&api).await.1, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_added_and_removed_under_load_fail_no_request() {
    let s = servers_on_one_port(&["a", "b", "c"]).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    for s in [a, b, c] {
        s.set_delay(Duration::from_millis(2));
    }
    let port = a.addr.port();
    let dns = Dnsmasq::start(&hosts("api.test", &ips(&[a, b])), &[]);
    let f = Setup::new()
        .backend("b", |be| {
            be.slow_start("1s")
                .discovery(&format!("api.test:{port}"), |d| {
                    d.interval("200ms").nameserver(dns.nameserver())
                })
        })
        .start()
        .await;
    let api = Api::new(&f);
    let u = url(&f).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (u, stop, done) = (u.clone(), Arc::clone(&stop), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match c.get(&u).send().await {
                    Ok(r) if r.status() == 200 => {
                        if let Err(e) = r.text().await {
                            failures.push(format!("body: {e}"));
                        }
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    let flowing = |n: u64| {
        let at = done.load(Ordering::SeqCst);
        let done = Arc::clone(&done);
        async move {
            eventually("requests flowing", Duration::from_secs(10), || {
                done.load(Ordering::SeqCst) >= at + n
            })
            .await
        }
    };
    flowing(100).await;
    // Added: it serves once checked.
    dns.set_hosts(&hosts("api.test", &ips(&[a, b, c])));
    eventually("c serving under load", Duration::from_secs(10), || {
        c.hits() > 0
    })
    .await;
    flowing(100).await;
    // Removed while requests are in flight on it: they finish, nothing new goes there.
    dns.set_hosts(&hosts("api.test", &ips(&[b, c])));
    eventually_async("a removed", Duration::from_secs(10), || async {
        names(&api).await == named(&[b, c])
    })
    .await;
    flowing(100).await;
    let a_after = a.hits();
    // Removed and added at once.
    dns.set_hosts(&hosts("api.test", &ips(&[a, c])));
    eventually_async("b swapped for a", Duration::from_secs(10), || async {
        names(&api).await == named(&[a, c])
    })
    .await;
    eventually("a serving again", Duration::from_secs(10), || {
        a.hits() > a_after
    })
    .await;
    flowing(100).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for t in clients {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        done.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_discovered_servers_and_restarts_a_changed_discovery() {
    let s = servers_on_one_port(&["a", "b", "c"]).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    let port = a.addr.port();
    let text = format!(
        "{}{}",
        hosts("api.test", &ips(&[a, b])),
        hosts("other.test", &ips(&[c]))
    );
    let dns = Dnsmasq::start(&text, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let setup = |dns_name: &str| {
        let name = dns_name.to_string();
        let ns = dns.nameserver();
        move |s: Setup| {
            s.backend("b", |be| {
                be.discovery(&format!("{name}:{port}"), |d| {
                    d.interval("200ms").nameserver(ns)
                })
            })
        }
    };
    let f = setup("api.test")(Setup::new()).start_from(&path).await;
    let api = Api::new(&f);
    assert_eq!(names(&api).await, named(&[a, b]));
    let checks_before = server(&api, &a.addr.to_string()).await["last_check"].clone();
    assert!(!checks_before.is_null());

    // The same file again: the discovered servers stay (the same objects, still up).
    let reload = |text: String| {
        let api = &api;
        let path = path.clone();
        async move {
            std::fs::write(&path, text).unwrap();
            api.send(reqwest::Method::POST, "/api/v1/reload", None)
                .await
        }
    };
    let same = setup("api.test")(Setup::new().state_dir(f.state_dir())).toml();
    let (code, body) = reload(same).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&api).await, named(&[a, b]));
    assert_eq!(server(&api, &a.addr.to_string()).await["state"], "up");
    send_ok(&url(&f).await, 10).await;

    // Another name: the task restarts and its first round replaces the set.
    let other = setup("other.test")(Setup::new().state_dir(f.state_dir())).toml();
    let (code, body) = reload(other).await;
    assert_eq!(code, 200, "{body}");
    eventually_async(
        "servers of the new name",
        Duration::from_secs(10),
        || async { names(&api).await == named(&[c]) },
    )
    .await;
    let asked = format!("other.test:{port}");
    eventually_async(
        "status names the new name",
        Duration::from_secs(5),
        || async { backend(&api).await["discovery"]["dns"] == asked.as_str() },
    )
    .await;
    send_ok(&url(&f).await, 10).await;

    // No `[discovery]` any more: what it found leaves with it; the file's server serves.
    let plain = Setup::new().state_dir(f.state_dir()).servers(&[a]).toml();
    let (code, body) = reload(plain).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&api).await, std::slice::from_ref(&a.name));
    assert!(backend(&api).await["discovery"].is_null());
    let before = c.hits();
    send_ok(&url(&f).await, 10).await;
    assert_eq!(
        c.hits(),
        before,
        "a server found by the old discovery still got traffic"
    );
}

#[test]
fn every_discovery_key_is_checked_with_its_place() {
    let text = "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
                [backends.b.discovery]\ndns = \"api test:80\"\ninterval = \"1ms\"\n\
                nameserver = \"dns.example:53\"\n";
    let e = fulcrum::config::parse_str(text, Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    for (line, key) in [(7, "dns"), (8, "interval"), (9, "nameserver")] {
        let want = format!("f.toml:{line}:1: key `backends.b.discovery.{key}`");
        assert!(e.contains(&want), "{want} not in:\n{e}");
    }
    // Without servers and without discovery, the backend says what it needs.
    let bare = "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
                [backends.b]\nalgorithm = \"first\"\n";
    let e = fulcrum::config::parse_str(bare, Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("or a [discovery] table"), "{e}");
    // Unknown keys are errors like everywhere else.
    let typo = text.replace("interval = \"1ms\"", "intervall = \"1s\"");
    let e = fulcrum::config::parse_str(&typo, Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("intervall"), "{e}");
}

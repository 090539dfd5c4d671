//! `fulcrum run` under a service manager: the built binary is started with `NOTIFY_SOCKET`
//! naming a datagram socket this test listens on, as systemd does for `Type=notify`
//! (sd_notify(3)). READY=1 must come only once the listeners are bound and every server has
//! been checked; a reload is framed by RELOADING=1 (with MONOTONIC_USEC=) and READY=1;
//! WATCHDOG=1 comes within `WATCHDOG_USEC`; STOPPING=1 at SIGTERM.
//!
//! Servers are small HTTP servers of this file on 127.0.0.1 ephemeral ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

/// An HTTP server whose `/healthz` answers 200 after `delay`, counting the checks.
struct Server {
    addr: SocketAddr,
    checks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(delay: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let checks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&checks), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let c = Arc::clone(&c);
                std::thread::spawn(move || answer(conn, &c, delay));
            }
        });
        Server { addr, checks, stop }
    }

    fn checks(&self) -> u64 {
        self.checks.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request head and answers it, closing the connection.
fn answer(mut conn: TcpStream, checks: &AtomicU64, delay: Duration) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    if head.starts_with(b"GET /healthz ") {
        std::thread::sleep(delay);
        checks.fetch_add(1, Ordering::SeqCst);
    }
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
}

/// The service manager's end: a datagram socket in a temporary folder (or an abstract one).
struct Manager {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` as fulcrum is given it.
    name: String,
    /// Every message received, for failure messages.
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn bind(dir: tempfile::TempDir) -> Manager {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            name: path.display().to_string(),
            seen: Vec::new(),
            _dir: dir,
        }
    }

    fn bind_abstract(dir: tempfile::TempDir) -> Manager {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("fulcrum-test-{}-{}", std::process::id(), line!());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Manager {
            socket,
            name: format!("@{name}"),
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The next message received within `within`, if any.
    fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let m = String::from_utf8(buf[..n].to_vec()).unwrap();
                    self.seen.push(m.clone());
                    return Some(m);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Waits for a message with the line `line` (e.g. `READY=1`), skipping others; returns it.
    fn expect(&mut self, line: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if m.lines().any(|l| l == line) {
                return m;
            }
        }
        panic!("no {line} within {within:?}; received: {:#?}", self.seen);
    }
}

/// The value of `KEY=` in a notification message.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A running `fulcrum run`, killed by its PID when dropped.
struct Fulcrum {
    child: Child,
    front: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fulcrum {
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} failed");
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "fulcrum did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A port free right now (bound and released); a collision is retried by `start`.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration with `state_dir` in `dir`, or none when `state_dir` is false (systemd's
/// `STATE_DIRECTORY` is then the default).
fn config(dir: &Path, state_dir: bool, front: u16, admin: u16, servers: &[&Server]) -> String {
    let state = match state_dir {
        true => format!("state_dir = \"{}\"\n", dir.join("state").display()),
        false => String::new(),
    };
    let mut s = format!(
        "[global]\nthreads = 2\ngrace_period = \"2s\"\n{state}\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\n\
         [[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:{front}\"\nbackend = \"b\"\n\
         access_log = false\n\n\
         [backends.b]\n[backends.b.health]\ninterval = \"1s\"\ntimeout = \"1s\"\n"
    );
    for (i, srv) in servers.iter().enumerate() {
        s += &format!(
            "\n[[backends.b.servers]]\nname = \"s{i}\"\naddress = \"{}\"\n",
            srv.addr
        );
    }
    s
}

/// Starts fulcrum with `NOTIFY_SOCKET` (and `env`), until one start gets its ports; returns
/// it with its READY=1 message.
fn start(manager: &mut Manager, servers: &[&Server], env: &[(&str, &str)]) -> (Fulcrum, String) {
    let dir = manager._dir.path().to_path_buf();
    for _attempt in 0..5 {
        let (front, admin) = (free_port(), free_port());
        let path = dir.join("fulcrum.toml");
        let state_dir = !env.iter().any(|(k, _)| *k == "STATE_DIRECTORY");
        std::fs::write(&path, config(&dir, state_dir, front, admin, servers)).unwrap();
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            .env("NOTIFY_SOCKET", &manager.name)
            .envs(env.iter().copied())
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut f = Fulcrum {
            child,
            front: SocketAddr::from(([127, 0, 0, 1], front)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            config: path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(m) = manager.next(Duration::from_millis(50)) {
                if m.lines().any(|l| l == "READY=1") {
                    return (f, m);
                }
            } else if f.child.try_wait().unwrap().is_some() {
                break; // a port was taken meanwhile: again with others
            }
        }
        assert!(
            f.child.try_wait().unwrap().is_some(),
            "fulcrum runs but sent no READY=1; received: {:#?}",
            manager.seen
        );
    }
    panic!("fulcrum could not bind its ports in 5 attempts");
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[test]
fn ready_comes_once_listeners_are_bound_and_servers_checked() {
    // Slow first checks: READY=1 must wait for them.
    let a = Server::start(Duration::from_millis(300));
    let b = Server::start(Duration::from_millis(300));
    let mut m = Manager::bind(temp());
    let t0 = Instant::now();
    let (mut f, ready) = start(&mut m, &[&a, &b], &[]);
    assert!(
        a.checks() >= 1 && b.checks() >= 1,
        "READY=1 before the first checks ({} and {}) after {:?}",
        a.checks(),
        b.checks(),
        t0.elapsed()
    );
    TcpStream::connect(f.front).expect("the frontend listens at READY=1");
    TcpStream::connect(f.admin).expect("the admin API listens at READY=1");
    assert_eq!(
        field(&ready, "STATUS"),
        Some("2/2 primaries healthy"),
        "{ready}"
    );
    assert_eq!(
        m.seen.iter().filter(|s| s.contains("READY=1")).count(),
        1,
        "{:#?}",
        m.seen
    );

    f.signal("-TERM");
    let stopping = m.expect("STOPPING=1", Duration::from_secs(5));
    assert!(field(&stopping, "STATUS").is_some(), "{stopping}");
    assert_eq!(f.exit_code(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_reload_is_framed_by_reloading_and_ready_with_its_outcome() {
    let a = Server::start(Duration::ZERO);
    let b = Server::start(Duration::ZERO);
    let mut m = Manager::bind(temp());
    let (f, _) = start(&mut m, &[&a], &[]);

    // An accepted reload: one more server.
    let text = std::fs::read_to_string(&f.config).unwrap();
    let more = text.clone()
        + &format!(
            "\n[[backends.b.servers]]\nname = \"s1\"\naddress = \"{}\"\n",
            b.addr
        );
    std::fs::write(&f.config, &more).unwrap();
    let before = monotonic_usec();
    f.signal("-HUP");
    let reloading = m.expect("RELOADING=1", Duration::from_secs(5));
    let after = monotonic_usec();
    let stamp: u64 = field(&reloading, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC with RELOADING=1: {reloading}"))
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&stamp),
        "{before} <= {stamp} <= {after}"
    );
    let ready = m.expect("READY=1", Duration::from_secs(10));
    let status = field(&ready, "STATUS").unwrap();
    assert!(status.contains("reloaded: "), "{status}");
    assert!(
        status.contains("s1"),
        "the summary names the new server: {status}"
    );

    // A rejected reload: READY=1 again (the old configuration serves), and the error.
    std::fs::write(
        &f.config,
        text.replace("[backends.b]", "[backends.b]\nnonsense = 1"),
    )
    .unwrap();
    f.signal("-HUP");
    m.expect("RELOADING=1", Duration::from_secs(5));
    let ready = m.expect("READY=1", Duration::from_secs(10));
    let status = field(&ready, "STATUS").unwrap();
    assert!(status.contains("reload rejected"), "{status}");
    assert!(
        status.contains("nonsense"),
        "the error names the key: {status}"
    );
    TcpStream::connect(f.front).expect("still serving after a rejected reload");
}

/// Also: without `state_dir` in the file, systemd's `STATE_DIRECTORY` holds the state.
#[test]
fn the_watchdog_is_answered_within_its_interval_on_an_abstract_socket() {
    let a = Server::start(Duration::ZERO);
    let mut m = Manager::bind_abstract(temp());
    let interval = Duration::from_millis(1000);
    let usec = interval.as_micros().to_string();
    let state = m._dir.path().join("var-lib-fulcrum");
    let env = [
        ("WATCHDOG_USEC", usec.as_str()),
        ("STATE_DIRECTORY", state.to_str().unwrap()),
    ];
    let (_f, _) = start(&mut m, &[&a], &env);
    assert!(
        state.join("admin.token").is_file(),
        "the generated token is in $STATE_DIRECTORY"
    );
    let mut last = Instant::now();
    for ping in 0..3 {
        let deadline = last + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = m.next(left).unwrap_or_else(|| {
                panic!(
                    "ping {ping}: no WATCHDOG=1 within {interval:?}; got {:#?}",
                    m.seen
                )
            });
            if message.lines().any(|l| l == "WATCHDOG=1") {
                break;
            }
        }
        last = Instant::now();
    }
}

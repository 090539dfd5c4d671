//! `accept_proxy_protocol = true`: HAProxy (a real peer, `send-proxy` and `send-proxy-v2`)
//! in front of fulcrum in HTTP mode, over TLS and in TCP mode, the header's source becoming
//! the client address; raw sockets for v2 `LOCAL`, and for missing, malformed and slow
//! headers, which close the connection without a byte forwarded.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The address clients connect from in these tests, so that the address the PROXY header
/// carries (this one) differs from the one fulcrum's peer has (HAProxy's, 127.0.0.1).
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

/// A free loopback port (bound, read, released for HAProxy to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy in TCP mode on a free port, sending to `to` with `send` (`send-proxy` or
/// `send-proxy-v2`); stopped (by its own PID) when dropped.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(to: SocketAddr, send: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = format!(
            "global\n  maxconn 100\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             listen front\n  bind {addr}\n  server fulcrum {to} {send}\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = spawn(&path);
        let h = Haproxy {
            child,
            addr,
            _dir: dir,
        };
        eventually_async("haproxy listens", Duration::from_secs(10), || async {
            TcpStream::connect(addr).await.is_ok()
        })
        .await;
        h
    }
}

fn spawn(cfg: &Path) -> Child {
    Command::new("haproxy")
        .arg("-f")
        .arg(cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy runs (Debian package haproxy)")
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `to` from [`CLIENT_IP`].
async fn connect_from_client_ip(to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((CLIENT_IP, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends one `Connection: close` GET over `io` and returns the whole answer.
async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: S) -> String {
    io.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

fn proxied() -> Setup {
    Setup::new().frontend(|f| {
        f.set("accept_proxy_protocol", true)
            .client_header_timeout("500ms")
    })
}

fn xff(s: &TestServer) -> String {
    s.last_headers()
        .get("x-forwarded-for")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn haproxy_v1_and_v2_give_the_client_address_in_http_mode() {
    let s = TestServer::start("s").await;
    let f = proxied().servers(&[&s]).start().await;
    for send in ["send-proxy", "send-proxy-v2"] {
        let h = Haproxy::start(f.frontend("www"), send).await;
        let answer = get_over(connect_from_client_ip(h.addr).await).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{send}: {answer}");
        assert_eq!(xff(&s), "127.0.0.2", "{send}");
    }
}

#[tokio::test]
async fn haproxy_v2_before_a_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, keyf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&keyf, key.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start("s").await;
    let f = proxied()
        .frontend(|f| f.tls(&cert, &keyf))
        .servers(&[&s])
        .start()
        .await;
    let h = Haproxy::start(f.frontend("www"), "send-proxy-v2").await;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            "localhost".try_into().unwrap(),
            connect_from_client_ip(h.addr).await,
        )
        .await
        .unwrap();
    let answer = get_over(tls).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff(&s), "127.0.0.2");
}

/// A TCP server that records the address of the first bytes' sender as the relay saw it
/// (nothing: it only echoes) and echoes; counts the bytes it received.
async fn echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, got)
}

fn tcp_proxied(e: SocketAddr) -> Setup {
    proxied()
        .frontend(|f| f.mode_tcp())
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("100ms").timeout("100ms"))
        })
        .server_at("e", e, |s| s)
}

#[tokio::test]
async fn tcp_mode_behind_haproxy_forwards_only_the_payload() {
    let (e, got) = echo().await;
    let f = tcp_proxied(e).start().await;
    let h = Haproxy::start(f.frontend("www"), "send-proxy").await;
    let mut c = connect_from_client_ip(h.addr).await;
    c.write_all(b"payload").await.unwrap();
    let mut buf = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"payload");
    // The header stopped at fulcrum: the server got the 7 bytes and nothing else.
    assert_eq!(got.load(std::sync::atomic::Ordering::SeqCst), 7);
}

#[tokio::test]
async fn v2_local_keeps_the_real_peer_and_v1_from_a_raw_socket_is_taken() {
    let s = TestServer::start("s").await;
    let f = proxied().servers(&[&s]).start().await;
    let addr = f.frontend("www");
    let src: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let local = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Stream,
        (src, addr),
    )
    .build()
    .unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(&local).await.unwrap();
    let answer = get_over(c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff(&s), "127.0.0.1");

    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n")
        .await
        .unwrap();
    let answer = get_over(c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff(&s), "203.0.113.9");
}

/// Sends `bytes` and expects the connection closed with nothing answered, within `within`.
async fn closed_unanswered(addr: SocketAddr, bytes: &[u8], within: Duration) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(within, c.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "still open after {within:?} for {bytes:?}");
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn missing_malformed_and_slow_headers_close_without_forwarding() {
    let s = TestServer::start("s").await;
    let f = proxied().servers(&[&s]).start().await;
    let addr = f.frontend("www");
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    closed_unanswered(addr, req, Duration::from_secs(5)).await;
    let bad = [b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n".as_slice(), req].concat();
    closed_unanswered(addr, &bad, Duration::from_secs(5)).await;
    let bad_v2 = [
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c".as_slice(),
        &[0u8; 12],
        req,
    ]
    .concat();
    closed_unanswered(addr, &bad_v2, Duration::from_secs(5)).await;
    // Part of a header, then silence: closed at client_header_timeout (500ms).
    let start = std::time::Instant::now();
    closed_unanswered(addr, b"PROXY TCP4 1.2.3.4", Duration::from_secs(5)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.hits(), 0);

    // TCP mode: nothing reaches the server either.
    let (e, got) = echo().await;
    let t = tcp_proxied(e).start().await;
    closed_unanswered(
        t.frontend("www"),
        b"hello there, no header",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn hashing_by_client_ip_uses_the_address_the_header_names() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = proxied()
        .backend("b", |be| {
            be.algorithm("consistent_hash").hash_key("source_ip")
        })
        .servers(&[&a, &b])
        .start()
        .await;
    let addr = f.frontend("www");
    let mut chosen = std::collections::BTreeMap::new();
    // Every connection comes from 127.0.0.1; only the header's address varies.
    for round in 0..2 {
        for i in 1..=20u8 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let header = format!("PROXY TCP4 198.51.100.{i} 127.0.0.1 4000 80\r\n");
            c.write_all(header.as_bytes()).await.unwrap();
            let answer = get_over(c).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let server = answer.rsplit("\r\n\r\n").next().unwrap().to_string();
            if round == 0 {
                chosen.insert(i, server);
            } else {
                assert_eq!(chosen[&i], server, "198.51.100.{i} moved");
            }
        }
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a {} b {}",
        a.hits(),
        b.hits()
    );
}

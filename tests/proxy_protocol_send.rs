//! Sending the PROXY protocol (`send_proxy_protocol = "v1" | "v2"`): every connection to a
//! server starts with a header naming the client and the address it connected to, in HTTP
//! and TCP mode; health checks send `PROXY UNKNOWN` (v1) or a LOCAL command (v2); a pooled
//! connection serves only the client its header named. Checked byte for byte by a raw
//! server that refuses connections without a header, and end to end by a real HAProxy
//! with `accept-proxy` behind fulcrum.
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const V2_PREFIX: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A server that requires a PROXY header (v1 or v2) on every connection and records it,
/// then answers HTTP requests with "ok" (`echo`: copies the bytes back instead).
struct RawServer {
    addr: SocketAddr,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawServer {
    async fn start(echo: bool) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&headers);
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut s = s;
                    let Some(header) = read_header(&mut s).await else {
                        return; // no header: refused
                    };
                    seen.lock().unwrap().push(header);
                    if echo {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    } else {
                        serve_http(s).await;
                    }
                });
            }
        });
        RawServer { addr, headers }
    }

    fn headers(&self) -> Vec<Vec<u8>> {
        self.headers.lock().unwrap().clone()
    }

    fn count(&self, header: &[u8]) -> usize {
        self.headers()
            .iter()
            .filter(|h| h.as_slice() == header)
            .count()
    }
}

/// The PROXY header at the start of `s`, or `None` when the connection starts otherwise.
async fn read_header(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.ok()?;
    let mut header = first.to_vec();
    if first == V2_PREFIX {
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).await.ok()?;
        header.extend_from_slice(&rest);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let mut addrs = vec![0u8; len];
        s.read_exact(&mut addrs).await.ok()?;
        header.extend_from_slice(&addrs);
        return Some(header);
    }
    if !first.starts_with(b"PROXY ") {
        return None;
    }
    while !header.ends_with(b"\r\n") && header.len() < 108 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        header.push(b[0]);
    }
    Some(header)
}

/// Answers bodiless HTTP/1.1 requests with "ok" until the client closes.
async fn serve_http(mut s: TcpStream) {
    let mut buf = Vec::new();
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = String::from_utf8_lossy(&buf[..end])
                .to_ascii_lowercase()
                .contains("connection: close");
            buf.drain(..end + 4);
            let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(resp).await.is_err() || close {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One keep-alive request on `c`, which must be answered "ok".
async fn ok(c: &mut RawConn) {
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let r = c.read_response().await.expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

fn v2_header(client: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(d)) = (client, dest) else {
        panic!("IPv4 in these tests");
    };
    let mut h = V2_PREFIX.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

async fn started(mode: &str, server: &RawServer, tcp: bool) -> Fulcrum {
    let f = Setup::new()
        .frontend(|f| if tcp { f.mode_tcp() } else { f })
        .backend("b", |b| {
            // An echo server answers no HTTP: checked by connect (header included).
            let b = if tcp { b.health(|h| h.tcp()) } else { b };
            b.set("send_proxy_protocol", mode)
                .server_at("raw", server.addr, |s| s)
        })
        .start()
        .await;
    // The server requires the header: it is up only because the checks send one.
    eventually("the server up", Duration::from_secs(5), || {
        live_server(&f, "raw").state() == fulcrum::pool::ServerState::Up
    })
    .await;
    f
}

#[tokio::test]
async fn v1_in_http_mode_names_each_client_and_checks_say_unknown() {
    let server = RawServer::start(false).await;
    let f = started("v1", &server, false).await;
    assert!(server.count(b"PROXY UNKNOWN\r\n") >= 1);
    let fe = f.frontend("www");
    let mut a = RawConn::connect(fe).await;
    let mut b = RawConn::connect(fe).await;
    ok(&mut a).await;
    ok(&mut b).await;
    ok(&mut a).await;
    ok(&mut b).await;
    ok(&mut a).await;
    let line = |c: &RawConn| {
        let p = c.stream.local_addr().unwrap().port();
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {p} {}\r\n", fe.port()).into_bytes()
    };
    // One upstream connection per client: each header once, however many requests, and a
    // connection opened for one client never carried the other's requests.
    assert_eq!(server.count(&line(&a)), 1, "{:?}", server.headers());
    assert_eq!(server.count(&line(&b)), 1, "{:?}", server.headers());
    f.shutdown().await;
}

#[tokio::test]
async fn v2_in_http_mode_is_the_binary_header_and_checks_are_local() {
    let server = RawServer::start(false).await;
    let f = started("v2", &server, false).await;
    let mut local = V2_PREFIX.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    assert!(server.count(&local) >= 1, "{:?}", server.headers());
    let fe = f.frontend("www");
    let mut a = RawConn::connect(fe).await;
    ok(&mut a).await;
    ok(&mut a).await;
    let me = a.stream.local_addr().unwrap();
    assert_eq!(
        server.count(&v2_header(me, fe)),
        1,
        "{:?}",
        server.headers()
    );
    f.shutdown().await;
}

#[tokio::test]
async fn tcp_mode_starts_each_connection_with_the_header() {
    let server = RawServer::start(true).await;
    let f = started("v2", &server, true).await;
    let fe = f.frontend("www");
    let mut c = TcpStream::connect(fe).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping");
    let me = c.local_addr().unwrap();
    assert_eq!(
        server.count(&v2_header(me, fe)),
        1,
        "{:?}",
        server.headers()
    );
    drop(c);
    f.shutdown().await;

    let server = RawServer::start(true).await;
    let f = started("v1", &server, true).await;
    let fe = f.frontend("www");
    let mut c = TcpStream::connect(fe).await.unwrap();
    c.write_all(b"pong").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    let p = c.local_addr().unwrap().port();
    let line = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {p} {}\r\n", fe.port());
    assert_eq!(server.count(line.as_bytes()), 1, "{:?}", server.headers());
    drop(c);
    f.shutdown().await;
}

/// A free port on 127.0.0.1 for HAProxy to bind (taken and released; nothing else on this
/// machine binds ephemeral ports by number).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_real_haproxy_with_accept_proxy_sees_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 5s\n  timeout server 5s\n\
             frontend fe\n  bind 127.0.0.1:{port} accept-proxy\n\
             \x20 http-request return status 200 content-type text/plain lf-string \"client=%ci:%cp\"\n"
        ),
    )
    .unwrap();
    let haproxy = Child(
        std::process::Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (Debian package haproxy) is installed"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually_async(
        "haproxy listening",
        Duration::from_secs(10),
        || async move { TcpStream::connect(addr).await.is_ok() },
    )
    .await;
    for mode in ["v1", "v2"] {
        let f = Setup::new()
            .backend("b", |b| {
                b.set("send_proxy_protocol", mode)
                    .server_at("haproxy", addr, |s| s)
            })
            .start()
            .await;
        // HAProxy answers fulcrum's checks (UNKNOWN / LOCAL headers) with 200.
        eventually("haproxy up", Duration::from_secs(5), || {
            live_server(&f, "haproxy").state() == fulcrum::pool::ServerState::Up
        })
        .await;
        let mut c = RawConn::connect(f.frontend("www")).await;
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        let r = c.read_response().await.expect("an answer");
        let me = c.stream.local_addr().unwrap();
        assert_eq!(r.status, 200, "{mode}");
        assert_eq!(
            r.text(),
            format!("client={}:{}", me.ip(), me.port()),
            "{mode}"
        );
        f.shutdown().await;
    }
    drop(haproxy);
}

/// A process this test started, stopped (by its own pid) when the test ends or fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! TCP mode: whole connections balanced, bytes relayed untouched, down servers skipped.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Frontend `www` in TCP mode.
fn tcp() -> Setup {
    Setup::new().frontend(|f| f.mode_tcp())
}

/// An echo server that prefixes what it sends back with its name.
async fn echo_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut greeted = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !greeted {
                        greeted = true;
                        if s.write_all(format!("{name}:").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` and reads until `want` bytes came back.
async fn round_trip(addr: SocketAddr, msg: &[u8], want: usize) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(msg).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while out.len() < want {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {} bytes", out.len());
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the echo came back");
    out
}

#[tokio::test]
async fn bytes_are_relayed_both_ways() {
    let e1 = echo_server("e1").await;
    let e2 = echo_server("e2").await;
    let f = tcp()
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("100ms").timeout("100ms"))
        })
        .server_at("e1", e1, |s| s)
        .server_at("e2", e2, |s| s)
        .start()
        .await;
    let addr = f.frontend("www");
    // Not HTTP: arbitrary bytes, including a NUL and a lone CR.
    let msg = b"\x00binary\rpayload\xff";
    let mut names = Vec::new();
    for _ in 0..4 {
        let got = round_trip(addr, msg, 3 + msg.len()).await;
        names.push(String::from_utf8_lossy(&got[..2]).into_owned());
        assert_eq!(&got[3..], msg);
    }
    names.sort();
    assert_eq!(
        names,
        ["e1", "e1", "e2", "e2"],
        "round-robin over connections"
    );
    // A larger payload streams through intact.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let got = round_trip(addr, &big, 3 + big.len()).await;
    assert_eq!(&got[3..], &big[..]);
    f.shutdown().await;
}

/// HTTP servers behind a TCP frontend: the health check (http) takes a sick one out.
#[tokio::test]
async fn unhealthy_server_is_skipped() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = tcp().servers(&[&a, &b]).start().await;
    let addr = f.frontend("www");
    a.set_healthy(false);
    let live = live_server(&f, "a");
    eventually("a is down", Duration::from_secs(5), || {
        live.health() == fulcrum::pool::Health::Down
    })
    .await;
    let hits = a.hits();
    for _ in 0..4 {
        let r = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
        // Bytes untouched: no X-Forwarded-For in TCP mode.
        assert!(!b.last_headers().contains_key("x-forwarded-for"));
    }
    assert_eq!(a.hits(), hits);
    f.shutdown().await;
}

/// A server that refuses the connection (gone since its last check) is skipped by retry.
#[tokio::test]
async fn refused_server_is_retried_on_another() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = tcp()
        .backend("b", |be| be.retries(1).health_slow())
        .servers(&[&a, &b])
        .start()
        .await;
    a.stop();
    wait_refused(a.addr).await;
    for _ in 0..4 {
        let r = raw_exchange(
            f.frontend("www"),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
    }
    f.shutdown().await;
}

/// No server at all: the client's connection is closed, not left hanging.
#[tokio::test]
async fn no_server_closes_the_connection() {
    let a = TestServer::start("a").await;
    a.set_healthy(false);
    let f = tcp().servers(&[&a]).start().await;
    let mut c = RawConn::connect(f.frontend("www")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    c.closed_within(Duration::from_secs(5)).await;
    assert_eq!(a.hits(), 0);
    f.shutdown().await;
}

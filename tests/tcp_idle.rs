//! `tunnel_idle_timeout` on `mode = "tcp"` frontends: a connection silent in both
//! directions this long is closed and its server slot freed (so silent clients cannot hold
//! every slot), while traffic in either direction keeps it open; and `fulcrum check`
//! rejects frontend keys that do nothing in TCP mode, naming file, line, column and key.
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tcp(idle: &str) -> Setup {
    Setup::new().frontend(|f| f.mode_tcp().set("tunnel_idle_timeout", idle))
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_frees_its_slot() {
    let a = TestServer::start("a").await;
    let f = tcp("500ms").server(&a, |s| s).start().await;
    let server = live_server(&f, "a");
    let mut c = RawConn::connect(f.frontend("www")).await;
    eventually("the relay holds a slot", Duration::from_secs(5), || {
        server.active() == 1
    })
    .await;
    let took = c.closed_within(Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    eventually("the slot is free", Duration::from_secs(5), || {
        server.active() == 0
    })
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn traffic_either_way_keeps_a_connection_open() {
    let a = TestServer::start("a").await;
    let f = tcp("600ms").server(&a, |s| s).start().await;
    let mut c = RawConn::connect(f.frontend("www")).await;
    let start = tokio::time::Instant::now();
    // HTTP keep-alive through the relay: a request every 300 ms, 6 times (1.8 s, three
    // idle timeouts), each answered on the same connection.
    for _ in 0..6 {
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let r = c
            .read_response_within(Duration::from_secs(5))
            .await
            .expect("an answer")
            .expect("the connection is open");
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(start.elapsed() > Duration::from_millis(1500));
    c.closed_within(Duration::from_secs(5)).await;
    f.shutdown().await;
}

/// The case: silent clients held every slot of a server and a client with data to
/// send was never served. Now they are closed and the waiting client gets its turn.
#[tokio::test]
async fn silent_clients_cannot_keep_a_waiting_client_out() {
    let a = TestServer::start("a").await;
    let f = tcp("500ms")
        .backend("b", |b| b.queue_timeout("10s"))
        .server(&a, |s| s.max_connections(2))
        .start()
        .await;
    let server = live_server(&f, "a");
    let www = f.frontend("www");
    let _silent = [RawConn::connect(www).await, RawConn::connect(www).await];
    eventually("both slots taken", Duration::from_secs(5), || {
        server.active() == 2
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(www).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), c.read_to_end(&mut answer))
        .await
        .expect("served once the silent ones are closed")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    f.shutdown().await;
}

fn check(text: &str) -> Result<fulcrum::config::Config, fulcrum::config::ConfigErrors> {
    fulcrum::config::parse_str(text, Path::new("test.toml"))
}

const SERVERS: &str = "\n[[backends.b.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";

#[test]
fn keys_without_effect_in_tcp_mode_are_errors_with_their_place() {
    let text = format!(
        "[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\nmode = \"tcp\"\n\
         client_idle_timeout = \"5s\"\nmax_concurrent_streams = 10\n{SERVERS}"
    );
    let errors = check(&text).unwrap_err().0;
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.line, e.column))
        .collect();
    assert_eq!(
        found,
        [
            ("frontends[0].client_idle_timeout", 6, 1),
            ("frontends[0].max_concurrent_streams", 7, 1)
        ],
        "{errors:?}"
    );
    assert!(
        errors[0].message.contains("no effect"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0]
            .to_string()
            .starts_with("test.toml:6:1: key `frontends[0].client_idle_timeout`")
    );
    // Each of the others too (not tls: TCP mode terminates it, see tests/tls_sni.rs; and
    // client_header_timeout only without tls and accept_proxy_protocol).
    for line in ["client_header_timeout = \"5s\"", "max_header_bytes = 4096"] {
        let text = format!(
            "[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\nmode = \"tcp\"\n{line}\n{SERVERS}"
        );
        let errors = check(&text).unwrap_err().0;
        assert!(
            errors
                .iter()
                .any(|e| e.line == 6 && e.message.contains("no effect")),
            "{line}: {errors:?}"
        );
    }
}

#[test]
fn tunnel_idle_timeout_is_valid_in_both_modes_and_the_stream_limit_is_bounded() {
    for mode in ["tcp", "http"] {
        let text = format!(
            "[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\nmode = \"{mode}\"\n\
             tunnel_idle_timeout = \"5m\"\n{SERVERS}"
        );
        let cfg = check(&text).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(
            cfg.frontends[0].tunnel_idle_timeout.get(),
            Duration::from_secs(300)
        );
    }
    let text =
        format!("[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n{SERVERS}");
    let cfg = check(&text).unwrap();
    assert_eq!(
        cfg.frontends[0].tunnel_idle_timeout.get(),
        Duration::from_secs(3600)
    );
    assert_eq!(cfg.frontends[0].max_concurrent_streams, 100);
    for (value, ok) in [("0", false), ("1", true), ("1000", true), ("1001", false)] {
        let text = format!(
            "[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             max_concurrent_streams = {value}\n{SERVERS}"
        );
        match check(&text) {
            Ok(_) => assert!(ok, "{value} accepted"),
            Err(e) => {
                assert!(!ok, "{value}: {e}");
                assert_eq!(e.0[0].key, "frontends[0].max_concurrent_streams");
                assert_eq!((e.0[0].line, e.0[0].column), (5, 1));
            }
        }
    }
    let text = format!(
        "[[frontends]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\nmode = \"tcp\"\n\
         tunnel_idle_timeout = \"0s\"\n{SERVERS}"
    );
    assert_eq!(
        check(&text).unwrap_err().0[0].key,
        "frontends[0].tunnel_idle_timeout"
    );
}

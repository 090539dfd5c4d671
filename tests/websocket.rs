//! WebSocket through fulcrum's HTTP/1 engine (issue 11, point 4): a real client and a real
//! server (tokio-tungstenite) on loopback. The Upgrade is forwarded, the 101 relayed, then
//! bytes both ways: text and binary messages, a 1 MiB message, ping/pong, the close
//! handshake. The tunnel holds one of the server's `max_connections` slots while open and
//! is closed after `tunnel_idle_timeout` of silence.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket echo server: text and binary messages come back as they are; tungstenite
/// answers pings and the close handshake itself. Connections that are no WebSocket (the
/// TCP health check) are let go.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// fulcrum before one echo server `ws` with `max_connections = 1`, checked by TCP connect
/// once, with a short queue wait and `tunnel_idle_timeout`.
async fn fulcrum_before(ws: SocketAddr, tunnel_idle: &str) -> Fulcrum {
    Setup::new()
        .frontend(|f| f.set("tunnel_idle_timeout", tunnel_idle))
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("60s"))
                .queue_timeout("300ms")
        })
        .server_at("ws", ws, |s| s.max_connections(1))
        .start()
        .await
}

async fn connect(front: SocketAddr) -> Ws {
    let url = format!("ws://{front}/chat");
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake within 10s")
        .expect("the handshake succeeds");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next message, within [`WAIT`].
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message within 10s")
        .expect("the connection is open")
        .expect("a valid message")
}

#[tokio::test]
async fn messages_ping_and_close_go_through_the_tunnel() {
    let server = echo_server().await;
    let f = fulcrum_before(server, "1h").await;
    let mut ws = connect(f.frontend("www")).await;

    ws.send(Message::text("hello, world")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello, world"));

    let bin: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::binary(bin.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(bin));

    // 1 MiB in one message, a pattern that a lost or shifted byte cannot reproduce.
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next(&mut ws).await {
        Message::Binary(got) => {
            assert_eq!(got.len(), big.len());
            assert!(got[..] == big[..], "the 1 MiB message arrived altered");
        }
        other => panic!("expected the 1 MiB message back, got {other:?}"),
    }
    let big_text = "ünïcødé ".repeat((1 << 20) / 12);
    ws.send(Message::text(big_text.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(big_text));

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(b"are you there".to_vec().into())
    );

    // Several messages in flight at once come back in order.
    for i in 0..20 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..20 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }

    // The close handshake: the server's Close comes back, then the stream ends.
    ws.close(None).await.unwrap();
    let mut saw_close = false;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed within 10s")
        {
            Some(Ok(Message::Close(_))) => saw_close = true,
            Some(Ok(other)) => panic!("after close: {other:?}"),
            Some(Err(tungstenite::Error::ConnectionClosed)) | None => break,
            Some(Err(e)) => panic!("the close handshake failed: {e}"),
        }
    }
    assert!(saw_close, "no Close frame came back");
    drop(ws);
    let s = live_server(&f, "ws");
    eventually("the tunnel's slot is freed", WAIT, || s.active() == 0).await;
    f.shutdown().await;
}

#[tokio::test]
async fn an_open_tunnel_holds_a_server_slot_until_it_closes() {
    let server = echo_server().await;
    let f = fulcrum_before(server, "1h").await;
    let front = f.frontend("www");
    let s = live_server(&f, "ws");
    let mut first = connect(front).await;
    first.send(Message::text("one")).await.unwrap();
    assert_eq!(next(&mut first).await, Message::text("one"));
    assert_eq!(s.active(), 1, "an open tunnel holds one slot");

    // max_connections = 1: a second WebSocket waits in the queue, then is refused.
    let url = format!("ws://{front}/chat");
    let second = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer within 10s");
    match second {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(
                resp.headers()
                    .get("x-fulcrum-error")
                    .and_then(|v| v.to_str().ok()),
                Some("queue_timeout")
            );
        }
        Err(e) => panic!("expected a 503, got {e}"),
        Ok(_) => panic!("a second tunnel opened past max_connections = 1"),
    }
    assert_eq!(s.active(), 1);

    // The first still works; closed, its slot is free for a new one.
    first.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut first).await, Message::text("still here"));
    first.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, first.next()).await {}
    drop(first);
    eventually("the slot is freed after close", WAIT, || s.active() == 0).await;

    let mut third = connect(front).await;
    third.send(Message::text("three")).await.unwrap();
    assert_eq!(next(&mut third).await, Message::text("three"));
    assert_eq!(s.active(), 1);
    drop(third);
    eventually("the slot is freed after a drop", WAIT, || s.active() == 0).await;
    f.shutdown().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let server = echo_server().await;
    let f = fulcrum_before(server, "500ms").await;
    let s = live_server(&f, "ws");
    let mut ws = connect(f.frontend("www")).await;
    // Traffic keeps it open past the limit: a message every 100 ms for 1.2 s.
    let start = tokio::time::Instant::now();
    for i in 0..12 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ws.send(Message::text(format!("beat {i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(format!("beat {i}")));
    }
    assert!(start.elapsed() > Duration::from_millis(1000));
    // Then silence from the last echo on: fulcrum closes the tunnel, without a close
    // handshake.
    let quiet = tokio::time::Instant::now();
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the idle tunnel is closed within 10s");
    let took = quiet.elapsed();
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the 500ms limit"
    );
    eventually("the idle tunnel's slot is freed", WAIT, || s.active() == 0).await;
    f.shutdown().await;
}

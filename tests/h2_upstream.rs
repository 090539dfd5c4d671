//! `protocol = "h2"`: HTTP/2 to servers in cleartext by prior knowledge, multiplexed, with
//! the server's stream limit respected, trailers relayed both ways, and what the HTTP/1
//! path guarantees (forwarding headers, hop-by-hop headers dropped, timeouts, retries).
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What an h2-only test server saw.
#[derive(Default)]
struct Seen {
    /// Connections that carried at least one request (health checks' connects carry none).
    conns: AtomicUsize,
    /// The most streams in flight on any one connection.
    peak: AtomicUsize,
    /// Request bodies that ended in a reset rather than whole.
    cut: AtomicUsize,
    last: std::sync::Mutex<Option<(http::Version, http::Uri, HeaderMap)>>,
}

/// An HTTP/2-only server (prior knowledge; an HTTP/1 request gets nothing) allowing
/// `max_streams` concurrent streams per connection. It answers `name` and, after
/// `x-delay-ms`, echoes the request body and sends the request's trailers back as its own
/// plus `x-served-by`.
async fn h2_server(name: &'static str, max_streams: u32) -> (SocketAddr, Arc<Seen>) {
    let (addr, seen, _) = h2_server_stoppable(name, max_streams).await;
    (addr, seen)
}

/// [`h2_server`], with the handle of its accept loop: aborting it closes the listener.
async fn h2_server_stoppable(
    name: &'static str,
    max_streams: u32,
) -> (SocketAddr, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let s = Arc::clone(&s);
            let streams = Arc::new(AtomicUsize::new(0));
            let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (s, streams, used) =
                        (Arc::clone(&s), Arc::clone(&streams), Arc::clone(&used));
                    async move {
                        if !used.swap(true, Ordering::SeqCst) {
                            s.conns.fetch_add(1, Ordering::SeqCst);
                        }
                        let now = streams.fetch_add(1, Ordering::SeqCst) + 1;
                        s.peak.fetch_max(now, Ordering::SeqCst);
                        let resp = answer(name, &s, req).await;
                        streams.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen, accept)
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(name: &'static str, s: &Seen, req: Request<Incoming>) -> Response<EchoBody> {
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let s_unsized = req.headers().contains_key("x-unsized");
    *s.last.lock().unwrap() = Some((req.version(), req.uri().clone(), req.headers().clone()));
    let Ok(collected) = req.into_body().collect().await else {
        s.cut.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from_static(b"cut")).boxed());
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        return resp;
    };
    let mut trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    tokio::time::sleep(Duration::from_millis(delay)).await;
    trailers.insert("x-served-by", HeaderValue::from_static(name));
    let body = if body.is_empty() {
        Bytes::from_static(name.as_bytes())
    } else {
        body
    };
    let body = if s_unsized {
        // No length: two DATA frames and the trailers.
        let half = body.len() / 2;
        let frames = [
            Frame::data(body.slice(..half)),
            Frame::data(body.slice(half..)),
            Frame::trailers(trailers),
        ];
        let frames = frames.map(Ok::<_, std::convert::Infallible>);
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    } else {
        Full::new(body)
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed()
    };
    Response::builder()
        .header("x-server", name)
        .header("keep-alive", "timeout=5")
        .body(body)
        .unwrap()
}

/// An HTTP/2 (prior knowledge) client connection to fulcrum's frontend.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<EchoBody> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn get(path: &str) -> Request<EchoBody> {
    Request::get(format!("http://books.example{path}"))
        .body(Empty::new().boxed())
        .unwrap()
}

/// A backend `b` of h2 servers (tcp health checks: the servers speak no HTTP/1).
fn h2_setup(servers: &[(&str, SocketAddr)]) -> Setup {
    let mut s = Setup::new().backend("b", |b| {
        b.set("protocol", "h2").health(|h| h.tcp()).retries(1)
    });
    for (name, addr) in servers {
        s = s.server_at(name, *addr, |s| s);
    }
    s
}

#[tokio::test]
async fn h2_client_to_h2_server_with_trailers_both_ways() {
    let (addr, seen) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    let mut tx = h2_client(f.frontend("www")).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let body = Full::new(Bytes::from_static(b"hello"))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    let req = Request::post("http://books.example/upload?x=1")
        .header("te", "trailers")
        .header("connection-specific", "x")
        .body(body)
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-server"], "a");
    assert!(
        resp.headers().get("keep-alive").is_none(),
        "hop-by-hop dropped"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let t = collected.trailers().cloned().expect("trailers relayed");
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(
        t["x-checksum"], "abc",
        "the request's trailers reached the server"
    );
    assert_eq!(t["x-served-by"], "a");
    let (version, uri, headers) = seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(uri.authority().unwrap(), "books.example");
    assert_eq!(uri.path_and_query().unwrap(), "/upload?x=1");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"], "books.example");
    assert_eq!(headers["te"], "trailers");
    assert!(headers.get("host").is_none());
    assert_eq!(seen.conns.load(Ordering::SeqCst), 1);
    f.shutdown().await;
}

/// An HTTP/2 client's body with no declared length is cut at `max_body_bytes` on its way
/// to an HTTP/2 server too: the frame that would pass the limit never leaves fulcrum, the
/// server's stream is reset and the client gets 413.
#[tokio::test]
async fn an_unsized_h2_body_is_cut_at_max_body_bytes() {
    let (addr, seen) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)])
        .frontend(|f| f.set("max_body_bytes", 100))
        .start()
        .await;
    let mut tx = h2_client(f.frontend("www")).await;
    let frames = ["x".repeat(60), "y".repeat(60)]
        .map(|p| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(p))));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let req = Request::post("http://books.example/up").body(body).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["x-fulcrum-error"], "body_too_large");
    eventually("the server's stream reset", Duration::from_secs(5), || {
        seen.cut.load(Ordering::SeqCst) == 1
    })
    .await;
    // Under the limit, the same unsized body goes through whole.
    let frames = ["x".repeat(40), "y".repeat(40)]
        .map(|p| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(p))));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let req = Request::post("http://books.example/up").body(body).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 80);
    f.shutdown().await;
}

/// Many concurrent requests to a server allowing 2 streams a connection: all succeed,
/// never more than 2 on one connection, spread over further connections.
#[tokio::test]
async fn the_servers_stream_limit_is_respected() {
    let (addr, seen) = h2_server("a", 2).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    let mut tx = h2_client(f.frontend("www")).await;
    // One first request, so the server's SETTINGS are known.
    let resp = tx.send_request(get("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..6 {
        let mut req = get("/slow");
        req.headers_mut()
            .insert("x-delay-ms", HeaderValue::from_static("400"));
        pending.push(tx.send_request(req));
    }
    for p in pending {
        let resp = p.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
    }
    let conns = seen.conns.load(Ordering::SeqCst);
    assert!(
        conns >= 3,
        "6 streams at 2 a connection need 3 connections, saw {conns}"
    );
    assert_eq!(
        seen.peak.load(Ordering::SeqCst),
        2,
        "at most 2 streams a connection"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn connections_are_reused() {
    let (addr, seen) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    for _ in 0..3 {
        let mut tx = h2_client(f.frontend("www")).await;
        for _ in 0..3 {
            let resp = tx.send_request(get("/")).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
        }
    }
    // One connection per worker at most: each worker keeps its own.
    let conns = seen.conns.load(Ordering::SeqCst);
    assert!(
        conns >= 1 && conns <= fulcrum::workers::count(),
        "{conns} connections"
    );
    let pooled = live_server(&f, "a").h2.conn_count();
    assert!(pooled >= 1 && pooled <= conns, "{pooled} pooled of {conns}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_slow_h2_server_gets_a_504() {
    let (addr, _) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)])
        .backend("b", |b| b.response_timeout("300ms"))
        .start()
        .await;
    let mut tx = h2_client(f.frontend("www")).await;
    let mut req = get("/slow");
    req.headers_mut()
        .insert("x-delay-ms", HeaderValue::from_static("3000"));
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-fulcrum-error"], "upstream_timeout");
    f.shutdown().await;
}

/// A server that refuses connections: the request goes to the other one.
#[tokio::test]
async fn a_failed_connect_is_retried_on_another_server() {
    let (addr, _) = h2_server("a", 100).await;
    let (dead, _, accept) = h2_server_stoppable("dead", 100).await;
    let f = h2_setup(&[("dead", dead), ("a", addr)])
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("60s").rise(1).fall(1))
        })
        .start()
        .await;
    // Up at the start-up check, then gone: only the data path can notice.
    accept.abort();
    wait_refused(dead).await;
    let mut tx = h2_client(f.frontend("www")).await;
    for _ in 0..4 {
        let resp = tx.send_request(get("/")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
    }
    f.shutdown().await;
}

#[test]
fn an_unknown_protocol_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:8080\"\nbackend = \"shop\"\n\n\
         [backends.shop]\nprotocol = \"h3\"\n\n[[backends.shop.servers]]\nname = \"a\"\n\
         address = \"127.0.0.1:9001\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c", p.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:7:", p.display())),
        "line 7 named: {stderr}"
    );
    assert!(stderr.contains("backends.shop.protocol"), "{stderr}");
    assert!(stderr.contains("h2"), "the choices are named: {stderr}");
}

// ---------------------------------------------------------------------------------------
// HTTP/1 clients (fulcrum's own engine) to h2 servers.

#[tokio::test]
async fn h1_client_to_h2_server() {
    let (addr, seen) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    let url = format!("http://{}/books?id=1", f.frontend("www"));
    let c = client();
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-server"], "a");
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.text().await.unwrap(), "a");
    let (version, uri, headers) = seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(uri.path_and_query().unwrap(), "/books?id=1");
    assert_eq!(
        uri.authority().unwrap().as_str(),
        f.frontend("www").to_string()
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    // A body of a known length, and a chunked one of 1 MiB (more than a stream's window).
    let resp = c.post(&url).body("hello").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "hello");
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = c.post(&url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &big[..]);
    f.shutdown().await;
}

/// An unsized response goes to an HTTP/1.1 client chunked, with the server's trailers, and
/// the connection carries the next request; to an HTTP/1.0 client it ends with the close.
#[tokio::test]
async fn h1_client_gets_unsized_answers_chunked_with_trailers() {
    use tokio::io::AsyncReadExt;
    let (addr, _) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    let mut conn = RawConn::connect(f.frontend("www")).await;
    conn.send(b"POST /x HTTP/1.1\r\nHost: books.example\r\nx-unsized: 1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !raw.ends_with(b"\r\n\r\n") || !String::from_utf8_lossy(&raw).contains("\r\n0\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        text.contains("5\r\nhello\r\n6\r\n world\r\n0\r\nx-served-by: a\r\n\r\n"),
        "{text}"
    );
    conn.send(b"GET / HTTP/1.1\r\nHost: books.example\r\n\r\n")
        .await;
    let r = conn
        .read_response()
        .await
        .expect("a second answer on the connection");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));

    let r = raw_exchange(
        f.frontend("www"),
        b"GET / HTTP/1.0\r\nHost: books.example\r\nx-unsized: 1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("transfer-encoding").is_none());
    f.shutdown().await;
}

#[tokio::test]
async fn h1_client_retried_after_a_failed_connect_and_timed_out() {
    let (addr, _) = h2_server("a", 100).await;
    let (dead, _, accept) = h2_server_stoppable("dead", 100).await;
    let f = h2_setup(&[("dead", dead), ("a", addr)])
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("60s").rise(1).fall(1))
                .response_timeout("300ms")
        })
        .start()
        .await;
    accept.abort();
    wait_refused(dead).await;
    let c = client();
    let url = format!("http://{}/", f.frontend("www"));
    for _ in 0..4 {
        let resp = c.post(&url).body("x").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "x");
    }
    let resp = c
        .get(&url)
        .header("x-delay-ms", "3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-fulcrum-error"], "upstream_timeout");
    f.shutdown().await;
}

/// An HTTP/2 server that refuses every stream (REFUSED_STREAM): nothing was processed.
async fn refusing_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    addr
}

/// A refused stream is retried on another server even for a method that is not
/// idempotent: the server said it did not process it.
#[tokio::test]
async fn a_refused_stream_goes_to_another_server() {
    let (addr, _) = h2_server("a", 100).await;
    let refuser = refusing_server().await;
    let f = h2_setup(&[("refuser", refuser), ("a", addr)]).start().await;
    let mut tx = h2_client(f.frontend("www")).await;
    for _ in 0..4 {
        let req = Request::post("http://books.example/")
            .body(Empty::new().boxed())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
    }
    let c = client();
    let url = format!("http://{}/", f.frontend("www"));
    for _ in 0..4 {
        let resp = c.post(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "a");
    }
    f.shutdown().await;
}

/// Graceful shutdown lets a stream in flight to an h2 server finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_h2_stream_finish() {
    let (addr, seen) = h2_server("a", 100).await;
    let f = h2_setup(&[("a", addr)]).start().await;
    let mut tx = h2_client(f.frontend("www")).await;
    let in_flight = tokio::spawn(async move {
        let mut req = get("/slow");
        req.headers_mut()
            .insert("x-delay-ms", HeaderValue::from_static("500"));
        let resp = tx.send_request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    eventually(
        "the request reached the server",
        Duration::from_secs(5),
        || seen.last.lock().unwrap().is_some(),
    )
    .await;
    assert!(
        f.shutdown().await,
        "everything finished within the grace period"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), body.as_ref()), (200, b"a".as_ref()));
}

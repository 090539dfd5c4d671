//! Hostile or careless HTTP/2 clients, spoken to with the raw `h2` client: the Host a
//! server sees is the request's `:authority`, malformed authorities are refused, cookie
//! crumbs are joined, CONNECT and stray asterisk targets never reach a server, the stream
//! limit is the configured one, and a stream whose client opens no window is reset after
//! `client_idle_timeout` with its server slot freed.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use admin_common::Api;
use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http::Request;
use tokio::net::TcpStream;

/// An HTTP/2 (prior knowledge) connection to `addr`; `window` is the client's initial
/// stream window (`None`: h2's default).
async fn connect(addr: std::net::SocketAddr, window: Option<u32>) -> SendRequest<Bytes> {
    connect_seeing_limit(addr, window).await.0
}

/// [`connect`], and the stream limit the server's SETTINGS announced (0 until they came).
async fn connect_seeing_limit(
    addr: std::net::SocketAddr,
    window: Option<u32>,
) -> (SendRequest<Bytes>, Arc<AtomicUsize>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut b = h2::client::Builder::new();
    if let Some(w) = window {
        b.initial_window_size(w);
    }
    let (tx, mut conn) = b.handshake::<_, Bytes>(tcp).await.unwrap();
    let limit = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&limit);
    tokio::spawn(std::future::poll_fn(move |cx| {
        let r = std::pin::Pin::new(&mut conn).poll(cx);
        seen.store(conn.max_concurrent_send_streams(), Ordering::SeqCst);
        r.map(|_| ())
    }));
    (tx.ready().await.unwrap(), limit)
}

/// Sends `req` (no body) and returns the status, `x-fulcrum-error` and the body.
async fn exchange(tx: &mut SendRequest<Bytes>, req: Request<()>) -> (u16, String, Bytes) {
    let (resp, _) = tx.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let code = resp
        .headers()
        .get("x-fulcrum-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut body = resp.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    (status, code, Bytes::from(all))
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).version(http::Version::HTTP_2)
}

#[tokio::test]
async fn the_server_sees_the_authority_and_malformed_hosts_are_refused() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let mut tx = connect(f.frontend("www"), None).await;

    // :authority alone, and with a host field that agrees (case aside): forwarded as is.
    let (status, _, body) = exchange(&mut tx, get("http://a.example/").body(()).unwrap()).await;
    assert_eq!((status, body.as_ref()), (200, b"a".as_ref()));
    assert_eq!(a.last_headers()["host"], "a.example");
    assert_eq!(a.last_headers()["x-forwarded-host"], "a.example");
    let agree = get("http://a.example/").header("host", "A.example");
    assert_eq!(exchange(&mut tx, agree.body(()).unwrap()).await.0, 200);
    assert_eq!(a.last_headers()["host"], "a.example");

    let hits = a.hits();
    let refused = [
        // A host that disagrees with :authority would reach the server as the host.
        get("http://a.example/").header("host", "evil.example"),
        // Two host fields.
        get("http://a.example/")
            .header("host", "a.example")
            .header("host", "a.example"),
        // Userinfo in the authority.
        get("http://evil:pw@a.example/"),
        // Neither :authority nor host (h2 sends :scheme http for a relative URI).
        Request::get("/"),
    ];
    for (i, req) in refused.into_iter().enumerate() {
        let (status, code, _) = exchange(&mut tx, req.body(()).unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "case {i}");
    }
    assert_eq!(a.hits(), hits, "no refused request reached the server");

    // Without :authority, one host field names the authority.
    let (status, _, _) = exchange(
        &mut tx,
        Request::get("/")
            .header("host", "b.example")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.last_headers()["host"], "b.example");
    f.shutdown().await;
}

#[tokio::test]
async fn cookie_crumbs_reach_the_server_as_one_field() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let mut tx = connect(f.frontend("www"), None).await;
    let req = get("http://a.example/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(())
        .unwrap();
    assert_eq!(exchange(&mut tx, req).await.0, 200);
    let h = a.last_headers();
    let cookies: Vec<_> = h.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
    f.shutdown().await;
}

#[tokio::test]
async fn connect_and_stray_asterisks_never_reach_a_server() {
    let a = TestServer::start("a").await;
    let f = Setup::new().servers(&[&a]).start().await;
    let mut tx = connect(f.frontend("www"), None).await;
    let connect = Request::connect("a.example:443")
        .version(http::Version::HTTP_2)
        .body(())
        .unwrap();
    let (status, code, body) = exchange(&mut tx, connect).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .starts_with("method not allowed")
    );
    // The connection stays usable.
    assert_eq!(
        exchange(&mut tx, get("http://a.example/").body(()).unwrap())
            .await
            .0,
        200
    );
    let hits = a.hits();

    // HTTP/1.1 alike: CONNECT is refused, `*` only for OPTIONS.
    let www = f.frontend("www");
    let r = raw_exchange(
        www,
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-fulcrum-error")),
        (405, Some("method_not_allowed"))
    );
    let r = raw_exchange(www, b"GET * HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(
        (r.status, r.header("x-fulcrum-error")),
        (400, Some("bad_request"))
    );
    assert_eq!(a.hits(), hits, "nothing reached the server");
    let r = raw_exchange(www, b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(a.hits(), hits + 1, "OPTIONS * is forwarded");
    f.shutdown().await;
}

#[tokio::test]
async fn the_stream_limit_is_the_configured_one() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.set("max_concurrent_streams", 7))
        .servers(&[&a])
        .start()
        .await;
    let (mut tx, limit) = connect_seeing_limit(f.frontend("www"), None).await;
    assert_eq!(
        exchange(&mut tx, get("http://a.example/").body(()).unwrap())
            .await
            .0,
        200
    );
    // The server's SETTINGS have arrived with the first answer.
    assert_eq!(limit.load(Ordering::SeqCst), 7);
    let f2 = Setup::new().servers(&[&a]).start().await;
    let (mut tx, limit) = connect_seeing_limit(f2.frontend("www"), None).await;
    assert_eq!(
        exchange(&mut tx, get("http://a.example/").body(()).unwrap())
            .await
            .0,
        200
    );
    assert_eq!(limit.load(Ordering::SeqCst), 100, "the default");
    f.shutdown().await;
    f2.shutdown().await;
}

/// The case: a client that never opens its window. Its streams get their response
/// heads, then nothing can be sent; each is reset after `client_idle_timeout` and its slot
/// freed, while a client that reads keeps being served.
#[tokio::test]
async fn streams_of_a_client_that_opens_no_window_are_reset_and_free_their_slots() {
    let a = TestServer::start("a").await;
    let idle = Duration::from_millis(1500);
    let f = Setup::new()
        .frontend(|f| f.client_idle_timeout("1500ms"))
        .servers(&[&a])
        .start()
        .await;
    let server = live_server(&f, "a");
    let mut tx = connect(f.frontend("www"), Some(0)).await;
    let start = tokio::time::Instant::now();
    let mut bodies = Vec::new();
    for _ in 0..16 {
        let req = get("http://a.example/big?bytes=4000000").body(()).unwrap();
        let (resp, _) = tx.send_request(req, true).unwrap();
        bodies.push(resp);
    }
    let mut streams = Vec::new();
    for resp in bodies {
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("response heads within 10 s")
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp.into_body());
    }
    assert_eq!(
        server.active(),
        16,
        "every stream holds its slot while stuck"
    );

    // Meanwhile a reading client is served.
    let mut other = connect(f.frontend("www"), None).await;
    let (status, _, body) = exchange(
        &mut other,
        get("http://a.example/big?bytes=200000").body(()).unwrap(),
    )
    .await;
    assert_eq!((status, body.len()), (200, 200_000));

    for mut body in streams {
        let r = tokio::time::timeout(idle + Duration::from_secs(5), body.data())
            .await
            .expect("the stream ends within the idle timeout and a margin");
        let err = match r {
            Some(Err(e)) => e,
            other => panic!("expected a reset, got {other:?}"),
        };
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    }
    let took = start.elapsed();
    assert!(
        took >= idle - Duration::from_millis(100),
        "reset too early: {took:?}"
    );
    eventually("every slot is free", Duration::from_secs(5), || {
        server.active() == 0
    })
    .await;
    drop(tx);
    f.shutdown().await;
}

/// A client that opens its window, slowly but steadily, is not mistaken for a stalled one.
#[tokio::test]
async fn a_slow_reader_that_keeps_reading_is_not_reset() {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.client_idle_timeout("1s"))
        .servers(&[&a])
        .start()
        .await;
    let mut tx = connect(f.frontend("www"), Some(65_535)).await;
    let req = get("http://a.example/big?bytes=1048576").body(()).unwrap();
    let (resp, _) = tx.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    let mut body = resp.into_body();
    let start = tokio::time::Instant::now();
    let mut total = 0;
    // 64 KiB released every 100 ms: about 1.6 s for the whole body, longer than the
    // idle timeout, with no 1 s pause.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("data keeps coming")
    {
        let chunk = chunk.expect("no reset");
        total += chunk.len();
        tokio::time::sleep(Duration::from_millis(100) * chunk.len() as u32 / 65_536).await;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert_eq!(total, 1_048_576);
    assert!(
        start.elapsed() > Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    eventually("the slot is free", Duration::from_secs(5), || {
        live_server(&f, "a").active() == 0
    })
    .await;
    f.shutdown().await;
}

/// A reload that changes `max_concurrent_streams` applies it to the next connection.
#[tokio::test]
async fn a_reload_applies_the_stream_limit_to_new_connections() {
    let a = TestServer::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let setup = |n: i64| {
        Setup::new()
            .frontend(|f| f.set("max_concurrent_streams", n))
            .servers(&[&a])
    };
    let f = setup(5).start_from(&path).await;
    let (mut tx, limit) = connect_seeing_limit(f.frontend("www"), None).await;
    assert_eq!(
        exchange(&mut tx, get("http://a.example/").body(()).unwrap())
            .await
            .0,
        200
    );
    assert_eq!(limit.load(Ordering::SeqCst), 5);
    std::fs::write(&path, setup(9).state_dir(f.state_dir()).toml()).unwrap();
    let (code, _) = Api::new(&f)
        .send(http::Method::POST, "/api/v1/reload", None)
        .await;
    assert_eq!(code, 200);
    let (mut tx, limit) = connect_seeing_limit(f.frontend("www"), None).await;
    assert_eq!(
        exchange(&mut tx, get("http://a.example/").body(()).unwrap())
            .await
            .0,
        200
    );
    assert_eq!(limit.load(Ordering::SeqCst), 9);
    f.shutdown().await;
}

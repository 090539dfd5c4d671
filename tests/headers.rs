//! Header rules on the way to the server, and requests whose head fulcrum must refuse:
//! ambiguous framing, no Host, a head over `max_header_bytes`.
mod common;

use std::time::Duration;

use common::*;

async fn start_one() -> (TestServer, Fulcrum) {
    let a = TestServer::start("a").await;
    let f = Setup::new()
        .frontend(|f| f.max_header_bytes(2048))
        .servers(&[&a])
        .start()
        .await;
    (a, f)
}

#[tokio::test]
async fn forwarded_headers_added_and_hop_by_hop_removed() {
    let (a, f) = start_one().await;
    let req = "GET /page?q=1 HTTP/1.1\r\n\
               Host: books.example:8080\r\n\
               X-Forwarded-For: 203.0.113.9\r\n\
               X-Forwarded-Proto: https\r\n\
               Connection: keep-alive, X-Secret\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: trailers\r\n\
               Proxy-Connection: keep-alive\r\n\
               Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
               X-Secret: only-for-the-first-hop\r\n\
               X-Kept: yes\r\n\
               \r\n";
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "a");
    let h = a.last_headers();
    let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        get("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        get("x-forwarded-proto").as_deref(),
        Some("http"),
        "fulcrum sets, not trusts"
    );
    assert_eq!(
        get("x-forwarded-host").as_deref(),
        Some("books.example:8080")
    );
    assert_eq!(
        get("host").as_deref(),
        Some("books.example:8080"),
        "Host kept"
    );
    assert_eq!(get("x-kept").as_deref(), Some("yes"));
    for gone in [
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
        "x-secret",
    ] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
    // Connection may be set by fulcrum's own client for its hop, but never carry the
    // client's token list.
    if let Some(c) = get("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-secret"),
            "connection: {c}"
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_is_set_when_absent_and_upgrade_is_dropped() {
    let (a, f) = start_one().await;
    let req =
        "GET / HTTP/1.1\r\nHost: h.example\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n";
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let h = a.last_headers();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "h.example");
    assert!(!h.contains_key("upgrade"), "{h:?}");
    f.shutdown().await;
}

/// A request through reqwest as a normal client sends it.
#[tokio::test]
async fn ordinary_client_request_headers() {
    let (a, f) = start_one().await;
    let url = format!("http://{}/", f.frontend("www"));
    let r = client()
        .get(&url)
        .header("x-forwarded-for", "given")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = a.last_headers();
    assert_eq!(h["x-forwarded-for"], "given, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["x-forwarded-host"],
        f.frontend("www").to_string().as_str()
    );
    assert_eq!(h["host"], f.frontend("www").to_string().as_str());
    f.shutdown().await;
}

/// Sends a raw request, expects 400 and that the server saw nothing.
async fn expect_400(raw: &str) {
    let (a, f) = start_one().await;
    let resp = raw_exchange(f.frontend("www"), raw.as_bytes()).await;
    assert_eq!(resp.status, 400, "for {raw:?}: {resp:?}");
    // fulcrum's own 400 carries the header; hyper's bare 400 for what it cannot parse may
    // not (the README allows both).
    if let Some(code) = resp.header("x-fulcrum-error") {
        assert_eq!(code, "bad_request");
    }
    assert_eq!(a.hits(), 0, "nothing ambiguous reaches the server");
    f.shutdown().await;
}

#[tokio::test]
async fn conflicting_content_length_is_400() {
    expect_400(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
}

#[tokio::test]
async fn content_length_list_with_different_values_is_400() {
    expect_400("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!").await;
}

/// Both framings at once. hyper's HTTP/1 parser resolves this itself before fulcrum sees
/// the request (RFC 9112 §6.1: Transfer-Encoding wins, Content-Length is dropped, and the
/// connection is closed after the answer), so fulcrum's own check for both headers cannot
/// fire. Either outcome is safe: a 400, or the request framed by chunked alone with the
/// connection closed so that nothing after the chunked body is read as another request.
/// What must never happen is a smuggled second request reaching the server.
#[tokio::test]
async fn transfer_encoding_with_content_length_is_never_smuggled() {
    let (a, f) = start_one().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Id: smuggled\r\n\r\n";
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nX-Id: first\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
    );
    let mut c = RawConn::connect(f.frontend("www")).await;
    c.send(req.as_bytes()).await;
    let first = c
        .read_response_within(Duration::from_secs(5))
        .await
        .expect("an answer")
        .expect("an answer before close");
    match first.status {
        400 => assert_eq!(a.hits(), 0),
        200 => {
            assert_eq!(first.text(), "5", "the body framed by chunked alone");
            assert_eq!(first.header("connection"), Some("close"));
            let h = a.last_headers();
            assert!(!h.contains_key("content-length"), "{h:?}");
        }
        other => panic!("unexpected {other}: {first:?}"),
    }
    // No second answer: the connection ends.
    c.closed_within(Duration::from_secs(5)).await;
    let arrivals = a.state.arrivals.lock().unwrap().clone();
    assert!(!arrivals.contains(&"smuggled".to_string()), "{arrivals:?}");
    // Other order of the two headers: the same.
    let req = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert!(resp.status == 400 || resp.text() == "5", "{resp:?}");
    f.shutdown().await;
}

/// Transfer-Encoding that is not chunked as the final coding cannot be framed: 400.
#[tokio::test]
async fn transfer_encoding_not_chunked_is_400() {
    expect_400("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello").await;
}

#[tokio::test]
async fn http11_without_host_is_400_bad_request() {
    let (a, f) = start_one().await;
    let resp = raw_exchange(f.frontend("www"), b"GET / HTTP/1.1\r\nX-Y: z\r\n\r\n").await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.header("x-fulcrum-error"), Some("bad_request"));
    assert_eq!(a.hits(), 0);
    // HTTP/1.0 needs no Host.
    let resp = raw_exchange(f.frontend("www"), b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn head_over_max_header_bytes_is_431() {
    let (a, f) = start_one().await;
    let big = "v".repeat(4096);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(resp.header("x-fulcrum-error"), Some("header_too_large"));
    assert!(resp.body.len() < 120, "{}", resp.text());
    assert_eq!(a.hits(), 0);
    // Just under the limit passes.
    let small = "v".repeat(1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {small}\r\n\r\n");
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    f.shutdown().await;
}

/// A head far beyond anything hyper buffers still gets an answer or a close, never a hang
/// or a crash, and fulcrum keeps serving.
#[tokio::test]
async fn enormous_head_does_not_hang() {
    let (_a, f) = start_one().await;
    let big = "v".repeat(256 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let mut c = RawConn::connect(f.frontend("www")).await;
    // The write may fail once fulcrum closes: that is an acceptable outcome.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, req.as_bytes()).await;
    match c.read_response_within(Duration::from_secs(5)).await {
        Ok(Some(r)) => assert!(r.status == 431 || r.status == 400, "{r:?}"),
        Ok(None) => {} // closed without an answer
        Err(_) => panic!("no answer and no close within 5s"),
    }
    let resp = raw_exchange(f.frontend("www"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp.status, 200);
    f.shutdown().await;
}

/// Several `X-Forwarded-For` lines are one list (RFC 9110 §5.3): every hop is kept.
#[tokio::test]
async fn forwarded_for_keeps_every_line() {
    let (a, f) = start_one().await;
    let req = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n";
    let resp = raw_exchange(f.frontend("www"), req.as_bytes()).await;
    assert_eq!(resp.status, 200);
    let h = a.last_headers();
    let all: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
    f.shutdown().await;
}

/// Hop-by-hop headers in the server's response stay on that hop too; the status and the
/// other headers come through.
#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    use tokio::io::AsyncWriteExt;
    let addr = raw_server(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: keep-alive, X-Internal\r\n\
                  Keep-Alive: timeout=30\r\nX-Internal: secret\r\nProxy-Authenticate: Basic\r\n\
                  X-Public: yes\r\n\r\nok",
            )
            .await;
    })
    .await;
    let f = fulcrum_before_raw("raw", addr).await;
    let resp = raw_exchange(f.frontend("www"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((resp.status, resp.text().as_str()), (201, "ok"));
    assert_eq!(resp.header("x-public"), Some("yes"));
    for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(resp.header(gone).is_none(), "{gone} passed: {resp:?}");
    }
    if let Some(c) = resp.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-internal"), "{c}");
    }
    f.shutdown().await;
}

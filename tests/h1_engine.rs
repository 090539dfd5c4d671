//! fulcrum's own HTTP/1.1 engine over real sockets (issue 11): strict request framing (RFC
//! 9112), heads forwarded verbatim, pipelining, `Expect: 100-continue`, keep-alive, and the
//! responses of misbehaving servers. The client is raw bytes on a `TcpStream`; the server is
//! a raw TCP server that records exactly the bytes it received, per connection.
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any one read of a test may wait before the test fails.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Framing helpers shared by the test client and the recording server.

/// Where the head ends (just past its empty line), once it is whole.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Decodes a strict chunked body at the start of `buf` (no extensions, no trailers):
/// `None` while incomplete, `Err` if malformed, else the data and the bytes it took.
fn take_chunked(buf: &[u8]) -> Option<Result<(Vec<u8>, usize), String>> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let rest = buf.get(at..)?;
        let line_len = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_len]).ok();
        let Some(size) = line.and_then(|l| usize::from_str_radix(l, 16).ok()) else {
            return Some(Err(format!(
                "bad chunk size line {:?}",
                String::from_utf8_lossy(&rest[..line_len])
            )));
        };
        at += line_len + 2;
        if size == 0 {
            let end = buf.get(at..at + 2)?;
            if end != b"\r\n" {
                return Some(Err("trailers or no final CRLF".into()));
            }
            return Some(Ok((data, at + 2)));
        }
        let chunk = buf.get(at..at + size + 2)?;
        if &chunk[size..] != b"\r\n" {
            return Some(Err("chunk data not followed by CRLF".into()));
        }
        data.extend_from_slice(&chunk[..size]);
        at += size + 2;
    }
}

/// Header lines of a head (the first line skipped), names as sent.
fn header_lines(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn values(lines: &[(String, String)], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// A pattern that a shifted or dropped byte cannot reproduce.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

// ---------------------------------------------------------------------------------------
// The recording server.

/// One request as the recording server read it.
#[derive(Debug, Clone)]
struct Req {
    /// Which connection (index into [`Upstream::conns`]) carried it.
    conn: usize,
    /// The head as received, final empty line included.
    head: String,
    /// The body, decoded.
    body: Vec<u8>,
}

impl Req {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    fn lines(&self) -> Vec<(String, String)> {
        header_lines(&self.head)
    }

    fn values(&self, name: &str) -> Vec<String> {
        values(&self.lines(), name)
    }
}

/// What the server sends back for a request.
struct Reply {
    bytes: Vec<u8>,
    /// Close the connection once it is sent.
    close: bool,
}

impl Reply {
    fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: false,
        }
    }

    fn closing(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: true,
        }
    }

    /// `200` with `body`, sized by Content-Length.
    fn ok(body: impl AsRef<[u8]>) -> Reply {
        let body = body.as_ref();
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        Reply::raw(bytes)
    }
}

#[derive(Default)]
struct ConnLog {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct UpState {
    conns: Mutex<Vec<ConnLog>>,
    reqs: Mutex<Vec<Req>>,
}

/// A raw HTTP/1.1 server that records every byte it is sent and answers each whole request
/// (Content-Length or strictly chunked body) with what `answer` says. A request whose body
/// framing it cannot read is never answered: its bytes are recorded until the connection
/// closes.
struct Upstream {
    addr: SocketAddr,
    state: Arc<UpState>,
}

impl Upstream {
    async fn start(answer: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(UpState::default());
        let answer = Arc::new(answer);
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (st, answer) = (Arc::clone(&st), Arc::clone(&answer));
                tokio::spawn(async move { serve_conn(s, &st, &*answer).await });
            }
        });
        Upstream { addr, state }
    }

    /// Answers every request with `200` and its path as the body.
    async fn echo_path() -> Upstream {
        Upstream::start(|r| Reply::ok(r.path())).await
    }

    fn reqs(&self) -> Vec<Req> {
        self.state.reqs.lock().unwrap().clone()
    }

    /// Every byte received, connection after connection.
    fn all_bytes(&self) -> Vec<u8> {
        let conns = self.state.conns.lock().unwrap();
        conns.iter().flat_map(|c| c.bytes.clone()).collect()
    }

    /// The bytes of each connection that carried any (health checks carry none).
    fn conns_with_bytes(&self) -> Vec<Vec<u8>> {
        let conns = self.state.conns.lock().unwrap();
        conns
            .iter()
            .filter(|c| !c.bytes.is_empty())
            .map(|c| c.bytes.clone())
            .collect()
    }

    /// Whether every connection that carried bytes has been closed by fulcrum.
    fn all_closed(&self) -> bool {
        let conns = self.state.conns.lock().unwrap();
        conns
            .iter()
            .filter(|c| !c.bytes.is_empty())
            .all(|c| c.closed)
    }
}

async fn serve_conn(
    mut s: TcpStream,
    st: &UpState,
    answer: &(dyn Fn(&Req) -> Reply + Send + Sync),
) {
    let conn = {
        let mut conns = st.conns.lock().unwrap();
        conns.push(ConnLog::default());
        conns.len() - 1
    };
    let mark_closed = || st.conns.lock().unwrap()[conn].closed = true;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut unreadable = false;
    loop {
        // Every whole request pending is answered, in order.
        while !unreadable {
            let Some(end) = head_end(&buf) else { break };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let lines = header_lines(&head);
            let chunked = values(&lines, "transfer-encoding")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("chunked"));
            let length = values(&lines, "content-length")
                .first()
                .and_then(|v| v.parse::<usize>().ok());
            let (body, used) = if chunked {
                match take_chunked(&buf[end..]) {
                    None => break,
                    Some(Err(_)) => {
                        unreadable = true;
                        break;
                    }
                    Some(Ok((body, n))) => (body, n),
                }
            } else if let Some(n) = length {
                if buf.len() < end + n {
                    break;
                }
                (buf[end..end + n].to_vec(), n)
            } else {
                (Vec::new(), 0)
            };
            buf.drain(..end + used);
            let req = Req { conn, head, body };
            st.reqs.lock().unwrap().push(req.clone());
            let reply = answer(&req);
            if s.write_all(&reply.bytes).await.is_err() {
                mark_closed();
                return;
            }
            if reply.close {
                let _ = s.shutdown().await;
                mark_closed();
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                mark_closed();
                return;
            }
            Ok(n) => {
                st.conns.lock().unwrap()[conn]
                    .bytes
                    .extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// fulcrum in front of `up` alone, checked by TCP connect once (so the recording server
/// sees only the requests of the test).
fn before(up: &Upstream) -> Setup {
    Setup::new()
        .backend("b", |b| b.health(|h| h.reset().tcp().interval("60s")))
        .server_at("up", up.addr, |s| s)
}

// ---------------------------------------------------------------------------------------
// The raw client.

/// A response head as the client read it.
#[derive(Debug)]
struct Head {
    status: u16,
    raw: String,
    lines: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<String> {
        values(&self.lines, name).into_iter().next()
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn closes(&self) -> bool {
        self.get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Debug)]
struct Resp {
    head: Head,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.head.status
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at end of stream or a reset. Fails the test after [`WAIT`].
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(WAIT, self.s.read(&mut chunk)).await {
            Err(_) => panic!(
                "nothing from fulcrum for {WAIT:?}; pending: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response head (an interim one too).
    async fn head(&mut self) -> Head {
        let end = loop {
            if let Some(end) = head_end(&self.buf) {
                break end;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let raw = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {raw:?}"));
        let lines = header_lines(&raw);
        Head { status, raw, lines }
    }

    /// The next whole response, its body read as its head frames it.
    async fn response(&mut self) -> Resp {
        let head = self.head().await;
        let body = self.body(&head).await;
        Resp { head, body }
    }

    /// The next response, to a HEAD request: no body whatever the head says.
    async fn response_to_head(&mut self) -> Resp {
        Resp {
            head: self.head().await,
            body: Vec::new(),
        }
    }

    async fn body(&mut self, head: &Head) -> Vec<u8> {
        if head.status < 200 || head.status == 204 || head.status == 304 {
            return Vec::new();
        }
        let chunked = head.get("transfer-encoding").is_some_and(|v| {
            // The last coding frames the body (RFC 9112 §6.1): `gzip, chunked` is chunked.
            let last = v.rsplit(',').next().unwrap_or_default();
            last.trim().eq_ignore_ascii_case("chunked")
        });
        if chunked {
            assert!(!head.has("content-length"), "both framings: {}", head.raw);
            loop {
                match take_chunked(&self.buf) {
                    Some(Ok((body, n))) => {
                        self.buf.drain(..n);
                        return body;
                    }
                    Some(Err(e)) => panic!("fulcrum sent bad chunked framing: {e}"),
                    None => assert!(self.fill().await, "closed inside a chunked body"),
                }
            }
        }
        if let Some(len) = head.get("content-length") {
            let len: usize = len.parse().expect("a numeric content-length");
            while self.buf.len() < len {
                assert!(self.fill().await, "closed inside a sized body");
            }
            return self.buf.drain(..len).collect();
        }
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts that fulcrum closes the connection with nothing more sent.
    async fn expect_closed(&mut self) {
        while self.fill().await {}
        assert!(
            self.buf.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// Sends `bytes` on a new connection and reads one response.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Resp, Client) {
    let mut c = Client::connect(addr).await;
    c.send(bytes).await;
    let r = c.response().await;
    (r, c)
}

/// Asserts that fulcrum answered itself with `status` and `code`, a short one-line body and
/// `Connection: close`, then closed.
async fn expect_refusal(r: &Resp, c: &mut Client, status: u16, code: &str) {
    assert_eq!(r.status(), status, "{}", r.head.raw);
    assert_eq!(
        r.head.get("x-fulcrum-error").as_deref(),
        Some(code),
        "{}",
        r.head.raw
    );
    let body = r.text();
    assert!(!body.is_empty() && body.len() < 120, "body: {body:?}");
    assert!(r.head.closes(), "no connection: close in {}", r.head.raw);
    c.expect_closed().await;
}

/// Sends a request that must be refused, then a good one on a new connection: the good
/// one is the only request the server receives, and its bytes the only new bytes.
async fn refused_before_the_server(
    front: SocketAddr,
    up: &Upstream,
    bytes: &[u8],
    status: u16,
    code: &str,
) {
    let (reqs_before, bytes_before) = (up.reqs().len(), up.all_bytes().len());
    let (r, mut c) = exchange(front, bytes).await;
    expect_refusal(&r, &mut c, status, code).await;
    let (r, _) = exchange(front, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.text(), "/after");
    let reqs = up.reqs();
    assert_eq!(reqs.len(), reqs_before + 1, "{reqs:?}");
    assert_eq!(
        up.all_bytes().len(),
        bytes_before + reqs[reqs_before].head.len(),
        "the server received bytes of the refused request: {}",
        up_text(up)
    );
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

// ---------------------------------------------------------------------------------------
// Request heads.

#[tokio::test]
async fn two_host_headers_are_400_and_never_reach_the_server() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    let req = b"GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n";
    let (r, mut c) = exchange(front, req).await;
    expect_refusal(&r, &mut c, 400, "bad_request").await;
    // Nothing at all reached the server, not even a connection with bytes.
    let (r, _) = exchange(
        front,
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "/ok");
    let reqs = up.reqs();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path(), "/ok");
    let all = String::from_utf8_lossy(&up.all_bytes()).into_owned();
    assert!(!all.contains("/two"), "{all:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn absolute_form_target_replaces_the_host_header() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let req = b"GET http://a.example/x?q=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let (r, _c) = exchange(f.frontend("www"), req).await;
    assert_eq!(r.status(), 200);
    let reqs = up.reqs();
    assert_eq!(reqs.len(), 1);
    let got = &reqs[0];
    assert_eq!(got.request_line(), "GET /x?q=1 HTTP/1.1");
    assert_eq!(got.values("host"), ["a.example"], "{}", got.head);
    assert!(!got.head.contains("evil"), "{}", got.head);
    assert_eq!(got.values("x-forwarded-host"), ["a.example"]);
    f.shutdown().await;
}

#[tokio::test]
async fn http10_request_without_host_goes_as_http11_with_the_servers_address() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let (r, mut c) = exchange(f.frontend("www"), b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "/old"));
    // HTTP/1.0 without keep-alive: closed after the answer.
    c.expect_closed().await;
    let got = &up.reqs()[0];
    assert_eq!(got.request_line(), "GET /old HTTP/1.1");
    assert_eq!(got.values("host"), [up.addr.to_string()], "{}", got.head);
    f.shutdown().await;
}

/// Each is a head fulcrum must refuse with 400 `bad_request` and close.
const MALFORMED_HEADS: &[(&str, &[u8])] = &[
    (
        "TE not ending in chunked",
        b"POST /te1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "TE chunked then gzip",
        b"POST /te2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "TE in HTTP/1.0",
        b"POST /te3 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "differing Content-Lengths",
        b"POST /cl1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "differing Content-Lengths in one line",
        b"POST /cl2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    ),
    (
        "non-digit Content-Length",
        b"POST /cl3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3a\r\n\r\nabc",
    ),
    (
        "signed Content-Length",
        b"POST /cl4 HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    ),
    (
        "whitespace before a colon",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Thing : 1\r\n\r\n",
    ),
    (
        "whitespace before the colon of Content-Length",
        b"POST /ws2 HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
    ),
    (
        "obs-fold",
        b"GET /fold HTTP/1.1\r\nHost: x\r\nX-Thing: 1\r\n  folded\r\n\r\n",
    ),
    (
        "bare CR",
        b"GET /cr HTTP/1.1\r\nHost: x\r\nX-Thing: 1\r2\r\n\r\n",
    ),
    (
        "NUL in a value",
        b"GET /nul HTTP/1.1\r\nHost: x\r\nX-Thing: 1\x002\r\n\r\n",
    ),
    (
        "header line without colon",
        b"GET /nocolon HTTP/1.1\r\nHost: x\r\nX-Thing\r\n\r\n",
    ),
    (
        "HTTP/1.1 without Host",
        b"GET /nohost HTTP/1.1\r\nX-Thing: 1\r\n\r\n",
    ),
    (
        "two Host headers",
        b"GET /twohost HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
    ),
    ("no request line at all", b"GARBAGE\r\nHost: x\r\n\r\n"),
    ("an unknown version", b"GET /v HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("two spaces in the request line", b"GET  /sp HTTP/1.1\r\nHost: x\r\n\r\n"),
    (
        "a space in the Host",
        b"GET /hs HTTP/1.1\r\nHost: a b\r\n\r\n",
    ),
    (
        "a chunked request with two chunked codings",
        b"POST /cc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
];

#[tokio::test]
async fn malformed_heads_are_400_bad_request_and_never_reach_the_server() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    for (what, bytes) in MALFORMED_HEADS {
        let (r, mut c) = exchange(front, bytes).await;
        assert_eq!(r.status(), 400, "{what}: {}", r.head.raw);
        assert_eq!(
            r.head.get("x-fulcrum-error").as_deref(),
            Some("bad_request"),
            "{what}: {}",
            r.head.raw
        );
        assert!(r.head.closes(), "{what}: {}", r.head.raw);
        c.expect_closed().await;
    }
    // Then a good request: it is the only thing the server ever received.
    let (r, _) = exchange(front, b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.text(), "/good");
    let reqs = up.reqs();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        up.all_bytes().len(),
        reqs[0].head.len(),
        "the server received bytes of a refused request: {:?}",
        String::from_utf8_lossy(&up.all_bytes())
    );
    f.shutdown().await;
}

#[tokio::test]
async fn request_line_over_max_header_bytes_is_414_and_head_over_it_is_431() {
    let up = Upstream::echo_path().await;
    let f = before(&up)
        .frontend(|f| f.max_header_bytes(1024))
        .start()
        .await;
    let front = f.frontend("www");
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    refused_before_the_server(front, &up, long_line.as_bytes(), 414, "uri_too_long").await;
    let long_head = format!(
        "GET /short HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "b".repeat(2000)
    );
    refused_before_the_server(front, &up, long_head.as_bytes(), 431, "header_too_large").await;
    // Many small lines that add up past the limit: 431 too.
    let many = format!(
        "GET /many HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..60)
            .map(|i| format!("X-H{i}: 0123456789\r\n"))
            .collect::<String>()
    );
    refused_before_the_server(front, &up, many.as_bytes(), 431, "header_too_large").await;
    // Just under the limit passes.
    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "c".repeat(900)
    );
    let (r, _) = exchange(front, fits.as_bytes()).await;
    assert_eq!(r.text(), "/fits");
    f.shutdown().await;
}

#[tokio::test]
async fn header_lines_go_verbatim_without_hop_by_hop_ones_and_with_x_forwarded() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let req = b"GET /h?a=B HTTP/1.1\r\n\
        Host: h.example:8443\r\n\
        X-MiXeD-Case: v\r\n\
        Connection: keep-alive, X-Drop-Me\r\n\
        X-Drop-Me: 1\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Trailer: X-T\r\n\
        Proxy-Connection: keep-alive\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Upgrade: h2c\r\n\
        X-Forwarded-For: 10.0.0.1\r\n\
        x-forwarded-for: 10.0.0.2, 10.0.0.3\r\n\
        X-Forwarded-Proto: gopher\r\n\
        X-Forwarded-Host: fake.example\r\n\
        cOOkie: a=1\r\n\
        X-Empty:\r\n\r\n";
    let (r, _c) = exchange(f.frontend("www"), req).await;
    assert_eq!(r.status(), 200);
    let got = &up.reqs()[0];
    let head = &got.head;
    assert_eq!(got.request_line(), "GET /h?a=B HTTP/1.1");
    assert!(head.contains("\r\nX-MiXeD-Case: v\r\n"), "{head}");
    assert!(head.contains("\r\ncOOkie: a=1\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Empty: \r\n") || head.contains("\r\nX-Empty:\r\n"),
        "{head}"
    );
    for gone in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(got.values(gone).is_empty(), "{gone} forwarded: {head}");
    }
    assert_eq!(
        got.values("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"],
        "{head}"
    );
    assert_eq!(got.values("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(got.values("x-forwarded-host"), ["h.example:8443"], "{head}");
    assert_eq!(got.values("host"), ["h.example:8443"], "{head}");
    f.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Request bodies.

/// The head of a chunked POST whose body is `chunks`.
fn chunked_post(path: &str, chunks: &[u8]) -> Vec<u8> {
    let mut v = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .into_bytes();
    v.extend_from_slice(chunks);
    v
}

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_the_bad_chunk_never_reaches_the_server() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    // (what, the body after one valid chunk, bytes the server must never see)
    type Case<'a> = (&'a str, &'a [u8], &'a [&'a [u8]]);
    let cases: &[Case<'_>] = &[
        (
            "size overflow",
            b"ffffffffffffffffff\r\nEVIL\r\n0\r\n\r\n",
            &[b"ffffffff", b"EVIL", b"0\r\n\r\n"],
        ),
        (
            "negative size",
            b"-1\r\nEVIL\r\n0\r\n\r\n",
            &[b"-1", b"EVIL", b"0\r\n\r\n"],
        ),
        (
            "non-hex size",
            b"zz\r\nEVIL\r\n0\r\n\r\n",
            &[b"zz", b"EVIL", b"0\r\n\r\n"],
        ),
        (
            "data longer than its size",
            b"3\r\nabcEVIL\r\n0\r\n\r\n",
            &[b"EVIL", b"0\r\n\r\n"],
        ),
        (
            "smuggled request after the data",
            b"3\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
            &[b"smuggled", b"0\r\n\r\n"],
        ),
    ];
    for (i, (what, bad, never)) in cases.iter().enumerate() {
        let mut body = b"5\r\nhello\r\n".to_vec();
        body.extend_from_slice(bad);
        let path = format!("/chunked-{i}");
        let (r, mut c) = exchange(front, &chunked_post(&path, &body)).await;
        assert_eq!(r.status(), 400, "{what}: {}", r.head.raw);
        assert_eq!(
            r.head.get("x-fulcrum-error").as_deref(),
            Some("bad_request"),
            "{what}"
        );
        assert!(r.head.closes(), "{what}: {}", r.head.raw);
        c.expect_closed().await;
        // fulcrum drops the server connection of the broken upload.
        // The engine streams: the head went to the server before the body was read, and
        // fulcrum drops that server connection when the body turns out malformed.
        eventually(what, WAIT, || {
            up.conns_with_bytes().len() == i + 1 && up.all_closed()
        })
        .await;
        let got = up.conns_with_bytes().pop().unwrap_or_default();
        let text = String::from_utf8_lossy(&got).into_owned();
        let end = head_end(&got).expect("a whole head");
        assert!(
            text.starts_with(&format!("POST {path} HTTP/1.1\r\n")),
            "{what}: {text:?}"
        );
        // What follows the head is valid chunks re-encoded, never a last chunk.
        let rest = &got[end..];
        assert!(
            take_chunked(rest).is_none(),
            "{what}: the server got a finished or malformed body: {text:?}"
        );
        let allowed: &[&[u8]] = &[b"5\r\nhello\r\n", b"5\r\nhello\r\n3\r\nabc\r\n"];
        assert!(
            allowed.iter().any(|a| a.starts_with(rest)),
            "{what}: unexpected body bytes at the server: {text:?}"
        );
        for n in *never {
            assert!(
                !rest.windows(n.len()).any(|w| w == *n),
                "{what}: the server received {:?}: {text:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
    // The server never answered any of them: not one request was whole.
    assert!(up.reqs().is_empty(), "{:?}", up.reqs());
    f.shutdown().await;
}

#[tokio::test]
async fn chunked_body_is_decoded_and_re_encoded_whole() {
    let up = Upstream::start(|r| Reply::ok(format!("{}", r.body.len()))).await;
    let f = before(&up).start().await;
    // Extensions and trailers are the client's framing: the server sees neither.
    let body = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n";
    let mut req = chunked_post("/c", body);
    req.extend_from_slice(GET);
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(&req).await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "11"));
    // The pipelined GET after the body is a request of its own.
    let r = c.response().await;
    assert_eq!(r.status(), 200);
    let reqs = up.reqs();
    assert_eq!(reqs[0].body, b"hello world");
    assert_eq!(reqs[0].values("transfer-encoding"), ["chunked"]);
    assert!(!reqs[0].head.contains("ext=1") && !up_text(&up).contains("X-Trailer"));
    assert_eq!(reqs[1].request_line(), "GET / HTTP/1.1");
    f.shutdown().await;
}

fn up_text(up: &Upstream) -> String {
    String::from_utf8_lossy(&up.all_bytes()).into_owned()
}

#[tokio::test]
async fn transfer_encoding_with_content_length_is_framed_by_chunked_and_closes() {
    let up = Upstream::start(|r| Reply::ok(&r.body)).await;
    let f = before(&up).start().await;
    // A Content-Length of 3 would end the body after "5\r\n" and make the rest a request.
    let req = b"POST /both HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (r, mut c) = exchange(f.frontend("www"), req).await;
    assert_eq!((r.status(), r.text().as_str()), (200, "hello"));
    assert!(r.head.closes(), "{}", r.head.raw);
    c.expect_closed().await;
    let got = &up.reqs()[0];
    assert!(got.values("content-length").is_empty(), "{}", got.head);
    assert_eq!(got.values("transfer-encoding"), ["chunked"]);
    assert_eq!(got.body, b"hello");
    assert_eq!(up.reqs().len(), 1);
    f.shutdown().await;
}

#[tokio::test]
async fn early_hints_reach_an_http11_client_before_the_answer_and_never_an_http10_one() {
    let up = Upstream::start(|_| {
        Reply::raw(
            &b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        )
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(GET).await;
    let hints = c.head().await;
    assert_eq!(hints.status, 103, "{}", hints.raw);
    assert!(
        hints.raw.contains("Link: </style.css>; rel=preload\r\n"),
        "{}",
        hints.raw
    );
    // The server's own 100s are not relayed (fulcrum answers Expect itself).
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "ok"));
    // The connection goes on, hints and all.
    c.send(GET).await;
    assert_eq!(c.head().await.status, 103);
    assert_eq!(c.response().await.status(), 200);
    // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
    let mut old = Client::connect(f.frontend("www")).await;
    old.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = old.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "ok"));
    f.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_then_the_answer() {
    let up =
        Upstream::start(|r| Reply::ok(format!("got {}", String::from_utf8_lossy(&r.body)))).await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    // The body is sent only once 100 arrived.
    let interim = c.head().await;
    assert_eq!(interim.status, 100, "{}", interim.raw);
    c.send(b"hello").await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "got hello"));
    assert_eq!(up.reqs()[0].body, b"hello");
    // The connection goes on.
    c.send(GET).await;
    assert_eq!(c.response().await.status(), 200);
    f.shutdown().await;
}

#[tokio::test]
async fn one_mib_chunked_upload_arrives_intact() {
    let up = Upstream::start(|r| Reply::ok(format!("{}", r.body.len()))).await;
    let f = before(&up).start().await;
    let data = pattern(1 << 20);
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    // Chunks of uneven sizes, each in its own write.
    let mut at = 0;
    let mut size = 1;
    while at < data.len() {
        let n = size.min(data.len() - at);
        let mut chunk = format!("{n:x}\r\n").into_bytes();
        chunk.extend_from_slice(&data[at..at + n]);
        chunk.extend_from_slice(b"\r\n");
        c.send(&chunk).await;
        at += n;
        size = size * 3 + 7;
    }
    c.send(b"0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.text(), (1 << 20).to_string());
    assert!(up.reqs()[0].body == data, "the upload arrived altered");
    f.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Connections.

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for path in ["/one", "/two", "/three"] {
        let r = c.response().await;
        assert_eq!((r.status(), r.text().as_str()), (200, path));
    }
    let paths: Vec<String> = up.reqs().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
    assert_eq!(up.reqs()[1].body, b"abc");
    f.shutdown().await;
}

#[tokio::test]
async fn keep_alive_follows_version_and_connection() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    // HTTP/1.1: kept by default.
    let mut c = Client::connect(front).await;
    for path in ["/a", "/b", "/c"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.text(), path);
        assert!(!r.head.closes(), "{}", r.head.raw);
    }
    // Connection: close: closed after the answer.
    c.send(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.text(), "/last");
    assert!(r.head.closes(), "{}", r.head.raw);
    c.expect_closed().await;
    // HTTP/1.0 with keep-alive: told so, and kept.
    let mut c = Client::connect(front).await;
    for path in ["/k1", "/k2"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
        let r = c.response().await;
        assert_eq!(r.text(), path);
        assert_eq!(
            r.head.get("connection").as_deref(),
            Some("keep-alive"),
            "{}",
            r.head.raw
        );
    }
    // HTTP/1.0 without it: closed.
    c.send(b"GET /k3 HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.text(), "/k3");
    c.expect_closed().await;
    f.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Server responses.

#[tokio::test]
async fn response_with_length_and_chunked_is_decoded_and_its_connection_not_reused() {
    let up = Upstream::start(|r| match r.path() {
        "/ambiguous" => Reply::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"GET /ambiguous HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "hello"));
    assert!(!r.head.has("content-length"), "{}", r.head.raw);
    c.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response().await.text(), "/next");
    let reqs = up.reqs();
    assert_ne!(
        reqs[0].conn, reqs[1].conn,
        "the connection of an ambiguous response was reused"
    );
    // Whereas a clean response's connection is.
    c.send(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response().await.text(), "/again");
    assert_eq!(up.reqs()[2].conn, reqs[1].conn);
    f.shutdown().await;
}

#[tokio::test]
async fn broken_response_heads_are_502_upstream_broken() {
    let big_head = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(70 * 1024)
    );
    let many = format!(
        "HTTP/1.1 200 OK\r\n{}Content-Length: 2\r\n\r\nok",
        (0..101)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let up = Upstream::start(move |r| match r.path() {
        "/status" => Reply::closing("HTTP/1.1 2000 Huge\r\nContent-Length: 2\r\n\r\nok"),
        "/garbage" => Reply::closing("HTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/noline" => Reply::closing("HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"),
        "/many" => Reply::closing(many.clone()),
        "/big" => Reply::closing(big_head.clone()),
        "/cl" => {
            Reply::closing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk")
        }
        "/101" => Reply::closing(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ),
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    for path in [
        "/status", "/garbage", "/noline", "/many", "/big", "/cl", "/101",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (r, _c) = exchange(front, req.as_bytes()).await;
        assert_eq!(r.status(), 502, "{path}: {}", r.head.raw);
        assert_eq!(
            r.head.get("x-fulcrum-error").as_deref(),
            Some("upstream_broken"),
            "{path}: {}",
            r.head.raw
        );
    }
    // 100 header lines are fine.
    let (r, _c) = exchange(front, GET).await;
    assert_eq!(r.status(), 200);
    f.shutdown().await;
}

#[tokio::test]
async fn a_101_without_upgrade_asked_is_502_and_closes() {
    let up = Upstream::start(|_| {
        Reply::raw("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nSECRET")
    })
    .await;
    let f = before(&up).start().await;
    let (r, mut c) = exchange(f.frontend("www"), GET).await;
    assert_eq!(r.status(), 502, "{}", r.head.raw);
    assert_eq!(
        r.head.get("x-fulcrum-error").as_deref(),
        Some("upstream_broken")
    );
    assert!(r.head.closes(), "{}", r.head.raw);
    c.expect_closed().await;
    f.shutdown().await;
}

#[tokio::test]
async fn head_204_and_304_responses_have_no_body() {
    let up = Upstream::start(|r| match (r.method(), r.path()) {
        ("HEAD", _) => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 42\r\nETag: \"e\"\r\n\r\n"),
        (_, "/204") => Reply::raw("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
        (_, "/304") => Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n"),
        (_, p) => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response_to_head().await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.head.get("content-length").as_deref(),
        Some("42"),
        "{}",
        r.head.raw
    );
    assert!(!r.head.has("transfer-encoding"), "{}", r.head.raw);
    for path in ["/204", "/304"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.status().to_string(), &path[1..], "{}", r.head.raw);
        assert!(!r.head.has("transfer-encoding"), "{}", r.head.raw);
        if path == "/204" {
            assert!(!r.head.has("content-length"), "{}", r.head.raw);
        }
    }
    // Had any of them a body, it would stand before this answer's status line.
    c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "/after"));
    // All on one server connection: nothing was left unread on it.
    let reqs = up.reqs();
    assert!(reqs.iter().all(|r| r.conn == reqs[0].conn), "{reqs:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn close_delimited_response_reaches_an_http11_client_chunked_on_a_kept_connection() {
    let up = Upstream::start(|r| match r.path() {
        "/until-close" => {
            Reply::closing("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        }
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"GET /until-close HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "until the end"));
    assert_eq!(
        r.head.get("transfer-encoding").as_deref(),
        Some("chunked"),
        "{}",
        r.head.raw
    );
    assert!(!r.head.closes(), "{}", r.head.raw);
    c.send(b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response().await.text(), "/more");
    // An HTTP/1.0 client gets it delimited by close.
    let (r, mut c) = exchange(
        f.frontend("www"),
        b"GET /until-close HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "until the end");
    assert!(!r.head.has("transfer-encoding"), "{}", r.head.raw);
    c.expect_closed().await;
    f.shutdown().await;
}

#[tokio::test]
async fn one_mib_response_bodies_arrive_intact() {
    let data = Arc::new(pattern(1 << 20));
    let d = Arc::clone(&data);
    let up = Upstream::start(move |r| match r.path() {
        "/sized" => Reply::ok(&*d),
        "/chunked" => {
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in d.chunks(100_000) {
                v.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                v.extend_from_slice(piece);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            Reply::raw(v)
        }
        "/close" => {
            let mut v = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            v.extend_from_slice(&d);
            Reply::closing(v)
        }
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    for path in ["/sized", "/chunked", "/close", "/sized"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body.len(), data.len(), "{path}");
        assert!(r.body == *data, "{path}: the body arrived altered");
    }
    f.shutdown().await;
}

#[tokio::test]
async fn response_head_lines_and_reason_go_verbatim_without_hop_by_hop_ones() {
    let up = Upstream::start(|_| {
        Reply::raw(
            "HTTP/1.1 200 Fine Thanks\r\nX-Resp-MiXeD: v\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\
             Keep-Alive: timeout=5\r\nset-COOKIE: a=1\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let f = before(&up).start().await;
    let (r, _c) = exchange(f.frontend("www"), GET).await;
    let raw = &r.head.raw;
    assert!(raw.starts_with("HTTP/1.1 200 Fine Thanks\r\n"), "{raw}");
    assert!(raw.contains("\r\nX-Resp-MiXeD: v\r\n"), "{raw}");
    assert!(raw.contains("\r\nset-COOKIE: a=1\r\n"), "{raw}");
    for gone in ["x-secret", "keep-alive", "connection"] {
        assert!(!r.head.has(gone), "{gone} relayed: {raw}");
    }
    assert_eq!(r.text(), "ok");
    f.shutdown().await;
}

#[tokio::test]
async fn bytes_after_a_response_never_answer_the_next_request() {
    // Each answer is followed by what a confused (or hostile) server might add: a second
    // response nobody asked for, a body after a bodiless answer.
    let up = Upstream::start(|r| match (r.method(), r.path()) {
        ("HEAD", _) => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
        (_, "/204") => Reply::raw("HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil"),
        (_, "/extra") => Reply::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        ),
        (_, p) => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    for (req, path) in [
        ("GET /extra", "/n1"),
        ("HEAD /h", "/n2"),
        ("GET /204", "/n3"),
    ] {
        c.send(format!("{req} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = if req.starts_with("HEAD") {
            c.response_to_head().await
        } else {
            c.response().await
        };
        assert!(
            r.status() == 200 || r.status() == 204,
            "{req}: {}",
            r.head.raw
        );
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let next = c.response().await;
        assert_eq!(
            (next.status(), next.text().as_str()),
            (200, path),
            "after {req}: {}",
            next.head.raw
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_not_a_502() {
    // The server answers with keep-alive, then closes without saying so.
    let up = Upstream::start(|r| Reply::closing(Reply::ok(r.path()).bytes)).await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    for path in ["/1", "/2", "/3", "/4"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (200, path),
            "{}",
            r.head.raw
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn server_closing_the_connection_keeps_the_clients() {
    let up = Upstream::start(|r| {
        let body = r.path();
        Reply::closing(format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    for path in ["/a", "/b"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.text(), path);
        assert!(
            !r.head.closes(),
            "the server's close is not the client's: {}",
            r.head.raw
        );
    }
    let reqs = up.reqs();
    assert_ne!(reqs[0].conn, reqs[1].conn);
    f.shutdown().await;
}

#[tokio::test]
async fn nothing_after_a_closing_or_refused_request_reaches_the_server() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    let mut c = Client::connect(front).await;
    c.send(
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
          GET /never1 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(c.response().await.text(), "/a");
    c.expect_closed().await;
    let mut c = Client::connect(front).await;
    c.send(
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /bad HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n\
          GET /never2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(c.response().await.text(), "/b");
    let r = c.response().await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.head.get("x-fulcrum-error").as_deref(),
        Some("bad_request")
    );
    c.expect_closed().await;
    let paths: Vec<String> = up.reqs().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert!(!up_text(&up).contains("never"), "{}", up_text(&up));
    f.shutdown().await;
}

#[tokio::test]
async fn absolute_form_targets_of_every_shape() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let front = f.frontend("www");
    for (target, path, host) in [
        ("http://a.example", "/", "a.example"),
        ("http://a.example?x=1", "/?x=1", "a.example"),
        ("HTTP://A.example:8080/p", "/p", "A.example:8080"),
        ("https://b.example/s?q", "/s?q", "b.example"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: other.example\r\n\r\n");
        let (r, _c) = exchange(front, req.as_bytes()).await;
        assert_eq!((r.status(), r.text().as_str()), (200, path), "{target}");
        let got = up.reqs().pop().unwrap();
        assert_eq!(got.values("host"), [host], "{target}: {}", got.head);
    }
    // HTTP/1.0 absolute-form without Host: the authority is the Host.
    let (r, _c) = exchange(front, b"GET http://c.example/z HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.text(), "/z");
    assert_eq!(up.reqs().pop().unwrap().values("host"), ["c.example"]);
    // Userinfo in the authority: refused.
    let (r, _c) = exchange(
        front,
        b"GET http://u@d.example/ HTTP/1.1\r\nHost: d.example\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 400);
    f.shutdown().await;
}

#[tokio::test]
async fn a_malformed_chunked_response_is_cut_without_a_last_chunk() {
    let up = Upstream::start(|r| match r.path() {
        "/bad" => Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nEVIL\r\n0\r\n\r\n"),
        "/short" => Reply::closing("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    for path in ["/bad", "/short"] {
        let mut c = Client::connect(f.frontend("www")).await;
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let mut chunk = vec![0u8; 4096];
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(WAIT, c.s.read(&mut chunk)).await {
            c.buf.extend_from_slice(&chunk[..n]);
        }
        // fulcrum must answer something: a 502 when nothing went to the client yet, or the
        // head and the valid part of the body, then the end of the connection, so that the
        // client can tell the body is cut.
        let got = String::from_utf8_lossy(&c.buf).into_owned();
        assert!(
            !got.is_empty(),
            "{path}: the client got no answer at all, only a closed connection"
        );
        assert!(!got.contains("EVIL"), "{path}: {got:?}");
        let head = c.head().await;
        if head.status == 502 {
            assert_eq!(
                head.get("x-fulcrum-error").as_deref(),
                Some("upstream_broken")
            );
            continue;
        }
        assert_eq!(head.status, 200, "{path}: {got:?}");
        if let Some(len) = head.get("content-length") {
            assert!(
                c.buf.len() < len.parse::<usize>().unwrap(),
                "{path}: {got:?}"
            );
        } else {
            assert!(
                take_chunked(&c.buf).is_none(),
                "{path}: a whole body: {got:?}"
            );
        }
    }
    f.shutdown().await;
}

#[tokio::test]
async fn a_transfer_coding_before_chunked_is_never_lost_on_a_request() {
    // `gzip, chunked`: the body is gzip data in chunks. Forwarded as plain `chunked`, the
    // server would take the gzip bytes for the content. Refusing (nginx answers 501) or
    // keeping the coding are both right.
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let req = b"POST /gz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n";
    let (r, _c) = exchange(f.frontend("www"), req).await;
    if r.status() == 200 {
        let got = up.reqs().pop().unwrap();
        let te = got
            .values("transfer-encoding")
            .join(", ")
            .to_ascii_lowercase();
        assert!(
            te.contains("gzip"),
            "the server got the gzip body as plain content: {}",
            got.head
        );
    } else {
        assert!(matches!(r.status(), 400 | 501), "{}", r.head.raw);
        assert!(r.head.has("x-fulcrum-error"), "{}", r.head.raw);
        assert!(up.reqs().is_empty());
    }
    f.shutdown().await;
}

#[tokio::test]
async fn a_transfer_coding_before_chunked_is_never_lost_on_a_response() {
    // `gzip, chunked`, and `gzip` alone (then delimited by close, RFC 9112 §6.3).
    let up = Upstream::start(|r| match r.path() {
        "/gzip-chunked" => Reply::raw(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n"[..],
        ),
        _ => Reply::closing(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00"[..],
        ),
    })
    .await;
    let f = before(&up).start().await;
    for path in ["/gzip-chunked", "/gzip"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (r, _c) = exchange(f.frontend("www"), req.as_bytes()).await;
        if r.status() == 200 {
            let te = r.head.get("transfer-encoding").unwrap_or_default();
            assert!(
                te.to_ascii_lowercase().contains("gzip"),
                "{path}: the client got gzip bytes as plain content: {}",
                r.head.raw
            );
        } else {
            assert_eq!(r.status(), 502, "{path}: {}", r.head.raw);
        }
    }
    f.shutdown().await;
}

#[tokio::test]
async fn a_request_sent_byte_by_byte_is_read_whole() {
    let up = Upstream::start(|r| Reply::ok(&r.body)).await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    let req = chunked_post("/slow", b"3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n");
    for b in &req {
        c.send(std::slice::from_ref(b)).await;
        c.s.flush().await.unwrap();
    }
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "abcde"));
    f.shutdown().await;
}

#[tokio::test]
async fn one_mib_sized_upload_arrives_intact() {
    let up = Upstream::start(|r| Reply::ok(format!("{}", r.body.len()))).await;
    let f = before(&up).start().await;
    let data = pattern(1 << 20);
    let mut c = Client::connect(f.frontend("www")).await;
    let mut req = format!(
        "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data);
    req.extend_from_slice(GET);
    c.send(&req).await;
    assert_eq!(c.response().await.text(), (1 << 20).to_string());
    assert_eq!(c.response().await.status(), 200);
    assert!(up.reqs()[0].body == data, "the upload arrived altered");
    assert_eq!(
        up.reqs()[0].values("content-length"),
        [data.len().to_string()]
    );
    f.shutdown().await;
}

#[tokio::test]
async fn more_than_100_request_header_lines_are_431() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let many = format!(
        "GET /many HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..101)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    refused_before_the_server(
        f.frontend("www"),
        &up,
        many.as_bytes(),
        431,
        "header_too_large",
    )
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn an_empty_line_before_a_request_line_is_ignored() {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request line
    // (clients that end a POST body with an extra CRLF).
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(c.response().await.text(), "/p");
    let r = c.response().await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "/next"),
        "{}",
        r.head.raw
    );
    f.shutdown().await;
}

#[tokio::test]
async fn options_asterisk_is_forwarded_as_it_is() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    let (r, _c) = exchange(f.frontend("www"), b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.reqs()[0].request_line(), "OPTIONS * HTTP/1.1");
    let (r, _c) = exchange(f.frontend("www"), b"GET * HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status(), 400);
    f.shutdown().await;
}

#[tokio::test]
async fn a_declined_upgrade_leaves_an_ordinary_connection() {
    let up = Upstream::start(|r| match r.path() {
        "/ws" => Reply::raw("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope"),
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).start().await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (426, "nope"));
    let got = &up.reqs()[0];
    assert_eq!(got.values("upgrade"), ["websocket"], "{}", got.head);
    assert!(
        got.values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("upgrade")),
        "{}",
        got.head
    );
    c.send(GET).await;
    assert_eq!(c.response().await.text(), "/");
    f.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_relays_early_bytes_both_ways() {
    // The server switches, sends bytes at once, then echoes what it gets, upper-cased.
    let server = raw_server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: shout\r\nConnection: Upgrade\r\nX-Up: 1\r\n\r\nserver-first;")
            .await;
        let mut chunk = [0u8; 1024];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            if s.write_all(&chunk[..n].to_ascii_uppercase()).await.is_err() {
                return;
            }
        }
        let _ = s.shutdown().await;
    })
    .await;
    let f = fulcrum_before_raw("up", server).await;
    let mut c = Client::connect(f.frontend("www")).await;
    // Bytes for the new protocol right behind the request, before any answer.
    c.send(
        b"GET /shout HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\nearly;",
    )
    .await;
    let head = c.head().await;
    assert_eq!(head.status, 101, "{}", head.raw);
    assert_eq!(
        head.get("upgrade").as_deref(),
        Some("shout"),
        "{}",
        head.raw
    );
    assert!(head.has("x-up"), "{}", head.raw);
    let want = b"server-first;EARLY;".as_slice();
    while c.buf.len() < want.len() {
        assert!(
            c.fill().await,
            "closed: {:?}",
            String::from_utf8_lossy(&c.buf)
        );
    }
    assert_eq!(c.buf, want);
    c.buf.clear();
    c.send(b"later").await;
    while c.buf.len() < 5 {
        assert!(c.fill().await);
    }
    assert_eq!(c.buf, b"LATER");
    // The client's half-close reaches the server, whose close ends the tunnel.
    c.s.shutdown().await.unwrap();
    c.buf.clear();
    c.expect_closed().await;
    let s = live_server(&f, "up");
    eventually("the tunnel's slot is freed", WAIT, || s.active() == 0).await;
    f.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_gets_no_100_when_fulcrum_refuses() {
    // The only server is gone: fulcrum answers itself, and must not invite the body first.
    let gone = closed_port();
    let f = Setup::new()
        .backend("b", |b| b.health(|h| h.reset().tcp().interval("60s")))
        .server_at("gone", gone, |s| s)
        .start()
        .await;
    let mut c = Client::connect(f.frontend("www")).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response().await;
    assert!(matches!(r.status(), 502 | 503), "{}", r.head.raw);
    assert!(r.head.has("x-fulcrum-error"), "{}", r.head.raw);
    // The body was never invited: the connection cannot go on.
    assert!(r.head.closes(), "{}", r.head.raw);
    c.expect_closed().await;
    f.shutdown().await;
}

#[tokio::test]
async fn a_chunked_response_reaches_an_http10_client_decoded_until_close() {
    let up = Upstream::start(|_| {
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    })
    .await;
    // One worker: the second client's request must find the first's server connection in
    // the same idle pool.
    let f = before(&up).global("threads", 1).start().await;
    let (r, mut c) = exchange(
        f.frontend("www"),
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "hello world");
    assert!(!r.head.has("transfer-encoding"), "{}", r.head.raw);
    assert!(r.head.closes(), "{}", r.head.raw);
    c.expect_closed().await;
    // The server's connection was read to its end: it serves the next request.
    let (r, _c) = exchange(f.frontend("www"), GET).await;
    assert_eq!(r.text(), "hello world");
    let reqs = up.reqs();
    assert_eq!(reqs[0].conn, reqs[1].conn);
    f.shutdown().await;
}

#[tokio::test]
async fn unusual_but_valid_bytes_go_verbatim() {
    let up = Upstream::echo_path().await;
    let f = before(&up).start().await;
    // obs-text in a value (RFC 9110 §5.5), every tchar in a name, a percent-encoded target.
    let req = b"GET /caf%C3%A9/a;b=c?q=a%20b&r=%2F HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9 \xff\r\nX-!#$%&'*+-.^_`|~: t\r\nX-Tab: a\tb\r\n\r\n";
    let (r, _c) = exchange(f.frontend("www"), req).await;
    assert_eq!(r.status(), 200, "{}", r.head.raw);
    let got = up.all_bytes();
    let has = |needle: &[u8]| got.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"GET /caf%C3%A9/a;b=c?q=a%20b&r=%2F HTTP/1.1\r\n"));
    assert!(has(b"\r\nX-Latin: caf\xe9 \xff\r\n"), "{}", up_text(&up));
    assert!(has(b"\r\nX-!#$%&'*+-.^_`|~: t\r\n"), "{}", up_text(&up));
    assert!(has(b"\r\nX-Tab: a\tb\r\n"), "{}", up_text(&up));
    f.shutdown().await;
}

#[tokio::test]
async fn a_response_the_client_left_unread_never_serves_the_next_request() {
    let big = Arc::new(pattern(4 << 20));
    let b = Arc::clone(&big);
    let up = Upstream::start(move |r| match r.path() {
        "/big" => Reply::ok(&*b),
        p => Reply::ok(p),
    })
    .await;
    let f = before(&up).global("threads", 1).start().await;
    let front = f.frontend("www");
    {
        let mut c = Client::connect(front).await;
        c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = c.head().await;
        assert_eq!(head.status, 200);
        // Gone after the head, the rest of the 4 MiB unread.
    }
    // fulcrum lets go of that server connection rather than keeping it for reuse.
    eventually("the half-read server connection is closed", WAIT, || {
        up.all_closed()
    })
    .await;
    let (r, _c) = exchange(front, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "/next"));
    let reqs = up.reqs();
    assert_ne!(reqs[0].conn, reqs[1].conn);
    f.shutdown().await;
}

#[tokio::test]
async fn a_request_body_the_client_left_unfinished_never_reuses_its_connection() {
    let up = Upstream::echo_path().await;
    let f = before(&up).global("threads", 1).start().await;
    let front = f.frontend("www");
    {
        let mut c = Client::connect(front).await;
        c.send(b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
            .await;
        // The head and the first bytes reach the server before the client leaves.
        eventually("the body's start reached the server", WAIT, || {
            up_text(&up).contains("only ten b")
        })
        .await;
    }
    eventually(
        "the unfinished upload's server connection is closed",
        WAIT,
        || up.all_closed(),
    )
    .await;
    let (r, _c) = exchange(front, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "/next"));
    // The server never completed the cut request: the only whole one is /next.
    let reqs = up.reqs();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path(), "/next");
    f.shutdown().await;
}

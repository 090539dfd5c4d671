//! Shared test fixtures: real backends (hyper servers on 127.0.0.1 ephemeral ports) and a
//! real fulcrum started from a typed configuration (`config.rs`). No mocks of the data path.
#![allow(dead_code)]

mod config;

pub use config::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a test backend does and has seen.
#[derive(Default)]
pub struct State {
    pub hits: AtomicU64,
    pub active: AtomicU32,
    pub peak: AtomicU32,
    /// `/healthz` answers 200 while true, 503 otherwise.
    pub healthy: AtomicBool,
    /// Delay before answering ordinary requests.
    pub delay_ms: AtomicU64,
    /// Status of ordinary requests (200 unless set).
    pub status: AtomicU16,
    pub last_headers: Mutex<Option<HeaderMap>>,
    /// Order in which request ids (`x-id` header) arrived.
    pub arrivals: Mutex<Vec<String>>,
}

/// A real HTTP server for tests. Paths: `/healthz`; `/big?bytes=N` streams N bytes;
/// `/upload` reads the body and answers its length; anything else answers the server name
/// after `delay_ms` with `status`.
pub struct TestServer {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: CancellationToken,
}

impl TestServer {
    pub async fn start(name: &str) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener)
    }

    /// Starts again on the address of a stopped server.
    pub async fn restart(name: &str, addr: SocketAddr) -> TestServer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return Self::serve(name, l),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        }
    }

    fn serve(name: &str, listener: TcpListener) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        state.healthy.store(true, Ordering::SeqCst);
        state.status.store(200, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let (st, nm, stp) = (Arc::clone(&state), name.to_string(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stp.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (st, nm, stp) = (Arc::clone(&st), nm.clone(), stp.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(Arc::clone(&st), nm.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stp.cancelled() => {}
                    }
                });
            }
        });
        TestServer {
            name: name.to_string(),
            addr,
            state,
            stop,
        }
    }

    /// Stops listening and drops every connection, like a crashed process.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> u32 {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, up: bool) {
        self.state.healthy.store(up, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_status(&self, s: u16) {
        self.state.status.store(s, Ordering::SeqCst);
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.state
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed_unsync()
}

async fn answer(
    st: Arc<State>,
    name: String,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/healthz" {
        let ok = st.healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if ok { "ok" } else { "sick" }));
        *r.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(r);
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    let now = st.active.fetch_add(1, Ordering::SeqCst) + 1;
    st.peak.fetch_max(now, Ordering::SeqCst);
    *st.last_headers.lock().unwrap() = Some(req.headers().clone());
    if let Some(id) = req.headers().get("x-id").and_then(|v| v.to_str().ok()) {
        st.arrivals.lock().unwrap().push(id.to_string());
    }
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let resp = match req.uri().path() {
        "/big" => {
            let n: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Response::new(stream_bytes(n))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(full(total.to_string()))
        }
        _ => {
            let mut r = Response::new(full(name.clone()));
            *r.status_mut() = StatusCode::from_u16(st.status.load(Ordering::SeqCst)).unwrap();
            r
        }
    };
    st.active.fetch_sub(1, Ordering::SeqCst);
    Ok(resp)
}

/// `n` bytes of body in 64 KiB chunks, produced as they are read.
fn stream_bytes(n: u64) -> Body {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let s = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                left - take,
            ))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(s.boxed()))
}

/// A client that opens a new connection per request unless told otherwise.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `cond` every 10 ms until it holds or `within` passes; panics with `what` on timeout.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GETs `url` and returns (status, body, headers).
pub async fn get(c: &reqwest::Client, url: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

/// An address nothing listens on (a port that was just bound and released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Waits until `addr` refuses connections (a stopped test server has let go of its port).
pub async fn wait_refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => return,
            Ok(s) => drop(s),
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{addr} still accepts connections");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls an async condition every 10 ms until it holds or `within` passes.
pub async fn eventually_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server `name` of backend `b` inside a running fulcrum (its live health and counters).
pub fn live_server(f: &fulcrum::runtime::Running, name: &str) -> Arc<fulcrum::pool::Server> {
    f.app
        .backend("b")
        .expect("backend b")
        .server(name)
        .unwrap_or_else(|| panic!("no server {name}"))
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 over a TcpStream, for what a well-behaved client library will not send.

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection driven by hand.
pub struct RawConn {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false at end of stream (or a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one whole response (Content-Length, chunked, or until close), or `None` if the
    /// connection ends before a response head.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if let Some(len) = find("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill().await {
                    break;
                }
            }
            self.buf.drain(..len.min(self.buf.len())).collect()
        } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if !self.fill().await {
                        return None;
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    while !self.buf.starts_with(b"\r\n") {
                        if !self.fill().await {
                            break;
                        }
                    }
                    self.buf.drain(..2.min(self.buf.len()));
                    break;
                }
                while self.buf.len() < size + 2 {
                    if !self.fill().await {
                        return None;
                    }
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
            body
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Like [`read_response`](Self::read_response), bounded by `within`; `Err` on timeout.
    pub async fn read_response_within(
        &mut self,
        within: Duration,
    ) -> Result<Option<RawResponse>, tokio::time::error::Elapsed> {
        tokio::time::timeout(within, self.read_response()).await
    }

    /// Waits until the peer closes the connection (read gives end of stream or an error),
    /// discarding anything sent before; returns how long that took, or panics after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let r = tokio::time::timeout(within, async { while self.fill().await {} }).await;
        assert!(r.is_ok(), "connection still open after {within:?}");
        start.elapsed()
    }
}

/// Sends `request` on a new connection and reads one response.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut c = RawConn::connect(addr).await;
    c.send(request).await;
    c.read_response_within(Duration::from_secs(10))
        .await
        .expect("a response within 10s")
        .expect("a response before the connection closed")
}

/// fulcrum in front of one [`raw_server`], checked by TCP connect only and rarely: a raw
/// server answers requests its own way, health checks must not be among them.
pub async fn fulcrum_before_raw(name: &str, addr: SocketAddr) -> Fulcrum {
    Setup::new()
        .backend("b", |b| b.health(|h| h.reset().tcp().interval("60s")))
        .server_at(name, addr, |s| s)
        .start()
        .await
}

/// A raw TCP "server" for tests of misbehaving upstreams: for each connection it reads one
/// request head, then hands the stream to `then` (answer garbage, close, stall, ...).
pub async fn raw_server<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let then = Arc::new(then);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let then = Arc::clone(&then);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The whole head, so that fulcrum has sent the request before we misbehave.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                then(s).await;
            });
        }
    });
    addr
}

//! Shared test fixtures: real backends (hyper servers on 127.0.0.1 ephemeral ports) and a
//! real fulcrum started from TOML text. No mocks of the data path.
#![allow(dead_code)]

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

/// Starts fulcrum from configuration text (frontends and admin should bind 127.0.0.1:0).
pub async fn start_fulcrum(toml: &str) -> fulcrum::app::Running {
    let cfg = fulcrum::config::parse_str(toml, std::path::Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
    fulcrum::app::start(cfg).await.expect("fulcrum starts")
}

/// A TOML backend section `[backends.b]` plus servers, with fast health checks.
pub fn backend_toml(name: &str, extra: &str, servers: &[(&TestServer, &str)]) -> String {
    let mut s = format!(
        "[backends.{name}]\n{extra}\n[backends.{name}.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n"
    );
    for (srv, more) in servers {
        s += &format!(
            "\n[[backends.{name}.servers]]\nname = \"{}\"\naddress = \"{}\"\n{more}\n",
            srv.name, srv.addr
        );
    }
    s
}

/// A whole configuration: one HTTP frontend `www` on port 0 feeding backend `b`. Each call
/// gets its own state_dir, so saved maintenance of one test never reaches another.
pub fn simple_config(backend_extra: &str, servers: &[(&TestServer, &str)]) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "[global]\ngrace_period = \"5s\"\nstate_dir = \"{}\"\n[admin]\nbind = \"127.0.0.1:0\"\n\n[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\naccess_log = false\n\n{}",
        std::env::temp_dir()
            .join(format!("fulcrum-test-{}-{n}", std::process::id()))
            .display(),
        backend_toml("b", backend_extra, servers)
    )
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

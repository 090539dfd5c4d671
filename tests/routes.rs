//! Routes, redirects, header rules, request ids and `max_body_bytes` over real sockets, on
//! both client protocols: hosts (exact, wildcard, with ports), path prefixes with and
//! without stripping, dot segments, methods, header conditions, each redirect placeholder,
//! and a reload that changes routes while requests flow.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admin_common::Api;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What an echo server saw of the last request.
#[derive(Default, Clone, Debug)]
struct Seen {
    target: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// A server that answers `NAME TARGET` and remembers the last request.
struct Echo {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Echo {
    async fn start(name: &'static str) -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let seen = Arc::clone(&s2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let target = req.uri().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            // A body that did not arrive whole is not a request seen.
                            let body_len = body.as_ref().map_or(0, |b| b.len());
                            if target != "/healthz" && body.is_ok() {
                                *seen.lock().unwrap() = Seen {
                                    target: target.clone(),
                                    headers,
                                    body_len,
                                };
                            }
                            let mut resp = http::Response::new(Full::new(Bytes::from(format!(
                                "{name} {target}"
                            ))));
                            resp.headers_mut()
                                .insert("x-from-server", http::HeaderValue::from_static("yes"));
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo { addr, seen }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

/// `routes = [...]` (TOML array-of-tables text) as a value for `Frontend::set`.
fn routes(text: &str) -> toml::Value {
    let t: toml::Table = toml::from_str(text).expect("test routes parse");
    t["routes"].clone()
}

fn table(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).expect("test table parses"))
}

struct Site {
    f: Fulcrum,
    www: Echo,
    api: Echo,
    admin: Echo,
}

const SITE_ROUTES: &str = r#"
[[routes]]
name = "api"
host = ["api.example.com", "*.example.org"]
path_prefix = "/v1/"
methods = ["GET", "POST"]
backend = "api"
strip_prefix = true
response_headers = { set = { "x-route" = "api" } }

[[routes]]
name = "admin"
host = "www.example.com"
path_prefix = "/admin/"
headers = { "x-canary" = "1" }
backend = "admin"

[[routes]]
name = "old"
path = "/old"
redirect = "https://{host}/new?from={path}"
redirect_status = 301

[[routes]]
name = "https"
host = "plain.example.com"
redirect = "https://{host}{path_and_query}"

[[routes]]
name = "www"
host = "www.example.com"
backend = "b"
request_headers = { set = { "x-env" = "prod", "x-client" = "{client_ip}" }, add = { "x-added" = "{host}" }, remove = ["x-debug"] }
"#;

async fn site(default: Option<&str>) -> Site {
    let (www, api, admin) = (
        Echo::start("www").await,
        Echo::start("api").await,
        Echo::start("admin").await,
    );
    let mut setup = Setup::new()
        .frontend(|f| {
            let f = f
                .set("routes", routes(SITE_ROUTES))
                .set(
                    "response_headers",
                    table(r#"set = { "strict-transport-security" = "max-age=31536000" }"#),
                )
                .set("max_body_bytes", 100);
            match default {
                Some(b) => f.backend(b),
                None => f.unset("backend"),
            }
        })
        .server_at("w1", www.addr, |s| s);
    for (name, e) in [("api", &api), ("admin", &admin)] {
        setup = setup.backend(name, |b| b.server_at("s1", e.addr, |s| s));
    }
    let f = setup.start().await;
    Site { f, www, api, admin }
}

/// One HTTP/2 request (prior knowledge) with `host` as its authority.
async fn h2(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn raw(f: &Fulcrum, request: &str) -> RawResponse {
    raw_exchange(f.frontend("www"), request.as_bytes()).await
}

#[tokio::test]
async fn hosts_prefixes_methods_and_headers_choose_the_backend() {
    let s = site(Some("b")).await;
    // Exact host, any port, any case; the prefix is stripped.
    let r = raw(
        &s.f,
        "GET /v1/books?id=7 HTTP/1.1\r\nHost: API.example.com:8443\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "api /books?id=7"));
    assert_eq!(r.header("x-route"), Some("api"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    // A wildcard matches one label or more, not the bare name.
    let r = raw(
        &s.f,
        "POST /v1/x HTTP/1.1\r\nHost: a.b.example.org\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "api /x"));
    assert_eq!(s.api.seen().body_len, 2);
    let r = raw(&s.f, "GET /v1/x HTTP/1.1\r\nHost: example.org\r\n\r\n").await;
    assert_eq!(r.text(), "www /v1/x", "the default backend");
    // A method the route does not list.
    let r = raw(
        &s.f,
        "DELETE /v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "www /v1/x");
    // A header condition.
    let r = raw(
        &s.f,
        "GET /admin/users HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "www /admin/users", "no x-canary: the www route");
    let r = raw(
        &s.f,
        "GET /admin/users HTTP/1.1\r\nHost: www.example.com\r\nX-Canary: 1\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "admin /admin/users");
    // The absolute form's authority is the host.
    let r = raw(
        &s.f,
        "GET http://api.example.com/v1/a HTTP/1.1\r\nHost: other\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "api /a");
}

#[tokio::test]
async fn dot_segments_and_escapes_are_matched_as_the_server_reads_them() {
    let s = site(Some("b")).await;
    // `/v1/../admin/` is `/admin/`: not the API's prefix.
    let r = raw(
        &s.f,
        "GET /v1/../admin/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "www /v1/../admin/x");
    // `%61dmin` is `admin`: the admin route's conditions apply to it.
    let r = raw(
        &s.f,
        "GET /%61dmin/x HTTP/1.1\r\nHost: www.example.com\r\nX-Canary: 1\r\n\r\n",
    )
    .await;
    assert!(r.text().starts_with("admin "), "{}", r.text());
    // Stripping works on the normalized path.
    let r = raw(
        &s.f,
        "GET /x/../v1/%62ooks HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.text(), "api /books");
}

#[tokio::test]
async fn redirects_fill_every_placeholder() {
    let s = site(Some("b")).await;
    let r = raw(
        &s.f,
        "GET /old?x=1 HTTP/1.1\r\nHost: Shop.Example.com:80\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/new?from=/old")
    );
    assert_eq!(r.header("content-length"), Some("0"));
    let r = raw(
        &s.f,
        "GET /a/b?c=d HTTP/1.1\r\nHost: plain.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 308, "the default redirect status");
    assert_eq!(
        r.header("location"),
        Some("https://plain.example.com/a/b?c=d")
    );
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(
        s.www.seen().target,
        "",
        "no server saw a redirected request"
    );
}

#[tokio::test]
async fn no_route_and_no_default_is_404() {
    let s = site(None).await;
    let r = raw(&s.f, "GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-fulcrum-error"), Some("no_route"));
    // The connection stays usable after a bodiless 404.
    let mut c = RawConn::connect(s.f.frontend("www")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        .await;
    let first = c.read_response().await.expect("first answer");
    let second = c.read_response().await.expect("second answer");
    assert_eq!((first.status, second.status), (404, 200));
    assert_eq!(second.text(), "www /");
}

#[tokio::test]
async fn header_rules_and_request_ids() {
    let s = site(Some("b")).await;
    let r = raw(
        &s.f,
        "GET /page HTTP/1.1\r\nHost: www.example.com\r\nX-Env: dev\r\nX-Debug: 1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let h = s.www.seen().headers;
    let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(get("x-env").as_deref(), Some("prod"), "set replaces");
    assert_eq!(h.get_all("x-env").iter().count(), 1);
    assert_eq!(get("x-debug"), None, "removed");
    assert_eq!(get("x-client").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("x-added").as_deref(), Some("www.example.com"));
    let id = get("x-request-id").expect("a request id is made");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // A client's own id is kept.
    raw(
        &s.f,
        "GET /page HTTP/1.1\r\nHost: www.example.com\r\nX-Request-Id: abc-123\r\n\r\n",
    )
    .await;
    let h = s.www.seen().headers;
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    assert_eq!(h.get("x-request-id").unwrap(), "abc-123");
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413_in_both_framings() {
    let s = site(Some("b")).await;
    let big = "x".repeat(101);
    let r = raw(
        &s.f,
        &format!("POST /up HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 101\r\n\r\n{big}"),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-fulcrum-error"), Some("body_too_large"));
    assert_eq!(s.www.seen().target, "", "nothing reached the server");
    // Exactly the limit is fine.
    let ok = "x".repeat(100);
    let r = raw(
        &s.f,
        &format!("POST /up HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 100\r\n\r\n{ok}"),
    )
    .await;
    assert_eq!(r.status, 200);
    // Chunked: 60 bytes, then 60 more: refused once the total passes 100, connection closed.
    let mut c = RawConn::connect(s.f.frontend("www")).await;
    let chunk = "y".repeat(60);
    c.send(
        format!(
            "POST /chunked HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await.expect("an answer");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    c.closed_within(Duration::from_secs(5)).await;
    assert_ne!(
        s.www.seen().target,
        "/chunked",
        "the server never got a whole body"
    );
    // HTTP/2 with a declared length.
    let (status, _, _) = h2(
        s.f.frontend("www"),
        "POST",
        "www.example.com",
        "/h2",
        &[],
        &big,
    )
    .await;
    assert_eq!(status, 413);
    // HTTP/2 without a declared length: cut at the limit, 413.
    let (status, headers, _) =
        h2_streamed(s.f.frontend("www"), &["x".repeat(60), "y".repeat(60)]).await;
    assert_eq!(status, 413);
    assert_eq!(headers.get("x-fulcrum-error").unwrap(), "body_too_large");
    assert_ne!(
        s.www.seen().target,
        "/h2s",
        "the server never got a whole body"
    );
}

/// An HTTP/2 POST whose body is sent as `parts` with no declared length.
async fn h2_streamed(addr: SocketAddr, parts: &[String]) -> (u16, http::HeaderMap, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = parts
        .iter()
        .map(|p| Ok(hyper::body::Frame::data(Bytes::from(p.clone()))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = http::Request::post("http://www.example.com/h2s")
        .body(body)
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn http2_requests_are_routed_and_redirected_too() {
    let s = site(Some("b")).await;
    let addr = s.f.frontend("www");
    let (_, headers, body) = h2(addr, "GET", "api.example.com", "/v1/list?a=1", &[], "").await;
    assert_eq!(
        headers.get("x-route").map(|v| v.to_str().unwrap()),
        Some("api"),
        "{headers:?} {body}"
    );
    assert_eq!(body, "api /list?a=1");
    let (status, headers, _) = h2(addr, "GET", "plain.example.com", "/anything", &[], "").await;
    assert_eq!(status, 308);
    assert_eq!(
        headers.get("location").unwrap(),
        "https://plain.example.com/anything"
    );
    let (status, _, _) = h2(
        addr,
        "GET",
        "www.example.com",
        "/page",
        &[("x-debug", "1")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let h = s.www.seen().headers;
    assert_eq!(h.get("x-env").unwrap(), "prod");
    assert!(h.get("x-debug").is_none());
    assert_eq!(h.get("x-request-id").unwrap().len(), 32);
}

#[tokio::test]
async fn route_metrics_and_status_name_each_route() {
    let s = site(Some("b")).await;
    raw(&s.f, "GET /v1/a HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await;
    raw(&s.f, "GET /old HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let api = Api::new(&s.f);
    let metrics = api.metrics().await;
    assert!(
        metrics
            .contains(r#"fulcrum_route_requests_total{frontend="www",route="api",code="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"fulcrum_route_requests_total{frontend="www",route="old",code="301"} 1"#),
        "{metrics}"
    );
    let status = api.status().await;
    let routes = &status["frontends"][0]["routes"];
    assert_eq!(routes[0]["name"], "api");
    assert_eq!(routes[0]["backend"], "api");
    assert_eq!(routes[2]["redirect"], "https://{host}/new?from={path}");
    drop(s.admin);
}

/// A fulcrum started from a file, with a reload API.
struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    f: Fulcrum,
    api: Api,
}

#[tokio::test]
async fn a_reload_changes_routes_under_load_without_a_failed_request() {
    let (one, two) = (Echo::start("one").await, Echo::start("two").await);
    let setup = |to: &str| {
        Setup::new()
            .frontend(|f| {
                f.set(
                    "routes",
                    routes(&format!(
                        "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nbackend = \"{to}\"\n"
                    )),
                )
            })
            .server_at("w1", one.addr, |s| s)
            .backend("two", |b| b.server_at("t1", two.addr, |s| s))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let f = setup("b").start_from(&path).await;
    let api = Api::new(&f);
    let rig = Rig {
        _dir: dir,
        path,
        f,
        api,
    };
    let addr = rig.f.frontend("www");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut seen_two, mut failed) = (0u32, 0u32, 0u32);
            // Bounded: at most 5,000 requests or until told to stop.
            for _ in 0..5000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                match c.get(format!("http://{addr}/x")).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        if r.text().await.unwrap_or_default().starts_with("two") {
                            seen_two += 1;
                        }
                    }
                    _ => failed += 1,
                }
            }
            (ok, seen_two, failed)
        })
    };
    eventually("requests flow", Duration::from_secs(10), || {
        one.seen().target == "/x"
    })
    .await;
    let text = setup("two").state_dir(rig.f.state_dir()).toml();
    std::fs::write(&rig.path, text).unwrap();
    let (code, body) = rig
        .api
        .send(reqwest::Method::POST, "/api/v1/reload", None)
        .await;
    assert_eq!(code, 200, "{body}");
    eventually("the new route serves", Duration::from_secs(10), || {
        two.seen().target == "/x"
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, seen_two, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(seen_two > 0);
    // A bad route is refused and the old routes keep serving.
    let bad = setup("nowhere").state_dir(rig.f.state_dir()).toml();
    std::fs::write(&rig.path, bad).unwrap();
    let (code, body) = rig
        .api
        .send(reqwest::Method::POST, "/api/v1/reload", None)
        .await;
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("frontends[0].routes[0].backend"),
        "{body}"
    );
    let r = raw_exchange(addr, b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(r.text(), "two /y");
}

#[tokio::test]
async fn json_access_log_lines_parse_back() {
    let e = Echo::start("e").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = format!(
        r#"[global]
state_dir = "{state}"
[admin]
bind = "127.0.0.1:0"
[[frontends]]
name = "www"
bind = "127.0.0.1:{port}"
access_log_format = "json"
[[frontends.routes]]
name = "site"
host = "site.example"
backend = "b"
[backends.b]
health = {{ kind = "tcp", interval = "60s" }}
[[backends.b.servers]]
name = "s1"
address = "{addr}"
"#,
        state = dir.path().display(),
        addr = e.addr
    );
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Standard output read on a thread of its own until the request's line appears (or the
    // process ends: it is killed below either way).
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("rid-1") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr).await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(
        b"POST /books?q=secret HTTP/1.1\r\nHost: site.example\r\nX-Request-Id: rid-1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let line = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the request's access log line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["frontend"], "www");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["host"], "site.example");
    assert_eq!(v["path"], "/books", "no query: it may carry secrets");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "site");
    assert_eq!(v["backend"], "b");
    assert_eq!(v["server"], "s1");
    assert_eq!(v["request_id"], "rid-1");
    assert_eq!(v["bytes_in"], 3);
    assert!(v["bytes_out"].as_u64().unwrap() > 0);
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["first_byte_ms"].as_f64().is_some());
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert!(v["client"].as_str().unwrap().starts_with("127.0.0.1:"));
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fulcrum did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

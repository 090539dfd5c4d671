//! `fulcrum demo`: three built-in servers and the balancer in one process, so a newcomer
//! sees balancing, health checks and backup takeover without writing a file.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::{self, Config};

/// The embedded configuration; server addresses are filled in once the demo servers listen.
const DEMO_CONFIG: &str = r#"
[global]
grace_period = "5s"

[admin]
bind = "127.0.0.1:9900"

[[frontends]]
name = "www"
bind = "127.0.0.1:8080"
backend = "booktiful"

[backends.booktiful]
algorithm = "round_robin"
min_healthy = 2

[backends.booktiful.health]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[[backends.booktiful.servers]]
name = "web-01"
address = "{web-01}"

[[backends.booktiful.servers]]
name = "web-02"
address = "{web-02}"

[[backends.booktiful.servers]]
name = "web-03"
address = "{web-03}"
backup = true
"#;

/// The demo configuration with the demo servers' addresses.
pub fn config(addrs: &[(&str, SocketAddr)]) -> Result<Config, config::ConfigErrors> {
    let mut text = DEMO_CONFIG.to_string();
    for (name, addr) in addrs {
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    let mut cfg = config::parse_str(&text, std::path::Path::new("<demo>"))?;
    cfg.global.state_dir = std::env::temp_dir().join("fulcrum-demo");
    Ok(cfg)
}

/// A demo server: answers a page naming itself and `/healthz`; `POST /fail` makes it fail
/// everything (as a crashed application would), `POST /recover` heals it.
pub async fn spawn_server(name: &'static str, preferred: u16) -> std::io::Result<SocketAddr> {
    let listener = match TcpListener::bind(("127.0.0.1", preferred)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    let addr = listener.local_addr()?;
    let failing = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let failing = Arc::clone(&failing);
            let svc = service_fn(move |req| answer(name, Arc::clone(&failing), req));
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(
    name: &str,
    failing: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::POST, "/fail") => {
            failing.store(true, Ordering::Relaxed);
            (StatusCode::OK, format!("{name} now fails every request\n"))
        }
        (&Method::POST, "/recover") => {
            failing.store(false, Ordering::Relaxed);
            (StatusCode::OK, format!("{name} recovered\n"))
        }
        _ if failing.load(Ordering::Relaxed) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name} is broken\n"),
        ),
        (_, "/healthz") => (StatusCode::OK, "ok\n".to_string()),
        _ => (StatusCode::OK, format!("Hello from {name}\n")),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// Runs the demo until Ctrl-C.
pub fn main() -> ExitCode {
    let _log = crate::runtime::init_logging();
    let rt = match crate::runtime::build(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let mut addrs = Vec::new();
        for (name, port) in [("web-01", 9001), ("web-02", 9002), ("web-03", 9003)] {
            match spawn_server(name, port).await {
                Ok(a) => addrs.push((name, a)),
                Err(e) => {
                    eprintln!("cannot start demo server {name}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        let cfg = match config(&addrs) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("the demo configuration is invalid (a bug): {e}");
                return ExitCode::from(2);
            }
        };
        let stop = crate::runtime::StopSignals::install();
        let running = match crate::runtime::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let token_file = crate::admin::token::path(&running.app.config());
        let token = crate::admin::token::read(&token_file).unwrap_or_default();
        print_welcome(running.frontend("www"), running.admin, &addrs, &token);
        stop.wait().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn print_welcome(www: SocketAddr, admin: SocketAddr, servers: &[(&str, SocketAddr)], token: &str) {
    let [(_, w1), (_, w2), (_, w3)] = servers else {
        return;
    };
    println!(
        r#"
fulcrum demo is running.

  balancer   http://{www}/        round-robin over web-01 ({w1}) and web-02 ({w2})
  backup     web-03 ({w3})        serves only when no primary is up
  dashboard  http://{admin}/        admin token: {token}
  metrics    http://{admin}/metrics

Try:
  for i in 1 2 3 4; do curl -s http://{www}/; done     # web-01 and web-02 in turn
  curl -s -X POST http://{w1}/fail                     # break web-01: after 2 failed checks it
  for i in 1 2 3 4; do curl -s http://{www}/; done     #   leaves rotation (see the WARN line)
  curl -s -X POST http://{w2}/fail                     # break web-02 too: backup web-03 takes over
  curl -s -X POST http://{w1}/recover                  # web-01 returns; web-03 steps back
  curl -s -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
       -d '{{"for":"2m","reason":"demo"}}' \
       http://{admin}/api/v1/backends/booktiful/servers/web-02/maintenance
                                                       # web-02 out for 2 minutes, back by itself

Stop with Ctrl-C.
"#
    );
}

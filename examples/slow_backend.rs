//! A deliberately slow HTTP server for `bench/overload.sh`: every request (but `/healthz`)
//! waits `DELAY_MS` before answering `ok`, like an application doing real work, so that
//! per-server limits and the queue actually come into play.
//!
//! `cargo run --release --example slow_backend -- PORT [DELAY_MS]`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: slow_backend PORT [DELAY_MS]")?
        .parse()?;
    let delay = Duration::from_millis(args.next().map_or(Ok(20), |d| d.parse())?);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    if req.uri().path() != "/healthz" {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"ok\n",
                    ))))
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

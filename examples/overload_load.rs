//! The load generator of `bench/overload.sh`: CONNS clients, each on its own keep-alive
//! connection, send `GET /` back to back for SECONDS, and the latencies of served (2xx)
//! and rejected (503) requests are kept apart: a proxy that answers 503 quickly and one
//! that makes rejected clients wait look the same in an average, not in these figures.
//!
//! `cargo run --release --example overload_load -- ADDR CONNS SECONDS`
//! Prints one line: `served=.. rejected=.. errors=.. rps_served=.. p50_served_ms=..
//! p99_served_ms=.. p50_rejected_ms=.. p99_rejected_ms=..`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Default)]
struct Seen {
    served: Vec<u32>,
    rejected: Vec<u32>,
    errors: u64,
}

async fn client(addr: SocketAddr, until: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut conn: Option<http1::SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < until {
        let tx = match conn.as_mut() {
            Some(tx) => tx,
            None => match TcpStream::connect(addr).await {
                Ok(s) => match http1::handshake(TokioIo::new(s)).await {
                    Ok((tx, c)) => {
                        tokio::spawn(c);
                        conn.insert(tx)
                    }
                    Err(_) => {
                        seen.errors += 1;
                        continue;
                    }
                },
                Err(_) => {
                    seen.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if tx.ready().await.is_err() {
            conn = None;
            continue;
        }
        let req = match hyper::Request::get("/")
            .header("host", "bench")
            .body(Empty::new())
        {
            Ok(r) => r,
            Err(_) => return seen,
        };
        let t = Instant::now();
        let ok = match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await;
                body.is_ok().then_some(status)
            }
            Err(_) => None,
        };
        let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        match ok {
            Some(200..=299) => seen.served.push(us),
            Some(503) => seen.rejected.push(us),
            _ => {
                seen.errors += 1;
                conn = None;
            }
        }
    }
    seen
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    f64::from(v[i]) / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: overload_load ADDR CONNS SECONDS";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let conns: usize = args.next().ok_or(usage)?.parse()?;
    let secs: u64 = args.next().ok_or(usage)?.parse()?;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(client(addr, until)))
        .collect();
    let mut all = Seen::default();
    for t in tasks {
        let s = t.await?;
        all.served.extend(s.served);
        all.rejected.extend(s.rejected);
        all.errors += s.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "served={} rejected={} errors={} rps_served={:.0} p50_served_ms={:.1} p99_served_ms={:.1} p50_rejected_ms={:.1} p99_rejected_ms={:.1}",
        all.served.len(),
        all.rejected.len(),
        all.errors,
        all.served.len() as f64 / elapsed,
        pct(&mut all.served, 0.50),
        pct(&mut all.served, 0.99),
        pct(&mut all.rejected, 0.50),
        pct(&mut all.rejected, 0.99),
    );
    Ok(())
}

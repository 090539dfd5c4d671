//! Property test of the whole HTTP/1 engine over real sockets (issue 11, point 6): generated
//! requests — methods, targets, header case, bodies framed by `Content-Length` or by chunks
//! of random sizes with extensions and trailers — pipelined on one connection and written in
//! random pieces, to a running fulcrum in front of a real HTTP/1.1 server (hyper).
//!
//! For each valid sequence, every request must reach the server whole and unchanged (method,
//! target, decoded body) and its answer reach the client in order. A sequence ending with a
//! malformed chunked body must give the valid requests before it their answers, then a 400
//! and a closed connection, and the server must never see the malformed request whole.
//!
//! Run: `cargo test --test h1_engine_props` (64 cases per property; `PROPTEST_CASES` raises it).
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// What the server saw: one line per request, `METHOD TARGET LEN HASH`.
type Seen = Arc<Mutex<Vec<String>>>;

struct Rig {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    seen: Seen,
    _f: Fulcrum,
}

fn digest(method: &str, target: &str, body: &[u8]) -> String {
    // FNV-1a: a stable fingerprint of the body.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{method} {target} {} {h:016x}", body.len())
}

/// One fulcrum and one echo server for every case (starting them per case would be most
/// of the test's time).
static RIG: LazyLock<Rig> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let seen: Seen = Arc::default();
    let (addr, f) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = l.local_addr().unwrap();
        let s2 = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let seen = Arc::clone(&s2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let method = req.method().to_string();
                            let target = req.uri().to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let text = match body {
                                Ok(b) => {
                                    let d = digest(&method, &target, &b);
                                    if target != "/healthz" {
                                        seen.lock().unwrap().push(d.clone());
                                    }
                                    d
                                }
                                Err(_) => "broken".to_string(),
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(text),
                            )))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let f = Setup::new()
            .backend("b", |b| b.health(|h| h.reset().tcp().interval("60s")))
            .server_at("s1", server, |s| s)
            .start()
            .await;
        (f.frontend("www"), f)
    });
    Rig {
        rt,
        addr,
        seen,
        _f: f,
    }
});

#[derive(Debug, Clone)]
enum Framing {
    None,
    Length,
    /// Chunk sizes (the last chunk may be shorter), with extensions and trailers or not.
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailer: bool,
    },
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: String,
    body: Vec<u8>,
    framing: Framing,
    upper_names: bool,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let name = |n: &str| {
            if self.upper_names {
                n.to_ascii_uppercase()
            } else {
                n.to_string()
            }
        };
        let mut out = format!(
            "{} {} HTTP/1.1\r\n{}: h.example\r\n{}: yes\r\n",
            self.method,
            self.target,
            name("Host"),
            name("X-Test")
        )
        .into_bytes();
        match &self.framing {
            Framing::None => out.extend_from_slice(b"\r\n"),
            Framing::Length => {
                out.extend_from_slice(
                    format!("{}: {}\r\n\r\n", name("Content-Length"), self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked {
                sizes,
                ext,
                trailer,
            } => {
                out.extend_from_slice(
                    format!("{}: chunked\r\n\r\n", name("Transfer-Encoding")).as_bytes(),
                );
                let mut rest = &self.body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes
                        .get(i)
                        .copied()
                        .unwrap_or(rest.len())
                        .clamp(1, rest.len());
                    let e = if *ext { ";name=value" } else { "" };
                    out.extend_from_slice(format!("{n:x}{e}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                    i += 1;
                }
                out.extend_from_slice(b"0\r\n");
                if *trailer {
                    out.extend_from_slice(b"x-checksum: 1\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn expected(&self) -> String {
        digest(self.method, &self.target, &self.body)
    }
}

fn req() -> impl Strategy<Value = Req> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let target = "/[a-z0-9]{0,8}(/[a-z0-9._-]{1,6}){0,3}(\\?[a-z]=[a-z0-9]{0,5})?";
    let body = prop::collection::vec(any::<u8>(), 0..3000);
    let framing = prop_oneof![
        Just(Framing::None),
        Just(Framing::Length),
        (
            prop::collection::vec(1usize..700, 0..6),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(sizes, ext, trailer)| Framing::Chunked {
                sizes,
                ext,
                trailer
            }),
    ];
    (method, target, body, framing, any::<bool>()).prop_map(
        |(method, target, body, framing, upper_names)| {
            let body = if matches!(framing, Framing::None) {
                Vec::new()
            } else {
                body
            };
            Req {
                method,
                target,
                body,
                framing,
                upper_names,
            }
        },
    )
}

/// Splits `bytes` at the given points (taken modulo its length), for writes of random sizes.
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % bytes.len().max(1))
        .filter(|&c| c > 0)
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in at {
        out.push(bytes[from..c].to_vec());
        from = c;
    }
    out.push(bytes[from..].to_vec());
    out
}

/// Writes the pieces with a flush and a yield between them, then reads `n` responses.
async fn exchange(addr: SocketAddr, writes: Vec<Vec<u8>>, n: usize) -> (Vec<RawResponse>, bool) {
    let mut c = RawConn::connect(addr).await;
    let _ = c.stream.set_nodelay(true);
    for w in writes {
        if c.stream.write_all(&w).await.is_err() {
            break;
        }
        let _ = c.stream.flush().await;
        tokio::task::yield_now().await;
    }
    let mut got = Vec::new();
    for _ in 0..n {
        match c.read_response_within(Duration::from_secs(10)).await {
            Ok(Some(r)) => got.push(r),
            Ok(None) => break,
            Err(_) => panic!("no response within 10 s after {} of {n}", got.len()),
        }
    }
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), c.read_response()).await,
        Ok(None)
    );
    (got, closed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pipelined_requests_split_anywhere_arrive_whole_and_in_order(
        reqs in prop::collection::vec(req(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let rig = &*RIG;
        // The two properties run side by side: each marks its targets.
        let reqs: Vec<Req> = reqs.into_iter().map(|r| Req { target: format!("/one{}", r.target), ..r }).collect();
        let mut bytes: Vec<u8> = reqs.iter().flat_map(Req::bytes).collect();
        // The last request closes the connection, so the read of what follows ends.
        bytes.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
        let before = rig.seen.lock().unwrap().len();
        let (got, closed) = rig.rt.block_on(exchange(rig.addr, pieces(&bytes, &cuts), reqs.len() + 1));
        prop_assert_eq!(got.len(), reqs.len() + 1);
        for (r, want) in got.iter().zip(&reqs) {
            prop_assert_eq!(r.status, 200);
            prop_assert_eq!(r.text(), want.expected());
        }
        prop_assert!(closed, "Connection: close is honoured");
        let seen = rig.seen.lock().unwrap();
        // A property's cases run one at a time, so what the server saw since is this case's.
        let mine: Vec<&String> = seen[before..].iter().filter(|l| l.contains(" /one")).collect();
        let want: Vec<String> = reqs.iter().map(Req::expected).collect();
        prop_assert_eq!(mine.len(), want.len());
        for (m, w) in mine.iter().zip(&want) {
            prop_assert_eq!(*m, w);
        }
    }

    #[test]
    fn a_malformed_chunk_after_valid_requests_is_400_and_never_reaches_the_server(
        reqs in prop::collection::vec(req(), 0..3),
        good in prop::collection::vec(any::<u8>(), 1..500),
        bad in prop_oneof![
            Just("zz\r\n".to_string()),
            Just("-5\r\n".to_string()),
            Just("fffffffffffffffffffff\r\n".to_string()),
            Just("3\r\nabcdef\r\n".to_string()),
            Just("3\nabc\r\n".to_string()),
        ],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let rig = &*RIG;
        let reqs: Vec<Req> = reqs.into_iter().map(|r| Req { target: format!("/two{}", r.target), ..r }).collect();
        let mut bytes: Vec<u8> = reqs.iter().flat_map(Req::bytes).collect();
        bytes.extend_from_slice(b"POST /bad HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n");
        bytes.extend_from_slice(format!("{:x}\r\n", good.len()).as_bytes());
        bytes.extend_from_slice(&good);
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(bad.as_bytes());
        bytes.extend_from_slice(b"0\r\n\r\n");
        let before = rig.seen.lock().unwrap().len();
        let (got, closed) = rig.rt.block_on(exchange(rig.addr, pieces(&bytes, &cuts), reqs.len() + 1));
        prop_assert_eq!(got.len(), reqs.len() + 1);
        for (r, want) in got.iter().zip(&reqs) {
            prop_assert_eq!(r.status, 200);
            prop_assert_eq!(r.text(), want.expected());
        }
        let last = &got[reqs.len()];
        prop_assert_eq!(last.status, 400);
        prop_assert_eq!(last.header("x-fulcrum-error"), Some("bad_request"));
        prop_assert!(closed, "the connection closes after a malformed body");
        let seen = rig.seen.lock().unwrap();
        prop_assert!(
            !seen[before..].iter().any(|l| l.starts_with("POST /bad ")),
            "the server saw the malformed request whole: {:?}", &seen[before..]
        );
    }
}

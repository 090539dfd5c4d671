//! gRPC end to end: a tonic client through fulcrum (HTTP/2 cleartext frontend) to a real
//! gRPC server on a `protocol = "h2"` backend — unary, server streaming, client streaming
//! and bidirectional calls, statuses and their messages relayed from trailers, only server
//! failures counted by outlier detection, and the server's stream limit respected.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message both ways.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

fn msg(text: &str, n: u32) -> Msg {
    Msg {
        text: text.into(),
        n,
    }
}

/// A test gRPC server: `forced` ≥ 0 makes every call end with that status (after one
/// message, for server streaming: the status then comes in the trailers).
struct GrpcServer {
    addr: SocketAddr,
    forced: Arc<AtomicI32>,
}

impl GrpcServer {
    async fn start(name: &'static str, max_streams: u32) -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forced = Arc::new(AtomicI32::new(-1));
        let f = Arc::clone(&forced);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let f = Arc::clone(&f);
                let svc = hyper::service::service_fn(move |req| {
                    let f = f.load(Ordering::SeqCst);
                    async move { Ok::<_, std::convert::Infallible>(route(name, f, req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        GrpcServer { addr, forced }
    }

    fn force(&self, code: Option<Code>) {
        self.forced
            .store(code.map_or(-1, |c| c as i32), Ordering::SeqCst);
    }
}

fn forced_status(forced: i32) -> Option<Status> {
    (forced >= 0).then(|| Status::new(Code::from_i32(forced), "forced"))
}

async fn route(
    name: &'static str,
    forced: i32,
    req: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
    match req.uri().path() {
        "/test.Echo/Say" => {
            let svc = tower::service_fn(move |r: Request<Msg>| async move {
                if let Some(s) = forced_status(forced) {
                    return Err(s);
                }
                let m = r.into_inner();
                if m.n > 0 && m.text == "fail" {
                    return Err(Status::new(Code::from_i32(m.n as i32), "no such book"));
                }
                if m.text == "slow" {
                    tokio::time::sleep(Duration::from_millis(u64::from(m.n))).await;
                }
                Ok(Response::new(msg(&format!("{name}:{}", m.text), m.n)))
            });
            grpc.unary(svc, req).await
        }
        "/test.Echo/Count" => {
            let svc = tower::service_fn(move |r: Request<Msg>| async move {
                let m = r.into_inner();
                let mut items: Vec<Result<Msg, Status>> =
                    (0..m.n).map(|i| Ok(msg(&m.text, i))).collect();
                if let Some(s) = forced_status(forced) {
                    items.truncate(1);
                    items.push(Err(s));
                }
                Ok(Response::new(futures_util::stream::iter(items)))
            });
            grpc.server_streaming(svc, req).await
        }
        "/test.Echo/Sum" => {
            let svc = tower::service_fn(|r: Request<Streaming<Msg>>| async move {
                let mut s = r.into_inner();
                let (mut text, mut n) = (String::new(), 0);
                while let Some(m) = s.message().await? {
                    text.push_str(&m.text);
                    n += m.n;
                }
                Ok(Response::new(msg(&text, n)))
            });
            grpc.client_streaming(svc, req).await
        }
        "/test.Echo/Chat" => {
            let svc = tower::service_fn(|r: Request<Streaming<Msg>>| async move {
                let out = r
                    .into_inner()
                    .map(|m| m.map(|m| msg(&m.text.to_uppercase(), m.n + 1)));
                Ok(Response::new(out))
            });
            grpc.streaming(svc, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

type Client = tonic::client::Grpc<tonic::transport::Channel>;

async fn client(f: &Fulcrum) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.frontend("www")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(c: &mut Client, m: Msg) -> Result<Msg, Status> {
    c.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Say");
    c.unary(Request::new(m), path, ProstCodec::default())
        .await
        .map(Response::into_inner)
}

async fn count(c: &mut Client, text: &str, n: u32) -> Result<Vec<Msg>, Status> {
    c.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Count");
    let mut s = c
        .server_streaming(Request::new(msg(text, n)), path, ProstCodec::default())
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await? {
        got.push(m);
    }
    Ok(got)
}

/// gRPC servers on backend `b`, checked by TCP connect (they speak no HTTP/1).
fn grpc_setup(servers: &[(&str, &GrpcServer)]) -> Setup {
    let mut s = Setup::new().backend("b", |b| b.set("protocol", "h2").health(|h| h.tcp()));
    for (name, server) in servers {
        s = s.server_at(name, server.addr, |s| s);
    }
    s
}

#[tokio::test]
async fn unary_and_streaming_calls() {
    let a = GrpcServer::start("a", 100).await;
    let f = grpc_setup(&[("a", &a)]).start().await;
    let mut c = client(&f).await;
    let r = say(&mut c, msg("hello", 7)).await.unwrap();
    assert_eq!(r, msg("a:hello", 7));

    let got = count(&mut c, "x", 5).await.unwrap();
    assert_eq!(got.iter().map(|m| m.n).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    c.ready().await.unwrap();
    let items = futures_util::stream::iter([msg("a", 1), msg("b", 2), msg("c", 3)]);
    let path = PathAndQuery::from_static("/test.Echo/Sum");
    let sum: Msg = c
        .client_streaming(Request::new(items), path, ProstCodec::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sum, msg("abc", 6));
    f.shutdown().await;
}

/// Each message goes through and its answer comes back before the next is sent: nothing
/// is buffered to the end of either stream.
#[tokio::test]
async fn bidirectional_streaming_is_not_buffered() {
    let a = GrpcServer::start("a", 100).await;
    let f = grpc_setup(&[("a", &a)]).start().await;
    let mut c = client(&f).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    c.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Chat");
    tx.send(msg("one", 1)).await.unwrap();
    let mut replies = c
        .streaming(
            Request::new(outgoing),
            path,
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for (i, word) in ["one", "two", "three"].iter().enumerate() {
        if i > 0 {
            tx.send(msg(word, i as u32 + 1)).await.unwrap();
        }
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("the reply came before the stream ended")
            .unwrap()
            .unwrap();
        assert_eq!(reply, msg(&word.to_uppercase(), i as u32 + 2));
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    f.shutdown().await;
}

#[tokio::test]
async fn statuses_and_messages_are_relayed() {
    let a = GrpcServer::start("a", 100).await;
    let f = grpc_setup(&[("a", &a)]).start().await;
    let mut c = client(&f).await;
    // Trailers-only answer (the status in the head).
    let e = say(&mut c, msg("fail", Code::NotFound as u32))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no such book");
    // After a message: the status in the trailers.
    a.force(Some(Code::PermissionDenied));
    let e = count(&mut c, "x", 3).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "forced");
    f.shutdown().await;
}

/// UNAVAILABLE is the server failing and ejects it; NOT_FOUND is an answer and does not.
async fn ejection(streaming: bool) {
    let a = GrpcServer::start("a", 100).await;
    let b = GrpcServer::start("b", 100).await;
    let f = grpc_setup(&[("a", &a), ("b", &b)])
        .backend("b", |b| {
            b.outlier("consecutive_failures", 3)
                .outlier("base_ejection", "60s")
                .outlier("max_ejection_percent", 50)
        })
        .start()
        .await;
    let mut c = client(&f).await;
    let call = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            if streaming {
                count(&mut c, "x", 2).await.map(|_| ())
            } else {
                say(&mut c, msg("hi", 0)).await.map(|_| ())
            }
        }
    };
    a.force(Some(Code::NotFound));
    for _ in 0..10 {
        let _ = call(&mut c).await;
    }
    assert!(
        !live_server(&f, "a").is_ejected(),
        "NOT_FOUND ejected a server"
    );
    a.force(Some(Code::Unavailable));
    let mut unavailable = 0;
    for _ in 0..20 {
        if let Err(e) = call(&mut c).await {
            assert_eq!(e.code(), Code::Unavailable);
            unavailable += 1;
        }
        if live_server(&f, "a").is_ejected() {
            break;
        }
    }
    assert!(
        live_server(&f, "a").is_ejected(),
        "UNAVAILABLE did not eject"
    );
    assert!(unavailable >= 3);
    // Ejected: every call now goes to b.
    for _ in 0..4 {
        assert!(call(&mut c).await.is_ok());
    }
    assert!(!live_server(&f, "b").is_ejected());
    f.shutdown().await;
}

#[tokio::test]
async fn unavailable_in_the_head_ejects_not_found_does_not() {
    ejection(false).await;
}

#[tokio::test]
async fn unavailable_in_the_trailers_ejects_not_found_does_not() {
    ejection(true).await;
}

/// A server allowing 2 streams a connection and 20 concurrent slow calls: all succeed.
#[tokio::test]
async fn many_calls_within_the_servers_stream_limit() {
    let a = GrpcServer::start("a", 2).await;
    let f = grpc_setup(&[("a", &a)]).start().await;
    let c = client(&f).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { say(&mut c, msg("slow", 100 + i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap().expect("every call succeeds");
        assert_eq!(r.n, 100 + i as u32);
    }
    f.shutdown().await;
}

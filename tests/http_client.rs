//! fulcrum's own outgoing HTTP/1.1 calls (webhooks, `fulcrum ctl`) on the engine's server
//! side: the request head it writes, and answers framed each way a receiver may frame them,
//! read from a raw socket on 127.0.0.1 so every byte is the test's.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A receiver that reads one request (head and `Content-Length` body), answers `answer`
/// and closes; it hands back the request's bytes.
async fn receiver(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        s.write_all(answer).await.unwrap();
        s.shutdown().await.unwrap();
        got
    });
    (port, task)
}

async fn call(port: u16, method: Method, body: &'static [u8]) -> fulcrum::http_client::Answer {
    let uri = format!("http://127.0.0.1:{port}/hook?x=1").parse().unwrap();
    fulcrum::http_client::call(
        method,
        &uri,
        &[("content-type", "application/json"), ("X-Token", "abc")],
        Bytes::from_static(body),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_request_head_names_host_length_and_the_callers_headers() {
    let (port, seen) = receiver(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    let answer = call(port, Method::POST, b"{\"a\":1}").await;
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    let req = String::from_utf8(seen.await.unwrap()).unwrap();
    assert!(req.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{req}");
    for line in [
        format!("host: 127.0.0.1:{port}\r\n"),
        "connection: close\r\n".into(),
        "content-type: application/json\r\n".into(),
        "X-Token: abc\r\n".into(),
        "content-length: 7\r\n".into(),
    ] {
        assert!(req.contains(&line), "{line:?} missing from {req}");
    }
    assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
}

#[tokio::test]
async fn answers_framed_by_length_chunks_or_close_are_read_whole() {
    let cases: [(&'static [u8], &str); 3] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
            "hello",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nhello until close", "hello until close"),
    ];
    for (answer, body) in cases {
        let (port, _) = receiver(answer).await;
        let got = call(port, Method::GET, b"").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, body.as_bytes());
    }
}

#[tokio::test]
async fn an_interim_answer_is_skipped_and_a_head_answer_has_no_body() {
    let (port, _) = receiver(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let got = call(port, Method::PUT, b"x").await;
    assert_eq!((got.status, &got.body[..]), (201, &b"ok"[..]));
    let (port, _) = receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
    let got = call(port, Method::HEAD, b"").await;
    assert_eq!((got.status, got.body.len()), (200, 0));
}

#[tokio::test]
async fn malformed_or_cut_answers_are_errors_that_say_so() {
    let cases: [(&'static [u8], &str); 3] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "cut short",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "bad body",
        ),
        (b"NOT HTTP\r\n\r\n", "malformed"),
    ];
    for (answer, why) in cases {
        let (port, _) = receiver(answer).await;
        let uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let err = fulcrum::http_client::call(
            Method::GET,
            &uri,
            &[],
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("a broken answer is an error")
        .to_string();
        assert!(err.contains(why), "{err} should say {why}");
    }
}

#[tokio::test]
async fn a_header_that_would_break_the_head_is_refused_before_connecting() {
    let uri = "http://127.0.0.1:1/".parse().unwrap();
    let err = fulcrum::http_client::call(
        Method::GET,
        &uri,
        &[("x-evil", "a\r\nhost: other")],
        Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .expect_err("a CRLF in a value is refused")
    .to_string();
    assert!(err.contains("x-evil"), "{err}");
}

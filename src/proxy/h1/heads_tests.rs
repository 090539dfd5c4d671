use super::*;
use crate::h1::{Limits, Parsed, parse_request, parse_response};

fn req(raw: &[u8]) -> RequestHead {
    match parse_request(raw, &Limits::default()) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{other:?}"),
    }
}

use crate::route::NO_RULES;

const FILL: Fill<'static> = Fill {
    client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
    host: "a.example",
    request_id: b"0123",
    path: b"/x",
    path_and_query: b"/x",
};

fn fwd() -> Forwarding<'static> {
    Forwarding {
        client: "192.0.2.7".parse().unwrap(),
        tls: false,
        server: "127.0.0.1:8080".parse().unwrap(),
        drop_expect: false,
        target: None,
        rules: &NO_RULES,
        made_request_id: None,
        fill: &FILL,
    }
}

fn forwarded(raw: &[u8], f: &Forwarding<'_>) -> String {
    let head = req(raw);
    let mut out = Vec::new();
    request(&mut out, raw, &head, f);
    String::from_utf8(out).unwrap()
}

#[test]
fn lines_are_copied_verbatim_and_hop_by_hop_ones_dropped() {
    let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: books.example\r\nX-Trace-ID: Ab\r\n\
        Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n";
    assert_eq!(
        forwarded(raw, &fwd()),
        "GET /a?b=1 HTTP/1.1\r\nHost: books.example\r\nX-Trace-ID: Ab\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: books.example\r\n\r\n"
    );
}

#[test]
fn forwarded_for_keeps_every_hop_in_one_line() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\
        x-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Proto: https\r\n\r\n";
    let out = forwarded(raw, &Forwarding { tls: true, ..fwd() });
    assert!(out.contains("X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n"));
    assert!(out.contains("X-Forwarded-Proto: https\r\n"));
    assert_eq!(out.matches("X-Forwarded-Proto").count(), 1);
}

#[test]
fn the_absolute_target_authority_replaces_host() {
    let raw = b"GET http://a.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let out = forwarded(raw, &fwd());
    assert!(
        out.starts_with("GET /x HTTP/1.1\r\nHost: a.example\r\n"),
        "{out}"
    );
    assert!(!out.contains("evil"));
}

#[test]
fn an_http10_request_without_host_gets_the_server_address() {
    let out = forwarded(b"GET / HTTP/1.0\r\n\r\n", &fwd());
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
        "{out}"
    );
}

#[test]
fn framing_is_written_from_the_decision_never_copied() {
    let raw =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    let out = forwarded(raw, &fwd());
    assert!(!out.contains("Content-Length"));
    assert_eq!(out.matches("Transfer-Encoding: chunked\r\n").count(), 1);
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nExpect: 100-continue\r\n\r\n";
    let out = forwarded(
        raw,
        &Forwarding {
            drop_expect: true,
            ..fwd()
        },
    );
    assert!(out.contains("Content-Length: 3\r\n"));
    assert!(!out.contains("Expect"));
}

#[test]
fn an_upgrade_keeps_its_upgrade_and_connection() {
    let raw = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Key: k\r\n\r\n";
    let out = forwarded(raw, &fwd());
    assert!(
        out.contains("Upgrade: websocket\r\nConnection: upgrade\r\n"),
        "{out}"
    );
    assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
}

fn resp(raw: &[u8], was_head: bool) -> ResponseHead {
    match parse_response(raw, &Limits::default(), was_head) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{other:?}"),
    }
}

fn relayed(raw: &[u8], head: &ResponseHead, r: &Relaying<'_>) -> String {
    let mut out = Vec::new();
    response(&mut out, raw, head, r);
    String::from_utf8(out).unwrap()
}

fn relaying(framing: ClientFraming) -> Relaying<'static> {
    Relaying {
        framing,
        close: false,
        keep_alive_10: false,
        set_cookie: None,
        switching: false,
        rules: &NO_RULES,
        lines: b"",
    }
}

#[test]
fn a_chunked_response_with_a_length_loses_the_length() {
    let raw =
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n";
    let head = resp(raw, false);
    let framing = client_framing(&head, Version::Http11);
    assert_eq!(framing, ClientFraming::Chunked);
    let out = relayed(raw, &head, &relaying(framing));
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn an_unsized_body_goes_chunked_to_http11_and_by_close_to_http10() {
    let raw = b"HTTP/1.0 200 OK\r\nServer: s\r\n\r\n";
    let head = resp(raw, false);
    assert_eq!(
        client_framing(&head, Version::Http11),
        ClientFraming::Chunked
    );
    assert_eq!(client_framing(&head, Version::Http10), ClientFraming::Close);
}

#[test]
fn a_head_response_keeps_its_length() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
    let head = resp(raw, true);
    let framing = client_framing(&head, Version::Http11);
    assert_eq!(framing, ClientFraming::None);
    let out = relayed(
        raw,
        &head,
        &Relaying {
            close: true,
            set_cookie: Some("s=1"),
            ..relaying(framing)
        },
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nSet-Cookie: s=1\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn codings_before_chunked_are_kept() {
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n";
    let out = forwarded(raw, &fwd());
    assert!(
        out.contains("Transfer-Encoding: gzip, chunked\r\n"),
        "{out}"
    );
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    let head = resp(raw, false);
    let framing = client_framing(&head, Version::Http11);
    let out = relayed(raw, &head, &relaying(framing));
    assert!(
        out.contains("Transfer-Encoding: gzip, chunked\r\n"),
        "{out}"
    );
}

#[test]
fn rules_drop_and_write_lines_and_a_made_request_id_goes_along() {
    let map = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let rules = Rules::compile(
        &crate::config::HeaderRules {
            set: map(&[("X-Env", "prod")]),
            add: map(&[("x-who", "{client_ip} {host} {request_id}")]),
            remove: vec!["x-debug".into()],
        },
        &crate::config::HeaderRules::default(),
    );
    let raw =
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nX-Env: dev\r\nX-DEBUG: 1\r\nX-Kept: k\r\n\r\n";
    let out = forwarded(
        raw,
        &Forwarding {
            rules: &rules,
            made_request_id: Some(b"0123"),
            target: Some(b"/stripped?q=1"),
            ..fwd()
        },
    );
    assert!(out.starts_with("GET /stripped?q=1 HTTP/1.1\r\n"), "{out}");
    assert!(!out.contains("dev") && !out.contains("X-DEBUG"), "{out}");
    assert!(out.contains("X-Kept: k\r\n"), "{out}");
    assert!(out.contains("X-Request-Id: 0123\r\n"), "{out}");
    assert!(out.contains("X-Env: prod\r\n"), "{out}");
    assert!(out.contains("x-who: 192.0.2.7 a.example 0123\r\n"), "{out}");
}

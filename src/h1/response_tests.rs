//! One test per response-head rule of `response.rs`, named after the rule.

use super::*;
use crate::h1::{Limits, Parsed};

fn parse_as(s: &str, head: bool) -> Result<ResponseHead, ResponseError> {
    match parse_response(s.as_bytes(), &Limits::default(), head)? {
        Parsed::Complete(h) => Ok(h),
        Parsed::Partial => panic!("partial: {s:?}"),
    }
}

fn parse(s: &str) -> Result<ResponseHead, ResponseError> {
    parse_as(s, false)
}

fn assert_502(s: &str) {
    let e = parse(s).unwrap_err();
    assert_eq!((e.status(), e.code()), (502, "upstream_broken"), "{s:?}");
}

#[test]
fn a_simple_response_is_framed_by_content_length() {
    let s = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let h = parse(s).unwrap();
    assert_eq!(
        (h.status, h.body, h.reusable),
        (200, ResponseFraming::Length(3), true)
    );
    assert_eq!(h.reason.of(s.as_bytes()), b"OK");
    assert_eq!(h.head_len, s.len() - 3);
}

#[test]
fn no_body_for_head_1xx_204_304() {
    let cl = "Content-Length: 10\r\n\r\n";
    assert_eq!(
        parse_as(&format!("HTTP/1.1 200 OK\r\n{cl}"), true)
            .unwrap()
            .body,
        ResponseFraming::NoBody
    );
    for code in ["100", "103", "204", "304"] {
        let h = parse(&format!("HTTP/1.1 {code} X\r\n{cl}")).unwrap();
        assert_eq!(h.body, ResponseFraming::NoBody, "{code}");
    }
    assert!(parse("HTTP/1.1 103 Early\r\n\r\n").unwrap().is_interim());
    assert!(
        !parse("HTTP/1.1 101 Switching\r\n\r\n")
            .unwrap()
            .is_interim()
    );
}

#[test]
fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
    let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    assert_eq!(h.body, ResponseFraming::Chunked);
    assert!(h.content_length_dropped && !h.reusable);
}

#[test]
fn te_not_ending_in_chunked_reads_until_close() {
    let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
    assert_eq!((h.body, h.reusable), (ResponseFraming::UntilClose, false));
}

#[test]
fn without_length_the_body_runs_until_close() {
    let h = parse("HTTP/1.1 200 OK\r\n\r\n").unwrap();
    assert_eq!((h.body, h.reusable), (ResponseFraming::UntilClose, false));
}

#[test]
fn reuse_follows_version_and_connection() {
    assert!(
        !parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .reusable
    );
    assert!(
        !parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .reusable
    );
    assert!(
        parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .reusable
    );
}

#[test]
fn an_invalid_status_line_is_502() {
    assert_502("HTTP/1.1 2000 OK\r\n\r\n");
    assert_502("HTTP/1.1 099 Low\r\n\r\n");
    assert_502("HTTP/1.1 600 High\r\n\r\n");
    assert_502("HTTP/2 200 OK\r\n\r\n");
    assert_502("HTTQ/1.1 200 OK\r\n\r\n");
}

#[test]
fn differing_or_non_digit_content_length_is_502() {
    assert_502("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
    assert_502("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n");
}

#[test]
fn obs_fold_bare_lf_and_space_before_colon_are_502() {
    assert_502("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n");
    assert_502("HTTP/1.1 200 OK\nContent-Length: 0\n\n");
    assert_502("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n");
    assert_502("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n");
}

#[test]
fn a_head_over_the_limit_is_502() {
    let s = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(300));
    let e = parse_response(
        s.as_bytes(),
        &Limits {
            max_head_bytes: 100,
        },
        false,
    )
    .unwrap_err();
    assert_eq!((e, e.status()), (ResponseError::HeadTooLarge, 502));
}

#[test]
fn too_many_headers_is_502() {
    let mut s = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        s.push_str(&format!("X-{i}: v\r\n"));
    }
    s.push_str("\r\n");
    assert_eq!(parse(&s).unwrap_err(), ResponseError::TooManyHeaders);
}

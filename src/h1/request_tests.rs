//! One test per request-head rule of `request.rs`, named after the rule.

use super::*;
use crate::h1::{Limits, Parsed};

fn parse(s: &str) -> Result<RequestHead, RequestError> {
    parse_limited(s, 65536)
}

fn parse_limited(s: &str, max: usize) -> Result<RequestHead, RequestError> {
    match parse_request(
        s.as_bytes(),
        &Limits {
            max_head_bytes: max,
        },
    )? {
        Parsed::Complete(h) => Ok(h),
        Parsed::Partial => panic!("partial: {s:?}"),
    }
}

fn bad(s: &str) -> RequestError {
    match parse(s) {
        Ok(h) => panic!("accepted {s:?}: {h:?}"),
        Err(e) => e,
    }
}

fn assert_400(s: &str) {
    let e = bad(s);
    assert_eq!((e.status(), e.code()), (400, "bad_request"), "{s:?}: {e}");
}

#[test]
fn a_simple_get_parses_with_spans_into_the_buffer() {
    let s = "GET /a?b HTTP/1.1\r\nHost: example.com\r\nX-Y:  z \r\n\r\nrest";
    let h = parse(s).unwrap();
    let b = s.as_bytes();
    assert_eq!(h.head_len, s.len() - 4);
    assert_eq!(h.method.of(b), b"GET");
    assert_eq!(h.target.of(b), b"/a?b");
    assert_eq!(h.target_form, Target::Origin);
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.authority.unwrap().of(b), b"example.com");
    assert_eq!(h.headers.as_slice().len(), 2);
    assert_eq!(h.headers.as_slice()[1].name.of(b), b"X-Y");
    assert_eq!(h.headers.as_slice()[1].value.of(b), b"z");
    assert_eq!(h.body, BodyFraming::None);
    assert!(h.keep_alive);
    assert!(!h.expect_continue && !h.upgrade);
}

#[test]
fn an_unfinished_head_is_partial() {
    let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &Limits::default()).unwrap();
    assert!(matches!(r, Parsed::Partial));
}

#[test]
fn te_and_cl_together_chunked_wins_cl_dropped_connection_closes() {
    let h = parse(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(h.body, BodyFraming::Chunked);
    assert!(h.content_length_dropped);
    assert!(!h.keep_alive);
}

#[test]
fn te_whose_last_coding_is_not_chunked_is_400() {
    assert_eq!(
        bad("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        RequestError::Malformed(Malformed::TransferEncoding)
    );
    assert_eq!(
        bad("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
        RequestError::NotChunked
    );
    assert_400(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
    );
}

#[test]
fn te_with_another_coding_before_chunked_is_chunked() {
    let h =
        parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").unwrap();
    assert_eq!(h.body, BodyFraming::Chunked);
}

#[test]
fn chunked_applied_twice_is_400() {
    assert_400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n");
}

#[test]
fn an_empty_te_is_400() {
    assert_400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n");
}

#[test]
fn te_in_http10_is_400() {
    assert_eq!(
        bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        RequestError::TransferEncodingInHttp10
    );
}

#[test]
fn differing_content_lengths_are_400() {
    assert_400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    assert_400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n");
}

#[test]
fn identical_repeated_content_lengths_are_merged() {
    let h =
        parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap();
    assert_eq!(h.body, BodyFraming::Length(5));
}

#[test]
fn non_digit_content_length_is_400() {
    for v in [
        "+5",
        "-5",
        "0x5",
        "5 5",
        "",
        "5,",
        "1e3",
        "99999999999999999999999",
    ] {
        assert_400(&format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n"
        ));
    }
}

#[test]
fn whitespace_before_colon_is_400() {
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n");
    assert_400("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n");
}

#[test]
fn obs_fold_is_400() {
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n");
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n");
    assert_400("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
}

#[test]
fn bare_cr_is_400() {
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n");
    assert_400("GET / HTTP/1.1\rHost: a\r\n\r\n");
}

#[test]
fn bare_lf_is_400() {
    assert_400("GET / HTTP/1.1\nHost: a\n\n");
    assert_400("GET / HTTP/1.1\r\nHost: a\r\n\n");
    assert_400("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n");
}

#[test]
fn nul_is_400() {
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n");
    assert_400("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn a_header_line_without_colon_is_400() {
    assert_400("GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n");
    assert_400("GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n");
}

#[test]
fn more_than_one_host_is_400() {
    assert_eq!(
        bad("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        RequestError::MultipleHost
    );
}

#[test]
fn http11_without_host_is_400() {
    assert_eq!(
        bad("GET / HTTP/1.1\r\nX: y\r\n\r\n"),
        RequestError::MissingHost
    );
}

#[test]
fn http10_without_host_parses_without_authority() {
    let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(h.authority, None);
    assert!(!h.keep_alive);
}

#[test]
fn an_invalid_host_is_400() {
    assert_eq!(
        bad("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        RequestError::InvalidHost
    );
    assert_eq!(
        bad("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        RequestError::InvalidHost
    );
}

#[test]
fn a_request_line_longer_than_max_header_bytes_is_414() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
    let e = parse_limited(&long, 100).unwrap_err();
    assert_eq!((e.status(), e.code()), (414, "uri_too_long"));
    // Known before the line ends.
    let partial = format!("GET /{}", "a".repeat(200));
    let r = parse_request(
        partial.as_bytes(),
        &Limits {
            max_head_bytes: 100,
        },
    );
    assert_eq!(r.unwrap_err(), RequestError::UriTooLong);
}

#[test]
fn a_head_larger_than_max_header_bytes_is_431() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "b".repeat(200)
    );
    let e = parse_limited(&big, 100).unwrap_err();
    assert_eq!((e.status(), e.code()), (431, "header_too_large"));
    // Unfinished but already past the limit: 431 too, the buffer must not grow.
    let r = parse_request(
        &big.as_bytes()[..150],
        &Limits {
            max_head_bytes: 100,
        },
    );
    assert_eq!(r.unwrap_err(), RequestError::HeadTooLarge);
}

#[test]
fn more_than_max_headers_is_431() {
    let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..MAX_HEADERS {
        s.push_str(&format!("X-{i}: v\r\n"));
    }
    s.push_str("\r\n");
    let e = bad(&s);
    assert_eq!((e, e.status()), (RequestError::TooManyHeaders, 431));
}

#[test]
fn exactly_max_headers_is_accepted() {
    let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 1..MAX_HEADERS {
        s.push_str(&format!("X-{i}: v\r\n"));
    }
    s.push_str("\r\n");
    assert_eq!(parse(&s).unwrap().headers.as_slice().len(), MAX_HEADERS);
}

#[test]
fn asterisk_form_only_for_options() {
    assert_eq!(
        parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .target_form,
        Target::Asterisk
    );
    assert_400("GET * HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn authority_form_only_for_connect() {
    let h = parse("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").unwrap();
    assert_eq!(h.target_form, Target::Authority);
    assert_400("GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_400("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn absolute_form_authority_replaces_host() {
    let s = "GET http://a.example:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
    let h = parse(s).unwrap();
    let b = s.as_bytes();
    assert_eq!(h.authority.unwrap().of(b), b"a.example:8080");
    match h.target_form {
        Target::Absolute { authority, path } => {
            assert_eq!(authority.of(b), b"a.example:8080");
            assert_eq!(path.of(b), b"/x?y");
        }
        t => panic!("{t:?}"),
    }
    let h = parse("GET HTTPS://b.example HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
    assert!(matches!(h.target_form, Target::Absolute { path, .. } if path.is_empty()));
}

#[test]
fn absolute_form_with_userinfo_or_no_authority_is_400() {
    assert_400("GET http://u@a.example/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_400("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_400("GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let ka = |s: &str| parse(s).unwrap().keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"
    ));
    assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
}

#[test]
fn expect_100_continue_is_flagged_in_http11_only() {
    assert!(
        parse("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .expect_continue
    );
    assert!(
        !parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .expect_continue
    );
}

#[test]
fn upgrade_is_flagged_with_connection_upgrade() {
    let up = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(parse(up).unwrap().upgrade);
    assert!(
        !parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .upgrade
    );
}

#[test]
fn leading_empty_lines_are_skipped() {
    let h = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(h.head_len, 31);
}

#[test]
fn an_unknown_version_or_bad_request_line_is_400() {
    assert_400("GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    assert_400("GET  / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_400("GET / HTTP/1.1 \r\nHost: a\r\n\r\n");
    assert_400("G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn a_body_length_is_read_from_content_length() {
    let h = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").unwrap();
    assert_eq!(h.body, BodyFraming::Length(12));
    assert!(h.method_is(b"POST / ", "POST"));
}

#[test]
fn an_empty_header_value_has_an_empty_span_at_its_place() {
    let s = "GET / HTTP/1.1\r\nHost: a\r\nX-E:\r\n\r\n";
    let h = parse(s).unwrap();
    let v = h.headers.as_slice()[1].value;
    assert!(v.is_empty());
    assert_eq!(v.start as usize, s.find("X-E:").unwrap() + 4);
}

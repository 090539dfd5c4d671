//! Writing heads on the HTTP/1 engine: the request head sent to a server, the response
//! head sent to the client, each straight into one output buffer.
//!
//! Header lines are copied verbatim (their original case kept), except those that describe
//! one hop (RFC 9110 §7.6.1) and those the proxy writes itself: framing (`Content-Length`,
//! `Transfer-Encoding`, decided from the parsed head, never copied), `Host` and the
//! `X-Forwarded-*` trio. Every name a `Connection` line lists is dropped too.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use crate::h1::{
    BodyFraming, Headers, RequestHead, ResponseFraming, ResponseHead, Target, Version,
};
use crate::proxy::headers::{is_hop_by_hop, push_ip, push_number};
use crate::route::{Fill, Rules};

/// Names fulcrum writes itself, so never copied: framing, `Host`, `X-Forwarded-For`.
const WRITTEN: [&str; 4] = [
    "transfer-encoding",
    "content-length",
    "host",
    "x-forwarded-for",
];

/// Whether `name` is one of `names` (ASCII case-insensitive).
fn one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The fields a head's `Connection` lines name, looked up once per head rather than once
/// per header line. `None` when they list only hop-by-hop names (`keep-alive`, dropped
/// anyway) and `close` (nearly every head); `Close` is reserved and never a field (RFC 9110
/// §7.6.1).
struct Listed<'a> {
    buf: &'a [u8],
    headers: Option<&'a Headers>,
}

impl<'a> Listed<'a> {
    fn of(buf: &'a [u8], headers: &'a Headers) -> Self {
        let names_fields = headers.named(buf, "connection").any(|v| {
            v.split(|&b| b == b',').any(|t| {
                let t = t.trim_ascii();
                !t.is_empty() && !is_hop_by_hop(t) && !t.eq_ignore_ascii_case(b"close")
            })
        });
        Listed {
            buf,
            headers: names_fields.then_some(headers),
        }
    }

    /// Whether a `Connection` line lists `name`.
    fn has(&self, name: &[u8]) -> bool {
        self.headers.is_some_and(|headers| {
            headers.named(self.buf, "connection").any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
            })
        })
    }
}

/// Whether the line is copied as it is.
fn copied(name: &[u8], listed: &Listed<'_>, more: &[&str]) -> bool {
    !is_hop_by_hop(name) && !one_of(name, &WRITTEN) && !one_of(name, more) && !listed.has(name)
}

/// Every `Transfer-Encoding` line's codings, in order, as one list (`gzip, chunked`).
fn codings(out: &mut Vec<u8>, buf: &[u8], headers: &Headers) {
    for v in headers.named(buf, "transfer-encoding") {
        for c in v
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
        {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(c);
        }
    }
}

/// `Transfer-Encoding` for a body fulcrum frames as chunked: the codings the sender
/// applied are kept (a `gzip` before `chunked` is part of the message), with `chunked`
/// last, once.
fn transfer_encoding(out: &mut Vec<u8>, buf: &[u8], headers: &Headers) {
    let mut list = Vec::new();
    codings(&mut list, buf, headers);
    let last = list
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if !last.eq_ignore_ascii_case(b"chunked") {
        if !list.is_empty() {
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(b"chunked");
    }
    line(out, b"Transfer-Encoding", &list);
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a forwarded request names its target and who asked.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub client: IpAddr,
    /// The client connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// `Host` for a request that has none (HTTP/1.0): the server's address, as nginx does.
    pub server: SocketAddr,
    /// fulcrum answers `Expect: 100-continue` itself, so the server must not see it.
    pub drop_expect: bool,
    /// The path and query to send instead of the client's (a route's `strip_prefix`).
    pub target: Option<&'a [u8]>,
    /// The header rules of the request's route (the frontend's, then the route's).
    pub rules: &'a Rules,
    /// An `x-request-id` fulcrum made, to add (the client sent none).
    pub made_request_id: Option<&'a [u8]>,
    /// What the rules' placeholders are filled with.
    pub fill: &'a Fill<'a>,
}

/// The path and query to send: an absolute-form target loses its scheme and authority.
pub fn origin_target<'a>(buf: &'a [u8], head: &RequestHead) -> &'a [u8] {
    match head.target_form {
        Target::Absolute { path, .. } => path.of(buf),
        _ => head.target.of(buf),
    }
}

/// Writes the request head for the server into `out`.
pub fn request(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, fwd: &Forwarding<'_>) {
    out.extend_from_slice(head.method.of(buf));
    out.push(b' ');
    let target = fwd.target.unwrap_or_else(|| origin_target(buf, head));
    if !target.starts_with(b"/") && !target.starts_with(b"*") {
        out.push(b'/');
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host_at = out.len();
    match head.authority {
        Some(a) => out.extend_from_slice(a.of(buf)),
        None => {
            let _ = write!(out, "{}", fwd.server);
        }
    }
    let host_end = out.len();
    out.extend_from_slice(b"\r\n");
    let more: &[&str] = if fwd.drop_expect {
        &["x-forwarded-proto", "x-forwarded-host", "expect"]
    } else {
        &["x-forwarded-proto", "x-forwarded-host"]
    };
    let listed = Listed::of(buf, &head.headers);
    for h in head.headers.as_slice() {
        if copied(h.name.of(buf), &listed, more) && !fwd.rules.drops(h.name.of(buf)) {
            line(out, h.name.of(buf), h.value.of(buf));
        }
    }
    if let Some(id) = fwd.made_request_id {
        line(out, b"X-Request-Id", id);
    }
    fwd.rules.write_lines(out, fwd.fill);
    // Several X-Forwarded-For lines are one list (RFC 9110 §5.3): every hop is kept, in
    // one line, with the client appended.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for v in head.headers.named(buf, "x-forwarded-for") {
        let v = v.trim_ascii();
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    push_ip(out, fwd.client);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(if fwd.tls { b"https" } else { b"http" });
    out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
    out.extend_from_within(host_at..host_end);
    out.extend_from_slice(b"\r\n");
    if head.upgrade {
        for v in head.headers.named(buf, "upgrade") {
            line(out, b"Upgrade", v);
        }
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    match head.body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_number(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => transfer_encoding(out, buf, &head.headers),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body, whatever the head's framing fields say (they are relayed as they are).
    None,
    /// `Content-Length`.
    Length(u64),
    /// Chunked (re-encoded from what was validated).
    Chunked,
    /// Until fulcrum closes the connection (an HTTP/1.0 client of an unsized body).
    Close,
}

/// The framing to give the client for a server's response: an unsized body goes out
/// chunked to an HTTP/1.1 client, so its connection can stay open.
pub fn client_framing(resp: &ResponseHead, client: Version) -> ClientFraming {
    match (resp.body, client) {
        (ResponseFraming::NoBody, _) => ClientFraming::None,
        (ResponseFraming::Length(n), _) => ClientFraming::Length(n),
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http11) => {
            ClientFraming::Chunked
        }
        (_, Version::Http10) => ClientFraming::Close,
    }
}

/// What the response head to the client says beyond the server's lines.
#[derive(Debug, Clone, Copy)]
pub struct Relaying<'a> {
    pub framing: ClientFraming,
    /// Whether the client connection ends after this response.
    pub close: bool,
    /// An HTTP/1.0 client asked to keep its connection: it must be told it is kept.
    pub keep_alive_10: bool,
    /// The sticky cookie to set, when the server is not the one the client's names.
    pub set_cookie: Option<&'a str>,
    /// A `101 Switching Protocols`: `Upgrade` and `Connection` are relayed as they are.
    pub switching: bool,
    /// The response header rules of the request's route (what they drop), and their
    /// lines rendered for this request.
    pub rules: &'a Rules,
    pub lines: &'a [u8],
}

/// Writes the response head for the client into `out`.
pub fn response(out: &mut Vec<u8>, buf: &[u8], resp: &ResponseHead, r: &Relaying<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, resp.status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    // A bodiless response's framing fields describe the resource (HEAD, 304) and go on as
    // they are; 1xx and 204 carry none (RFC 9110 §8.6).
    let keep_framing = r.framing == ClientFraming::None && resp.status >= 200 && resp.status != 204;
    let listed = Listed::of(buf, &resp.headers);
    for h in resp.headers.as_slice() {
        let name = h.name.of(buf);
        let framing_field = one_of(name, &["content-length", "transfer-encoding"]);
        let keep = if r.switching {
            one_of(name, &["upgrade", "connection"]) || copied(name, &listed, &[])
        } else if framing_field {
            keep_framing
        } else {
            !is_hop_by_hop(name) && !listed.has(name)
        };
        if keep && !r.rules.drops(name) {
            line(out, name, h.value.of(buf));
        }
    }
    out.extend_from_slice(r.lines);
    if let Some(c) = r.set_cookie {
        line(out, b"Set-Cookie", c.as_bytes());
    }
    match r.framing {
        ClientFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_number(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientFraming::Chunked => transfer_encoding(out, buf, &resp.headers),
        ClientFraming::None | ClientFraming::Close => {}
    }
    if r.close && !r.switching {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if r.keep_alive_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "heads_tests.rs"]
mod tests;

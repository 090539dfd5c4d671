//! A client's request head: parsed with `httparse` into a stack array, checked against
//! fulcrum's strict RFC 9112 rules, and turned into one framing decision.
//!
//! The rules (each has a test in `request_tests.rs` named after it):
//! - `Transfer-Encoding` with `Content-Length`: chunked wins, the length is dropped and the
//!   connection closes after the answer (RFC 9112 §6.1: the request may be an attempt to
//!   smuggle, and the connection cannot be trusted further);
//! - `Transfer-Encoding` whose last coding is not chunked, any `Transfer-Encoding` in
//!   HTTP/1.0, a `Content-Length` that is not digits or several that differ (identical
//!   repeats are merged, RFC 9110 §8.6), whitespace before a colon, obs-fold, bare CR, bare
//!   LF, NUL, a header line without a colon: 400, close;
//! - more than one `Host`, an invalid `Host`, or HTTP/1.1 without `Host`: 400;
//! - a request line longer than `max_header_bytes`: 414; a longer head or more than
//!   [`MAX_HEADERS`] lines: 431;
//! - the asterisk-form target only with OPTIONS, the authority-form only with CONNECT;
//!   an absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2);
//! - keep-alive by version and `Connection` (RFC 9112 §9.3); `Expect: 100-continue` and
//!   `Upgrade` flagged for HTTP/1.1 only (RFC 9110 §10.1.1, §7.8 tell HTTP/1.0 to ignore them).

use thiserror::Error;

use super::scan::{self, Malformed};
use super::{Headers, Limits, MAX_HEADERS, Parsed, Span, Version, lists_token};

/// Why a request head was refused; each maps to the answer fulcrum sends, and every one of
/// them closes the connection (the bytes after a bad head cannot be framed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The request line alone is longer than `max_header_bytes` (414).
    #[error("request line longer than max_header_bytes")]
    UriTooLong,
    /// The head is larger than `max_header_bytes` (431).
    #[error("request head larger than max_header_bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines (431).
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// The bytes or a framing field are malformed (400).
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// `Transfer-Encoding` whose last coding is not chunked: a request's body length could
    /// not be known (RFC 9112 §6.3) (400).
    #[error("Transfer-Encoding does not end in chunked")]
    NotChunked,
    /// `Transfer-Encoding` in an HTTP/1.0 request, which cannot have it (400).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// More than one `Host` line (RFC 9112 §3.2) (400).
    #[error("more than one Host header")]
    MultipleHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2) (400).
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// A `Host` value, or an absolute-form authority, that is no `host[:port]` (400).
    #[error("invalid Host")]
    InvalidHost,
    /// A request target of a form its method may not use, or of no form at all (400).
    #[error("invalid request target ({0})")]
    Target(&'static str),
}

impl RequestError {
    /// The status fulcrum answers with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::UriTooLong => 414,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            _ => 400,
        }
    }

    /// The `x-fulcrum-error` code of that answer.
    pub fn code(&self) -> &'static str {
        match self.status() {
            414 => "uri_too_long",
            431 => "header_too_large",
            _ => "bad_request",
        }
    }
}

/// How a request's body is framed (RFC 9112 §6.3). The proxy drops every `Content-Length`
/// and `Transfer-Encoding` line it was sent and writes its own from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither field was sent.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked; the proxy decodes it and re-encodes what it validated.
    Chunked,
}

/// The form of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query`: `path` is what follows the authority, possibly empty
    /// or starting with `?` (forwarded as `/` + path then).
    Absolute {
        /// The authority, which replaces `Host`.
        authority: Span,
        /// The rest of the target.
        path: Span,
    },
    /// `host:port`, for CONNECT only.
    Authority,
    /// `*`, for OPTIONS only.
    Asterisk,
}

/// A parsed, validated request head: spans into the caller's buffer plus the decisions.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes of the head, final empty line included: the body (or next request) starts here.
    pub head_len: usize,
    /// The method token.
    pub method: Span,
    /// The request target, as sent.
    pub target: Span,
    /// Which form the target has.
    pub target_form: Target,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Every header line, in order.
    pub headers: Headers,
    /// The authority to forward as `Host`: the absolute-form target's, else the `Host`
    /// line's value; `None` only for an HTTP/1.0 request without `Host` (the proxy then
    /// writes the server's address, as nginx does).
    pub authority: Option<Span>,
    /// The body's framing.
    pub body: BodyFraming,
    /// Whether `Content-Length` was sent beside `Transfer-Encoding` and ignored.
    pub content_length_dropped: bool,
    /// Whether the connection may carry another request once this one is answered.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request.
    pub expect_continue: bool,
    /// An HTTP/1.1 request with `Upgrade` and `Connection: upgrade`.
    pub upgrade: bool,
}

impl RequestHead {
    /// Whether the method is `name` (methods are case-sensitive, RFC 9110 §9.1).
    pub fn method_is(&self, buf: &[u8], name: &str) -> bool {
        self.method.of(buf) == name.as_bytes()
    }
}

/// Parses the request head at the start of `buf` (what has arrived so far).
///
/// `Partial` means: read more and call again with the longer buffer; the limits are
/// checked on partial heads too, so a client cannot make the buffer grow past them.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, RequestError> {
    let max = limits.max_head_bytes;
    check_request_line_length(buf, max)?;
    let window = buf.get(..buf.len().min(max)).unwrap_or_default();
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max => {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(e) => return Err(Malformed::Syntax(syntax_reason(e)).into()),
    };
    scan::check_head(window.get(..head_len).unwrap_or_default())?;
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Malformed::Syntax("incomplete request line").into());
    };
    let headers = Headers::from_parsed(buf, req.headers);
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let method = Span::within(buf, method.as_bytes());
    let target = Span::within(buf, target.as_bytes());
    decide(buf, head_len, method, target, version, headers).map(Parsed::Complete)
}

/// 414 as soon as the request line is known to be longer than the limit, even unfinished.
fn check_request_line_length(buf: &[u8], max: usize) -> Result<(), RequestError> {
    let mut start = 0;
    while buf.get(start..start + 2) == Some(b"\r\n") {
        start += 2;
    }
    let line = buf.get(start..).unwrap_or_default();
    match line.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > max => Err(RequestError::UriTooLong),
        None if line.len() > max => Err(RequestError::UriTooLong),
        _ => Ok(()),
    }
}

fn syntax_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}

fn decide(
    buf: &[u8],
    head_len: usize,
    method: Span,
    target: Span,
    version: Version,
    headers: Headers,
) -> Result<RequestHead, RequestError> {
    let target_form = target_form(buf, method.of(buf), target)?;
    let authority = authority(buf, &headers, version, target_form)?;
    let chunked = scan::chunked_last(headers.named(buf, "transfer-encoding"))?;
    let length = scan::content_length(headers.named(buf, "content-length"))?;
    let (body, content_length_dropped) = match (chunked, length) {
        (Some(_), _) if version == Version::Http10 => {
            return Err(RequestError::TransferEncodingInHttp10);
        }
        (Some(false), _) => return Err(RequestError::NotChunked),
        (Some(true), l) => (BodyFraming::Chunked, l.is_some()),
        (None, Some(n)) => (BodyFraming::Length(n), false),
        (None, None) => (BodyFraming::None, false),
    };
    let mut close = false;
    let mut keep = false;
    let mut conn_upgrade = false;
    for v in headers.named(buf, "connection") {
        close |= lists_token(v, "close");
        keep |= lists_token(v, "keep-alive");
        conn_upgrade |= lists_token(v, "upgrade");
    }
    let http11 = version == Version::Http11;
    let keep_alive = !close && !content_length_dropped && (http11 || keep);
    let expect_continue = http11
        && headers
            .named(buf, "expect")
            .any(|v| lists_token(v, "100-continue"));
    let upgrade = http11 && conn_upgrade && headers.named(buf, "upgrade").next().is_some();
    Ok(RequestHead {
        head_len,
        method,
        target,
        target_form,
        version,
        headers,
        authority,
        body,
        content_length_dropped,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

fn target_form(buf: &[u8], method: &[u8], target: Span) -> Result<Target, RequestError> {
    let t = target.of(buf);
    if method == b"CONNECT" {
        return if valid_authority(t) && !t.is_empty() {
            Ok(Target::Authority)
        } else {
            Err(RequestError::Target("CONNECT needs host:port"))
        };
    }
    match t.first() {
        Some(b'/') => Ok(Target::Origin),
        Some(b'*') if t.len() == 1 && method == b"OPTIONS" => Ok(Target::Asterisk),
        Some(b'*') if t.len() == 1 => Err(RequestError::Target("* is for OPTIONS only")),
        _ => absolute_form(t, target.start),
    }
}

/// `http://authority[/path][?query]` (https too; the scheme is case-insensitive).
fn absolute_form(t: &[u8], offset: u32) -> Result<Target, RequestError> {
    let scheme_len = if t.len() >= 7
        && t.get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"http://"))
    {
        7
    } else if t.len() >= 8
        && t.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
    {
        8
    } else {
        return Err(RequestError::Target("neither origin nor absolute form"));
    };
    let rest = t.get(scheme_len..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let auth = rest.get(..end).unwrap_or_default();
    if auth.is_empty() || !valid_authority(auth) {
        return Err(RequestError::InvalidHost);
    }
    let a_start = offset + scheme_len as u32;
    let a_end = a_start + end as u32;
    Ok(Target::Absolute {
        authority: Span {
            start: a_start,
            end: a_end,
        },
        path: Span {
            start: a_end,
            end: offset + t.len() as u32,
        },
    })
}

/// `uri-host [":" port]` characters (RFC 3986 reg-name, IPv4, IP-literal); no userinfo.
fn valid_authority(a: &[u8]) -> bool {
    a.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

fn authority(
    buf: &[u8],
    headers: &Headers,
    version: Version,
    form: Target,
) -> Result<Option<Span>, RequestError> {
    let mut hosts = headers
        .as_slice()
        .iter()
        .filter(|h| h.name.of(buf).eq_ignore_ascii_case(b"host"));
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::MultipleHost);
    }
    if host.is_some_and(|h| !valid_authority(h.value.of(buf))) {
        return Err(RequestError::InvalidHost);
    }
    if host.is_none() && version == Version::Http11 {
        return Err(RequestError::MissingHost);
    }
    Ok(match form {
        Target::Absolute { authority, .. } => Some(authority),
        _ => host.map(|h| h.value),
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

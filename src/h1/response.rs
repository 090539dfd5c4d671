//! A server's response head: parsed with `httparse` and the same strict checks as a
//! request, and one framing decision (RFC 9112 §6.3).
//!
//! - no body for a response to HEAD, for 1xx, 204 and 304 (whatever its fields say);
//! - `Transfer-Encoding` ending in chunked wins over `Content-Length`; the length is
//!   dropped and the connection is not reused (the server framed ambiguously once);
//! - `Transfer-Encoding` ending in another coding: read until close (RFC 9112 §6.3 item 4);
//! - else `Content-Length`; else read until close;
//! - an invalid status line or header, a differing or non-digit `Content-Length`, a head
//!   past the limit or more than [`MAX_HEADERS`] lines: an error that is a 502
//!   `upstream_broken`, and the connection is dropped.

use thiserror::Error;

use super::scan::{self, Malformed};
use super::{Headers, Limits, MAX_HEADERS, Parsed, Span, Version, lists_token};

/// Why a server's response head was refused: always a 502 `upstream_broken` to the client
/// and the upstream connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// The head is larger than the limit.
    #[error("response head larger than the limit")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} header lines in the response")]
    TooManyHeaders,
    /// A status code outside 100–599 (RFC 9110 §15).
    #[error("status code outside 100-599")]
    Status,
    /// Malformed bytes or framing fields.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl ResponseError {
    /// The status fulcrum answers the client with.
    pub fn status(&self) -> u16 {
        502
    }

    /// The `x-fulcrum-error` code of that answer.
    pub fn code(&self) -> &'static str {
        "upstream_broken"
    }
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Everything until the server closes; the connection cannot be reused.
    UntilClose,
}

/// A parsed, validated response head: spans into the caller's buffer plus the decisions.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Bytes of the head, final empty line included.
    pub head_len: usize,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The status code, 100–599.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: Span,
    /// Every header line, in order (relayed verbatim but for the framing and hop-by-hop ones).
    pub headers: Headers,
    /// The body's framing.
    pub body: ResponseFraming,
    /// Whether `Content-Length` was sent beside `Transfer-Encoding` and ignored.
    pub content_length_dropped: bool,
    /// Whether the upstream connection may carry another request once this body is read
    /// to its end (RFC 9112 §9.3; never after an ambiguous or close-delimited body).
    pub reusable: bool,
}

impl ResponseHead {
    /// A 1xx other than 101: another head follows on the same connection.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the start of `buf`; `request_was_head` tells whether it
/// answers a HEAD request (which a response's own bytes cannot say).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_was_head: bool,
) -> Result<Parsed<ResponseHead>, ResponseError> {
    let max = limits.max_head_bytes;
    let window = buf.get(..buf.len().min(max)).unwrap_or_default();
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    let head_len = match res.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max => {
            return Err(ResponseError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(_) => return Err(Malformed::Syntax("invalid status line or header").into()),
    };
    scan::check_head(window.get(..head_len).unwrap_or_default())?;
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(Malformed::Syntax("incomplete status line").into());
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Status);
    }
    let reason = Span::within(buf, res.reason.unwrap_or_default().as_bytes());
    let headers = Headers::from_parsed(buf, res.headers);
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let chunked = scan::chunked_last(headers.named(buf, "transfer-encoding"))?;
    let length = scan::content_length(headers.named(buf, "content-length"))?;
    if chunked.is_some() && version == Version::Http10 {
        return Err(Malformed::TransferEncoding.into());
    }
    let no_body = request_was_head || status < 200 || status == 204 || status == 304;
    let (body, content_length_dropped) = match (chunked, length) {
        _ if no_body => (ResponseFraming::NoBody, false),
        (Some(true), l) => (ResponseFraming::Chunked, l.is_some()),
        (Some(false), l) => (ResponseFraming::UntilClose, l.is_some()),
        (None, Some(n)) => (ResponseFraming::Length(n), false),
        (None, None) => (ResponseFraming::UntilClose, false),
    };
    let mut close = false;
    let mut keep = false;
    for v in headers.named(buf, "connection") {
        close |= lists_token(v, "close");
        keep |= lists_token(v, "keep-alive");
    }
    let reusable = !close
        && (version == Version::Http11 || keep)
        && !content_length_dropped
        && body != ResponseFraming::UntilClose
        && status != 101;
    Ok(Parsed::Complete(ResponseHead {
        head_len,
        version,
        status,
        reason,
        headers,
        body,
        content_length_dropped,
        reusable,
    }))
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;

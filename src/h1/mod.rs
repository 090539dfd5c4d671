//! fulcrum's own HTTP/1.1 framing codec (issue 11), sans-IO: bytes in, decisions out.
//!
//! Why our own: hyper's HTTP/1 glue builds a `HeaderMap` twice and keeps two 8 KiB buffers
//! per connection, and its framing decisions are not ours to make strict. This module only
//! *decides*; the proxy owns the buffers and the sockets. Every function here takes a byte
//! slice the caller holds and answers with offsets into it ([`Span`]), a framing decision
//! and a typed error, so a head is parsed with no allocation at all and a body decoder is a
//! handful of integers that no input can make grow.
//!
//! - [`request`]: a client's request head, parsed with `httparse` into a stack array and
//!   checked against the strict RFC 9112 rules on top of it (httparse is lenient about bare
//!   LF, and accepts what it is configured to); errors map to 400/414/431.
//! - [`response`]: a server's response head with the same strictness; errors are 502.
//! - [`body`]: incremental `Content-Length`, chunked and read-until-close decoders, and the
//!   chunked encoder the proxy re-frames a body with.
//!
//! The proxy's loop, for one message: append bytes read to its buffer; call
//! [`request::parse_request`] until it answers `Complete` (or an error to send); build the
//! [`body::BodyDecoder`] from the head's [`request::BodyFraming`]; feed it what follows the
//! head, forwarding only the data ranges it yields (re-encoded when chunked); what is left
//! after `done` is the next pipelined request.

pub mod body;
pub mod request;
pub mod response;
mod scan;

pub use body::{BodyDecoder, BodyError, ChunkHead, Step, encode_chunk};
pub use request::{BodyFraming, RequestError, RequestHead, Target, parse_request};
pub use response::{ResponseError, ResponseFraming, ResponseHead, parse_response};

/// The most header lines one head may carry; past it the head is refused (431 for a
/// client, 502 for a server). 100 is what hyper and HAProxy (`tune.http.maxhdr` 101) allow,
/// and 100 spans of 16 bytes keep the parse on the stack.
pub const MAX_HEADERS: usize = 100;

/// A byte range into the buffer a head was parsed from. Offsets, not borrows, so the proxy
/// can keep the decision next to its buffer (and move both) without a lifetime tying them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The bytes this span names in `buf`; empty if `buf` is not the buffer it came from
    /// and is too short (never a panic).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The span of `part`, a sub-slice of `buf` (what httparse hands back).
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// HTTP/1.x minor version: the keep-alive default and which rules apply (RFC 9112 §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: closes by default, has no `Host` requirement and no chunked coding.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// One header line of a head, as spans into the buffer: the proxy copies lines verbatim
/// (original case kept) and skips those it must drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The field name, as sent.
    pub name: Span,
    /// The field value with surrounding whitespace removed.
    pub value: Span,
}

/// How many header lines a head holds without an allocation: more than most requests
/// carry (a browser's ~10-15, a load generator's 1-2). A larger head spills to the heap.
const INLINE_HEADERS: usize = 16;

/// The header lines of a head in order, [`INLINE_HEADERS`] of them inline. Not a full
/// [`MAX_HEADERS`] array: a head is moved several times per request (returned from the
/// parser, into the exchange's future and the attempt's outcome), and 100 × 16 bytes made
/// those moves the largest cost of a small request (bench/README.md, callgrind).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    items: smallvec::SmallVec<[Header; INLINE_HEADERS]>,
}

impl Headers {
    /// The header lines, in the order they arrived.
    pub fn as_slice(&self) -> &[Header] {
        &self.items
    }

    /// The lines whose name equals `name` (ASCII case-insensitive), with their values.
    pub fn named<'a>(
        &'a self,
        buf: &'a [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.as_slice()
            .iter()
            .filter(move |h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| h.value.of(buf))
    }

    /// The header lines `httparse` found in `buf`, as spans into it, each value without
    /// its surrounding optional whitespace: what request and response heads share.
    fn from_parsed(buf: &[u8], parsed: &[httparse::Header<'_>]) -> Headers {
        Headers {
            items: parsed
                .iter()
                .map(|h| Header {
                    name: Span::within(buf, h.name.as_bytes()),
                    value: Span::within(buf, scan::trim_ows(h.value)),
                })
                .collect(),
        }
    }
}

/// Limits that bound what a head may cost; from the frontend's `max_header_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most bytes a head (request line or status line, headers, final CRLF) may take.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    /// The configuration's default `max_header_bytes`.
    fn default() -> Self {
        Limits {
            max_head_bytes: 65536,
        }
    }
}

/// The outcome of parsing a head from what has arrived so far.
#[derive(Debug, Clone)]
pub enum Parsed<T> {
    /// The whole head was there.
    Complete(T),
    /// More bytes are needed (and the limits still allow them).
    Partial,
}

/// Whether a comma-separated field value lists `token` (ASCII case-insensitive), as
/// `Connection: keep-alive, Upgrade` does.
fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| scan::trim_ows(item).eq_ignore_ascii_case(token.as_bytes()))
}

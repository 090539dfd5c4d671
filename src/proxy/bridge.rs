//! HTTP/2 requests carried to HTTP/1.1 servers on the engine's own connections: the
//! request's head written from its `HeaderMap` into one buffer, its body's frames framed by
//! length or chunked, the response head parsed by the codec into an `http::Response`
//! whose body is read from the connection as the client's stream takes it.
//!
//! Both client protocols thus share one kind of server connection and one idle pool per
//! server and worker; hyper only speaks HTTP/2, to clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, request::Parts};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::headers::{is_hop_by_hop, push_number};
use crate::buffers;
use crate::h1::{self, BodyDecoder, ResponseFraming, ResponseHead};
use crate::pool::Server;
use crate::upstream::h1::{HeadError, ServerConn};
use crate::upstream::{ClientAddrs, ConnectError};

pub use crate::upstream::body::UpstreamBody;

/// What became of a request handed to a server.
#[derive(Debug)]
pub enum Sent {
    Answered(Response<ServerBody>),
    /// No connection could be had: nothing was sent, the request comes back.
    NoConnection(Request<UpstreamBody>, ConnectError),
    /// Sent, and the connection failed before a response head (or sent a malformed one).
    Failed,
    /// No response head within the time allowed.
    TimedOut,
    /// The client's body grew past `max_body_bytes` (see [`BodyLimit`]) before an answer.
    TooLarge,
    /// HTTP/2 only: the server refused the stream without processing it (REFUSED_STREAM,
    /// or above the last stream its GOAWAY let through): safe to send again, whatever the
    /// method, when the body can be.
    Refused,
}

/// `max_body_bytes` for a request's streamed body, carried in its extensions: a body
/// without a declared length is cut there, and nothing past it reaches the server.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub u64);

/// Writes the request head for the server.
fn write_head(out: &mut Vec<u8>, parts: &Parts, body: &UpstreamBody) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut declared = None;
    for (name, value) in &parts.headers {
        if name == http::header::CONTENT_LENGTH {
            declared = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        UpstreamBody::Empty => {
            if declared.is_some() {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
        // HTTP/2 checks DATA against a declared length (RFC 9113 §8.1.1), so it holds.
        // (`Pumped` bodies go to HTTP/2 servers only: never here.)
        b @ (UpstreamBody::Client(_) | UpstreamBody::Pumped(_) | UpstreamBody::Capped(_)) => {
            match b.size_hint().exact().or(declared) {
                Some(n) => {
                    out.extend_from_slice(b"Content-Length: ");
                    push_number(out, n);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `req` to `server` (a pooled connection first) and waits for its response head;
/// `client`: the addresses a PROXY header names, when the backend sends one.
pub async fn send(
    server: &Arc<Server>,
    client: Option<ClientAddrs>,
    req: Request<UpstreamBody>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Sent {
    let (parts, mut body) = req.into_parts();
    let mut out = buffers::take_write();
    write_head(&mut out, &parts, &body);
    let chunked = out.ends_with(b"chunked\r\n\r\n");
    let was_head = parts.method == http::Method::HEAD;
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(u64::MAX, |l| l.0);
    let mut pooled = server.checkout(client);
    let mut streamed = false;
    let sent = loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => match Box::pin(server.connect(client, connect_timeout)).await {
                Ok(c) => c,
                Err(e) => {
                    buffers::give_write(out);
                    return Sent::NoConnection(Request::from_parts(parts, body), e);
                }
            },
        };
        let exchange = exchange(
            &mut conn,
            &out,
            &mut body,
            (chunked, limit),
            was_head,
            &mut streamed,
        );
        match tokio::time::timeout(response_timeout, exchange).await {
            Err(_) => break Sent::TimedOut,
            Ok(Ok((head, uploaded))) => {
                break Sent::Answered(response(server, conn, head, uploaded));
            }
            // A pooled connection the server closed as we used it: a fresh one, when
            // nothing of the body has gone.
            Ok(Err(Closed::BeforeAnswer)) if reused && !streamed => {
                pooled = server.checkout(client);
            }
            Ok(Err(Closed::TooLarge)) => break Sent::TooLarge,
            Ok(Err(_)) => break Sent::Failed,
        }
    };
    buffers::give_write(out);
    sent
}

/// How an exchange on one connection failed.
enum Closed {
    /// Before the first byte of a response.
    BeforeAnswer,
    /// After it, or with a malformed response.
    Broken,
    /// The client's body passed its limit before the answer.
    TooLarge,
}

/// Writes the head, streams the body while reading the response head; returns the head and
/// whether the whole body went.
async fn exchange(
    conn: &mut ServerConn,
    head: &[u8],
    body: &mut UpstreamBody,
    (chunked, limit): (bool, u64),
    was_head: bool,
    streamed: &mut bool,
) -> Result<(ResponseHead, bool), Closed> {
    if conn.stream.write_all(head).await.is_err() {
        return Err(Closed::BeforeAnswer);
    }
    let mut upload = FrameUpload {
        out: Vec::new(),
        written: 0,
        done: matches!(body, UpstreamBody::Empty),
        chunked,
        failed: false,
        left: limit,
        too_large: false,
    };
    let mut answered = false;
    std::future::poll_fn(|cx| {
        if !upload.done
            && !upload.failed
            && let UpstreamBody::Client(b) = body
        {
            let _ = upload.poll(cx, b, &mut conn.stream, streamed);
            if upload.too_large {
                return Poll::Ready(Err(Closed::TooLarge));
            }
        }
        conn.poll_response_head(cx, was_head, &mut answered)
            .map(|r| match r {
                // HTTP/2 has no protocol switch (RFC 9113 §8.6).
                Ok(h) if h.status == 101 => Err(Closed::Broken),
                Ok(h) => Ok((h, upload.done)),
                Err(HeadError::Closed) => Err(Closed::BeforeAnswer),
                Err(HeadError::Broken) => Err(Closed::Broken),
                Err(HeadError::Malformed(e)) => {
                    tracing::warn!("malformed response: {e}");
                    Err(Closed::Broken)
                }
            })
    })
    .await
}

/// A request body's frames on their way to the server.
struct FrameUpload {
    out: Vec<u8>,
    written: usize,
    done: bool,
    chunked: bool,
    failed: bool,
    /// Body bytes still allowed (`max_body_bytes`).
    left: u64,
    too_large: bool,
}

impl FrameUpload {
    fn poll<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut Incoming,
        server: &mut W,
        streamed: &mut bool,
    ) -> Poll<()> {
        loop {
            while self.written < self.out.len() {
                let rest = self.out.get(self.written..).unwrap_or_default();
                match Pin::new(&mut *server).poll_write(cx, rest) {
                    Poll::Ready(Ok(n)) if n > 0 => self.written += n,
                    Poll::Ready(_) => {
                        self.failed = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.out.clear();
            self.written = 0;
            if self.done {
                return Poll::Ready(());
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                        if data.len() as u64 > self.left {
                            self.failed = true;
                            self.too_large = true;
                            return Poll::Ready(());
                        }
                        self.left -= data.len() as u64;
                        *streamed = true;
                        if self.chunked {
                            h1::encode_chunk(data, &mut self.out);
                        } else {
                            self.out.extend_from_slice(data);
                        }
                    }
                }
                Poll::Ready(None) => {
                    if self.chunked {
                        self.out.extend_from_slice(h1::body::LAST_CHUNK);
                    }
                    self.done = true;
                }
                // The client's stream broke: the server cannot get a whole body.
                Poll::Ready(Some(Err(_))) => {
                    self.failed = true;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The `http::Response` for `head`, its body read from `conn`.
fn response(
    server: &Arc<Server>,
    mut conn: ServerConn,
    head: ResponseHead,
    uploaded: bool,
) -> Response<ServerBody> {
    let buf = conn.buf.pending();
    let mut resp = Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    for h in head.headers.as_slice() {
        let name = h.name.of(buf);
        if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length")
            && !matches!(
                head.body,
                ResponseFraming::Length(_) | ResponseFraming::NoBody
            )
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(h.value.of(buf)),
        ) {
            headers.append(n, v);
        }
    }
    conn.buf.consume(head.head_len);
    let decoder = BodyDecoder::for_response(head.body);
    let exact = match head.body {
        ResponseFraming::NoBody => Some(0),
        ResponseFraming::Length(n) => Some(n),
        _ => None,
    };
    let body = H1Body {
        conn: Some(conn),
        server: Arc::clone(server),
        decoder,
        reusable: head.reusable && uploaded,
        exact,
    };
    let (parts, ()) = resp.into_parts();
    Response::from_parts(parts, ServerBody::H1(body))
}

/// A server's response body, streamed as the client takes it, from either protocol.
#[derive(Debug)]
pub enum ServerBody {
    /// Read by fulcrum's own codec from an HTTP/1.1 connection.
    H1(H1Body),
    /// A stream of an HTTP/2 connection (`protocol = "h2"`), trailers included.
    H2(super::h2_upstream::H2Body),
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ServerBody::H1(b) => Pin::new(b).poll_frame(cx),
            ServerBody::H2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServerBody::H1(b) => b.is_end_stream(),
            ServerBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServerBody::H1(b) => b.size_hint(),
            ServerBody::H2(b) => b.size_hint(),
        }
    }
}

/// A server's response body read from its connection as the client takes it; the
/// connection goes back to its server's pool once the body has been read to its end.
#[derive(Debug)]
pub struct H1Body {
    conn: Option<ServerConn>,
    server: Arc<Server>,
    decoder: BodyDecoder,
    reusable: bool,
    exact: Option<u64>,
}

/// Why a server's body ended early.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl H1Body {
    fn end(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.server.idle.checkin(conn);
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.decoder.is_done() {
                this.end();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                let input = conn.buf.pending();
                let step = match this.decoder.decode(input) {
                    Ok(s) => s,
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                };
                let data = step
                    .data
                    .and_then(|r| input.get(r))
                    .map(Bytes::copy_from_slice);
                conn.buf.consume(step.consumed);
                if this.decoder.is_done() {
                    // Back in the pool before the last bytes go to the client.
                    this.end();
                    return Poll::Ready(data.map(|d| Ok(Frame::data(d))));
                }
                if let Some(data) = data {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if step.consumed > 0 {
                    continue;
                }
            }
            match conn.buf.poll_fill(&mut conn.stream, cx, buffers::SIZE) {
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    return match this.decoder.finish() {
                        Ok(()) => {
                            this.decoder = BodyDecoder::Done(None);
                            Poll::Ready(None)
                        }
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

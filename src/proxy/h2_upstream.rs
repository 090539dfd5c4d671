//! Requests to `protocol = "h2"` servers: the request made an HTTP/2 one (`:authority`
//! from `Host`, `te: trailers` kept when the client asked for it), sent on a stream of one
//! of the server's multiplexed connections ([`crate::upstream::h2`]), the response's body
//! and trailers streamed back frame by frame. A gRPC answer whose status comes in its
//! trailers is recorded for passive health when they arrive ([`super::grpc`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::bridge::{BodyError, BodyLimit, Sent, ServerBody, UpstreamBody};
use super::grpc;
use crate::pool::{Backend, Server, outlier};
use crate::upstream::ConnectError;
use crate::upstream::body::OverLimit;
use crate::upstream::h2::{Sender, StreamClaim};

/// Marks a request whose client sent `te: trailers`: the header is hop-by-hop and dropped
/// with the others, but HTTP/2 lets it through (RFC 9113 §8.2.2) and gRPC servers want it.
#[derive(Clone, Copy, Debug)]
pub struct TeTrailers;

/// Sends `req` to `server` over HTTP/2 and waits for its response head.
pub async fn send(
    server: &Arc<Server>,
    backend: &Arc<Backend>,
    req: Request<UpstreamBody>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Sent {
    let (mut req, over) = capped(to_h2(req, server));
    let mut fresh = false;
    loop {
        let pooled = if fresh { None } else { server.h2.checkout() };
        let (mut tx, claim) = match pooled {
            Some(c) => c,
            None => match open(server, connect_timeout).await {
                Ok(c) => c,
                Err(e) => return Sent::NoConnection(req, e),
            },
        };
        match tokio::time::timeout(response_timeout, tx.try_send_request(req)).await {
            Err(_) => return Sent::TimedOut,
            Ok(Ok(resp)) => return Sent::Answered(response(resp, claim, server, backend)),
            Ok(Err(mut e)) => match e.take_message() {
                // Never sent: the connection was closing (GOAWAY, or the server closed it
                // as we picked it); a new one, once.
                Some(back) if !fresh => {
                    req = back;
                    fresh = true;
                }
                Some(back) => {
                    let why = std::io::Error::other(format!("HTTP/2: {}", e.error()));
                    return Sent::NoConnection(back, ConnectError::Failed(why));
                }
                None if over.as_ref().is_some_and(OverLimit::passed) => return Sent::TooLarge,
                None if refused(e.error()) => return Sent::Refused,
                None => {
                    tracing::debug!(server = %server.full_name(), "HTTP/2 request failed: {}", e.error());
                    return Sent::Failed;
                }
            },
        }
    }
}

/// The request with its client's body held to `max_body_bytes` when the frontend sets one
/// (hyper reads the body, so the limit travels inside it), and the flag that says it passed.
fn capped(req: Request<UpstreamBody>) -> (Request<UpstreamBody>, Option<OverLimit>) {
    let Some(&BodyLimit(limit)) = req.extensions().get::<BodyLimit>() else {
        return (req, None);
    };
    let (parts, body) = req.into_parts();
    let (body, over) = body.capped(limit);
    (Request::from_parts(parts, body), over)
}

/// Whether the server refused the stream unprocessed (RFC 9113 §8.7): reset with
/// REFUSED_STREAM, or above the last stream id of a graceful GOAWAY (NO_ERROR; h2 fails
/// every stream with an erroring GOAWAY's code, processed or not).
fn refused(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return h.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h.is_go_away() && h.is_remote() && h.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = s.source();
    }
    false
}

/// A new connection to `server`, with a first stream claimed on it: opened as its backend
/// says (over TLS with ALPN `h2` when it has `[tls]`, by prior knowledge otherwise).
async fn open(
    server: &Arc<Server>,
    connect_timeout: Duration,
) -> Result<(Sender, StreamClaim), ConnectError> {
    let target = Arc::clone(&server.target());
    // One connection carries many clients' streams: no PROXY header can name them all,
    // so validation refuses `send_proxy_protocol` on an h2 backend.
    let stream =
        crate::upstream::connect::open(server.addr(), &target, None, connect_timeout).await?;
    match tokio::time::timeout(connect_timeout, server.h2.open(stream)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ConnectError::Failed(std::io::Error::other(format!(
            "HTTP/2 handshake: {e}"
        )))),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// The request as HTTP/2 sends it: an absolute URI whose authority is the `Host` the
/// client gave (or the server's address), no `Host` header beside it (RFC 9113 §8.3.1).
fn to_h2(req: Request<UpstreamBody>, server: &Server) -> Request<UpstreamBody> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| parts.uri.authority().cloned())
        .or_else(|| Authority::try_from(server.addr().to_string()).ok());
    let mut uri = parts.uri.clone().into_parts();
    uri.scheme = Some(if server.target().connector.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = authority;
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(u) = Uri::from_parts(uri) {
        parts.uri = u;
    }
    if parts.extensions.get::<TeTrailers>().is_some() {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

/// The client's response, its body streamed from the server's stream.
fn response(
    resp: Response<Incoming>,
    claim: StreamClaim,
    server: &Arc<Server>,
    backend: &Arc<Backend>,
) -> Response<ServerBody> {
    let (parts, body) = resp.into_parts();
    let grpc = grpc::head_outcome(parts.status, &parts.headers)
        .is_none()
        .then(|| (Arc::clone(backend), Arc::clone(server)));
    let body = H2Body {
        body,
        _claim: claim,
        grpc,
    };
    Response::from_parts(parts, ServerBody::H2(body))
}

/// A server's response body on an HTTP/2 stream; the stream's claim on its connection is
/// released when the body is dropped.
#[derive(Debug)]
pub struct H2Body {
    body: Incoming,
    _claim: StreamClaim,
    /// A gRPC call whose `grpc-status` is still to come: where to record it.
    grpc: Option<(Arc<Backend>, Arc<Server>)>,
}

impl H2Body {
    fn record(&mut self, seen: outlier::Outcome) {
        if let Some((backend, server)) = self.grpc.take() {
            outlier::record(&backend, &server, seen);
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if this.grpc.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(t) = f.trailers_ref() {
                        this.record(grpc::outcome(t));
                    }
                }
                // Reset, or ended without a status: the call broke.
                Poll::Ready(Some(Err(_)) | None) => this.record(outlier::Outcome::Broken),
                Poll::Pending => {}
            }
        }
        polled.map(|f| f.map(|r| r.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

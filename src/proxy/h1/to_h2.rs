//! An HTTP/1 client's request to a `protocol = "h2"` server: the engine's head made an
//! `http::Request` (hop-by-hop lines dropped, `X-Forwarded-*` added, as the engine's own
//! heads do), its body decoded by the codec and pumped to the HTTP/2 stream as it is read,
//! the response head written back framed for the client (by length when the server gave
//! one, else chunked; close-delimited for HTTP/1.0) and its body streamed through.
//!
//! Retries follow the engine's rules: a request no server could be connected to goes to
//! another (its pumped body is still whole: it waits in the channel), and a bodiless
//! idempotent one is sent again after a 502/503 or a broken stream.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, request::Parts};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::to_h2_answer::{Relay, respond};
use super::to_h2_pump::Pump;
use super::upload::UploadError;
use super::{Client, ClientIo, relay};
use crate::config;
use crate::h1::{BodyDecoder, BodyFraming, RequestHead};
use crate::pool::{Backend, Server, ServerId, Slot, outlier};
use crate::proxy::body::Finish;
use crate::proxy::bridge::{Sent, UpstreamBody};
use crate::proxy::error::Refusal;
use crate::proxy::headers::{add_forwarded, is_hop_by_hop};
use crate::proxy::{grpc, h2_upstream, retry};
use crate::upstream::body::pumped;

/// What the exchange lends this request.
pub struct Ctx<'a, S> {
    pub client: &'a mut Client<S>,
    pub head: &'a RequestHead,
    pub b: &'a config::Backend,
    pub backend: &'a Arc<Backend>,
    pub stop: &'a CancellationToken,
    /// Taken when the exchange completes.
    pub finish: &'a mut Option<Box<Finish>>,
    /// The server the client's sticky cookie names, if any.
    pub sticky: Option<&'a str>,
    /// What the request's route changes (see [`Routed`]).
    pub routed: Routed<'a>,
}

/// What the request's route changes on the way: the target (`strip_prefix`), the header
/// rules (what they drop, and their lines rendered for this request, the request id fulcrum
/// made among them), and the body limit.
pub struct Routed<'a> {
    pub target: Option<&'a [u8]>,
    pub request: &'a crate::route::Rules,
    pub request_lines: Vec<(HeaderName, HeaderValue)>,
    pub response: &'a crate::route::Rules,
    /// The response rules' lines, rendered as head lines.
    pub response_lines: &'a [u8],
    /// `max_body_bytes` (0: none).
    pub body_limit: u64,
}

/// Runs the exchange on `slot`'s server and the others retries pick; returns whether the
/// client connection may carry another request.
pub async fn run<S: ClientIo>(mut cx: Ctx<'_, S>, mut slot: Slot) -> bool {
    let has_body = cx.head.body != BodyFraming::None;
    if cx.head.upgrade {
        // HTTP/2 has no protocol switch (RFC 9113 §8.6).
        tracing::warn!(server = %slot.server().full_name(), "an Upgrade request cannot go to an HTTP/2 server");
        return refuse(&mut cx, Refusal::UpstreamBroken, true).await;
    }
    let Some(parts) = head_parts(&cx, slot.server()) else {
        return refuse(&mut cx, Refusal::BadRequest, true).await;
    };
    let buf = cx.client.buf.pending();
    let idempotent = retry::idempotent(cx.head.method.of(buf));
    let replay = cx.b.retries > 0 && idempotent && !has_body;
    let (mut pump, body) = match cx.head.body {
        BodyFraming::None | BodyFraming::Length(0) => (None, UpstreamBody::Empty),
        BodyFraming::Length(n) => {
            let (tx, body) = pumped(Some(n));
            (
                Some(
                    Pump::new(tx, BodyDecoder::length(n), cx.head.head_len)
                        .limit(cx.routed.body_limit),
                ),
                body,
            )
        }
        BodyFraming::Chunked => {
            let (tx, body) = pumped(None);
            (
                Some(
                    Pump::new(tx, BodyDecoder::chunked(), cx.head.head_len)
                        .limit(cx.routed.body_limit),
                ),
                body,
            )
        }
    };
    if cx.head.expect_continue && pump.is_some() {
        let sent = cx
            .client
            .io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await;
        if sent.is_err() || cx.client.io.flush().await.is_err() {
            return false;
        }
    }
    let mut req = Request::from_parts(parts.clone(), body);
    let timeouts = (cx.b.connect_timeout.get(), cx.b.response_timeout.get());
    let mut tried_buf = [ServerId::NONE; config::MAX_RETRIES as usize + 1];
    let (mut attempts, mut retried) = (0, 0);
    let (server, resp) = loop {
        let server = Arc::clone(slot.server());
        tried_buf[attempts.min(tried_buf.len() - 1)] = server.id;
        attempts = (attempts + 1).min(tried_buf.len());
        let tried = &tried_buf[..attempts];
        let sent_at = crate::balance::clock::now_ns();
        let sent = match drive(cx.client, &mut pump, &server, cx.backend, req, timeouts).await {
            Ok(s) => s,
            Err(UploadError::Body(e)) => {
                tracing::debug!(client = %cx.client.peer, "malformed request body: {e}");
                return refuse(&mut cx, Refusal::BadRequest, true).await;
            }
            Err(UploadError::TooLarge) => {
                tracing::debug!(client = %cx.client.peer, "request body over max_body_bytes");
                return refuse(&mut cx, Refusal::BodyTooLarge, true).await;
            }
            Err(_) => return false,
        };
        let more = retried < cx.b.retries && attempts < tried_buf.len();
        let head_req = || {
            let target = super::heads::origin_target(cx.client.buf.pending(), cx.head);
            let fields = crate::balance::Fields::Head {
                buf: cx.client.buf.pending(),
                headers: &cx.head.headers,
            };
            crate::balance::Request::head(cx.client.peer.ip(), target, fields)
        };
        let next = match sent {
            Sent::Answered(resp) => {
                server.ewma.observe_since(sent_at);
                if let Some(seen) = grpc::head_outcome(resp.status(), resp.headers()) {
                    outlier::record(cx.backend, &server, seen);
                }
                let again = replay && more && retry::retry_status(resp.status());
                match again
                    .then(|| retry::next_slot(cx.backend, &head_req(), tried, true))
                    .flatten()
                {
                    None => break (server, resp),
                    Some(next) => {
                        tracing::warn!(server = %server.full_name(), "answered {}; retrying on another server", resp.status());
                        req = Request::from_parts(parts.clone(), UpstreamBody::Empty);
                        next
                    }
                }
            }
            // Only the HTTP/2 client path carries a body limit to the bridge.
            Sent::TooLarge => return refuse(&mut cx, Refusal::BodyTooLarge, true).await,
            Sent::NoConnection(back, e) => {
                outlier::record(cx.backend, &server, (&e).into());
                let why = format!("{} ({}): {e}", server.full_name(), server.addr());
                match more
                    .then(|| retry::next_slot(cx.backend, &head_req(), tried, false))
                    .flatten()
                {
                    None => {
                        tracing::warn!(server = %server.full_name(), "{why}; no other server to try");
                        return refuse(&mut cx, Refusal::ConnectFailed, has_body).await;
                    }
                    Some(next) => {
                        tracing::warn!(server = %server.full_name(), "{why}; trying another server");
                        // Nothing was sent: the body still waits whole in its channel.
                        req = back;
                        next
                    }
                }
            }
            // Not processed: neither a success nor a failure of the server's; a bodiless
            // request goes to another server, whatever its method.
            Sent::Refused => {
                match (more && !has_body)
                    .then(|| retry::next_slot(cx.backend, &head_req(), tried, false))
                    .flatten()
                {
                    None => {
                        tracing::warn!(server = %server.full_name(), "refused the stream; no other server to try");
                        return refuse(&mut cx, Refusal::UpstreamBroken, has_body).await;
                    }
                    Some(next) => {
                        tracing::warn!(server = %server.full_name(), "refused the stream unprocessed; trying another server");
                        req = Request::from_parts(parts.clone(), UpstreamBody::Empty);
                        next
                    }
                }
            }
            Sent::Failed | Sent::TimedOut => {
                let (refusal, seen) = match sent {
                    Sent::TimedOut => (Refusal::UpstreamTimeout, outlier::Outcome::TimedOut),
                    _ => (Refusal::UpstreamBroken, outlier::Outcome::Broken),
                };
                outlier::record(cx.backend, &server, seen);
                let again = replay && more && refusal == Refusal::UpstreamBroken;
                match again
                    .then(|| retry::next_slot(cx.backend, &head_req(), tried, true))
                    .flatten()
                {
                    None => {
                        tracing::warn!(server = %server.full_name(), "request failed: {}", refusal.code());
                        return refuse(&mut cx, refusal, has_body).await;
                    }
                    Some(next) => {
                        tracing::warn!(server = %server.full_name(), "the stream broke before the response; retrying on another server");
                        req = Request::from_parts(parts.clone(), UpstreamBody::Empty);
                        next
                    }
                }
            }
        };
        retried += 1;
        slot = next;
    };
    // The server answered before the whole body went: the rest goes first (an HTTP/2
    // server reads its stream independently of answering it).
    if let Some(p) = pump.as_mut().filter(|p| !p.done) {
        let client = &mut *cx.client;
        let rest = std::future::poll_fn(|c| p.poll(c, client));
        match tokio::time::timeout(timeouts.1, rest).await {
            Ok(Ok(())) => {}
            Ok(Err(UploadError::Server(_))) => {}
            _ => return false,
        }
    }
    let Some(mut finish) = cx.finish.take() else {
        return false;
    };
    finish.slot = Some(slot);
    if let Some(log) = finish.log.as_mut() {
        log.server = Some(Arc::clone(&server.name));
    }
    finish.set_status(resp.status().as_u16());
    let cookie = crate::balance::sticky::cookie_for(cx.b, cx.sticky, &server);
    let relayed = respond(&mut cx, resp, cookie.as_deref(), timeouts.1, &mut finish).await;
    match relayed {
        Ok(keep) => {
            finish.complete(true);
            keep
        }
        Err(Relay::Unsent(e)) => {
            tracing::warn!(server = %server.full_name(), "broken response: {e}");
            outlier::record(cx.backend, &server, outlier::Outcome::Broken);
            *cx.finish = Some(finish);
            refuse(&mut cx, Refusal::UpstreamBroken, true).await
        }
        Err(Relay::Cut(e)) => {
            tracing::debug!(server = %server.full_name(), client = %cx.client.peer, "response cut short: {e}");
            finish.complete(false);
            false
        }
    }
}

/// Answers with fulcrum's own `refusal`, as the engine's exchange does.
async fn refuse<S: ClientIo>(cx: &mut Ctx<'_, S>, refusal: Refusal, close: bool) -> bool {
    let close = close || refusal.closes() || !cx.head.keep_alive || cx.stop.is_cancelled();
    let retry_after = crate::proxy::http::retry_after(cx.b, refusal);
    let sent = relay::answer(cx.client, refusal, retry_after, close).await;
    if let Some(mut f) = cx.finish.take() {
        f.set_status(refusal.status().as_u16());
        f.complete(sent.is_ok());
    }
    sent.is_ok() && !close
}

/// The request's head as `http` parts: method, origin-form target, the client's header
/// lines but those of one hop and the framing ones, `Host`, and `X-Forwarded-*`.
fn head_parts<S>(cx: &Ctx<'_, S>, server: &Server) -> Option<Parts> {
    let buf = cx.client.buf.pending();
    let head = cx.head;
    let method = http::Method::from_bytes(head.method.of(buf)).ok()?;
    let target = cx
        .routed
        .target
        .unwrap_or_else(|| super::heads::origin_target(buf, head));
    let uri: http::Uri = if target.starts_with(b"/") || target == b"*" {
        http::Uri::try_from(target).ok()?
    } else {
        http::Uri::try_from([b"/", target].concat()).ok()?
    };
    let mut headers = HeaderMap::with_capacity(head.headers.as_slice().len() + 4);
    let listed = |name: &[u8]| {
        head.headers.named(buf, "connection").any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
        })
    };
    const OWN: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "expect",
        "x-forwarded-proto",
        "x-forwarded-host",
    ];
    for h in head.headers.as_slice() {
        let name = h.name.of(buf);
        if is_hop_by_hop(name)
            || OWN.iter().any(|o| name.eq_ignore_ascii_case(o.as_bytes()))
            || listed(name)
            || cx.routed.request.drops(name)
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
    let host = match head.authority {
        Some(a) => HeaderValue::from_bytes(a.of(buf)).ok()?,
        None => HeaderValue::from_str(&server.addr().to_string()).ok()?,
    };
    add_forwarded(
        &mut headers,
        cx.client.peer.ip(),
        cx.client.tls,
        Some(&host),
    );
    headers.insert(header::HOST, host);
    for (n, v) in &cx.routed.request_lines {
        headers.append(n.clone(), v.clone());
    }
    if let BodyFraming::Length(n) = head.body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req.into_parts().0)
}

/// Sends `req` while pumping the client's body into it; returns once the response head
/// (or the failure) is there. With the body whole, a client that closes meanwhile ends it.
async fn drive<S: ClientIo>(
    client: &mut Client<S>,
    pump: &mut Option<Pump>,
    server: &Arc<Server>,
    backend: &Arc<Backend>,
    req: Request<UpstreamBody>,
    (connect, response): (Duration, Duration),
) -> Result<Sent, UploadError> {
    let sending = h2_upstream::send(server, backend, req, connect, response);
    let mut sending = std::pin::pin!(sending);
    std::future::poll_fn(|cx| {
        match pump.as_mut().filter(|p| !p.done) {
            Some(p) => match p.poll(cx, client) {
                Poll::Ready(Err(UploadError::Server(e))) => {
                    // The stream is gone (reset, or the request dropped): its answer says why.
                    tracing::debug!("the server stopped reading the request body: {e}");
                    p.done = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            },
            None => {
                if client.io.poll_gone(cx).is_ready() {
                    return Poll::Ready(Err(UploadError::ClientGone));
                }
            }
        }
        sending.as_mut().poll(cx).map(Ok)
    })
    .await
}

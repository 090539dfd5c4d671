//! One request on the HTTP/1 engine, from its head to the end of its answer: a server
//! chosen (queueing when every one is full), the head written straight into one buffer
//! (with a small body, in one write), the body streamed while the response head is awaited,
//! retries as the backend allows, then the response relayed and the server connection
//! checked back in when the exchange ended cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::attempt::{Attempt, Outcome, Unsent};
use super::heads::{self, ClientFraming, Forwarding, Relaying};
use super::relay;
use super::routed::{self, Alone, RequestId, fill};
use super::upload::Upload;
use super::{Client, ClientIo};
use crate::balance::{self, Fields};
use crate::buffers;
use crate::config;
use crate::h1::{BodyFraming, RequestHead, Version};
use crate::pool::{Backend, ServerId, outlier};
use crate::proxy::access_log;
use crate::proxy::body::{AccessLog, Finish};
use crate::proxy::error::Refusal;
use crate::proxy::frontend::Frontend;
use crate::proxy::retry;
use crate::route::{self, Action, Target};
use crate::upstream::h1::Interim;

/// Runs the exchange for `head` (at the front of the client's buffer); returns whether the
/// connection may carry another request.
///
/// The head is borrowed: an async fn keeps what it is given by value twice, and the
/// exchange's future is boxed whole for each request (352 bytes a copy).
pub async fn run<S: ClientIo>(
    fe: &Arc<Frontend>,
    client: &mut Client<S>,
    head: &RequestHead,
    stop: &CancellationToken,
) -> bool {
    let busy = client.activity.begin();
    let settings = fe.settings_full();
    let routing = fe.routing();
    let buf = client.buf.pending();
    let request_id = RequestId::of(buf, head);
    let raw_target = heads::origin_target(buf, head);
    let (target, rewritten, host) = routed::choose(
        &routing,
        buf,
        head,
        settings.access_log && access_log::enabled(),
    );
    let log = (settings.access_log && access_log::enabled()).then(|| {
        let path = raw_target
            .split(|&c| c == b'?')
            .next()
            .unwrap_or(raw_target);
        AccessLog {
            frontend: Arc::clone(&fe.name),
            client: client.peer,
            method: http::Method::from_bytes(head.method.of(buf)).unwrap_or_default(),
            path: String::from_utf8_lossy(path).into(),
            status: 0,
            server: None,
            start: Instant::now(),
            host: host.unwrap_or_default(),
            route: routing.is_routed().then(|| Arc::clone(&target.name)),
            backend: None,
            request_id: String::from_utf8_lossy(request_id.bytes(buf)).into(),
            bytes_in: 0,
            first_byte: None,
            json: settings.access_log_format == config::LogFormat::Json,
        }
    });
    // Boxed now, not when the exchange takes it: a local moved later would keep its room
    // (312 bytes) in this future for the whole exchange.
    let mut finish = Box::new(Finish::new(busy, log).routed(&target.counts, &fe.name));
    let too_large = settings.max_body_bytes > 0
        && matches!(head.body, BodyFraming::Length(n) if n > settings.max_body_bytes);
    let backend = match &target.action {
        _ if too_large => None,
        Action::Forward { backend, .. } => Some(Arc::clone(backend)),
        _ => None,
    };
    let Some(backend) = backend else {
        // Answered without a server: a body still on its way is not read, so the
        // connection closes after the answer when there is one.
        let alone = Alone {
            client,
            head,
            target,
            request_id: &request_id,
            stop,
        };
        let keep = match &target.action {
            _ if too_large => alone.refuse(finish, Refusal::BodyTooLarge).await,
            Action::Redirect { to, status } => alone.redirect(finish, to, *status).await,
            _ => alone.refuse(finish, Refusal::NoRoute).await,
        };
        if keep {
            client.buf.consume(head.head_len);
        }
        return keep;
    };
    if let Some(log) = finish.log.as_mut() {
        log.backend = Some(Arc::clone(&backend.name));
    }
    finish.count_in(&fe.name, &backend);
    let b = arc_swap::Guard::into_inner(backend.settings());
    let mut ex = Exchange {
        client,
        head,
        b,
        backend,
        stop,
        finish: Some(finish),
        tunnel_idle: settings.tunnel_idle_timeout.get(),
        target,
        rewritten,
        request_id,
        body_limit: settings.max_body_bytes,
    };
    // Above 95 % of `max_memory`: refused before any work (one relaxed load otherwise).
    let keep = if fe.overload.shedding() {
        let has_body = ex.head.body != BodyFraming::None;
        ex.refuse(Refusal::Overloaded, has_body).await
    } else {
        ex.go().await
    };
    let head_len = ex.head.head_len;
    if keep {
        // What follows is the next request, if any arrived.
        ex.client.buf.consume(head_len);
    }
    keep
}

struct Exchange<'a, S> {
    client: &'a mut Client<S>,
    head: &'a RequestHead,
    b: Arc<config::Backend>,
    backend: Arc<Backend>,
    stop: &'a CancellationToken,
    /// Taken when the exchange completes; dropped unfinished it logs a 499.
    finish: Option<Box<Finish>>,
    tunnel_idle: Duration,
    /// The route taken: its header rules.
    target: &'a Target,
    /// The path and query sent instead of the client's (`strip_prefix`).
    rewritten: Option<Vec<u8>>,
    request_id: RequestId,
    /// `max_body_bytes` (0: none), enforced on chunked bodies as they arrive.
    body_limit: u64,
}

impl<S: ClientIo> Exchange<'_, S> {
    /// What the algorithms see of the request: read in place from its head.
    fn fields(&self) -> Fields<'_> {
        Fields::Head {
            buf: self.client.buf.pending(),
            headers: &self.head.headers,
        }
    }

    fn request(&self) -> balance::Request<'_> {
        let target = heads::origin_target(self.client.buf.pending(), self.head);
        balance::Request::head(self.client.peer.ip(), target, self.fields())
    }

    fn method_is(&self, m: &str) -> bool {
        self.head.method_is(self.client.buf.pending(), m)
    }

    /// Answers with fulcrum's own `refusal`; returns whether the connection goes on.
    async fn refuse(&mut self, refusal: Refusal, close: bool) -> bool {
        let close = close || refusal.closes() || !self.head.keep_alive || self.stop.is_cancelled();
        let retry_after = crate::proxy::http::retry_after(&self.b, refusal);
        let sent = relay::answer(self.client, refusal, retry_after, close).await;
        if let Some(mut f) = self.finish.take() {
            f.set_status(refusal.status().as_u16());
            f.complete(sent.is_ok());
        }
        sent.is_ok() && !close
    }

    async fn go(&mut self) -> bool {
        let has_body = self.head.body != BodyFraming::None;
        // fulcrum is no forward proxy: a tunnel to an address of the client's choosing is
        // refused before any server is chosen (RFC 9110 §9.3.6).
        if self.method_is("CONNECT") {
            return self.refuse(Refusal::MethodNotAllowed, true).await;
        }
        let sticky = balance::sticky::requested(&self.b, &self.fields());
        let idempotent = retry::idempotent(self.head.method.of(self.client.buf.pending()));
        let replay = self.b.retries > 0 && idempotent && !has_body;
        self.backend.retry_budget.record_request();
        // Queued when every server is full; a client that leaves meanwhile is let go (499).
        let first = {
            let req = self.request();
            let io = &self.client.io;
            tokio::select! {
                s = retry::first_slot(&self.backend, &req) => Some(s),
                () = std::future::poll_fn(|cx| io.poll_gone(cx)) => None,
            }
        };
        let mut slot = match first {
            None => return false,
            Some(Err(refusal)) => return self.refuse(refusal, has_body).await,
            Some(Ok(slot)) => slot,
        };
        if self.b.protocol == config::UpstreamProtocol::H2 {
            let (request_lines, response_lines) = {
                let buf = self.client.buf.pending();
                let host =
                    route::normalize_host(self.head.authority.map_or(&b""[..], |a| a.of(buf)));
                let fill = fill(
                    buf,
                    self.head,
                    &host,
                    &self.request_id,
                    self.client.peer.ip(),
                );
                let mut pairs = self.target.request.render_pairs(&fill);
                if let Some(id) = self.request_id.made()
                    && let Ok(v) = http::HeaderValue::from_bytes(id)
                {
                    pairs.push((http::HeaderName::from_static("x-request-id"), v));
                }
                let mut lines = Vec::new();
                self.target.response.write_lines(&mut lines, &fill);
                (pairs, lines)
            };
            let cx = super::to_h2::Ctx {
                client: &mut *self.client,
                head: self.head,
                b: &self.b,
                backend: &self.backend,
                stop: self.stop,
                finish: &mut self.finish,
                sticky: sticky.as_deref(),
                routed: super::to_h2::Routed {
                    target: self.rewritten.as_deref(),
                    request: &self.target.request,
                    request_lines,
                    response: &self.target.response,
                    response_lines: &response_lines,
                    body_limit: self.body_limit,
                },
            };
            // Boxed: an HTTP/2 server's path is 4.6 KB of future, and every HTTP/1.1
            // exchange (boxed whole for its life) would carry that room otherwise.
            return Box::pin(super::to_h2::run(cx, slot)).await;
        }
        let mut out = buffers::take_head_write();
        // The response's header lines, rendered now: the client's buffer that fills them
        // is the client's again while the response is relayed.
        let mut response_lines = Vec::new();
        {
            let buf = self.client.buf.pending();
            let host = route::normalize_host(self.head.authority.map_or(&b""[..], |a| a.of(buf)));
            let fill = fill(
                buf,
                self.head,
                &host,
                &self.request_id,
                self.client.peer.ip(),
            );
            let fwd = Forwarding {
                client: self.client.peer.ip(),
                tls: self.client.tls,
                server: slot.server().addr(),
                drop_expect: self.head.expect_continue,
                target: self.rewritten.as_deref(),
                rules: &self.target.request,
                made_request_id: self.request_id.made(),
                fill: &fill,
            };
            heads::request(&mut out, buf, self.head, &fwd);
            self.target.response.write_lines(&mut response_lines, &fill);
        }
        let mut upload = Upload::new(self.head.body, self.head.head_len).limit(self.body_limit);
        upload.coalesce(self.client, &mut out);
        let mut continue_owed = self.head.expect_continue && !upload.is_done();
        let resend_ok = idempotent || !has_body;
        let was_head = self.method_is("HEAD");
        let interim = if self.head.version == Version::Http11 {
            Interim::Return
        } else {
            Interim::Skip
        };
        let (connect_timeout, response_timeout, retries) = (
            self.b.connect_timeout.get(),
            self.b.response_timeout.get(),
            self.b.retries,
        );
        let mut tried_buf = [ServerId::NONE; config::MAX_RETRIES as usize + 1];
        let mut attempts = 0;
        let mut retried = 0;
        let (server, conn, resp) = loop {
            let server = Arc::clone(slot.server());
            tried_buf[attempts.min(tried_buf.len() - 1)] = server.id;
            attempts = (attempts + 1).min(tried_buf.len());
            let tried = &tried_buf[..attempts];
            let sent_at = balance::clock::now_ns();
            let attempt = Attempt {
                server: &server,
                out: &out,
                connect_timeout,
                response_timeout,
                was_head,
                interim,
                resend_ok,
            };
            let outcome = attempt
                .run(self.client, &mut upload, &mut continue_owed)
                .await;
            let more = retried < retries && attempts < tried_buf.len();
            let next = match outcome {
                Outcome::Answered(conn, resp) => {
                    server.ewma.observe_since(sent_at);
                    let server_error = resp.status >= 500;
                    let seen = if server_error {
                        outlier::Outcome::Status(resp.status)
                    } else {
                        outlier::Outcome::Success
                    };
                    outlier::record(&self.backend, &server, seen);
                    let again = replay && more && (resp.status == 502 || resp.status == 503);
                    let next = again
                        .then(|| retry::next_slot(&self.backend, &self.request(), tried, true))
                        .flatten();
                    match next {
                        None => break (server, conn, resp),
                        Some(next) => {
                            tracing::warn!(server = %server.full_name(), "answered {}; retrying on another server", resp.status);
                            next
                        }
                    }
                }
                Outcome::NotSent(Unsent::Connect(e)) => {
                    outlier::record(&self.backend, &server, (&e).into());
                    let why = format!("{} ({}): {e}", server.full_name(), server.addr());
                    let next = (more && upload.streamed == 0)
                        .then(|| retry::next_slot(&self.backend, &self.request(), tried, false))
                        .flatten();
                    match next {
                        None => {
                            tracing::warn!(server = %server.full_name(), "{why}; no other server to try");
                            buffers::give_write(out);
                            return self.refuse(Refusal::ConnectFailed, !upload.is_done()).await;
                        }
                        Some(next) => {
                            tracing::warn!(server = %server.full_name(), "{why}; trying another server");
                            next
                        }
                    }
                }
                Outcome::Failed(refusal) => {
                    let seen = match refusal {
                        Refusal::UpstreamTimeout => outlier::Outcome::TimedOut,
                        _ => outlier::Outcome::Broken,
                    };
                    outlier::record(&self.backend, &server, seen);
                    let again = replay && more && refusal == Refusal::UpstreamBroken;
                    let next = again
                        .then(|| retry::next_slot(&self.backend, &self.request(), tried, true))
                        .flatten();
                    match next {
                        None => {
                            tracing::warn!(server = %server.full_name(), "request failed: {}", refusal.code());
                            buffers::give_write(out);
                            return self.refuse(refusal, !upload.is_done()).await;
                        }
                        Some(next) => {
                            tracing::warn!(server = %server.full_name(), "connection broke before the response; retrying on another server");
                            next
                        }
                    }
                }
                Outcome::BadBody(None) => {
                    tracing::debug!(client = %self.client.peer, "request body over max_body_bytes");
                    buffers::give_write(out);
                    return self.refuse(Refusal::BodyTooLarge, true).await;
                }
                Outcome::BadBody(Some(e)) => {
                    tracing::debug!(client = %self.client.peer, "malformed request body: {e}");
                    buffers::give_write(out);
                    return self.refuse(Refusal::BadRequest, true).await;
                }
                Outcome::ClientGone => {
                    buffers::give_write(out);
                    return false;
                }
            };
            retried += 1;
            slot = next;
        };
        buffers::give_write(out);
        let Some(mut finish) = self.finish.take() else {
            return false;
        };
        finish.slot = Some(slot);
        if let Some(log) = finish.log.as_mut() {
            log.server = Some(Arc::clone(&server.name));
            log.first_byte = Some(log.start.elapsed());
            log.bytes_in = upload.taken;
        }
        finish.set_status(resp.status);
        if resp.status == 101 {
            if !self.head.upgrade {
                // A protocol switch nobody asked for: the client could not read what follows.
                tracing::warn!(server = %server.full_name(), "answered 101 to a request without Upgrade");
                self.finish = Some(finish);
                return self.refuse(Refusal::UpstreamBroken, true).await;
            }
            // Boxed, as the HTTP/2 path is: a tunnel is rare and its future large.
            let (relayed, end) = Box::pin(relay::tunnel(
                self.client,
                self.head.head_len,
                conn,
                &resp,
                self.tunnel_idle,
            ))
            .await;
            if let Some(end) = end {
                tracing::debug!(client = %self.client.peer, "tunnel ended: {end}");
            }
            finish.add_bytes(relayed.b_to_a as usize);
            if let Some(log) = finish.log.as_mut() {
                log.bytes_in = relayed.a_to_b;
            }
            finish.complete(true);
            return false;
        }
        let framing = heads::client_framing(&resp, self.head.version);
        // The server answered before the whole body arrived: the rest still goes to it
        // after the answer (an ingest endpoint acknowledging early), unless it stopped
        // reading, and then the rest cannot be framed and the client's connection ends.
        let close = !self.head.keep_alive
            || upload.failed
            || framing == ClientFraming::Close
            || self.stop.is_cancelled();
        let cookie = balance::sticky::cookie_for(&self.b, sticky.as_deref(), &server);
        let relaying = Relaying {
            framing,
            close,
            keep_alive_10: self.head.version == Version::Http10 && !close,
            set_cookie: cookie.as_deref(),
            switching: false,
            rules: &self.target.response,
            lines: &response_lines,
        };
        // Reused only when the exchange ends cleanly on both sides: the whole body sent,
        // the whole response read.
        let reuse = (resp.reusable && upload.is_done()).then_some(&server.idle);
        let relayed = relay::response(
            self.client,
            conn,
            reuse,
            &resp,
            &relaying,
            response_timeout,
            &mut finish,
        )
        .await;
        match relayed {
            Ok(kept) => {
                finish.complete(true);
                if let Some(mut conn) = kept.filter(|_| !upload.is_done()) {
                    let client = &mut *self.client;
                    let rest = std::future::poll_fn(|cx| upload.poll(cx, client, &mut conn.stream));
                    if let Err(e) = rest.await {
                        tracing::debug!(server = %server.full_name(), "the rest of the request body did not go: {e:?}");
                        return false;
                    }
                    if resp.reusable {
                        server.idle.checkin(conn);
                    }
                }
                !close
            }
            Err(relay::RelayError::Unsent(e)) => {
                tracing::warn!(server = %server.full_name(), "broken response: {e}");
                outlier::record(&self.backend, &server, outlier::Outcome::Broken);
                self.finish = Some(finish);
                self.refuse(Refusal::UpstreamBroken, true).await
            }
            Err(e) => {
                tracing::debug!(server = %server.full_name(), client = %self.client.peer, "response cut short: {e}");
                finish.complete(false);
                false
            }
        }
    }
}

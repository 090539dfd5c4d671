//! The HTTP data path: one client request in, one server chosen, the request forwarded
//! with its body streamed, the response streamed back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::{AccessLog, Finish, ProxyBody};
use super::bridge::{self, Sent, ServerBody, UpstreamBody};
use super::conn::Busy;
use super::error::Refusal;
use super::frontend::Frontend;
use super::grpc;
use super::h2_upstream::{self, TeTrailers};
use super::headers::{add_forwarded, h2_host, head_size, join_cookies, strip_hop_by_hop};
use super::retry;
use crate::balance;
use crate::config;
use crate::pool::{Backend, Server, ServerId, Slot, outlier};
use crate::route::{self, Action};
use crate::upstream::{ClientAddrs, ConnectError};

/// A response from a server, with the slot it holds until its body is done.
struct Forwarded {
    resp: Response<ServerBody>,
    slot: Slot,
}

/// Handles one request from `client` on `fe`. Never fails: every problem is an answer.
pub async fn handle(
    fe: Arc<Frontend>,
    client: SocketAddr,
    tls: bool,
    busy: Busy,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let settings = fe.settings();
    let routing = fe.routing();
    let mut req = req;
    let request_id = request_id(req.headers_mut());
    let host = {
        let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
        let raw = authority.or_else(|| req.headers().get(header::HOST).map(HeaderValue::as_bytes));
        route::normalize_host(raw.unwrap_or_default()).into_owned()
    };
    // Only routes look at the normalized path (without them every request takes the
    // fallback, which strips nothing).
    let path = if routing.is_routed() {
        route::normalize_path(req.uri().path().as_bytes()).into_owned()
    } else {
        String::new()
    };
    let target = routing.select(&route::Request {
        host: &host,
        path: &path,
        method: req.method().as_str().as_bytes(),
        headers: req.headers(),
    });
    let log = (settings.access_log && super::access_log::enabled()).then(|| AccessLog {
        frontend: Arc::clone(&fe.name),
        client,
        method: req.method().clone(),
        path: req.uri().path().into(),
        status: 0,
        server: None,
        start: Instant::now(),
        host: host.as_str().into(),
        route: routing.is_routed().then(|| Arc::clone(&target.name)),
        backend: None,
        request_id: request_id.as_str().into(),
        bytes_in: 0,
        first_byte: None,
        json: settings.access_log_format == config::LogFormat::Json,
    });
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let raw_path = req.uri().path().to_string();
    let filled = route::Fill {
        client_ip: client.ip(),
        host: &host,
        request_id: request_id.as_bytes(),
        path: raw_path.as_bytes(),
        path_and_query: pq.as_bytes(),
    };
    // Boxed now rather than when the body takes it: the same one allocation, and the
    // request's future does not carry it inline across every await.
    let mut finish = Box::new(Finish::new(busy, log).routed(&target.counts, &fe.name));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        settings.max_body_bytes > 0 && declared.is_some_and(|n| n > settings.max_body_bytes);
    let (backend, strip) = match &target.action {
        _ if too_large => return alone(finish, Refusal::BodyTooLarge.response(1)),
        Action::NoRoute => return alone(finish, Refusal::NoRoute.response(1)),
        Action::Redirect { to, status } => {
            let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
            *resp.status_mut() =
                http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::PERMANENT_REDIRECT);
            if let Ok(v) = HeaderValue::from_bytes(&to.render(&filled)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            target.response.apply(resp.headers_mut(), &filled);
            return alone(finish, resp);
        }
        Action::Forward { backend, strip } => (Arc::clone(backend), strip.as_deref()),
    };
    if let Some(prefix) = strip {
        let stripped = route::strip_path(&path, prefix, req.uri().query().map(str::as_bytes));
        // Scheme and authority stay: HTTP/2's `:authority` is the request's host.
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = http::uri::PathAndQuery::try_from(stripped).ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    target.request.apply(req.headers_mut(), &filled);
    if settings.max_body_bytes > 0 {
        req.extensions_mut()
            .insert(bridge::BodyLimit(settings.max_body_bytes));
    }
    if let Some(log) = finish.log.as_mut() {
        log.backend = Some(Arc::clone(&backend.name));
    }
    finish.count_in(&fe.name, &backend);
    // One view of the backend's settings for the whole request: a reload meanwhile
    // does not mix old and new values, and the request path loads them once.
    let b = arc_swap::Guard::into_inner(backend.settings());
    let sticky = balance::sticky::requested(&b, &balance::Fields::Map(req.headers()));
    // Above 95 % of max_memory: refuse before any work (one relaxed load otherwise).
    let forwarded = if fe.overload.shedding() {
        Err(Refusal::Overloaded)
    } else {
        forward(&settings, &b, &backend, client, tls, req).await
    };
    let mut resp = match forwarded {
        Ok(fwd) => {
            let (mut parts, body) = fwd.resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let server = Arc::clone(fwd.slot.server());
            balance::sticky::set_cookie(&b, sticky.as_deref(), &server, &mut parts.headers);
            target.response.apply(&mut parts.headers, &filled);
            if let Some(log) = finish.log.as_mut() {
                log.server = Some(Arc::clone(&server.name));
                log.first_byte = Some(log.start.elapsed());
            }
            finish.slot = Some(fwd.slot);
            let limit = b.response_timeout.get();
            Response::from_parts(parts, ProxyBody::upstream(body, limit))
        }
        Err(refusal) => refusal.response(retry_after(&b, refusal)),
    };
    let status = resp.status().as_u16();
    resp.body_mut().on_finish(finish);
    resp.body_mut().log_status(status);
    resp
}

/// An answer made without a server (a redirect, no route, a body too large), counted and
/// logged like the others.
fn alone(mut finish: Box<Finish>, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    finish.set_status(status);
    resp.body_mut().on_finish(finish);
    resp.body_mut().log_status(status);
    resp
}

/// The request's `x-request-id`: the client's, or a new one added to the request.
fn request_id(headers: &mut http::HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        return v.to_string();
    }
    let id = crate::proxy::request_id::make();
    let text = String::from_utf8_lossy(&id).into_owned();
    if let Ok(v) = HeaderValue::from_bytes(&id) {
        headers.insert("x-request-id", v);
    }
    text
}

/// How long a refused client should wait before asking again.
pub(super) fn retry_after(b: &config::Backend, refusal: Refusal) -> u64 {
    match refusal {
        // Nothing is up: the earliest a server can return is `rise` checks away.
        Refusal::NoServer => {
            let h = &b.health;
            h.interval.get().saturating_mul(h.rise).as_secs().max(1)
        }
        _ => 1,
    }
}

async fn forward(
    settings: &config::Frontend,
    b: &config::Backend,
    backend: &Arc<Backend>,
    client: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Forwarded, Refusal> {
    let (connect_timeout, response_timeout, retries) =
        (b.connect_timeout.get(), b.response_timeout.get(), b.retries);
    backend.retry_budget.record_request();
    // In a block, so that the pieces are gone before the first await rather than kept in
    // the future's state beside the request they became.
    let (mut req, replay, replayable) = {
        let (parts, body) = prepare(settings, client, tls, req)?.into_parts();
        // A bodiless idempotent request keeps its head, so that it can be sent again; to an
        // HTTP/2 server any bodiless one does, for a stream refused unprocessed.
        let replayable = retry::replayable(&parts, &body);
        let h2 = b.protocol == config::UpstreamProtocol::H2;
        let keep = retries > 0 && (replayable || (h2 && http_body::Body::is_end_stream(&body)));
        let replay = keep.then(|| parts.clone());
        let body = match replay {
            Some(_) => UpstreamBody::Empty,
            None => UpstreamBody::Client(body),
        };
        (Request::from_parts(parts, body), replay, replayable)
    };
    let mut slot = {
        let req = balance::Request::http(client.ip(), req.uri(), req.headers());
        retry::first_slot(backend, &req).await?
    };
    // Servers tried so far, on the stack: `retries` is at most `MAX_RETRIES` (validated),
    // so at most `MAX_RETRIES + 1` attempts; a heap `Vec` here was one allocation per request.
    let mut tried_buf = [ServerId::NONE; config::MAX_RETRIES as usize + 1];
    let mut attempts = 0;
    let mut retried = 0;
    loop {
        let server = Arc::clone(slot.server());
        tried_buf[attempts.min(tried_buf.len() - 1)] = server.id;
        attempts = (attempts + 1).min(tried_buf.len());
        let tried = &tried_buf[..attempts];
        let sent_at = balance::clock::now_ns();
        // HTTP/2 clients: the destination is the frontend's bind address (the hyper
        // service is not told the connection's own local address).
        let addrs = Some(ClientAddrs {
            source: client,
            destination: settings.bind,
        });
        let outcome = send(
            b,
            backend,
            &server,
            addrs,
            (connect_timeout, response_timeout),
            req,
        )
        .await;
        let more = retried < retries && attempts < tried_buf.len();
        // Every attempt feeds passive health; a retry, when allowed, replaces the attempt.
        let again = match outcome {
            Outcome::Answered(resp) => {
                server.ewma.observe_since(sent_at);
                let status = resp.status();
                // `None`: a gRPC call whose status is in its trailers, recorded with them.
                if let Some(seen) = grpc::head_outcome(status, resp.headers()) {
                    outlier::record(backend, &server, seen);
                }
                let next = match &replay {
                    Some(head) if replayable && more && retry::retry_status(status) => {
                        retry::next_slot(
                            backend,
                            &balance::Request::http(client.ip(), &head.uri, &head.headers),
                            tried,
                            true,
                        )
                    }
                    _ => None,
                };
                let Some(next) = next else {
                    return Ok(Forwarded { resp, slot });
                };
                tracing::warn!(server = %server.full_name(), "answered {status}; retrying on another server");
                (next, None)
            }
            Outcome::NotSent(back, unsent) => {
                outlier::record(backend, &server, unsent.outcome());
                let why = unsent.describe(&server);
                let next = more
                    .then(|| {
                        let req = balance::Request::http(client.ip(), back.uri(), back.headers());
                        retry::next_slot(backend, &req, tried, false)
                    })
                    .flatten();
                let Some(next) = next else {
                    tracing::warn!(server = %server.full_name(), "{why}; no other server to try");
                    return Err(Refusal::ConnectFailed);
                };
                tracing::warn!(server = %server.full_name(), "{why}; trying another server");
                (next, Some(back))
            }
            // The client's fault, not the server's: no outlier, no retry.
            Outcome::Failed(Refusal::BodyTooLarge) => return Err(Refusal::BodyTooLarge),
            Outcome::Failed(refusal) => {
                let seen = match refusal {
                    Refusal::UpstreamTimeout => outlier::Outcome::TimedOut,
                    _ => outlier::Outcome::Broken,
                };
                outlier::record(backend, &server, seen);
                let next = match &replay {
                    Some(head) if replayable && more && refusal == Refusal::UpstreamBroken => {
                        retry::next_slot(
                            backend,
                            &balance::Request::http(client.ip(), &head.uri, &head.headers),
                            tried,
                            true,
                        )
                    }
                    _ => None,
                };
                let Some(next) = next else {
                    tracing::warn!(server = %server.full_name(), "request failed: {}", refusal.code());
                    return Err(refusal);
                };
                tracing::warn!(server = %server.full_name(), "connection broke before the response; retrying on another server");
                (next, None)
            }
            // Not processed: neither a success nor a failure of the server's.
            Outcome::Refused => {
                let next = match &replay {
                    Some(head) if more => retry::next_slot(
                        backend,
                        &balance::Request::http(client.ip(), &head.uri, &head.headers),
                        tried,
                        false,
                    ),
                    _ => None,
                };
                let Some(next) = next else {
                    tracing::warn!(server = %server.full_name(), "refused the stream; no other server to try");
                    return Err(Refusal::UpstreamBroken);
                };
                tracing::warn!(server = %server.full_name(), "refused the stream unprocessed; trying another server");
                (next, None)
            }
        };
        let (next, back) = again;
        retried += 1;
        slot = next;
        req = match (back, &replay) {
            (Some(back), _) => back,
            (None, Some(head)) => Request::from_parts(head.clone(), UpstreamBody::Empty),
            // Only replayable requests are retried after being sent.
            (None, None) => return Err(Refusal::UpstreamBroken),
        };
    }
}

/// Checks the request and turns it into the one sent upstream.
fn prepare(
    settings: &config::Frontend,
    client: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Request<Incoming>, Refusal> {
    let (mut parts, body) = req.into_parts();
    if head_size(&parts.method, &parts.uri, &parts.headers) > settings.max_header_bytes {
        return Err(Refusal::HeaderTooLarge);
    }
    // Ambiguous framing (Transfer-Encoding with Content-Length, two Content-Lengths) never
    // reaches here: hyper's parser rejects conflicting lengths with 400, and for TE + CL it
    // drops Content-Length, reads the chunked body and closes the connection after the
    // answer (RFC 9112 §6.1), so nothing can be smuggled behind the request.
    // fulcrum is no forward proxy: a tunnel to an address of the client's choosing is
    // refused here, before any server is chosen (RFC 9110 §9.3.6).
    if parts.method == Method::CONNECT {
        return Err(Refusal::MethodNotAllowed);
    }
    // The asterisk form names the server itself, and only OPTIONS may (RFC 9112 §3.2.4).
    if parts.uri.path() == "*" && parts.method != Method::OPTIONS {
        return Err(Refusal::BadRequest);
    }
    if parts.version == Version::HTTP_2 {
        h2_host(&mut parts.headers, &parts.uri)?;
        join_cookies(&mut parts.headers);
    } else if !parts.headers.contains_key(header::HOST) {
        // HTTP/1.1 must send Host (RFC 9112 §3.2); an absolute-form target gives it.
        match parts
            .uri
            .authority()
            .map(|a| HeaderValue::from_str(a.as_str()))
        {
            Some(Ok(h)) => {
                parts.headers.insert(header::HOST, h);
            }
            _ if parts.version == Version::HTTP_11 => return Err(Refusal::BadRequest),
            _ => {}
        }
    }
    let te_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(&mut parts.headers);
    if te_trailers {
        parts.extensions.insert(TeTrailers);
    }
    let host = parts.headers.get(header::HOST).cloned();
    add_forwarded(&mut parts.headers, client.ip(), tls, host.as_ref());
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = pq.parse::<Uri>().map_err(|_| Refusal::BadRequest)?;
    }
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

/// What became of one attempt on one server.
enum Outcome {
    /// The server answered (its body is still to be streamed).
    Answered(Response<ServerBody>),
    /// Nothing was sent: the request can go elsewhere, whatever its method.
    NotSent(Request<UpstreamBody>, Unsent),
    /// The request was sent and failed (broken or timed out).
    Failed(Refusal),
    /// HTTP/2: the server refused the stream unprocessed.
    Refused,
}

/// Why an attempt sent nothing.
enum Unsent {
    /// No connection could be had.
    Connect(ConnectError),
}

impl Unsent {
    /// What passive health makes of it.
    fn outcome(&self) -> outlier::Outcome {
        match self {
            Unsent::Connect(e) => e.into(),
        }
    }

    /// The log line's reason, naming the server a connect failed to.
    fn describe(&self, server: &Server) -> String {
        match self {
            Unsent::Connect(e) => format!("{} ({}): {e}", server.full_name(), server.addr()),
        }
    }
}

/// One attempt, in the protocol the backend's servers speak.
async fn send(
    b: &config::Backend,
    backend: &Arc<Backend>,
    server: &Arc<Server>,
    client: Option<ClientAddrs>,
    (connect_timeout, response_timeout): (Duration, Duration),
    req: Request<UpstreamBody>,
) -> Outcome {
    let sent = match b.protocol {
        config::UpstreamProtocol::Http1 => {
            bridge::send(server, client, req, connect_timeout, response_timeout).await
        }
        config::UpstreamProtocol::H2 => {
            h2_upstream::send(server, backend, req, connect_timeout, response_timeout).await
        }
    };
    match sent {
        Sent::Answered(resp) => Outcome::Answered(resp),
        Sent::NoConnection(back, e) => Outcome::NotSent(back, Unsent::Connect(e)),
        Sent::Failed => Outcome::Failed(Refusal::UpstreamBroken),
        Sent::TimedOut => Outcome::Failed(Refusal::UpstreamTimeout),
        Sent::TooLarge => Outcome::Failed(Refusal::BodyTooLarge),
        Sent::Refused => Outcome::Refused,
    }
}

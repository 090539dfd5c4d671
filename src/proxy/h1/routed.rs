//! What the HTTP/1 engine needs of a request's route besides a server: its request id,
//! the head's fields as route conditions read them, the values placeholders are filled
//! with, and the answers given without a server (a redirect, no route, a body too large).

use tokio_util::sync::CancellationToken;

use super::heads;
use super::relay;
use super::{Client, ClientIo};
use crate::h1::{BodyFraming, RequestHead};
use crate::proxy::body::Finish;
use crate::proxy::error::Refusal;
use crate::route::{self, Fill, Target};

/// The request's `x-request-id`: the client's own, or one fulcrum made (and forwards).
pub enum RequestId {
    Sent(crate::h1::Span),
    Made([u8; 32]),
}

impl RequestId {
    pub fn of(buf: &[u8], head: &RequestHead) -> RequestId {
        let sent = head.headers.as_slice().iter().find(|h| {
            h.name.of(buf).eq_ignore_ascii_case(b"x-request-id") && !h.value.of(buf).is_empty()
        });
        match sent {
            Some(h) => RequestId::Sent(h.value),
            None => RequestId::Made(crate::proxy::request_id::make()),
        }
    }

    pub fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            RequestId::Sent(span) => span.of(buf),
            RequestId::Made(id) => id,
        }
    }

    /// The id to add to the forwarded request, when the client sent none.
    pub fn made(&self) -> Option<&[u8]> {
        match self {
            RequestId::Made(id) => Some(id),
            RequestId::Sent(_) => None,
        }
    }
}

/// A head's fields as route conditions read them.
pub struct HeadFields<'a> {
    pub buf: &'a [u8],
    pub headers: &'a crate::h1::Headers,
}

impl route::HeaderLookup for HeadFields<'_> {
    fn has(&self, name: &str, value: &str) -> bool {
        self.headers
            .named(self.buf, name)
            .any(|v| v == value.as_bytes())
    }
}

/// What placeholders are filled with for this request (borrowing its head).
pub fn fill<'a>(
    buf: &'a [u8],
    head: &RequestHead,
    host: &'a str,
    request_id: &'a RequestId,
    client: std::net::IpAddr,
) -> Fill<'a> {
    let target = heads::origin_target(buf, head);
    Fill {
        client_ip: client,
        host,
        request_id: request_id.bytes(buf),
        path: target.split(|&c| c == b'?').next().unwrap_or(target),
        path_and_query: target,
    }
}

/// A request answered by fulcrum without a server: a redirect, no route, a body too large.
pub struct Alone<'a, S> {
    pub client: &'a mut Client<S>,
    pub head: &'a RequestHead,
    pub target: &'a Target,
    pub request_id: &'a RequestId,
    pub stop: &'a CancellationToken,
}

impl<S: ClientIo> Alone<'_, S> {
    /// Whether the connection ends after the answer: an unread body cannot be skipped.
    fn closes(&self) -> bool {
        self.head.body != BodyFraming::None || !self.head.keep_alive || self.stop.is_cancelled()
    }

    pub async fn refuse(self, mut finish: Box<Finish>, refusal: Refusal) -> bool {
        let close = self.closes() || refusal.closes();
        let sent = relay::answer(self.client, refusal, 1, close).await;
        finish.set_status(refusal.status().as_u16());
        finish.complete(sent.is_ok());
        sent.is_ok() && !close
    }

    pub async fn redirect(
        self,
        mut finish: Box<Finish>,
        to: &route::Template,
        status: u16,
    ) -> bool {
        let close = self.closes();
        let (location, lines) = {
            let buf = self.client.buf.pending();
            let host = route::normalize_host(self.head.authority.map_or(&b""[..], |a| a.of(buf)));
            let fill = fill(
                buf,
                self.head,
                &host,
                self.request_id,
                self.client.peer.ip(),
            );
            let mut lines = Vec::new();
            self.target.response.write_lines(&mut lines, &fill);
            (to.render(&fill), lines)
        };
        let sent = relay::redirect(self.client, status, &location, &lines, close).await;
        finish.set_status(status);
        finish.complete(sent.is_ok());
        sent.is_ok() && !close
    }
}

/// The route `head` takes, the path and query to send instead of the client's when the
/// route strips a prefix, and (when `log_host`) the host for the access log.
pub fn choose<'r>(
    routing: &'r route::Routing,
    buf: &[u8],
    head: &RequestHead,
    log_host: bool,
) -> (&'r Target, Option<Vec<u8>>, Option<Box<str>>) {
    let raw_target = heads::origin_target(buf, head);
    let host = route::normalize_host(head.authority.map_or(&b""[..], |a| a.of(buf)));
    let path = route::normalize_path(raw_target);
    let req = route::Request {
        host: &host,
        path: &path,
        method: head.method.of(buf),
        headers: &HeadFields {
            buf,
            headers: &head.headers,
        },
    };
    let target = routing.select(&req);
    let rewritten = match &target.action {
        route::Action::Forward {
            strip: Some(prefix),
            ..
        } => {
            let query = raw_target
                .iter()
                .position(|&b| b == b'?')
                .and_then(|q| raw_target.get(q + 1..));
            Some(route::strip_path(&path, prefix, query))
        }
        _ => None,
    };
    (
        target,
        rewritten,
        log_host.then(|| Box::<str>::from(&*host)),
    )
}

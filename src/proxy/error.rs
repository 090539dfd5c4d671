//! fulcrum's own answers: one place maps each failure to its status, `x-fulcrum-error`
//! and body, exactly as the README's "What fulcrum answers itself" lists them.

use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// Why fulcrum answers a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    /// `CONNECT`: fulcrum opens no tunnels to addresses a client picks.
    MethodNotAllowed,
    HeaderTooLarge,
    /// The request line alone is longer than `max_header_bytes`.
    UriTooLong,
    ConnectFailed,
    UpstreamBroken,
    NoServer,
    QueueFull,
    QueueTimeout,
    UpstreamTimeout,
    /// fulcrum itself is above 95 % of `[global] max_memory`.
    Overloaded,
    /// No route matched and the frontend has no default backend.
    NoRoute,
    /// The request body is larger than the frontend's `max_body_bytes`.
    BodyTooLarge,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::UriTooLong => StatusCode::URI_TOO_LONG,
            Refusal::ConnectFailed | Refusal::UpstreamBroken => StatusCode::BAD_GATEWAY,
            Refusal::NoServer
            | Refusal::QueueFull
            | Refusal::QueueTimeout
            | Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The `x-fulcrum-error` value.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::UriTooLong => "uri_too_long",
            Refusal::ConnectFailed => "connect_failed",
            Refusal::UpstreamBroken => "upstream_broken",
            Refusal::NoServer => "no_server",
            Refusal::QueueFull => "queue_full",
            Refusal::QueueTimeout => "queue_timeout",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Overloaded => "overloaded",
            Refusal::NoRoute => "no_route",
            Refusal::BodyTooLarge => "body_too_large",
        }
    }

    /// One short line naming the reason; never internal details.
    pub fn body(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad request\n",
            Refusal::MethodNotAllowed => "method not allowed: fulcrum does not tunnel CONNECT\n",
            Refusal::HeaderTooLarge => "request header too large\n",
            Refusal::UriTooLong => "request line too long\n",
            Refusal::ConnectFailed => "bad gateway: could not connect to a server\n",
            Refusal::UpstreamBroken => "bad gateway: the server broke the response\n",
            Refusal::NoServer => "service unavailable: no server is available\n",
            Refusal::QueueFull => {
                "service unavailable: every server is busy and the queue is full\n"
            }
            Refusal::QueueTimeout => "service unavailable: every server stayed busy\n",
            Refusal::UpstreamTimeout => "gateway timeout: the server did not answer in time\n",
            Refusal::Overloaded => "service unavailable: the load balancer is overloaded\n",
            Refusal::NoRoute => "not found: no route matches this request\n",
            Refusal::BodyTooLarge => "payload too large: the request body is over the limit\n",
        }
    }

    /// Whether the connection must close after this answer: after a request we could not
    /// read properly the stream's framing is not to be trusted.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Refusal::BadRequest
                | Refusal::HeaderTooLarge
                | Refusal::UriTooLong
                | Refusal::BodyTooLarge
        )
    }

    /// The answer to send, with `Retry-After` on 503 so clients come back later, not now.
    pub fn response(self, retry_after_secs: u64) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::text(self.body()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert("x-fulcrum-error", HeaderValue::from_static(self.code()));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        if self.closes() {
            // After a request we could not read properly the stream's framing is not to be
            // trusted: close rather than parse what follows.
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

//! gRPC as passive health sees it: a call's outcome is its `grpc-status` (in the trailers,
//! or in the head of a trailers-only answer), and only the codes that mean the server
//! failed count against it — UNKNOWN (2), INTERNAL (13), UNAVAILABLE (14) and DATA_LOSS
//! (15). NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED and the like are the caller's
//! problem, answered by a working server.

use http::header::{self, HeaderMap};
use http::{HeaderName, StatusCode};

use crate::pool::outlier::Outcome;

/// The header (or trailer) carrying a gRPC call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether a `grpc-status` code means the server failed.
pub fn server_failed(code: u16) -> bool {
    matches!(code, 2 | 13 | 14 | 15)
}

/// Whether a message is gRPC (`content-type: application/grpc`, `application/grpc+proto`…).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// What the `grpc-status` in `headers` comes to; a missing or unreadable status is a
/// broken call (gRPC always ends with one).
pub fn outcome(headers: &HeaderMap) -> Outcome {
    match headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
    {
        Some(code) if server_failed(code) => Outcome::Grpc(code),
        Some(_) => Outcome::Success,
        None => Outcome::Broken,
    }
}

/// What passive health makes of a response head; `None` for a gRPC answer whose status is
/// still to come in its trailers (the body records it when they arrive).
pub fn head_outcome(status: StatusCode, headers: &HeaderMap) -> Option<Outcome> {
    if status.is_server_error() {
        return Some(Outcome::Status(status.as_u16()));
    }
    if status != StatusCode::OK || !is_grpc(headers) {
        return Some(Outcome::Success);
    }
    headers.contains_key(GRPC_STATUS).then(|| outcome(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn grpc(status: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Some(s) = status {
            h.insert(GRPC_STATUS, HeaderValue::from_static(s));
        }
        h
    }

    #[test]
    fn only_server_failures_count() {
        for (code, failed) in [(0, false), (2, true), (3, false), (5, false), (13, true)] {
            assert_eq!(server_failed(code), failed, "{code}");
        }
        assert!(server_failed(14) && server_failed(15) && !server_failed(16));
    }

    #[test]
    fn the_status_in_the_head_or_later() {
        let ok = StatusCode::OK;
        assert_eq!(head_outcome(ok, &grpc(None)), None);
        assert_eq!(head_outcome(ok, &grpc(Some("14"))), Some(Outcome::Grpc(14)));
        assert_eq!(head_outcome(ok, &grpc(Some("5"))), Some(Outcome::Success));
        assert_eq!(head_outcome(ok, &HeaderMap::new()), Some(Outcome::Success));
        let bad = StatusCode::BAD_GATEWAY;
        assert_eq!(head_outcome(bad, &grpc(None)), Some(Outcome::Status(502)));
        assert_eq!(outcome(&HeaderMap::new()), Outcome::Broken);
    }

    #[test]
    fn grpc_content_types() {
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;charset=x", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_grpc(&h), want, "{v}");
        }
    }
}

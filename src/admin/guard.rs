//! What every admin request passes before a handler sees it: the `Host` check (the
//! DNS-rebinding guard) and the bounded read of its body.
//!
//! A web page can make a browser send requests to `127.0.0.1:9900` by pointing a name it
//! controls at that address (DNS rebinding); the browser then sends that name as `Host`, and
//! the page may read the answers (`/metrics`, the dashboard). So a request is answered only
//! when its `Host` is a loopback name or address, the admin listener's own address (the
//! `[admin] bind` IP or the address the client connected to: an IP literal is never a
//! rebound name), or one of `[admin] allowed_hosts`; anything else gets 421. `GET /healthz`
//! is exempt: it reveals nothing, and an orchestrator's liveness probe names the pod's IP or
//! a service name.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::AdminState;
use super::listener::Local;

fn error(code: StatusCode, msg: String) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

/// 421 unless the request's `Host` names this admin listener (see the module's docs).
pub(super) async fn check_host(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    // An absolute-form target (`GET http://evil.example/`) names the host too.
    let given = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    let local = req.extensions().get::<Local>().map(|l| l.0.ip());
    let cfg = st.app.config();
    let ok = given.as_deref().is_some_and(|host| {
        host_allowed(host, cfg.admin.bind.ip(), local, &cfg.admin.allowed_hosts)
    });
    if ok {
        return next.run(req).await;
    }
    let shown = given.unwrap_or_else(|| "(none)".into());
    error(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "Host `{shown}` is not this admin listener: use localhost, its address, or add the \
             name to [admin] allowed_hosts"
        ),
    )
}

/// Splits `host[:port]` (IPv6 in brackets) into the host, lower-cased without a trailing
/// dot or brackets, and the port text if any.
fn split(host: &str) -> Option<(String, Option<&str>)> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match host.rsplit_once(':') {
            // More than one colon without brackets is no valid Host.
            Some((n, _)) if n.contains(':') => return None,
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if name.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    Some((name.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Whether `host` (a `Host` value) may reach the admin plane bound to `bind`, reached on
/// `local`, with `allowed` the `[admin] allowed_hosts`. Any port goes with a loopback name,
/// an own address, and an allowed entry written without a port.
fn host_allowed(host: &str, bind: IpAddr, local: Option<IpAddr>, allowed: &[String]) -> bool {
    let Some((name, port)) = split(host) else {
        return false;
    };
    if name == "localhost" {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        if ip.is_loopback() || (!bind.is_unspecified() && ip == bind.to_canonical()) {
            return true;
        }
        if local.is_some_and(|l| l.to_canonical() == ip) {
            return true;
        }
    }
    allowed
        .iter()
        .any(|entry| split(entry).is_some_and(|(n, p)| n == name && (p.is_none() || p == port)))
}

/// Reads the whole request body (at most `max_body_bytes`, within the head timeout) before
/// the handler runs: 413 for a larger body (at once when `Content-Length` says so), 408 for
/// one that arrives too slowly, so a client can hold a connection neither with a huge body
/// nor with one that trickles in. Every admin body is a small JSON object, so reading it
/// whole first costs nothing.
pub(super) async fn read_body(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let limit = st.limits.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the admin API's limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read =
        tokio::time::timeout(st.limits.head_timeout, Limited::new(body, limit).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                body_too_slow(st.limits.head_timeout),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn body_too_slow(within: Duration) -> String {
    format!(
        "the request body did not arrive within {}",
        humantime::format_duration(within)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

    fn allowed(host: &str) -> bool {
        let list = [
            "admin.example.com".to_string(),
            "ops.example:8443".to_string(),
        ];
        let local = "10.0.0.5".parse().ok();
        host_allowed(host, "0.0.0.0".parse().unwrap(), local, &list)
    }

    #[test]
    fn loopback_names_and_addresses_with_any_port() {
        for h in [
            "localhost",
            "LOCALHOST:9900",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:9900",
            "127.3.4.5:80",
        ] {
            assert!(allowed(h), "{h}");
        }
    }

    #[test]
    fn own_addresses_and_allowed_hosts() {
        assert!(allowed("10.0.0.5:9900"), "the address connected to");
        assert!(host_allowed(
            "192.0.2.7:9900",
            "192.0.2.7".parse().unwrap(),
            None,
            &[]
        ));
        assert!(
            allowed("Admin.Example.com:9900"),
            "no port in the entry: any port"
        );
        assert!(allowed("ops.example:8443"));
        assert!(
            !allowed("ops.example:9900"),
            "a port in the entry must match"
        );
        assert!(!allowed("ops.example"));
    }

    #[test]
    fn everything_else_is_refused() {
        for h in [
            "evil.example",
            "evil.example:9900",
            "localhost.evil.example",
            "10.0.0.6",
            "0.0.0.0:9900",
            "",
            "[::1",
            "a:b:c",
            "localhost:99999",
            "admin.example.com.evil",
        ] {
            assert!(!allowed(h), "{h}");
        }
        assert!(!host_allowed("evil.example", BIND, Some(BIND), &[]));
    }
}

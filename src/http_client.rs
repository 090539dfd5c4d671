//! A minimal HTTP/1.1 client for fulcrum's own outgoing calls (webhooks, `fulcrum ctl`):
//! one connection per call, a deadline over the whole exchange. Built on the engine's own
//! server side ([`ServerConn`]: the head parsed with the data path's strict rules, the body
//! decoded by the same framing), so fulcrum has one HTTP/1 client, not two. `https://` URLs (Slack's
//! webhooks) go over rustls, trusting the Mozilla root certificates (webpki-roots) so the
//! result does not depend on what the host happens to have installed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{is_header_value, is_token};
use crate::h1::BodyDecoder;
use crate::upstream::UpStream;
use crate::upstream::h1::{HeadError, ServerConn};

/// The largest answer body read; webhooks and the admin API answer far less.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens there (connection refused).
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// The TCP connection failed otherwise (unreachable, reset, no route).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// Connected, but no TLS session could be set up (`https://` only).
    #[error("{target}: TLS: {source}")]
    Tls {
        target: String,
        #[source]
        source: TlsConnectError,
    },
    /// The URL's host name did not resolve in time, and had no earlier address.
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error("{0}")]
    Other(String),
}

/// The last address of every host name called, so a DNS server that stops answering does not
/// stop webhooks to a receiver that has not moved.
static NAMES: std::sync::LazyLock<crate::resolve::LastGood> =
    std::sync::LazyLock::new(crate::resolve::LastGood::default);

/// Why `tls_connect` found no session: the client configuration, the host name, or the
/// handshake (certificate not trusted, protocol mismatch). Its text is rustls's own.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error("{0}")]
    Config(#[source] tokio_rustls::rustls::Error),
    /// The URL's host is not a valid DNS name or IP address for TLS.
    #[error("{0}")]
    ServerName(#[source] tokio_rustls::rustls::pki_types::InvalidDnsNameError),
    #[error("{0}")]
    Handshake(#[source] std::io::Error),
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request to `uri` (`http://host:port/path`) and reads the whole answer.
pub async fn call(
    method: Method,
    uri: &Uri,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let authority = uri
        .authority()
        .ok_or_else(|| CallError::Other(format!("`{uri}` has no host")))?
        .to_string();
    let tls = uri.scheme_str() == Some("https");
    let target = match uri.port_u16() {
        Some(_) => authority.clone(),
        None if tls => format!("{authority}:443"),
        None => format!("{authority}:80"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let head = request_head(&method, path, &authority, headers, body.len())?;
    let exchange = async {
        // Resolved apart from connecting: bounded, and the last good address when it fails.
        let addr = NAMES
            .resolve(&target, crate::resolve::RESOLVE_TIMEOUT.min(timeout))
            .await?;
        let stream = TcpStream::connect(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::ConnectionRefused {
                CallError::Refused(target.clone())
            } else {
                CallError::Connect {
                    target: target.clone(),
                    source,
                }
            }
        })?;
        let _ = stream.set_nodelay(true);
        let stream = if tls {
            let host = uri.host().unwrap_or_default().to_string();
            let stream = tls_connect(host, stream)
                .await
                .map_err(|source| CallError::Tls {
                    target: target.clone(),
                    source,
                })?;
            UpStream::Tls(Box::new(stream))
        } else {
            UpStream::Plain(stream)
        };
        let mut conn = ServerConn::fresh(stream);
        let sent = async {
            conn.stream.write_all(&head).await?;
            conn.stream.write_all(&body).await?;
            conn.stream.flush().await
        };
        sent.await
            .map_err(|e| CallError::Other(format!("{target}: sending the request: {e}")))?;
        let mut answered = false;
        let was_head = method == Method::HEAD;
        let resp = std::future::poll_fn(|cx| conn.poll_response_head(cx, was_head, &mut answered))
            .await
            .map_err(|e| {
                CallError::Other(match e {
                    HeadError::Malformed(_) => format!("{target}: a malformed answer: {e}"),
                    _ => format!("{target}: {e}"),
                })
            })?;
        conn.buf.consume(resp.head_len);
        let body = conn
            .read_body(BodyDecoder::for_response(resp.body), MAX_BODY + 1)
            .await
            .map_err(|e| CallError::Other(format!("{target}: reading the answer: {e}")))?;
        if body.len() > MAX_BODY {
            return Err(CallError::Other(format!(
                "{target}: the answer's body is over {MAX_BODY} bytes"
            )));
        }
        Ok(Answer {
            status: resp.status,
            body: Bytes::from(body),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout(target, timeout)),
    }
}

/// The request's head: `Host`, a `Connection: close` (one exchange per connection), the
/// caller's headers, and a `Content-Length` whenever there is a body or the method carries
/// one. A header that could break the head (a name that is not a token, a value with CR or
/// LF) is refused rather than written.
fn request_head(
    method: &Method,
    path: &str,
    authority: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::with_capacity(256);
    for part in [
        method.as_str(),
        " ",
        path,
        " HTTP/1.1\r\nhost: ",
        authority,
        "\r\nuser-agent: fulcrum\r\nconnection: close\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        if !is_token(name) || !is_header_value(value) {
            return Err(CallError::Other(format!(
                "header `{name}` cannot be sent as written"
            )));
        }
        for part in [*name, ": ", *value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if body_len > 0 || [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        out.extend_from_slice(format!("content-length: {body_len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// A TLS session to `host` over `stream`, verified against the Mozilla roots.
async fn tls_connect(
    host: String,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsConnectError> {
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsConnectError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(host).map_err(TlsConnectError::ServerName)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(TlsConnectError::Handshake)
}

/// The URI of `path` on the admin listener at `addr`.
pub fn admin_uri(addr: SocketAddr, path: &str) -> Result<Uri, CallError> {
    format!("http://{addr}{path}")
        .parse()
        .map_err(|e| CallError::Other(format!("bad path {path}: {e}")))
}

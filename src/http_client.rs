//! A minimal HTTP/1.1 client for fulcrum's own outgoing calls (webhooks, `fulcrum ctl`):
//! one connection per call, a deadline over the whole exchange. Built on hyper's
//! connection API so the binary needs no second HTTP stack. `https://` URLs (Slack's
//! webhooks) go over rustls, trusting the Mozilla root certificates (webpki-roots) so the
//! result does not depend on what the host happens to have installed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
        let mut tx = if tls {
            let host = uri.host().unwrap_or_default().to_string();
            let stream = tls_connect(host, stream)
                .await
                .map_err(|source| CallError::Tls {
                    target: target.clone(),
                    source,
                })?;
            handshake(stream, &target).await?
        } else {
            handshake(stream, &target).await?
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "fulcrum")
            .header(http::header::CONNECTION, "close");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::Other(format!("bad request: {e}")))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| CallError::Other(format!("{target}: {e}")))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Other(format!("{target}: reading the answer: {e}")))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout(target, timeout)),
    }
}

/// An HTTP/1.1 connection over `io`, its driver spawned.
async fn handshake<S>(io: S, target: &str) -> Result<SendRequest<Full<Bytes>>, CallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| CallError::Other(format!("{target}: {e}")))?;
    tokio::spawn(async move {
        // The connection's own error surfaces as the request's error.
        let _ = conn.await;
    });
    Ok(tx)
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

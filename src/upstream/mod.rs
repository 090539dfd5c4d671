//! Connections to servers, shared by the data path and the servers' live state: fulcrum's
//! own HTTP/1.1 connections and each server's pool of idle ones ([`h1`]), multiplexed
//! HTTP/2 connections ([`h2`]), the request body either carries ([`body`]), all opened as
//! the backend says ([`connect`]: TLS, the PROXY header).
//!
//! fulcrum connects and hands a request over in two separate steps, so a failed connect
//! has consumed nothing and the request can go to another server whatever its method.

pub mod body;
pub mod connect;
pub mod h1;
pub mod h2;
pub mod proxy_header;
pub mod stream;

pub use connect::{Connector, Target};
pub use proxy_header::ClientAddrs;
pub use stream::UpStream;

/// Why no connection to a server could be had. The request path logs it and feeds passive
/// health with it (`pool::outlier::Outcome` converts from it), then tries another server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed: refused, unreachable, reset.
    #[error("connect failed: {0}")]
    Failed(#[source] std::io::Error),
    /// No connection within `connect_timeout` (TCP, PROXY header and TLS handshake).
    #[error("connect timed out")]
    TimedOut,
    /// The TLS handshake failed: a certificate that does not verify (the reason says
    /// which, e.g. "certificate not valid for name ..."), a refused client certificate.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The PROXY protocol header could not be written.
    #[error("sending the PROXY header failed: {0}")]
    Proxy(#[source] std::io::Error),
}

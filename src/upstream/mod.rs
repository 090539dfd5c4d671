//! Connections to servers, shared by the data path and the servers' live state: fulcrum's
//! own HTTP/1.1 connections and each server's pool of idle ones ([`h1`]), multiplexed
//! HTTP/2 connections ([`h2`]), and the request body either carries ([`body`]).
//!
//! fulcrum connects and hands a request over in two separate steps, so a failed connect
//! has consumed nothing and the request can go to another server whatever its method.

pub mod body;
pub mod h1;
pub mod h2;

/// Why no connection to a server could be had. The request path logs it and feeds passive
/// health with it (`pool::outlier::Outcome` converts from it), then tries another server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed: refused, unreachable, reset.
    #[error("connect failed: {0}")]
    Failed(#[source] std::io::Error),
    /// No connection within `connect_timeout`.
    #[error("connect timed out")]
    TimedOut,
}

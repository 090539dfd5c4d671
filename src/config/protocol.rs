//! `protocol` of a backend: what fulcrum speaks to its servers.

use serde::Deserialize;

/// The protocol a backend's servers speak: HTTP/1.1 on fulcrum's own engine, or HTTP/2
/// (multiplexed; over TLS by ALPN, in cleartext by prior knowledge), which gRPC needs.
/// An unknown value is a parse error naming its file, line, column and key.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    #[serde(rename = "http1")]
    Http1,
    #[serde(rename = "h2")]
    H2,
}

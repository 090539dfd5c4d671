//! Server addresses resolved without blocking the runtime: an IP literal as it is, a host
//! name through tokio's resolver (the system's, on a blocking-pool thread), bounded in time
//! so a DNS server that does not answer delays a start or a reload by at most that long
//! and never stalls the requests being served meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

/// How long one name may take to resolve when servers are built (start, reload).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a server address could not be turned into a socket address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` needs a port (host:port)")]
    NoPort(String),
    #[error("`{0}` resolves to no address")]
    Empty(String),
    #[error("`{address}` does not resolve: {source}")]
    Failed {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` did not resolve within {within:?}", within = RESOLVE_TIMEOUT)]
    TimedOut(String),
}

/// Resolves `host:port` (an IP or a name) to its first address, within [`RESOLVE_TIMEOUT`].
pub async fn resolve(address: &str) -> Result<SocketAddr, ResolveError> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !address.contains(':') {
        return Err(ResolveError::NoPort(address.to_string()));
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(address)).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| ResolveError::Empty(address.to_string())),
        Ok(Err(source)) => Err(ResolveError::Failed {
            address: address.to_string(),
            source,
        }),
        Err(_) => Err(ResolveError::TimedOut(address.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_names_and_mistakes() {
        assert_eq!(
            resolve("127.0.0.1:80").await.unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 80))
        );
        assert!(resolve("localhost:80").await.unwrap().ip().is_loopback());
        assert!(matches!(
            resolve("localhost").await,
            Err(ResolveError::NoPort(_))
        ));
    }
}

//! Server addresses resolved without blocking the runtime: an IP literal as it is, a host
//! name through tokio's resolver (the system's, on a blocking-pool thread), bounded in time
//! so a DNS server that does not answer delays a start or a reload by at most that long
//! and never stalls the requests being served meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::config::ResolveError;

/// How long one name may take to resolve when servers are built (start, reload).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `host:port` (an IP or a name) to its first address, within [`RESOLVE_TIMEOUT`].
pub async fn resolve(address: &str) -> Result<SocketAddr, ResolveError> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let owned = || address.to_string();
    if !address.contains(':') {
        return Err(ResolveError::NoPort { address: owned() });
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(address)).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| ResolveError::NoAddress { address: owned() }),
        Ok(Err(source)) => Err(ResolveError::Lookup {
            address: owned(),
            source,
        }),
        Err(_) => Err(ResolveError::TimedOut {
            address: owned(),
            within: RESOLVE_TIMEOUT,
        }),
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
            Err(ResolveError::NoPort { .. })
        ));
    }
}

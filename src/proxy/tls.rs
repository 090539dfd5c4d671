//! TLS termination for frontends with `tls`: rustls with the `ring` provider (no C
//! toolchain beyond what Rust needs), one or several certificates chosen by SNI
//! ([`crate::certs::SniResolver`]), ALPN offering h2 and http/1.1 in HTTP mode.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

pub use crate::certs::TlsError;
use crate::certs::{CertInfo, SniResolver, load_pair};

/// A frontend's TLS: the acceptor, and what its certificates say (for status, metrics and
/// the expiry check).
#[derive(Clone)]
pub struct Terminator {
    pub acceptor: TlsAcceptor,
    /// In the order the file lists them; the first is the default.
    pub certificates: Arc<[CertInfo]>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// Builds the acceptor for one certificate chain and key in PEM files, offering h2 and
/// http/1.1 (what a test HTTPS server needs; frontends use [`terminator`]).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    terminator(&[(cert.to_path_buf(), key.to_path_buf())], true).map(|t| t.acceptor)
}

/// Builds the terminator for the `(cert, key)` PEM file pairs, the first being the default.
/// `alpn`: offer h2 and http/1.1 (HTTP mode); a TCP relay offers none.
pub fn terminator(pairs: &[(PathBuf, PathBuf)], alpn: bool) -> Result<Terminator, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loaded = pairs
        .iter()
        .map(|(cert, key)| load_pair(cert, key, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(resolver) = SniResolver::new(&loaded) else {
        return Err(TlsError::NoCertificate {
            path: PathBuf::new(),
        });
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    if alpn {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(Terminator {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificates: loaded.into_iter().map(|l| l.info).collect(),
    })
}

/// The TLS session of a client connection (HTTP or TCP mode), or `None`, logged, if its
/// handshake fails or takes longer than `within` (the frontend's `client_header_timeout`).
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    within: Duration,
    frontend: &str,
    peer: SocketAddr,
) -> Option<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(within, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(frontend, client = %peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(frontend, client = %peer, "TLS handshake timed out");
            None
        }
    }
}

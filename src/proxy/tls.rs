//! TLS termination for frontends with `tls = { cert, key }`: rustls with the `ring`
//! provider (no C toolchain beyond what Rust needs), ALPN offering h2 and http/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{Error as PemError, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a frontend's TLS cannot be set up: which file and what is wrong with it, or that
/// the pair is unusable. Start-up and reload refuse the configuration with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or is not PEM.
    #[error("{}: {source}", path.display())]
    Cert {
        path: PathBuf,
        #[source]
        source: PemError,
    },
    /// The certificate file is PEM but holds no certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file cannot be read, is not PEM, or holds no private key.
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: PemError,
    },
    /// rustls offers none of the protocol versions asked for.
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
    #[error("certificate and key do not match or are unusable: {0}")]
    Unusable(#[source] rustls::Error),
}

/// Builds the acceptor for a certificate chain and key in PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |source| TlsError::Cert {
        path: cert.to_path_buf(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Unusable)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

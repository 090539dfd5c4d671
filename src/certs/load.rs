//! Reading one certificate chain and its private key from PEM files, checked to belong
//! together, into what rustls serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{Error as PemError, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, sign::CertifiedKey};

use super::info::{CertInfo, InfoError};

/// Why a frontend's TLS cannot be set up: which file and what is wrong with it, or that
/// the pair is unusable. Start-up, reload and `fulcrum check` refuse the configuration with it.
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
    /// The certificate is not a readable X.509 certificate.
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: InfoError,
    },
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
    /// The key is of a kind rustls cannot sign with, or is not the certificate's.
    #[error("{} and {}: certificate and key do not match or are unusable: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// One certificate ready to serve, with what it says about itself.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads the chain in `cert` and the key in `key`, and checks that the key is the
/// certificate's (a mismatch would fail every handshake, so it fails here instead).
pub fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_error = |source| TlsError::Cert {
        path: cert.to_path_buf(),
        source,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };
    let info = CertInfo::of_der(leaf).map_err(|source| TlsError::Parse {
        path: cert.to_path_buf(),
        source,
    })?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(unusable)?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

//! How fulcrum connects to a backend's servers: `[backends.NAME.tls]` (TLS to servers) and
//! `send_proxy_protocol` (the README's "TLS to servers" and "Sending the PROXY protocol").
//!
//! The TLS files are read here too, into a rustls `ClientConfig`: `fulcrum check` then
//! finds an unreadable CA or a certificate that does not match its key, at its key, and
//! start and reload build the config the connections use with the same code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Which PROXY protocol header starts each connection to a server.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SendProxy {
    #[default]
    Off,
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// `[backends.NAME.tls]`: present means the servers are spoken to over TLS.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The CA certificates (PEM) that server certificates must chain to; none: the Mozilla
    /// roots built in (`webpki-roots`).
    pub ca_file: Option<PathBuf>,
    /// SNI and the name verified; empty: the host part of each server's address.
    #[serde(default)]
    pub server_name: String,
    /// `false` accepts any certificate (testing only; a WARN says so at every start and reload).
    #[serde(default = "yes")]
    pub verify: bool,
    /// With `client_key`: the certificate chain fulcrum presents (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// Why the TLS settings of a backend cannot be used; `key` names the key at fault.
#[derive(Debug)]
pub struct TlsSettingsError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for TlsSettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls.{}: {}", self.key, self.message)
    }
}

impl std::error::Error for TlsSettingsError {}

fn bad(key: &'static str, message: impl Into<String>) -> TlsSettingsError {
    TlsSettingsError {
        key,
        message: message.into(),
    }
}

impl UpstreamTls {
    /// The rustls client configuration these settings describe, with their files read
    /// (relative paths resolved by `resolve`). One per backend: its session cache is what
    /// lets reconnections resume their TLS sessions.
    pub fn client_config(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<ClientConfig, TlsSettingsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("verify", e.to_string()))?;
        let builder = if self.verify {
            builder.with_root_certificates(self.roots(&resolve)?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let mut config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(bad("client_cert", "needs client_key as well")),
            (None, Some(_)) => return Err(bad("client_key", "needs client_cert as well")),
            (Some(cert), Some(key)) => {
                let (cert, key) = (resolve(cert), resolve(key));
                let chain = read_certs(&cert).map_err(|m| bad("client_cert", m))?;
                let key = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|e| bad("client_key", format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("client_cert", format!("unusable with client_key: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn roots(
        &self,
        resolve: &impl Fn(&Path) -> PathBuf,
    ) -> Result<RootCertStore, TlsSettingsError> {
        let Some(ca) = &self.ca_file else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        let ca = resolve(ca);
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&ca).map_err(|m| bad("ca_file", m))? {
            roots
                .add(cert)
                .map_err(|e| bad("ca_file", format!("{}: {e}", ca.display())))?;
        }
        Ok(roots)
    }

    /// The name to send as SNI and to verify, for a server at `address` (`host:port`):
    /// `server_name` when set, else the host part (an IP address verifies against IP SANs).
    pub fn name_for(&self, address: &str) -> Option<ServerName<'static>> {
        let name = if self.server_name.is_empty() {
            host_part(address)
        } else {
            &self.server_name
        };
        ServerName::try_from(name.to_string()).ok()
    }
}

/// `host` of `host:port`, `[v6]:port` or a bare host.
fn host_part(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let failed = |e: rustls::pki_types::pem::Error| format!("cannot read {}: {e}", path.display());
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(failed)?
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// `verify = false`: any certificate is taken, its signatures still checked (so the
/// handshake is TLS, only unauthenticated).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The checks of `tls` (its files read and built as start-up would) and of its
/// `server_name`, each at its key.
pub(super) fn validate(
    p: &super::locate::KeyPath,
    b: &super::Backend,
    config: &super::Config,
    out: &mut Vec<(super::locate::KeyPath, String)>,
) {
    if b.protocol == super::UpstreamProtocol::H2 && b.send_proxy_protocol != SendProxy::Off {
        out.push((
            p.key("send_proxy_protocol"),
            "cannot be used with protocol = \"h2\": one HTTP/2 connection carries many \
             clients' requests, and a PROXY header names only one"
                .into(),
        ));
    }
    let Some(tls) = &b.tls else {
        return;
    };
    let tp = p.key("tls");
    if !tls.server_name.is_empty() && ServerName::try_from(tls.server_name.as_str()).is_err() {
        out.push((
            tp.key("server_name"),
            format!(
                "`{}` is neither a DNS name nor an IP address",
                tls.server_name
            ),
        ));
    }
    // One half of the client pair is reported even when another file fails first.
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => out.push((tp.key("client_cert"), "needs client_key as well".into())),
        (None, Some(_)) => out.push((tp.key("client_key"), "needs client_cert as well".into())),
        _ => {}
    }
    if let Err(e) = tls.client_config(|path| config.resolve_path(path))
        && !out.iter().any(|(k, _)| *k == tp.key(e.key))
    {
        out.push((tp.key(e.key), e.message));
    }
}

#[cfg(test)]
mod tests {
    use super::host_part;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_part("api.internal:443"), "api.internal");
        assert_eq!(host_part("10.0.0.1:8443"), "10.0.0.1");
        assert_eq!(host_part("[::1]:8443"), "::1");
        assert_eq!(host_part("example.com"), "example.com");
    }
}

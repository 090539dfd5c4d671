//! Choosing a frontend's certificate by the name the client asks for (SNI): an exact SAN
//! name first, then a wildcard one (`*.example.com` covers exactly one more label, as
//! browsers match it), else the first certificate, which also answers clients that send
//! no SNI at all.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::load::Loaded;

/// The certificates of one frontend, by name. Built once per start or reload; the
/// handshake only looks names up.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// The resolver for `certs`, in the order the file lists them; `None` when empty.
    /// When two certificates name the same host, the earlier one serves it.
    pub fn new(certs: &[Loaded]) -> Option<SniResolver> {
        let default = Arc::clone(&certs.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certs {
            for name in &c.info.names {
                let map = match name.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_string()),
                    None => exact.entry(name.clone()),
                };
                map.or_insert_with(|| Arc::clone(&c.key));
            }
        }
        Some(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `name` (the client's SNI), or the default.
    pub fn choose(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return k;
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(hello.server_name())))
    }
}

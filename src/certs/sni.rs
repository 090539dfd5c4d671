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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertInfo;
    use tokio_rustls::rustls::crypto::ring::default_provider;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A certificate for `names` (the names are what the resolver reads, from the SAN).
    fn loaded(names: &[&str]) -> Loaded {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let info = CertInfo::of_der(&der).unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let certified = CertifiedKey::from_der(vec![der], key, &default_provider()).unwrap();
        Loaded {
            key: Arc::new(certified),
            info,
        }
    }

    fn which(r: &SniResolver, name: Option<&str>, all: &[&Loaded]) -> usize {
        let k = r.choose(name);
        all.iter().position(|l| Arc::ptr_eq(&l.key, k)).unwrap()
    }

    #[test]
    fn exact_then_wildcard_then_the_first() {
        let a = loaded(&["a.example", "shared.example"]);
        let b = loaded(&["*.b.example", "shared.example", "b.example"]);
        let r = SniResolver::new(&[a.clone(), b.clone()]).unwrap();
        let all = [&a, &b];
        assert_eq!(a.info.names, ["a.example", "shared.example"]);
        assert_eq!(which(&r, Some("a.example"), &all), 0);
        assert_eq!(which(&r, Some("A.Example."), &all), 0);
        assert_eq!(which(&r, Some("x.b.example"), &all), 1);
        assert_eq!(which(&r, Some("b.example"), &all), 1);
        assert_eq!(which(&r, Some("y.x.b.example"), &all), 0);
        // Named by both: the earlier certificate serves it.
        assert_eq!(which(&r, Some("shared.example"), &all), 0);
        assert_eq!(which(&r, Some("nobody.example"), &all), 0);
        assert_eq!(which(&r, None, &all), 0);
    }

    #[test]
    fn no_certificate_no_resolver() {
        assert!(SniResolver::new(&[]).is_none());
    }
}

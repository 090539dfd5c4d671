//! A frontend's `tls` table and its checks: one form or the other (`cert` + `key`, or a non-empty
//! `certs`), and every file readable, a certificate, and the key's. The files are read
//! here so that `fulcrum check` refuses what a start or reload would refuse.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::locate::KeyPath;
use super::{Config, Frontend};

/// TLS termination files: one certificate (`cert`, `key`) or several chosen by SNI
/// (`certs`), never both; validation says which is missing or doubled.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Several certificates; each serves the DNS names of its SAN, the first is the default.
    pub certs: Option<Vec<CertPair>>,
}

/// One certificate chain and its key, in PEM files.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    /// The certificate/key pairs as written, the default first; empty when the table is
    /// incomplete (which validation reports).
    pub fn pairs(&self) -> Vec<(PathBuf, PathBuf)> {
        match (&self.cert, &self.key, &self.certs) {
            (Some(c), Some(k), None) => vec![(c.clone(), k.clone())],
            (None, None, Some(all)) => all
                .iter()
                .map(|p| (p.cert.clone(), p.key.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Problems with `f.tls`, each at the key it concerns (`p` is the frontend's path).
pub(super) fn check(config: &Config, f: &Frontend, p: &KeyPath, out: &mut Vec<(KeyPath, String)>) {
    let Some(tls) = &f.tls else {
        return;
    };
    let at = p.key("tls");
    let mut pairs = Vec::new();
    match (&tls.cert, &tls.key, &tls.certs) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            let key = if tls.cert.is_some() { "cert" } else { "key" };
            out.push((
                at.key(key),
                "give either `cert` and `key` (one certificate) or `certs` (several), not both"
                    .into(),
            ));
        }
        (None, None, Some(all)) if all.is_empty() => {
            out.push((
                at.key("certs"),
                "must list at least one { cert, key }".into(),
            ));
        }
        (None, None, Some(all)) => {
            for (i, pair) in all.iter().enumerate() {
                let p = at.key("certs").index(i);
                pairs.push((p.key("cert"), p.key("key"), &pair.cert, &pair.key));
            }
        }
        (Some(c), Some(k), None) => pairs.push((at.key("cert"), at.key("key"), c, k)),
        (None, Some(_), None) => out.push((at.key("key"), "`cert` is missing".into())),
        (Some(_), None, None) => out.push((at.key("cert"), "`key` is missing".into())),
        (None, None, None) => out.push((
            at,
            "needs `cert` and `key`, or `certs = [{ cert, key }, ...]`".into(),
        )),
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    for (cert_at, key_at, cert, key) in pairs {
        let (cert, key) = (config.resolve_path(cert), config.resolve_path(key));
        let mut readable = true;
        for (at, path) in [(&cert_at, &cert), (&key_at, &key)] {
            if !path.is_file() {
                out.push((at.clone(), format!("cannot read {}", path.display())));
                readable = false;
            }
        }
        if !readable {
            continue;
        }
        if let Err(e) = crate::certs::load_pair(&cert, &key, &provider) {
            let at = match e {
                crate::certs::TlsError::Key { .. } | crate::certs::TlsError::Unusable { .. } => {
                    key_at
                }
                _ => cert_at,
            };
            out.push((at, e.to_string()));
        }
    }
}

//! What a certificate says about itself that an operator must see: the DNS names it serves
//! (its SAN, or its common name when it has none) and when it stops being valid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A served certificate's names and expiry, for status, metrics, events and `fulcrum check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// DNS names from the SAN (wildcards as written, e.g. `*.example.com`), lowercased.
    pub names: Vec<String>,
    /// The certificate's `notAfter`.
    #[serde(serialize_with = "rfc3339")]
    pub not_after: SystemTime,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

/// Why a certificate's names or expiry cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the certificate cannot be parsed: {0}")]
pub struct InfoError(String);

impl CertInfo {
    /// Reads the names and expiry of a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<CertInfo, InfoError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| InfoError(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    names.push(n.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            // No SAN DNS names: the common name is what clients of old matched.
            for cn in cert.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.push(s.to_ascii_lowercase());
                }
            }
        }
        let secs = cert.validity().not_after.timestamp();
        let not_after = match u64::try_from(secs) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH,
        };
        Ok(CertInfo { names, not_after })
    }

    /// `not_after` in seconds since the Unix epoch (the metric's value).
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The names joined with "," (the metric's `names` label, event details).
    pub fn joined_names(&self) -> String {
        self.names.join(",")
    }

    /// `not_after` as RFC 3339 (seconds).
    pub fn not_after_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.not_after).to_string()
    }
}

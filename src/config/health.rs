//! `[backends.NAME.health]`: how active checks talk to a server, and what a passing answer
//! looks like (the README's "Health checks" reference).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Dur, StatusRange};

/// How a health check talks to a server.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    #[default]
    Http,
    Tcp,
}

/// Active health checks.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    pub kind: HealthKind,
    pub path: String,
    pub expect_status: StatusRange,
    pub interval: Dur,
    pub timeout: Dur,
    pub rise: u32,
    pub fall: u32,
    /// The Host header of HTTP checks; empty: the server's address as written. Apps behind
    /// virtual hosts answer their health path only for their own name.
    pub host: String,
    /// Extra request headers (a token, a user agent the app's logs filter out).
    pub headers: BTreeMap<String, String>,
    /// Non-empty: the response body must contain this text (a status page that says
    /// "degraded" with a 200 fails).
    pub expect_body: String,
    /// Non-zero: the check goes to this port of the server's host (an app's separate
    /// management port). `u32` so that a value over 65535 is a located error, not a parse error.
    pub port: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: HealthKind::Http,
            path: "/healthz".into(),
            expect_status: StatusRange::default(),
            interval: Dur::secs(2),
            timeout: Dur::secs(1),
            rise: 2,
            fall: 3,
            host: String::new(),
            headers: BTreeMap::new(),
            expect_body: String::new(),
            port: 0,
        }
    }
}

/// Whether `name` is an HTTP token (RFC 9110 `tchar`s), the only shape a header name may have.
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` may go into a header as written: visible characters, spaces and tabs.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// The checks of the keys above that serde cannot make, each at its key.
pub(super) fn validate(
    hp: &super::locate::KeyPath,
    h: &Health,
    out: &mut Vec<(super::locate::KeyPath, String)>,
) {
    if h.port > u32::from(u16::MAX) {
        out.push((
            hp.key("port"),
            format!("{} is not a port (0 to 65535)", h.port),
        ));
    }
    if !is_header_value(&h.host) {
        out.push((hp.key("host"), "not a valid Host header value".into()));
    }
    for (name, value) in &h.headers {
        if !is_token(name) {
            out.push((
                hp.key("headers"),
                format!("`{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
            ));
        } else if !is_header_value(value) {
            out.push((
                hp.key("headers").key(name),
                "not a valid header value (no control characters or line breaks)".into(),
            ));
        }
    }
}

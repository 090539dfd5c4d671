//! The requests the simulator sends: each carries its key where the backend's `hash_key`
//! reads it, so the hash algorithms see simulated traffic as they would see real traffic.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Uri};

use crate::config::HashKey;

/// The client address of key `k` (10.0.0.0/8 and beyond: distinct for every key).
pub(super) fn key_ip(k: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32).wrapping_add(k).to_be_bytes())
}

/// The URI and headers of a request carrying key `k` in the form `hash_key` reads.
pub(super) fn key_request(hash_key: &HashKey, k: u32) -> (Uri, HeaderMap) {
    let mut headers = HeaderMap::new();
    let value = || HeaderValue::from(k);
    let uri = match hash_key {
        HashKey::SourceIp => Uri::from_static("/"),
        HashKey::Path => Uri::try_from(format!("/k/{k}")).unwrap_or_default(),
        HashKey::Header(name) => {
            headers.insert(name.clone(), value());
            Uri::from_static("/")
        }
        HashKey::Cookie(name) => {
            if let Ok(v) = HeaderValue::try_from(format!("{name}={k}")) {
                headers.insert(http::header::COOKIE, v);
            }
            Uri::from_static("/")
        }
        HashKey::Query(name) => Uri::try_from(format!("/?{name}={k}")).unwrap_or_default(),
    };
    (uri, headers)
}

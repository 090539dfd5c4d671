//! The request key the hash algorithms hash (`hash_key`), and the one hash function every
//! hashed structure uses.
//!
//! The hash is XXH3 with fixed seeds: stable across restarts, processes and machines, so
//! two fulcrum instances (or one before and after a restart) send a key to the same server.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Fields, Request};
use crate::config::HashKey;

/// The seed for request keys; ring points and cookies use others so they never correlate.
const KEY_SEED: u64 = 0x6675_6c63_7275_6d31;

/// A stable 64-bit hash of `bytes` under `seed`.
pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(bytes, seed)
}

/// The hash of the request's key, or `None` when the request does not carry it (the
/// algorithm then falls back to round-robin).
pub fn request_key(req: &Request<'_>, key: &HashKey) -> Option<u64> {
    let h = |b: &[u8]| Some(hash(b, KEY_SEED));
    match key {
        HashKey::SourceIp => match req.client {
            IpAddr::V4(v4) => h(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => h(&v4.octets()),
                None => h(&v6.octets()),
            },
        },
        HashKey::Path => h(req.path()?),
        HashKey::Header(name) => req.fields()?.get(name.as_str()).and_then(h),
        HashKey::Cookie(name) => cookie(&req.fields()?, name).and_then(|v| h(v.as_bytes())),
        HashKey::Query(name) => query(req.query()?, name).and_then(|v| h(v.as_bytes())),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one found).
pub fn cookie<'a>(fields: &Fields<'a>, name: &str) -> Option<&'a str> {
    fields.find_map("cookie", |v| {
        std::str::from_utf8(v)
            .ok()?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().trim_matches('"'))
    })
}

/// The raw (not percent-decoded) value of query parameter `name`; `a` alone counts as empty.
fn query<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::with_key_request;

    /// A TCP connection carries no HTTP request: keys read from one are absent (the
    /// algorithm falls back to round-robin), and only the client address is a key.
    #[test]
    fn a_connection_has_only_its_client_as_key() {
        let conn = Request::connection(IpAddr::from([10, 0, 0, 1]));
        assert!(request_key(&conn, &HashKey::SourceIp).is_some());
        for key in [
            HashKey::Path,
            HashKey::Query("id".into()),
            HashKey::Cookie("s".into()),
            HashKey::Header(http::header::HOST),
        ] {
            assert_eq!(request_key(&conn, &key), None, "{key:?}");
        }
    }

    fn key_of(client: [u8; 4], uri: &str, headers: &[(&str, &str)], key: &str) -> Option<u64> {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let key = HashKey::parse(key).unwrap();
        with_key_request(IpAddr::from(client), uri, &map, |r| request_key(r, &key))
    }

    #[test]
    fn every_key_form_extracts() {
        let ip = key_of([10, 0, 0, 1], "/", &[], "source_ip");
        assert_eq!(ip, key_of([10, 0, 0, 1], "/x", &[], "source_ip"));
        assert_ne!(ip, key_of([10, 0, 0, 2], "/", &[], "source_ip"));
        assert_eq!(
            key_of([1; 4], "/a?x=1", &[], "path"),
            key_of([2; 4], "/a?y=2", &[], "path")
        );
        let h = key_of([1; 4], "/", &[("x-user", "ann")], "header:x-user");
        assert!(h.is_some());
        assert_eq!(key_of([1; 4], "/", &[], "header:x-user"), None);
        let c = key_of([1; 4], "/", &[("cookie", "a=1; user=ann")], "cookie:user");
        assert_eq!(
            c,
            key_of([9; 4], "/", &[("cookie", "user=ann")], "cookie:user")
        );
        assert_eq!(
            key_of([1; 4], "/", &[("cookie", "a=1")], "cookie:user"),
            None
        );
        let q = key_of([1; 4], "/p?a=1&user=ann", &[], "query:user");
        assert_eq!(q, key_of([2; 4], "/q?user=ann", &[], "query:user"));
        assert_eq!(key_of([1; 4], "/p?a=1", &[], "query:user"), None);
        assert_eq!(key_of([1; 4], "/p", &[], "query:user"), None);
    }

    #[test]
    fn hash_is_stable_across_runs() {
        // A fixed value: if this changes, every deployed ring and cookie would move.
        assert_eq!(hash(b"fulcrum", 0), 0x01ea_acf8_57f2_c255);
        assert_ne!(hash(b"fulcrum", 0), hash(b"fulcrum", 1));
    }
}

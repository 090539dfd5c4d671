//! Sticky cookies (`sticky_cookie`): the response names its server in a cookie, and later
//! requests carrying it go back to that server while it is eligible.
//!
//! The cookie holds an opaque id, a keyed hash of backend and server name: stable across
//! restarts and across several fulcrum instances, and it never reveals an address. When the
//! named server is gone, down or full, the algorithm chooses and the cookie is replaced.

use http::HeaderMap;
use http::header::{HeaderValue, SET_COOKIE};

use super::key;
use super::{Candidate, Fields};
use crate::config;
use crate::pool::Server;

/// The key of the cookie hash. Fixed so every instance agrees; it only has to keep ids
/// opaque, not secret: a client that forges one can only choose among eligible servers.
const COOKIE_SEED: u64 = 0x7374_6963_6b79_0001;

/// The cookie value that names `server`: 16 hex digits.
pub fn server_id(server: &Server) -> String {
    let mut name = Vec::with_capacity(server.backend.len() + server.name.len() + 1);
    name.extend_from_slice(server.backend.as_bytes());
    name.push(b'/');
    name.extend_from_slice(server.name.as_bytes());
    format!("{:016x}", key::hash(&name, COOKIE_SEED))
}

/// Cookie value → candidate, built with the selection structure.
#[derive(Debug)]
pub struct Index {
    cookie: String,
    /// (id, candidate index), sorted by id.
    ids: Vec<(u64, u32)>,
}

impl Index {
    /// The index of `candidates` for cookie `cookie`.
    pub fn build(cookie: &str, candidates: &[Candidate]) -> Self {
        let mut ids: Vec<(u64, u32)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((parse_id(&server_id(&c.server))?, i as u32)))
            .collect();
        ids.sort_unstable();
        Index {
            cookie: cookie.to_string(),
            ids,
        }
    }

    /// The candidate the request's cookie names, if it is in the candidate set.
    pub fn lookup(&self, fields: &Fields<'_>) -> Option<usize> {
        let id = parse_id(key::cookie(fields, &self.cookie)?)?;
        let at = self.ids.binary_search_by_key(&id, |&(k, _)| k).ok()?;
        Some(self.ids[at].1 as usize)
    }
}

fn parse_id(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The sticky cookie value the client sent, when the backend uses one: read before the
/// request is forwarded, compared after with the server that answered.
pub fn requested(settings: &config::Backend, fields: &Fields<'_>) -> Option<String> {
    if settings.sticky_cookie.is_empty() {
        return None;
    }
    Some(
        key::cookie(fields, &settings.sticky_cookie)
            .unwrap_or("")
            .to_string(),
    )
}

/// The `Set-Cookie` value naming `server`, unless the client already holds it.
/// `requested` is what [`requested`] returned for the request (`None`: not sticky).
pub fn cookie_for(
    settings: &config::Backend,
    requested: Option<&str>,
    server: &Server,
) -> Option<String> {
    let requested = requested?;
    let id = server_id(server);
    (requested != id).then(|| {
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Lax",
            settings.sticky_cookie
        )
    })
}

/// Adds `Set-Cookie` naming `server` to a response, unless the client already holds it.
pub fn set_cookie(
    settings: &config::Backend,
    requested: Option<&str>,
    server: &Server,
    headers: &mut HeaderMap,
) {
    // The cookie name was validated as a token by the configuration; a value that still
    // does not fit a header is dropped rather than failing the response.
    if let Some(Ok(v)) = cookie_for(settings, requested, server).map(|c| HeaderValue::from_str(&c))
    {
        headers.append(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Selector;
    use crate::balance::test_support::{candidates, settings};
    use std::net::IpAddr;

    #[test]
    fn ids_are_opaque_stable_and_distinct() {
        let c = candidates(&[1, 1]);
        let a = server_id(&c[0].server);
        assert_eq!(a.len(), 16);
        assert!(!a.contains("127.0.0.1"));
        assert_eq!(
            a,
            server_id(&candidates(&[5])[0].server),
            "same backend and name"
        );
        assert_ne!(a, server_id(&c[1].server));
    }

    #[test]
    fn the_cookie_wins_while_eligible_then_is_replaced() {
        let c = candidates(&[1, 1, 1]);
        let s = settings("round_robin", "sticky_cookie = \"srv\"");
        let sel = Selector::build(&s, &c);
        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; srv={}", server_id(&c[2].server));
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        let uri: http::Uri = "/".parse().unwrap();
        let req = super::super::Request::http(IpAddr::from([1, 2, 3, 4]), &uri, &headers);
        for _ in 0..6 {
            assert_eq!(sel.pick(&req, &c, &mut |_| true), Some(2));
        }
        // s2 full or out: the algorithm chooses, and the response replaces the cookie.
        let got = sel.pick(&req, &c, &mut |c| &*c.server.name != "s2");
        assert!(matches!(got, Some(0 | 1)));
        let req_value = requested(&s, &Fields::Map(&headers));
        let mut out = HeaderMap::new();
        set_cookie(&s, req_value.as_deref(), &c[got.unwrap()].server, &mut out);
        let set = out.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(set.starts_with(&format!("srv={}", server_id(&c[got.unwrap()].server))));
        // Same server as the cookie: nothing to set.
        let mut out = HeaderMap::new();
        set_cookie(&s, req_value.as_deref(), &c[2].server, &mut out);
        assert!(out.is_empty());
    }
}

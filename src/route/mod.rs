//! Routes compiled once per configuration: which target (a backend, a redirect, or none)
//! an HTTP request goes to, chosen by host, path, method and headers, first match wins.
//!
//! Hosts are looked up, not scanned: exact names in a hash map, `*.` wildcards by each
//! suffix of the request's host, and routes without a host in a list of their own. Each
//! of those groups keeps its routes in configuration order, so the first route of each
//! group that matches is that group's answer and the smallest index among them wins.
//! A reload builds a new table and swaps it whole (see `proxy::frontend`).

mod path;
mod rules;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use path::{normalize as normalize_path, strip as strip_path};
pub use rules::{Fill, NO_RULES, Rules, Template};

use crate::config;
use crate::metrics::Tally;
use crate::pool::Backend;

/// Where a request goes.
#[derive(Debug)]
pub enum Action {
    /// To this backend; `strip`: the prefix removed from the path first.
    Forward {
        backend: Arc<Backend>,
        strip: Option<Box<str>>,
    },
    /// Answered with a redirect to the filled-in target.
    Redirect { to: Template, status: u16 },
    /// No route matched and the frontend has no default backend: 404 `no_route`.
    NoRoute,
}

/// A route's decision and what goes with it.
#[derive(Debug)]
pub struct Target {
    /// The route's name for logs, status and metrics; `-` for the frontend's default.
    pub name: Arc<str>,
    pub action: Action,
    /// The frontend's header rules, then the route's.
    pub request: Rules,
    pub response: Rules,
    /// Requests by frontend and status (`fulcrum_route_requests_total`); kept across
    /// reloads for a route of the same name.
    pub counts: Arc<Tally>,
}

/// What a route asks of a request besides its host.
#[derive(Debug)]
struct Matcher {
    path: PathMatch,
    methods: Box<[Box<str>]>,
    /// Lower-case names, exact values.
    headers: Box<[(Box<str>, Box<str>)]>,
}

#[derive(Debug)]
enum PathMatch {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
}

/// The request as routes see it.
#[allow(missing_debug_implementations)]
pub struct Request<'a, H> {
    /// Lower-case, without port or trailing dot (see [`normalize_host`]).
    pub host: &'a str,
    /// Decoded and normalized (see [`normalize_path`]).
    pub path: &'a str,
    pub method: &'a [u8],
    pub headers: &'a H,
}

/// Header lookups for `headers` conditions, from either an HTTP/1 head or a header map.
pub trait HeaderLookup {
    /// Whether some line named `name` (lower-case) has exactly `value`.
    fn has(&self, name: &str, value: &str) -> bool;
}

impl HeaderLookup for http::HeaderMap {
    fn has(&self, name: &str, value: &str) -> bool {
        self.get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

/// One frontend's compiled routes.
#[derive(Debug)]
pub struct Routing {
    targets: Box<[Target]>,
    matchers: Box<[Matcher]>,
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, Box<[u32]>>,
    any_host: Box<[u32]>,
    /// Where an unmatched request goes.
    fallback: Target,
    /// Whether any route exists: without routes, every request takes `fallback` at once.
    routed: bool,
}

/// Why a routing table could not be built (a backend that vanished between validation and
/// build: validation refuses it first, so this is a guard, not a path users see).
#[derive(Debug, thiserror::Error)]
#[error("route `{route}` names backend `{backend}`, which is not configured")]
pub struct UnknownBackend {
    pub route: String,
    pub backend: String,
}

impl Routing {
    /// Compiles `fe`'s routes against the running `backends`; counters of routes named as
    /// before are carried over from `previous`.
    pub fn build(
        fe: &config::Frontend,
        backends: &BTreeMap<String, Arc<Backend>>,
        previous: Option<&Routing>,
    ) -> Result<Routing, UnknownBackend> {
        let counts = |name: &str| {
            previous
                .and_then(|p| p.all().find(|t| &*t.name == name))
                .map_or_else(|| Arc::new(Tally::default()), |t| Arc::clone(&t.counts))
        };
        let backend = |route: &str, name: &str| {
            backends.get(name).cloned().ok_or_else(|| UnknownBackend {
                route: route.into(),
                backend: name.into(),
            })
        };
        let mut targets = Vec::with_capacity(fe.routes.len());
        let mut matchers = Vec::with_capacity(fe.routes.len());
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, r) in fe.routes.iter().enumerate() {
            let name = config::route_name(&fe.name, i, r);
            let action = match (&r.backend, &r.redirect) {
                (Some(b), _) => Action::Forward {
                    backend: backend(&name, b)?,
                    strip: r
                        .strip_prefix
                        .then(|| r.path_prefix.as_deref().map(normalized_prefix))
                        .flatten(),
                },
                (None, Some(to)) => Action::Redirect {
                    to: Template::new(to),
                    status: r.redirect_status,
                },
                (None, None) => Action::NoRoute,
            };
            targets.push(Target {
                counts: counts(&name),
                name: name.into(),
                action,
                request: Rules::compile(&fe.request_headers, &r.request_headers),
                response: Rules::compile(&fe.response_headers, &r.response_headers),
            });
            matchers.push(Matcher {
                path: match (&r.path, &r.path_prefix) {
                    (Some(p), _) => PathMatch::Exact(normalized_prefix(p)),
                    (None, Some(p)) => PathMatch::Prefix(normalized_prefix(p)),
                    (None, None) => PathMatch::Any,
                },
                methods: r.methods.iter().map(|m| m.as_str().into()).collect(),
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase().into(), v.as_str().into()))
                    .collect(),
            });
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if r.host.is_empty() {
                any_host.push(i);
            }
            for h in &r.host {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                let (map, key) = match h.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest.to_string()),
                    None => (&mut exact, h),
                };
                let list = map.entry(key.into()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let fallback_action = match &fe.backend {
            Some(b) => Action::Forward {
                backend: backend("-", b)?,
                strip: None,
            },
            None => Action::NoRoute,
        };
        let fallback = Target {
            counts: counts("-"),
            name: "-".into(),
            action: fallback_action,
            request: Rules::compile(&fe.request_headers, &config::HeaderRules::default()),
            response: Rules::compile(&fe.response_headers, &config::HeaderRules::default()),
        };
        let boxed = |m: HashMap<Box<str>, Vec<u32>>| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect()
        };
        Ok(Routing {
            routed: !targets.is_empty(),
            targets: targets.into(),
            matchers: matchers.into(),
            exact: boxed(exact),
            wildcard: boxed(wildcard),
            any_host: any_host.into(),
            fallback,
        })
    }

    /// Every target, routes in order then the fallback.
    pub fn all(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().chain(std::iter::once(&self.fallback))
    }

    /// The frontend's default target (no route matched).
    pub fn fallback(&self) -> &Target {
        &self.fallback
    }

    /// Whether the frontend has routes (without, [`Routing::select`] is the fallback).
    pub fn is_routed(&self) -> bool {
        self.routed
    }

    /// The first route `req` matches, or the fallback.
    pub fn select<H: HeaderLookup>(&self, req: &Request<'_, H>) -> &Target {
        if !self.routed {
            return &self.fallback;
        }
        let mut best = u32::MAX;
        if let Some(list) = self.exact.get(req.host) {
            best = best.min(self.first_match(list, req, best));
        }
        // `*.example.org` matches one or more labels before `example.org`.
        let mut rest = req.host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(list) = self.wildcard.get(rest) {
                best = best.min(self.first_match(list, req, best));
            }
        }
        best = best.min(self.first_match(&self.any_host, req, best));
        self.targets.get(best as usize).unwrap_or(&self.fallback)
    }

    /// The first index of `list` (ascending) below `below` whose route matches.
    fn first_match<H: HeaderLookup>(&self, list: &[u32], req: &Request<'_, H>, below: u32) -> u32 {
        for &i in list {
            if i >= below {
                break;
            }
            if self
                .matchers
                .get(i as usize)
                .is_some_and(|m| m.matches(req))
            {
                return i;
            }
        }
        u32::MAX
    }
}

impl Matcher {
    fn matches<H: HeaderLookup>(&self, req: &Request<'_, H>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => req.path == &**p,
            PathMatch::Prefix(p) => req.path.starts_with(&**p),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.iter().any(|m| m.as_bytes() == req.method))
            && self.headers.iter().all(|(n, v)| req.headers.has(n, v))
    }
}

/// A configured path as requests' paths are compared: normalized the same way.
fn normalized_prefix(p: &str) -> Box<str> {
    normalize_path(p.as_bytes()).into_owned().into()
}

/// The host a request names, as routes compare it: lower-case, the port and a trailing dot
/// removed. Borrowed when it is already so.
pub fn normalize_host(raw: &[u8]) -> Cow<'_, str> {
    let raw = raw.trim_ascii();
    let host = if raw.starts_with(b"[") {
        // An IPv6 literal: up to the closing bracket.
        raw.iter()
            .position(|&b| b == b']')
            .and_then(|i| raw.get(..=i))
            .unwrap_or(raw)
    } else {
        raw.iter()
            .rposition(|&b| b == b':')
            .and_then(|i| raw.get(..i))
            .unwrap_or(raw)
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    match std::str::from_utf8(host) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
        Ok(s) => Cow::Owned(s.to_ascii_lowercase()),
        Err(_) => Cow::Owned(String::from_utf8_lossy(host).to_ascii_lowercase()),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

//! Routes and header rules of an HTTP frontend (`[[frontends.routes]]`,
//! `request_headers`, `response_headers`): their schema and the checks serde cannot make.
//! The compiled form the request path uses is `crate::route`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer};

use super::health::{is_header_value, is_token};
use super::locate::KeyPath;
use super::{Config, Frontend};

/// Headers changed on their way through: `set` replaces every line of a name, `add` appends
/// one, `remove` drops every line of a name. Names are case-insensitive.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// One route: what a request must look like, and where it goes (or the redirect it gets).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    /// Exact names and `*.` wildcards; one string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub host: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub redirect: Option<String>,
    #[serde(default = "default_redirect_status")]
    pub redirect_status: u16,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub request_headers: HeaderRules,
    #[serde(default)]
    pub response_headers: HeaderRules,
}

fn default_redirect_status() -> u16 {
    308
}

/// The statuses a redirect may answer with.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The placeholders a redirect target may use.
pub const REDIRECT_PLACEHOLDERS: [&str; 3] = ["host", "path", "path_and_query"];

/// The placeholders a header rule's value may use.
pub const RULE_PLACEHOLDERS: [&str; 3] = ["client_ip", "host", "request_id"];

/// Headers whose lines fulcrum writes itself (framing, the hop, `Host`): a rule that set
/// them would break the message or be overwritten, so it is refused.
const MANAGED: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "host",
];

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The name of route `i` (0-based) of `frontend`: its own, or `FRONTEND#N` (1-based).
pub fn route_name(frontend: &str, i: usize, route: &Route) -> String {
    match &route.name {
        Some(n) => n.clone(),
        None => format!("{frontend}#{}", i + 1),
    }
}

type Problems = Vec<(KeyPath, String)>;

/// Checks the routes and header rules of frontend `i`.
pub fn validate(config: &Config, i: usize, f: &Frontend, out: &mut Problems) {
    let p = KeyPath::root("frontends").index(i);
    match &f.backend {
        Some(b) if !config.backends.contains_key(b) => {
            out.push((p.key("backend"), format!("no backend named `{b}`")));
        }
        None if f.routes.is_empty() || f.mode == super::Mode::Tcp => {
            out.push((
                p.clone(),
                "needs a `backend` (or, in mode = \"http\", `routes`)".into(),
            ));
        }
        _ => {}
    }
    rules(&p.key("request_headers"), &f.request_headers, out);
    rules(&p.key("response_headers"), &f.response_headers, out);
    let mut names = HashSet::new();
    for (j, r) in f.routes.iter().enumerate() {
        let rp = p.key("routes").index(j);
        let name = route_name(&f.name, j, r);
        if name.is_empty() {
            out.push((rp.key("name"), "must not be empty".into()));
        } else if !names.insert(name.clone()) {
            out.push((
                rp.key("name"),
                format!("route `{name}` is defined twice in this frontend"),
            ));
        }
        route(config, &rp, r, out);
    }
}

fn route(config: &Config, p: &KeyPath, r: &Route, out: &mut Problems) {
    match (&r.backend, &r.redirect) {
        (Some(_), Some(_)) => out.push((
            p.key("redirect"),
            "a route either forwards to a `backend` or answers a `redirect`, not both".into(),
        )),
        (None, None) => out.push((
            p.clone(),
            "a route needs a `backend` or a `redirect`".into(),
        )),
        (Some(b), None) if !config.backends.contains_key(b) => {
            out.push((p.key("backend"), format!("no backend named `{b}`")));
        }
        (None, Some(target)) => {
            if let Err(why) = check_template(target, &REDIRECT_PLACEHOLDERS) {
                out.push((p.key("redirect"), why));
            }
            if r.strip_prefix {
                out.push((
                    p.key("strip_prefix"),
                    "has no effect on a redirect; use {path} in the target".into(),
                ));
            }
        }
        _ => {}
    }
    if !REDIRECT_STATUSES.contains(&r.redirect_status) {
        out.push((
            p.key("redirect_status"),
            format!(
                "{} is not a redirect status; use 301, 302, 303, 307 or 308",
                r.redirect_status
            ),
        ));
    }
    for (k, h) in r.host.iter().enumerate() {
        if let Err(why) = check_host_pattern(h) {
            out.push((p.key("host").index(k), why));
        }
    }
    if r.path.is_some() && r.path_prefix.is_some() {
        out.push((
            p.key("path"),
            "use either `path` (exact) or `path_prefix`, not both".into(),
        ));
    }
    for key in ["path", "path_prefix"] {
        let v = if key == "path" {
            &r.path
        } else {
            &r.path_prefix
        };
        if let Some(v) = v
            && (!v.starts_with('/') || v.contains(['?', '#']) || v.contains(char::is_whitespace))
        {
            out.push((
                p.key(key),
                format!("`{v}` is not a path: it starts with `/` and has no query or spaces"),
            ));
        }
    }
    if r.strip_prefix && r.path_prefix.is_none() {
        out.push((
            p.key("strip_prefix"),
            "needs a `path_prefix` to strip".into(),
        ));
    }
    for (k, m) in r.methods.iter().enumerate() {
        if !is_token(m) {
            out.push((
                p.key("methods").index(k),
                format!("`{m}` is not a method name"),
            ));
        }
    }
    for (name, value) in &r.headers {
        if !is_token(name) {
            out.push((
                p.key("headers").key(name),
                format!("`{name}` is not a header name"),
            ));
        } else if !is_header_value(value) {
            out.push((
                p.key("headers").key(name),
                "a header value is visible text (no control characters)".into(),
            ));
        }
    }
    rules(&p.key("request_headers"), &r.request_headers, out);
    rules(&p.key("response_headers"), &r.response_headers, out);
}

fn rules(p: &KeyPath, rules: &HeaderRules, out: &mut Problems) {
    let named = |kind: &str, name: &str| p.key(kind).key(name);
    for (kind, map) in [("set", &rules.set), ("add", &rules.add)] {
        for (name, value) in map {
            if let Err(why) = check_rule_name(name) {
                out.push((named(kind, name), why));
            } else if !is_header_value(value) {
                out.push((
                    named(kind, name),
                    "a header value is visible text (no control characters)".into(),
                ));
            } else if let Err(why) = check_template(value, &RULE_PLACEHOLDERS) {
                out.push((named(kind, name), why));
            }
        }
    }
    for (k, name) in rules.remove.iter().enumerate() {
        if let Err(why) = check_rule_name(name) {
            out.push((p.key("remove").index(k), why));
        }
    }
}

fn check_rule_name(name: &str) -> Result<(), String> {
    if !is_token(name) {
        return Err(format!("`{name}` is not a header name"));
    }
    let lower = name.to_ascii_lowercase();
    if MANAGED.contains(&lower.as_str()) {
        return Err(format!(
            "`{name}` is written by fulcrum itself (framing, the connection or Host) and cannot be changed by a rule"
        ));
    }
    Ok(())
}

/// Checks that every `{...}` in `text` is one of `allowed` and braces are balanced.
fn check_template(text: &str, allowed: &[&str]) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{text}` has a `{{` without its `}}`"));
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            return Err(format!(
                "`{{{name}}}` is not a placeholder here; use {}",
                list.join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{text}` has a `}}` without its `{{`"));
    }
    Ok(())
}

/// A host pattern: a DNS name, or `*.` followed by one; no port, no other `*`.
fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{pattern}` is not a host pattern: {why}"));
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if name.is_empty() {
        return bad("empty");
    }
    if name.contains('*') {
        return bad("a wildcard is only `*.` at the start (e.g. `*.example.com`)");
    }
    if name.contains(':') {
        return bad("write the name without a port (ports are ignored when matching)");
    }
    let valid = name.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid {
        return bad("a name is labels of letters, digits and `-` joined by dots");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_accept_only_their_placeholders() {
        assert!(check_template("https://{host}{path_and_query}", &REDIRECT_PLACEHOLDERS).is_ok());
        assert!(check_template("https://{hots}/", &REDIRECT_PLACEHOLDERS).is_err());
        assert!(check_template("a{b", &RULE_PLACEHOLDERS).is_err());
        assert!(check_template("a}b", &RULE_PLACEHOLDERS).is_err());
        assert!(check_template("id={request_id}", &RULE_PLACEHOLDERS).is_ok());
    }

    #[test]
    fn host_patterns() {
        for ok in [
            "example.com",
            "*.example.org",
            "API.Example.com",
            "localhost",
        ] {
            assert!(check_host_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "a.*.com",
            "example.com:80",
            "exa mple.com",
            "*example.com",
        ] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }
}

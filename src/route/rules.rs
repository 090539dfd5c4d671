//! Header rules and redirect targets compiled once per configuration: a value is a list of
//! literal pieces and placeholders, so a request fills it in one pass without parsing.

use std::net::IpAddr;

use crate::config::HeaderRules;

/// One piece of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    ClientIp,
    Host,
    RequestId,
    Path,
    PathAndQuery,
}

/// A value with `{placeholders}`, validated by `fulcrum check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Box<[Part]>);

/// What placeholders are filled with for one request.
#[derive(Clone, Copy, Debug)]
pub struct Fill<'a> {
    pub client_ip: IpAddr,
    /// The request's host, lower-cased, without its port.
    pub host: &'a str,
    pub request_id: &'a [u8],
    /// The raw path (no query) and the raw origin-form target.
    pub path: &'a [u8],
    pub path_and_query: &'a [u8],
}

impl Template {
    /// Compiles `text`; an unknown placeholder stays literal (validation refused it already).
    pub fn new(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let part = match &after[..close] {
                "client_ip" => Part::ClientIp,
                "host" => Part::Host,
                "request_id" => Part::RequestId,
                "path" => Part::Path,
                "path_and_query" => Part::PathAndQuery,
                _ => {
                    parts.push(Part::Lit(rest[..open + close + 2].into()));
                    rest = &after[close + 1..];
                    continue;
                }
            };
            if open > 0 {
                parts.push(Part::Lit(rest[..open].into()));
            }
            parts.push(part);
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.into()));
        }
        Template(parts.into())
    }

    /// Appends the value for one request to `out`.
    pub fn write(&self, out: &mut Vec<u8>, fill: &Fill<'_>) {
        for p in self.0.iter() {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::ClientIp => {
                    use std::io::Write;
                    let _ = write!(out, "{}", fill.client_ip);
                }
                Part::Host => out.extend_from_slice(fill.host.as_bytes()),
                Part::RequestId => out.extend_from_slice(fill.request_id),
                Part::Path => out.extend_from_slice(fill.path),
                Part::PathAndQuery => out.extend_from_slice(fill.path_and_query),
            }
        }
    }

    /// The value for one request, as a string.
    pub fn render(&self, fill: &Fill<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(&mut v, fill);
        v
    }
}

/// Header rules as the request path applies them: the names whose lines are dropped, then
/// the lines written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Lower-case names whose incoming lines are dropped (`remove`, and what `set` replaces).
    pub drop: Box<[Box<str>]>,
    /// Lines written after the kept ones: name as configured, value.
    pub lines: Box<[(Box<str>, Template)]>,
}

/// Rules that change nothing, for answers no route's rules apply to.
pub static NO_RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(Rules::default);

impl Rules {
    /// Whether an incoming line named `name` is dropped.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
    }

    /// `first`'s rules, then `then`'s over them (a frontend's, then a route's): a name the
    /// second sets or removes loses the lines the first would have written.
    pub fn compile(first: &HeaderRules, then: &HeaderRules) -> Rules {
        let mut drop: Vec<Box<str>> = Vec::new();
        let mut lines: Vec<(Box<str>, Template)> = Vec::new();
        for r in [first, then] {
            let replaced: Vec<String> = r
                .remove
                .iter()
                .chain(r.set.keys())
                .map(|n| n.to_ascii_lowercase())
                .collect();
            lines.retain(|(n, _)| !replaced.iter().any(|d| n.eq_ignore_ascii_case(d)));
            for d in replaced {
                if !drop.iter().any(|x| **x == *d) {
                    drop.push(d.into());
                }
            }
            for (n, v) in r.set.iter().chain(r.add.iter()) {
                lines.push((n.as_str().into(), Template::new(v)));
            }
        }
        Rules {
            drop: drop.into(),
            lines: lines.into(),
        }
    }

    /// Writes the rules' lines as `Name: value\r\n` into a head being written.
    pub fn write_lines(&self, out: &mut Vec<u8>, fill: &Fill<'_>) {
        for (name, value) in self.lines.iter() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            value.write(out, fill);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The rules' lines for one request as header pairs, rendered now (for a head built
    /// after the request's buffer is lent elsewhere).
    pub fn render_pairs(&self, fill: &Fill<'_>) -> Vec<(http::HeaderName, http::HeaderValue)> {
        self.lines
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    http::HeaderValue::from_bytes(&value.render(fill)).ok()?,
                ))
            })
            .collect()
    }

    /// Applies the rules to a header map (HTTP/2 and fulcrum's own answers).
    pub fn apply(&self, headers: &mut http::HeaderMap, fill: &Fill<'_>) {
        for d in self.drop.iter() {
            headers.remove(d.as_ref());
        }
        for (n, v) in self.render_pairs(fill) {
            headers.append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn fill() -> Fill<'static> {
        Fill {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            host: "www.example.com",
            request_id: b"abc",
            path: b"/x",
            path_and_query: b"/x?y=1",
        }
    }

    #[test]
    fn templates_fill_their_placeholders() {
        let t = Template::new("https://{host}{path_and_query}");
        assert_eq!(t.render(&fill()), b"https://www.example.com/x?y=1");
        let t = Template::new("{client_ip}-{request_id}{path}");
        assert_eq!(t.render(&fill()), b"192.0.2.7-abc/x");
        assert_eq!(Template::new("plain").render(&fill()), b"plain");
    }

    #[test]
    fn route_rules_come_after_frontend_rules() {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let fe = HeaderRules {
            set: map(&[("X-Env", "prod")]),
            add: map(&[("x-a", "1")]),
            remove: vec!["x-debug".into()],
        };
        let route = HeaderRules {
            set: map(&[("x-a", "2")]),
            add: BTreeMap::new(),
            remove: vec!["X-Env".into()],
        };
        let r = Rules::compile(&fe, &route);
        let names: Vec<&str> = r.lines.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["x-a"]);
        assert_eq!(r.lines[0].1.render(&fill()), b"2");
        assert!(r.drops(b"X-DEBUG") && r.drops(b"x-env") && r.drops(b"x-a"));
    }
}

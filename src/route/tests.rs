use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::events::Bus;
use crate::pool::{Backend, Server};

fn backend(name: &str) -> Arc<Backend> {
    let text = "[[servers]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n";
    let cfg: config::Backend = toml::from_str(text).expect("test backend parses");
    let servers = vec![Arc::new(Server::new(
        name,
        &cfg.servers[0],
        ([127, 0, 0, 1], 1).into(),
    ))];
    Backend::new(name, cfg, servers, Bus::new(), crate::tasks::Tasks::new())
}

fn frontend(routes: &str) -> config::Frontend {
    let text = format!("name = \"www\"\nbind = \"127.0.0.1:0\"\n{routes}");
    toml::from_str(&text).expect("test frontend parses")
}

fn backends() -> BTreeMap<String, Arc<Backend>> {
    ["api", "www", "admin", "any"]
        .into_iter()
        .map(|n| (n.to_string(), backend(n)))
        .collect()
}

fn pick<'a>(r: &'a Routing, host: &str, path: &str, method: &str) -> &'a str {
    pick_with(r, host, path, method, &http::HeaderMap::new())
}

fn pick_with<'a>(
    r: &'a Routing,
    host: &str,
    path: &str,
    method: &str,
    headers: &http::HeaderMap,
) -> &'a str {
    let host = normalize_host(host.as_bytes());
    let path = normalize_path(path.as_bytes());
    let req = Request {
        host: &host,
        path: &path,
        method: method.as_bytes(),
        headers,
    };
    &r.select(&req).name
}

const SITE: &str = r#"
backend = "any"
[[routes]]
name = "api"
host = ["api.example.com", "*.example.org"]
path_prefix = "/v1/"
methods = ["GET", "POST"]
backend = "api"
[[routes]]
name = "admin"
host = "www.example.com"
path_prefix = "/admin"
headers = { "x-canary" = "1" }
backend = "admin"
[[routes]]
name = "www"
host = "www.example.com"
backend = "www"
[[routes]]
name = "health"
path = "/healthz"
backend = "any"
"#;

#[test]
fn first_match_wins_across_host_groups() {
    let r = Routing::build(&frontend(SITE), &backends(), None).expect("builds");
    assert_eq!(pick(&r, "api.example.com", "/v1/books", "GET"), "api");
    assert_eq!(pick(&r, "API.Example.COM:8443", "/v1/books", "POST"), "api");
    assert_eq!(pick(&r, "api.example.com", "/v1/books", "DELETE"), "-");
    assert_eq!(pick(&r, "a.b.example.org", "/v1/x", "GET"), "api");
    assert_eq!(pick(&r, "example.org", "/v1/x", "GET"), "-");
    assert_eq!(pick(&r, "www.example.com", "/admin/x", "GET"), "www");
    let mut canary = http::HeaderMap::new();
    canary.insert("x-canary", http::HeaderValue::from_static("1"));
    assert_eq!(
        pick_with(&r, "www.example.com", "/admin/x", "GET", &canary),
        "admin"
    );
    assert_eq!(pick(&r, "www.example.com.", "/healthz", "GET"), "www");
    assert_eq!(pick(&r, "other.example", "/healthz", "GET"), "health");
    assert_eq!(pick(&r, "other.example", "/healthz/", "GET"), "-");
}

#[test]
fn dot_segments_cannot_reach_past_a_prefix() {
    let r = Routing::build(&frontend(SITE), &backends(), None).expect("builds");
    // `/v1/../admin` is `/admin`: not the API's.
    assert_eq!(pick(&r, "api.example.com", "/v1/../admin", "GET"), "-");
    assert_eq!(
        pick(&r, "api.example.com", "/x/../v1/%62ooks", "GET"),
        "api"
    );
}

#[test]
fn without_routes_everything_takes_the_default() {
    let r = Routing::build(&frontend("backend = \"www\""), &backends(), None).expect("builds");
    assert!(!r.is_routed());
    assert_eq!(pick(&r, "x", "/", "GET"), "-");
    assert!(matches!(r.fallback().action, Action::Forward { .. }));
}

#[test]
fn counters_survive_a_rebuild() {
    let fe = frontend(SITE);
    let a = Routing::build(&fe, &backends(), None).expect("builds");
    a.targets[0].counts.count(&"www".into(), 200);
    let b = Routing::build(&fe, &backends(), Some(&a)).expect("builds");
    assert!(Arc::ptr_eq(&a.targets[0].counts, &b.targets[0].counts));
}

#[test]
fn hosts_are_normalized() {
    assert_eq!(normalize_host(b"Example.COM:80"), "example.com");
    assert_eq!(normalize_host(b"[::1]:8080"), "[::1]");
    assert_eq!(normalize_host(b"example.com."), "example.com");
    assert!(matches!(normalize_host(b"a.example"), Cow::Borrowed(_)));
}

//! Checks a parsed configuration as a whole: what serde cannot see (names that refer to each
//! other, addresses that must resolve, ranges that must make sense).

use std::collections::HashSet;
use std::net::SocketAddr;

use super::locate::KeyPath;
use super::{Config, MAX_RETRIES, MAX_WEIGHT};

/// The event names webhooks may ask for (the README's "Alerts" reference), plus `all`.
pub const EVENT_NAMES: [&str; 20] = [
    "server_down",
    "server_up",
    "server_ejected",
    "maintenance_started",
    "maintenance_ended",
    "maintenance_expired",
    "maintenance_reminder",
    "capacity_low",
    "capacity_restored",
    "backup_active",
    "backend_unavailable",
    "config_reloaded",
    "config_rejected",
    "discovery_changed",
    "overloaded",
    "instance_down",
    "instance_up",
    "cluster_unavailable",
    "cluster_restored",
    "certificate_expiring",
];

type Problems = Vec<(KeyPath, String)>;

/// The highest `max_concurrent_streams`: each stream may hold a server slot and buffers, so
/// one client connection must not be allowed to ask for thousands.
pub const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// Frontend keys that do nothing when `mode = "tcp"`: a TCP relay reads no request head,
/// keeps no keep-alive state and speaks no HTTP/2. `client_header_timeout` does act there
/// when the relay first reads a PROXY header or a TLS handshake, so it is refused only
/// without both.
const HTTP_ONLY_KEYS: [&str; 8] = [
    "client_header_timeout",
    "client_idle_timeout",
    "max_header_bytes",
    "max_concurrent_streams",
    "routes",
    "request_headers",
    "response_headers",
    "max_body_bytes",
];

/// Keys written in the file that have no effect in their frontend's mode. Whether a key was
/// written is a question about the text (serde's defaults hide it), so `written` answers it.
pub fn ineffective(config: &Config, written: impl Fn(&KeyPath) -> bool) -> Problems {
    let mut out = Problems::new();
    for (i, f) in config.frontends.iter().enumerate() {
        if f.mode != super::Mode::Tcp {
            continue;
        }
        let p = KeyPath::root("frontends").index(i);
        for key in HTTP_ONLY_KEYS {
            if key == "client_header_timeout" && (f.accept_proxy_protocol || f.tls.is_some()) {
                continue;
            }
            let path = p.key(key);
            if written(&path) {
                out.push((
                    path,
                    "has no effect on a mode = \"tcp\" frontend; remove it (a tcp \
                     connection's idle limit is tunnel_idle_timeout)"
                        .into(),
                ));
            }
        }
    }
    out
}

/// Every problem in `config`, each at the key it concerns.
pub fn validate(config: &Config) -> Problems {
    let mut out = Problems::new();
    global(config, &mut out);
    admin(config, &mut out);
    frontends(config, &mut out);
    backends(config, &mut out);
    addresses(config, &mut out);
    alerts(config, &mut out);
    cluster(config, &mut out);
    out
}

fn global(config: &Config, out: &mut Problems) {
    let g = &config.global;
    let p = KeyPath::root("global");
    if g.threads > 1024 {
        out.push((p.key("threads"), "at most 1024 worker threads".into()));
    }
    if g.max_connections == 0 {
        out.push((p.key("max_connections"), "must be at least 1".into()));
    }
    if let Some(m) = g.max_memory
        && m.get() < MIN_MAX_MEMORY
    {
        out.push((
            p.key("max_memory"),
            format!("{m} is less than any process needs: at least 1MiB (did you forget the unit?)"),
        ));
    }
}

/// The lowest `max_memory`: below it every request would be refused from the start.
const MIN_MAX_MEMORY: u64 = 1 << 20;

fn admin(config: &Config, out: &mut Problems) {
    let p = KeyPath::root("admin");
    let addr = config.admin.bind;
    if !addr.ip().is_loopback() && config.admin.token_file.is_none() {
        out.push((
            p.key("bind"),
            format!(
                "{addr} is not a loopback address: set admin.token_file so the admin API is not \
                 reachable with a token nobody chose"
            ),
        ));
    }
    if config.admin.max_maintenance.get().is_zero() {
        out.push((p.key("max_maintenance"), "must be longer than zero".into()));
    }
    for (i, host) in config.admin.allowed_hosts.iter().enumerate() {
        if let Err(why) = check_allowed_host(host) {
            out.push((p.key("allowed_hosts").index(i), why));
        }
    }
}

/// An `[admin] allowed_hosts` entry is what a `Host` header holds: a DNS name or an IP
/// address (IPv6 in brackets), optionally with `:port`; never a URL, a path or userinfo.
fn check_allowed_host(host: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{host}` is not a host name or address: {why}"));
    if host.is_empty() {
        return bad("empty");
    }
    if host.contains("://")
        || host.contains(['/', '@', '?', '#'])
        || host.contains(char::is_whitespace)
    {
        return bad("write only the host (and :port), as the Host header has it");
    }
    let authority: http::uri::Authority = match host.parse() {
        Ok(a) => a,
        Err(_) => return bad("not a valid authority"),
    };
    let name = authority.host();
    let literal = name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok();
    if name.starts_with('[')
        && name
            .trim_matches(['[', ']'])
            .parse::<std::net::Ipv6Addr>()
            .is_err()
    {
        return bad("not an IPv6 address in brackets");
    }
    if !literal {
        let valid = name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !valid {
            return bad("a DNS name is labels of letters, digits and `-` joined by dots");
        }
    }
    let after_brackets = host.rsplit_once(']').map_or(host, |(_, after)| after);
    if !host.starts_with('[') && host.matches(':').count() > 1 {
        return bad("write an IPv6 address in brackets");
    }
    if let Some((_, port)) = after_brackets.rsplit_once(':')
        && port.parse::<u16>().is_err()
    {
        return bad("the port must be a number from 0 to 65535");
    }
    Ok(())
}

fn frontends(config: &Config, out: &mut Problems) {
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    for (i, f) in config.frontends.iter().enumerate() {
        let p = KeyPath::root("frontends").index(i);
        if f.name.is_empty() {
            out.push((p.key("name"), "must not be empty".into()));
        } else if !names.insert(f.name.as_str()) {
            out.push((
                p.key("name"),
                format!("frontend `{}` is defined twice", f.name),
            ));
        }
        if !binds.insert(f.bind) {
            out.push((
                p.key("bind"),
                format!("{} is bound by another frontend", f.bind),
            ));
        }
        super::routes::validate(config, i, f, out);
        super::tls::check(config, f, &p, out);
        if f.client_header_timeout.get().is_zero() {
            out.push((
                p.key("client_header_timeout"),
                "must be longer than zero".into(),
            ));
        }
        if f.client_idle_timeout.get().is_zero() {
            out.push((
                p.key("client_idle_timeout"),
                "must be longer than zero".into(),
            ));
        }
        if !(1024..=1 << 20).contains(&f.max_header_bytes) {
            out.push((
                p.key("max_header_bytes"),
                "must be between 1024 and 1048576".into(),
            ));
        }
        if !(1..=MAX_CONCURRENT_STREAMS).contains(&f.max_concurrent_streams) {
            out.push((
                p.key("max_concurrent_streams"),
                format!("must be between 1 and {MAX_CONCURRENT_STREAMS}"),
            ));
        }
        if f.tunnel_idle_timeout.get().is_zero() {
            out.push((
                p.key("tunnel_idle_timeout"),
                "must be longer than zero".into(),
            ));
        }
    }
    if config.frontends.is_empty() {
        out.push((
            KeyPath::root("frontends"),
            "at least one [[frontends]] is needed".into(),
        ));
    }
}

fn backends(config: &Config, out: &mut Problems) {
    for (name, b) in &config.backends {
        let p = KeyPath::root("backends").key(name);
        let positive = [
            ("connect_timeout", b.connect_timeout),
            ("response_timeout", b.response_timeout),
            ("queue_timeout", b.queue_timeout),
        ];
        for (key, d) in positive {
            if d.get().is_zero() {
                out.push((p.key(key), "must be longer than zero".into()));
            }
        }
        if b.hash_balance_factor != 0.0
            && !(b.hash_balance_factor >= 1.0 && b.hash_balance_factor.is_finite())
        {
            out.push((
                p.key("hash_balance_factor"),
                "must be 0 (off) or at least 1.0 (e.g. 1.25)".into(),
            ));
        }
        if !b.sticky_cookie.is_empty() && !b.sticky_cookie.bytes().all(is_cookie_name_byte) {
            out.push((p.key("sticky_cookie"), "not a valid cookie name".into()));
        }
        if b.retries > MAX_RETRIES {
            out.push((p.key("retries"), format!("at most {MAX_RETRIES}")));
        }
        let h = &b.health;
        let hp = p.key("health");
        if h.interval.get().is_zero() {
            out.push((hp.key("interval"), "must be longer than zero".into()));
        }
        if h.timeout.get().is_zero() {
            out.push((hp.key("timeout"), "must be longer than zero".into()));
        } else if h.timeout > h.interval {
            out.push((
                hp.key("timeout"),
                format!("must not exceed interval ({})", h.interval),
            ));
        }
        if h.rise == 0 {
            out.push((hp.key("rise"), "must be at least 1".into()));
        }
        if h.fall == 0 {
            out.push((hp.key("fall"), "must be at least 1".into()));
        }
        if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
            out.push((
                hp.key("path"),
                format!("`{}` is not a path starting with /", h.path),
            ));
        }
        super::health::validate(&hp, h, out);
        super::upstream::validate(&p, b, config, out);
        let o = &b.outlier;
        let op = p.key("outlier");
        if o.max_ejection_percent > 100 {
            out.push((
                op.key("max_ejection_percent"),
                "must be between 0 and 100".into(),
            ));
        }
        if o.consecutive_failures > 0 && o.base_ejection.get().is_zero() {
            out.push((op.key("base_ejection"), "must be longer than zero".into()));
        }
        servers(&p, b, out);
    }
    if config.backends.is_empty() {
        out.push((
            KeyPath::root("backends"),
            "at least one backend is needed".into(),
        ));
    }
}

fn servers(p: &KeyPath, b: &super::Backend, out: &mut Problems) {
    let sp = p.key("servers");
    if let Some(d) = &b.discovery {
        super::discovery::validate(&p.key("discovery"), d, out);
    }
    // With `[discovery]` the servers may all come from DNS (discovered ones are primaries).
    if b.servers.is_empty() {
        if b.discovery.is_none() {
            out.push((
                sp.clone(),
                "a backend needs at least one server (or a [discovery] table)".into(),
            ));
        }
        return;
    }
    if b.discovery.is_none() && b.servers.iter().all(|s| s.backup) {
        out.push((
            sp.clone(),
            "a backend needs at least one server that is not a backup".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, s) in b.servers.iter().enumerate() {
        let p = sp.index(i);
        if s.name.is_empty() || s.name.contains('/') {
            out.push((p.key("name"), "must be non-empty and contain no `/`".into()));
        } else if !names.insert(s.name.as_str()) {
            out.push((
                p.key("name"),
                format!("server `{}` is defined twice in this backend", s.name),
            ));
        }
        if !(1..=MAX_WEIGHT).contains(&s.weight) {
            out.push((
                p.key("weight"),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
        }
    }
}

pub use crate::resolve::ResolveError;

/// Resolves `host:port` (an IP or a name) to its first address, within
/// [`RESOLVE_TIMEOUT`](crate::resolve::RESOLVE_TIMEOUT). Blocks the calling thread: callers
/// are off the runtime (see `crate::resolve`).
pub fn resolve(address: &str) -> Result<SocketAddr, ResolveError> {
    crate::resolve::resolve_all_blocking(&[address], crate::resolve::RESOLVE_TIMEOUT)
        .pop()
        .unwrap_or_else(|| {
            Err(ResolveError::NoAddress {
                address: address.to_string(),
            })
        })
}

/// Every server address must resolve: all looked up at once, so names that hang cost one
/// time limit ([`RESOLVE_TIMEOUT`](crate::resolve::RESOLVE_TIMEOUT)) in all, never one each.
fn addresses(config: &Config, out: &mut Problems) {
    let mut keys = Vec::new();
    let mut addrs = Vec::new();
    for (name, b) in &config.backends {
        for (i, s) in b.servers.iter().enumerate() {
            keys.push(
                KeyPath::root("backends")
                    .key(name)
                    .key("servers")
                    .index(i)
                    .key("address"),
            );
            addrs.push(s.address.as_str());
        }
    }
    let results = crate::resolve::resolve_all_blocking(&addrs, crate::resolve::RESOLVE_TIMEOUT);
    for (key, result) in keys.into_iter().zip(results) {
        if let Err(e) = result {
            out.push((key, e.to_string()));
        }
    }
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn alerts(config: &Config, out: &mut Problems) {
    let p = KeyPath::root("alerts");
    if config.alerts.remind_every.get().is_zero() {
        out.push((p.key("remind_every"), "must be longer than zero".into()));
    }
    for (i, w) in config.alerts.webhooks.iter().enumerate() {
        let wp = p.key("webhooks").index(i);
        match w.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => out.push((
                wp.key("url"),
                format!("`{}` is not an http:// or https:// URL", w.url),
            )),
        }
        for (j, e) in w.events.iter().enumerate() {
            if e != "all" && !EVENT_NAMES.contains(&e.as_str()) {
                out.push((wp.key("events").index(j), format!("no event named `{e}`")));
            }
        }
    }
}

/// `[cluster]`: endpoints etcd-client can dial, a prefix that is a clean key path, an
/// instance name that fits in one key segment.
fn cluster(config: &Config, out: &mut Problems) {
    let Some(c) = &config.cluster else {
        return;
    };
    let p = KeyPath::root("cluster");
    if c.etcd.is_empty() {
        out.push((p.key("etcd"), "name at least one etcd endpoint".into()));
    }
    for (i, e) in c.etcd.iter().enumerate() {
        let ok = match e.parse::<http::Uri>() {
            Ok(u) => u.scheme_str() == Some("http") && u.host().is_some() && u.port().is_some(),
            Err(_) => false,
        };
        if !ok {
            out.push((
                p.key("etcd").index(i),
                format!("`{e}` is not an etcd endpoint like http://10.0.0.1:2379"),
            ));
        }
    }
    let prefix_ok = c.prefix.starts_with('/')
        && c.prefix.len() > 1
        && !c.prefix.ends_with('/')
        && !c.prefix.contains("//");
    if !prefix_ok {
        out.push((
            p.key("prefix"),
            format!(
                "`{}` is not a key prefix like /fulcrum (a leading /, no trailing /)",
                c.prefix
            ),
        ));
    }
    let name_ok = c.instance.len() <= 128
        && c.instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !name_ok {
        out.push((
            p.key("instance"),
            "at most 128 letters, digits, `-`, `_`, `.` or `:` (empty = the host name)".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::check_allowed_host;

    #[test]
    fn allowed_hosts_are_what_a_host_header_holds() {
        for ok in [
            "localhost",
            "admin.example.com",
            "admin.example.com.",
            "ops.example:8443",
            "10.0.0.1",
            "[::1]",
            "[2001:db8::1]:9900",
        ] {
            assert_eq!(check_allowed_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "http://admin.example.com/",
            "admin.example.com/x",
            "user@admin.example.com",
            "a b",
            "a:b",
            "x.example:70000",
            "x.example:",
            "::1",
            "[not-ip]",
            "bad_name",
            "*.example.com",
        ] {
            assert!(check_allowed_host(bad).is_err(), "{bad}");
        }
    }
}

//! `[backends.NAME.discovery]`: servers found through DNS, besides or instead of the file's
//! `[[servers]]`. This module is the schema and its checks only; the lookups are
//! `crate::discovery`'s and the task that applies them lives in `app`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Dur;
use super::locate::KeyPath;

/// The shortest `interval`: a name re-resolved more often than this only loads the DNS server.
pub const MIN_INTERVAL: Dur = Dur::millis(100);

/// Where a backend's servers come from in DNS, and how often to look again.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// An SRV name (`_http._tcp.api.service.consul`) or `name:port` (every A/AAAA record).
    pub dns: String,
    /// How often the name is resolved again; a change is applied as a diff.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// `IP:port` of the DNS server to ask; empty = the system resolver (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameserver: String,
}

impl Discovery {
    /// The `nameserver` to ask: `None` for the system resolver.
    pub fn nameserver_addr(&self) -> Result<Option<SocketAddr>, String> {
        nameserver(&self.nameserver)
    }
}

fn default_interval() -> Dur {
    Dur::secs(10)
}

/// What `dns` asks for, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsQuery {
    /// SRV records of this name: each gives a target, a port and a weight.
    Srv(String),
    /// Every A and AAAA record of `name`, each a server on `port`.
    Host { name: String, port: u16 },
}

impl DnsQuery {
    /// Parses `dns`: `name:port` is an address lookup, a name alone an SRV lookup.
    pub fn parse(text: &str) -> Result<DnsQuery, String> {
        match text.rsplit_once(':') {
            Some((name, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("`{text}`: the port must be a number from 1 to 65535"))?;
                if port == 0 {
                    return Err(format!("`{text}`: the port must be from 1 to 65535"));
                }
                check_name(name).map_err(|why| format!("`{text}`: {why}"))?;
                Ok(DnsQuery::Host {
                    name: name.to_string(),
                    port,
                })
            }
            None => {
                check_name(text).map_err(|why| format!("`{text}`: {why}"))?;
                Ok(DnsQuery::Srv(text.to_string()))
            }
        }
    }
}

/// A DNS name as a query may carry it: dot-separated labels of letters, digits, `-` and `_`
/// (SRV names start with `_service._proto`), at most 63 bytes each and 253 in all, with an
/// optional final dot.
fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("an SRV name or name:port is needed".into());
    }
    if bare.len() > 253 {
        return Err("a DNS name has at most 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !bare.split('.').all(label_ok) {
        return Err(
            "a DNS name is labels of letters, digits, `-` and `_` joined by dots (an IPv6 \
             address is not a name to discover)"
                .into(),
        );
    }
    Ok(())
}

/// Parses `nameserver`: empty means the system resolver.
pub fn nameserver(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!("`{text}` is not an IP:port (e.g. 127.0.0.1:53 or [::1]:53); empty = the system resolver")
    })
}

/// Every problem of one backend's `[discovery]`, at the key it concerns.
pub(super) fn validate(p: &KeyPath, d: &Discovery, out: &mut Vec<(KeyPath, String)>) {
    if let Err(why) = DnsQuery::parse(&d.dns) {
        out.push((p.key("dns"), why));
    }
    if d.interval < MIN_INTERVAL {
        out.push((
            p.key("interval"),
            format!("must be at least {MIN_INTERVAL}"),
        ));
    }
    if let Err(why) = nameserver(&d.nameserver) {
        out.push((p.key("nameserver"), why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_names_and_host_ports() {
        assert_eq!(
            DnsQuery::parse("_http._tcp.api.service.consul"),
            Ok(DnsQuery::Srv("_http._tcp.api.service.consul".into()))
        );
        assert_eq!(
            DnsQuery::parse("api.internal.:8080"),
            Ok(DnsQuery::Host {
                name: "api.internal.".into(),
                port: 8080
            })
        );
        for bad in [
            "",
            ":80",
            "api:0",
            "api:http",
            "api:70000",
            "a b:80",
            "http://api",
            "api..x",
            "[::1]:80",
        ] {
            assert!(DnsQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nameservers_are_ip_and_port() {
        assert_eq!(nameserver(""), Ok(None));
        assert_eq!(
            nameserver("127.0.0.1:5353"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 5353))))
        );
        assert!(nameserver("127.0.0.1").is_err());
        assert!(nameserver("dns.example:53").is_err());
    }
}

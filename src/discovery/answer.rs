//! What one round of discovery found, and how it becomes servers: pure, so the rules (names,
//! weights, what a diff says) are unit-tested without a DNS server.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::config::{self, MAX_WEIGHT};

/// One server a DNS answer names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `host:port`: the SRV target (without its final dot) or the address itself.
    pub name: String,
    /// Where it listens (an IP literal: the health checker never resolves it again).
    pub addr: SocketAddr,
    /// From the SRV record; 1 for address records.
    pub weight: u32,
}

impl Found {
    /// A server from an SRV record's target, port and weight. SRV weights run 0-65535 and
    /// 0 means "rarely"; fulcrum's run 1-256, so the weight is clamped into that range.
    pub fn srv(target: &str, port: u16, weight: u16, ip: std::net::IpAddr) -> Found {
        let host = target.strip_suffix('.').unwrap_or(target);
        Found {
            name: format!("{host}:{port}"),
            addr: SocketAddr::new(ip, port),
            weight: u32::from(weight).clamp(1, MAX_WEIGHT),
        }
    }

    /// A server from an A or AAAA record: named by its address.
    pub fn address(addr: SocketAddr) -> Found {
        Found {
            name: addr.to_string(),
            addr,
            weight: 1,
        }
    }

    /// The server's configuration: the backend's defaults, with this name, address and
    /// weight, marked as discovered.
    pub fn to_server(&self) -> config::Server {
        config::Server {
            name: self.name.clone(),
            address: self.addr.to_string(),
            weight: self.weight,
            max_connections: 100,
            backup: false,
            discovered: true,
        }
    }
}

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The servers the name gives now: at least one, sorted by name, names unique.
    Servers(Vec<Found>),
    /// The name exists nowhere or has no records of the type asked: the last set is kept.
    Empty,
    /// No answer (timeout, refused, a broken reply): the last set is kept.
    Failed(String),
}

impl Answer {
    /// The answer for `found`: sorted, the first of each name kept, `Empty` when nothing.
    pub fn of(mut found: Vec<Found>) -> Answer {
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.name == b.name);
        if found.is_empty() {
            Answer::Empty
        } else {
            Answer::Servers(found)
        }
    }
}

/// Merges the file's servers with discovered ones: the file's first, in file order, then the
/// discovered ones, skipping any whose name a file server already has (the file wins).
/// Returns the list and the names skipped.
pub fn merge(
    file: &[config::Server],
    found: &[config::Server],
) -> (Vec<config::Server>, Vec<String>) {
    let taken: BTreeSet<&str> = file.iter().map(|s| s.name.as_str()).collect();
    let mut all: Vec<config::Server> = file.to_vec();
    let mut skipped = Vec::new();
    for s in found {
        if taken.contains(s.name.as_str()) {
            skipped.push(s.name.clone());
        } else {
            all.push(s.clone());
        }
    }
    (all, skipped)
}

/// "added a:1, b:2; removed c:3; weight changed d:4": what `discovery_changed` says, or
/// `None` when `before` and `after` are the same servers.
pub fn describe(before: &[config::Server], after: &[config::Server]) -> Option<String> {
    let find = |list: &[config::Server], name: &str| list.iter().find(|s| s.name == name).cloned();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for s in after {
        match find(before, &s.name) {
            None => added.push(format!("{} ({}, weight {})", s.name, s.address, s.weight)),
            Some(old) if old.address != s.address => {
                changed.push(format!("{} now at {}", s.name, s.address))
            }
            Some(old) if old.weight != s.weight => {
                changed.push(format!("{} weight {} -> {}", s.name, old.weight, s.weight))
            }
            Some(_) => {}
        }
    }
    for s in before {
        if find(after, &s.name).is_none() {
            removed.push(s.name.clone());
        }
    }
    let mut parts = Vec::new();
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> std::net::IpAddr {
        std::net::IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn srv_records_name_servers_by_target_and_clamp_weights() {
        let f = Found::srv("web-1.node.consul.", 8080, 0, ip(1));
        assert_eq!(f.name, "web-1.node.consul:8080");
        assert_eq!(f.addr, SocketAddr::new(ip(1), 8080));
        assert_eq!(f.weight, 1);
        assert_eq!(Found::srv("x", 1, 1000, ip(1)).weight, MAX_WEIGHT);
        assert_eq!(Found::srv("x", 1, 7, ip(1)).weight, 7);
        let s = f.to_server();
        assert!(s.discovered && !s.backup);
        assert_eq!(s.address, "10.0.0.1:8080");
    }

    #[test]
    fn an_answer_is_sorted_unique_and_empty_without_records() {
        assert_eq!(Answer::of(Vec::new()), Answer::Empty);
        let a = Found::address(SocketAddr::new(ip(2), 80));
        let b = Found::address(SocketAddr::new(ip(1), 80));
        let Answer::Servers(list) = Answer::of(vec![a.clone(), b.clone(), a.clone()]) else {
            panic!("servers expected");
        };
        assert_eq!(list, vec![b, a]);
    }

    #[test]
    fn the_file_wins_a_name_clash_and_diffs_say_what_changed() {
        let file = vec![Found::address(SocketAddr::new(ip(1), 80)).to_server()];
        let mut file = file;
        file[0].discovered = false;
        let found = vec![
            Found::address(SocketAddr::new(ip(1), 80)).to_server(),
            Found::address(SocketAddr::new(ip(2), 80)).to_server(),
        ];
        let (all, skipped) = merge(&file, &found);
        assert_eq!(all.len(), 2);
        assert!(!all[0].discovered && all[1].discovered);
        assert_eq!(skipped, vec!["10.0.0.1:80".to_string()]);

        let before = vec![
            Found::srv("a", 1, 1, ip(1)).to_server(),
            Found::srv("b", 1, 1, ip(2)).to_server(),
        ];
        let after = vec![
            Found::srv("a", 1, 5, ip(1)).to_server(),
            Found::srv("c", 1, 1, ip(3)).to_server(),
        ];
        assert_eq!(
            describe(&before, &after).unwrap(),
            "added c:1 (10.0.0.3:1, weight 1); removed b:1; changed a:1 weight 1 -> 5"
        );
        assert_eq!(describe(&before, &before), None);
    }
}

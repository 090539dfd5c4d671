//! The PROXY protocol header fulcrum sends first on a connection to a server
//! (`send_proxy_protocol`), built with the `ppp` crate rather than formatted by hand.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

use crate::config::SendProxy;

/// Who a proxied connection is for: the client's address (the header's source) and the
/// address the client connected to (its destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddrs {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// The header for `client`, or for no client (a health check: a LOCAL command in v2,
/// `PROXY UNKNOWN` in v1, which servers that require the header accept as "no address").
/// Empty when `mode` is off.
pub fn header(mode: SendProxy, client: Option<ClientAddrs>) -> Vec<u8> {
    let pair = client.map(|c| same_family(c.source, c.destination));
    match (mode, pair) {
        (SendProxy::Off, _) => Vec::new(),
        (SendProxy::V1, None) => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        (SendProxy::V1, Some(pair)) => ppp::v1::Addresses::from(pair).to_string().into_bytes(),
        (SendProxy::V2, None) => v2(Version::Two | Command::Local, Protocol::Unspecified, None),
        (SendProxy::V2, Some(pair)) => {
            v2(Version::Two | Command::Proxy, Protocol::Stream, Some(pair))
        }
    }
}

fn v2(command: u8, protocol: Protocol, pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let addresses = match pair {
        Some(p) => ppp::v2::Addresses::from(p),
        None => ppp::v2::Addresses::Unspecified,
    };
    // Writing into a Vec cannot fail; an empty header (never sent as such) would only
    // make the server refuse the connection.
    Builder::with_addresses(command, protocol, addresses)
        .build()
        .unwrap_or_default()
}

/// Both addresses in one family (the header has one): an IPv4 one beside an IPv6 one is
/// written as its IPv4-mapped IPv6 form.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> ClientAddrs {
        ClientAddrs {
            source: "192.0.2.7:51000".parse().unwrap(),
            destination: "198.51.100.1:443".parse().unwrap(),
        }
    }

    #[test]
    fn v1_names_both_addresses() {
        assert_eq!(
            header(SendProxy::V1, Some(addrs())),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n"
        );
        assert_eq!(header(SendProxy::V1, None), b"PROXY UNKNOWN\r\n");
        assert!(header(SendProxy::Off, Some(addrs())).is_empty());
    }

    #[test]
    fn v2_is_the_binary_header() {
        let h = header(SendProxy::V2, Some(addrs()));
        assert_eq!(&h[..12], ppp::v2::PROTOCOL_PREFIX);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(&h[14..16], &[0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 7]);
        assert_eq!(&h[24..26], &51000u16.to_be_bytes());
        let local = header(SendProxy::V2, None);
        assert_eq!(local.len(), 16);
        assert_eq!(local[12], 0x20);
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let c = ClientAddrs {
            source: "192.0.2.7:1".parse().unwrap(),
            destination: "[2001:db8::1]:443".parse().unwrap(),
        };
        let h = String::from_utf8(header(SendProxy::V1, Some(c))).unwrap();
        assert_eq!(h, "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1 443\r\n");
    }
}

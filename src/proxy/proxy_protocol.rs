//! `accept_proxy_protocol`: reading the PROXY protocol header (v1 text or v2 binary, told
//! apart by their signatures) that a load balancer in front of fulcrum sends before
//! anything else, and taking the client address from it. The header is parsed by the
//! `ppp` crate; this module only reads exactly the header's bytes, so whatever follows
//! (a TLS handshake, an HTTP request, a TCP payload) is left in the socket untouched.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// What a v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;

/// Why a connection's PROXY header was refused; the connection is closed without a byte
/// forwarded.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not begin with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(#[from] ppp::v1::BinaryParseError),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(#[from] ppp::v2::ParseError),
    #[error("PROXY protocol v1 header longer than {V1_MAX} bytes")]
    TooLong,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header at the start of `io` and returns the client address it carries;
/// `peer` (the address that connected) when the header says it has none to give (v2
/// `LOCAL`, v1 `UNKNOWN`, an unspecified or UNIX family). The caller bounds the wait.
pub async fn read_client<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start).await?;
    if &start == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        io.read_exact(&mut rest).await?;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let mut header = Vec::with_capacity(16 + len);
        header.extend_from_slice(&start);
        header.extend_from_slice(&rest);
        header.resize(16 + len, 0);
        io.read_exact(&mut header[16..]).await?;
        let parsed = ppp::v2::Header::try_from(header.as_slice())?;
        return Ok(from_v2(&parsed).unwrap_or(peer));
    }
    if !start.starts_with(V1_PREFIX) {
        return Err(HeaderError::Missing);
    }
    // One byte at a time: the line's length is known only at its CRLF, and nothing past
    // it may be taken from the socket.
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(HeaderError::TooLong);
        }
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        line.push(b[0]);
    }
    let parsed = ppp::v1::Header::try_from(line.as_slice())?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        ppp::v1::Addresses::Unknown => peer,
    })
}

/// The source of a v2 `PROXY` header with an IP family; `None` for `LOCAL` (a health check
/// of the balancer in front: the real peer is the client) and other families.
fn from_v2(h: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, HeaderError>, Vec<u8>) {
        let mut io = bytes;
        let r = read_client(&mut io, peer()).await;
        (r, io.to_vec())
    }

    #[tokio::test]
    async fn v1_gives_the_source_and_leaves_the_payload() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\nGET /").await;
        assert_eq!(r.unwrap(), "192.0.2.7:4321".parse().unwrap());
        assert_eq!(rest, b"GET /");
        let (r, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4321 443\r\n").await;
        assert_eq!(r.unwrap(), "[2001:db8::1]:4321".parse().unwrap());
        let (r, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r.unwrap(), peer());
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let src: SocketAddr = "192.0.2.9:1111".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let mut h = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        h.extend_from_slice(b"hello");
        let (r, rest) = read(&h).await;
        assert_eq!(r.unwrap(), src);
        assert_eq!(rest, b"hello");
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        assert_eq!(read(&local).await.0.unwrap(), peer());
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_header() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\n\r\n").await.0,
            Err(HeaderError::Missing)
        ));
        assert!(matches!(
            read(b"PROXY TCP4 nonsense here\r\n").await.0,
            Err(HeaderError::V1(_))
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(read(&long).await.0, Err(HeaderError::TooLong)));
        assert!(matches!(read(b"PROXY").await.0, Err(HeaderError::Io(_))));
    }
}

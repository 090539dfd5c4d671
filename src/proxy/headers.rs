//! Header rules for forwarding: hop-by-hop headers stay on their hop, `X-Forwarded-*` tell
//! the server who asked, `Host` is kept.

use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::error::Refusal;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// non-standard `proxy-connection` some clients still send.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Whether `name` is a hop-by-hop header (ASCII case-insensitive): the same list for
/// the HTTP/1 engine's heads and for HTTP/2 responses.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Removes hop-by-hop headers and every header named in `Connection`.
/// `Transfer-Encoding` is removed too: hyper frames the next hop itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection`: one pass over the names (standard
    // names compare as small integers) instead of nine hashed removals per message.
    if !headers
        .keys()
        .any(|k| k == header::TRANSFER_ENCODING || HOP_BY_HOP.contains(k))
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and `-Host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    if !headers.contains_key(&XFF) {
        // The usual case, a client talking to us directly: the address alone, formatted
        // without `core::fmt` or intermediate strings.
        if let Some(v) = ip_value(client) {
            headers.insert(XFF, v);
        }
    } else {
        append_forwarded_for(headers, client);
    }
    headers.insert(
        XFP,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    match host {
        Some(h) => {
            headers.insert(XFH, h.clone());
        }
        None => {
            headers.remove(XFH);
        }
    }
}

/// `client` as a header value.
fn ip_value(client: IpAddr) -> Option<HeaderValue> {
    match client {
        IpAddr::V4(ip) => {
            let (text, len) = ipv4_text(ip);
            HeaderValue::from_bytes(text.get(..len).unwrap_or_default()).ok()
        }
        IpAddr::V6(ip) => HeaderValue::from_str(&ip.to_string()).ok(),
    }
}

/// An IPv4 address as `Display` writes it, on the stack with its length: `Display` goes
/// through the formatting machinery, about 950 instructions per request
/// (`bench/callgrind.sh`), and every request writes its client's address.
pub(crate) fn ipv4_text(ip: Ipv4Addr) -> ([u8; 15], usize) {
    let mut text = [0u8; 15];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(to) = text.get_mut(len..len + bytes.len()) {
            to.copy_from_slice(bytes);
        }
        len += bytes.len();
    };
    let mut num = itoa::Buffer::new();
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            put(b".");
        }
        put(num.format(octet).as_bytes());
    }
    (text, len)
}

/// Appends `ip` as `Display` writes it: an IPv4 address by [`ipv4_text`], an IPv6 one
/// through `Display`.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let (text, len) = ipv4_text(v4);
            out.extend_from_slice(text.get(..len).unwrap_or_default());
        }
        IpAddr::V6(v6) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// Appends `n` in decimal, with `itoa` rather than `write!`'s formatting machinery (a
/// status code and a `Content-Length` in every head).
pub(crate) fn push_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `client` to the `X-Forwarded-For` lines already there, as one line.
fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    // Several header lines are one comma-separated list (RFC 9110 §5.3): keep every hop.
    let mut hops: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let ip = client.to_string();
    hops.push(&ip);
    let xff = hops.join(", ");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(XFF, v);
    }
}

/// Makes an HTTP/2 request's `:authority` its one `Host` (RFC 9113 §8.3.1): the server
/// must see the authority the client asked for. Refused (400): a `host` field that names
/// another authority, two `host` fields, neither, or userinfo (`user:pw@`) in either
/// (RFC 9110 §4.2.4: a recipient treats it as an error).
pub fn h2_host(headers: &mut HeaderMap, uri: &http::Uri) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Refusal::BadRequest);
    }
    let host = match (uri.authority(), first) {
        (Some(a), Some(h)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            return Err(Refusal::BadRequest);
        }
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.to_str().map_err(|_| Refusal::BadRequest)?,
        (None, None) => return Err(Refusal::BadRequest),
    };
    if host.is_empty() || host.contains('@') {
        return Err(Refusal::BadRequest);
    }
    let value = HeaderValue::from_str(host).map_err(|_| Refusal::BadRequest)?;
    headers.insert(header::HOST, value);
    Ok(())
}

/// Joins HTTP/2 cookie crumbs (one `cookie` field per pair, RFC 9113 §8.2.3) into the one
/// field an HTTP/1.1 server expects, separated by `; `.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Each crumb was a valid value, and so is their join.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The size of a request head as the client sent it, near enough to enforce
/// `max_header_bytes` (the request line plus each `name: value\r\n`).
pub fn head_size(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> usize {
    let line = method.as_str().len() + uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let host = HeaderValue::from_static("books.example");
        add_forwarded(&mut h, "192.0.2.7".parse().unwrap(), false, Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "books.example");
    }

    #[test]
    fn sets_forwarded_for_from_scratch() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
        add_forwarded(&mut h, "10.200.3.45".parse().unwrap(), true, None);
        assert_eq!(h["x-forwarded-for"], "10.200.3.45");
        assert_eq!(h["x-forwarded-proto"], "https");
        add_forwarded(&mut h, "2001:db8::1".parse().unwrap(), false, None);
        assert_eq!(h["x-forwarded-for"], "10.200.3.45, 2001:db8::1");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "2001:db8::1".parse().unwrap(), false, None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }

    #[test]
    fn an_http2_request_is_forwarded_for_its_authority() {
        let uri: http::Uri = "https://a.example/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h2_host(&mut h, &uri).unwrap();
        assert_eq!(h[header::HOST], "a.example");
        h.insert(header::HOST, HeaderValue::from_static("A.Example"));
        h2_host(&mut h, &uri).unwrap();
        assert_eq!(h[header::HOST], "a.example");
        h.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(h2_host(&mut h, &uri), Err(Refusal::BadRequest));
        let mut two = HeaderMap::new();
        two.append(header::HOST, HeaderValue::from_static("a.example"));
        two.append(header::HOST, HeaderValue::from_static("a.example"));
        assert_eq!(h2_host(&mut two, &uri), Err(Refusal::BadRequest));
        let bare: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            h2_host(&mut HeaderMap::new(), &bare),
            Err(Refusal::BadRequest)
        );
        let mut only_host = HeaderMap::new();
        only_host.insert(header::HOST, HeaderValue::from_static("b.example"));
        h2_host(&mut only_host, &bare).unwrap();
        assert_eq!(only_host[header::HOST], "b.example");
        let userinfo: http::Uri = "https://evil:pw@a.example/".parse().unwrap();
        assert_eq!(
            h2_host(&mut HeaderMap::new(), &userinfo),
            Err(Refusal::BadRequest)
        );
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_field() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn the_asterisk_form_is_a_path_of_its_own() {
        let uri: http::Uri = "*".parse().unwrap();
        assert_eq!(uri.path(), "*");
    }

    #[test]
    fn joins_several_forwarded_for_lines() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        add_forwarded(&mut h, "192.0.2.7".parse().unwrap(), false, None);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]);
    }

    #[test]
    fn addresses_and_numbers_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            super::push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
        for n in [0u64, 7, 10, 204, 999, 1000, u64::MAX] {
            let mut out = Vec::new();
            super::push_number(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}

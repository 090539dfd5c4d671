//! Property tests of the HTTP/1 codec (`fulcrum::h1`, issue 11): generated requests, valid
//! and invalid, pipelined several to a buffer and split into arbitrary reads. The codec,
//! fed incrementally, must yield exactly the requests that a plain whole-buffer reading
//! (`reference` below, written for obviousness, not speed) yields, or reject with 400 after
//! a prefix of them. It must never yield a request the reference does not, and never panic.
//! Valid-only requests must be yielded exactly as generated.
//!
//! Run: `cargo test --test h1_props` (256 cases per property by default; `PROPTEST_CASES`
//! raises it).

use fulcrum::h1::{BodyDecoder, BodyFraming, Limits, Parsed, parse_request};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    method: Vec<u8>,
    target: Vec<u8>,
    authority: Option<Vec<u8>>,
    body: Vec<u8>,
    keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Every byte was used, or the connection closed after a request.
    Clean,
    /// Rejected with this status.
    Rejected(u16),
    /// The bytes ended inside a request.
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    reqs: Vec<Req>,
    end: End,
}

// ---------------------------------------------------------------------------------------
// The engine, driven as the proxy will drive it: reads appended to a buffer, heads parsed
// when complete, bodies decoded incrementally.

fn engine(bytes: &[u8], reads: &[usize]) -> Outcome {
    let limits = Limits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut reqs = Vec::new();
    let mut current: Option<(Req, Option<BodyDecoder>)> = None;
    let mut fed = 0;
    let mut k = 0;
    loop {
        // Process what is buffered as far as it goes.
        loop {
            match current.take() {
                None => match parse_request(&buf, &limits) {
                    Err(e) => {
                        return Outcome {
                            reqs,
                            end: End::Rejected(e.status()),
                        };
                    }
                    Ok(Parsed::Partial) => break,
                    Ok(Parsed::Complete(h)) => {
                        let req = Req {
                            method: h.method.of(&buf).to_vec(),
                            target: h.target.of(&buf).to_vec(),
                            authority: h.authority.map(|a| a.of(&buf).to_vec()),
                            body: Vec::new(),
                            keep_alive: h.keep_alive,
                        };
                        let dec = match h.body {
                            BodyFraming::None => None,
                            BodyFraming::Length(n) => Some(BodyDecoder::length(n)),
                            BodyFraming::Chunked => Some(BodyDecoder::chunked()),
                        };
                        buf.drain(..h.head_len);
                        current = Some((req, dec));
                    }
                },
                Some((mut req, dec)) => {
                    let finished = match dec {
                        None => true,
                        Some(mut d) => {
                            if d.is_done() {
                                true
                            } else if buf.is_empty() {
                                current = Some((req, Some(d)));
                                break;
                            } else {
                                match d.decode(&buf) {
                                    Err(_) => {
                                        return Outcome {
                                            reqs,
                                            end: End::Rejected(400),
                                        };
                                    }
                                    Ok(s) => {
                                        if let Some(r) = s.data {
                                            req.body.extend_from_slice(&buf[r]);
                                        }
                                        buf.drain(..s.consumed);
                                        if !s.done {
                                            current = Some((req, Some(d)));
                                            continue;
                                        }
                                        true
                                    }
                                }
                            }
                        }
                    };
                    if finished {
                        let keep = req.keep_alive;
                        reqs.push(req);
                        if !keep {
                            return Outcome {
                                reqs,
                                end: End::Clean,
                            };
                        }
                    }
                }
            }
        }
        if fed == bytes.len() {
            let end = if current.is_none() && buf.is_empty() {
                End::Clean
            } else {
                End::Incomplete
            };
            return Outcome { reqs, end };
        }
        let n = reads
            .get(k % reads.len().max(1))
            .copied()
            .unwrap_or(bytes.len())
            .max(1);
        k += 1;
        let next = (fed + n).min(bytes.len());
        buf.extend_from_slice(&bytes[fed..next]);
        fed = next;
    }
}

// ---------------------------------------------------------------------------------------
// The reference: the whole byte string at once, each rule as plainly as it can be said.

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let mut s = s;
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn host_ok(h: &[u8]) -> bool {
    h.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

fn field_value_ok(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

enum Ref {
    Bad,
    Short,
}

fn reference(bytes: &[u8]) -> Outcome {
    let mut reqs = Vec::new();
    let mut pos = 0;
    loop {
        while bytes[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        if pos == bytes.len() {
            return Outcome {
                reqs,
                end: End::Clean,
            };
        }
        match reference_one(&bytes[pos..]) {
            Ok((req, used)) => {
                pos += used;
                let keep = req.keep_alive;
                reqs.push(req);
                if !keep {
                    return Outcome {
                        reqs,
                        end: End::Clean,
                    };
                }
            }
            Err(Ref::Bad) => {
                return Outcome {
                    reqs,
                    end: End::Rejected(400),
                };
            }
            Err(Ref::Short) => {
                return Outcome {
                    reqs,
                    end: End::Incomplete,
                };
            }
        }
    }
}

fn reference_one(b: &[u8]) -> Result<(Req, usize), Ref> {
    let head_end = find(b, b"\r\n\r\n").ok_or(Ref::Short)?;
    let head = &b[..head_end];
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // Split on LF then strip CR: a bare LF leaves a line without CR before it.
    let raw_lines: Vec<&[u8]> = head.split(|&c| c == b'\n').collect();
    for (i, l) in raw_lines.iter().enumerate() {
        let last = i == raw_lines.len() - 1;
        if (!last && !l.ends_with(b"\r")) || l.contains(&0) {
            return Err(Ref::Bad);
        }
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.contains(&b'\r') {
            return Err(Ref::Bad);
        }
    }
    let request_line = lines.next().ok_or(Ref::Bad)?;
    let parts: Vec<&[u8]> = request_line.split(|&c| c == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(Ref::Bad);
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(Ref::Bad);
    }
    if target.is_empty() || !target.iter().all(|&c| (0x21..0x7f).contains(&c)) {
        return Err(Ref::Bad);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(Ref::Bad),
    };
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    for line in lines {
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            return Err(Ref::Bad);
        }
        let colon = line.iter().position(|&c| c == b':').ok_or(Ref::Bad)?;
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) || !field_value_ok(value) {
            return Err(Ref::Bad);
        }
        fields.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
    }
    if fields.len() > 100 {
        return Err(Ref::Bad); // 431 in truth; the generator never gets there
    }
    let values = |n: &'static str| fields.iter().filter(move |f| f.0 == n).map(|f| f.1);
    let hosts: Vec<&[u8]> = values("host").collect();
    if hosts.len() > 1 || (http11 && hosts.is_empty()) || hosts.iter().any(|h| !host_ok(h)) {
        return Err(Ref::Bad);
    }
    let mut authority = hosts.first().map(|h| h.to_vec());
    let lower = target.to_ascii_lowercase();
    if method == b"CONNECT" {
        if !host_ok(target) {
            return Err(Ref::Bad);
        }
    } else if target.starts_with(b"/") {
    } else if target == b"*" {
        if method != b"OPTIONS" {
            return Err(Ref::Bad);
        }
    } else {
        let skip = if lower.starts_with(b"http://") {
            7
        } else if lower.starts_with(b"https://") {
            8
        } else {
            return Err(Ref::Bad);
        };
        let rest = &target[skip..];
        let end = rest
            .iter()
            .position(|&c| b"/?#".contains(&c))
            .unwrap_or(rest.len());
        if end == 0 || !host_ok(&rest[..end]) {
            return Err(Ref::Bad);
        }
        authority = Some(rest[..end].to_vec());
    }
    // Transfer-Encoding: the codings of all lines in order; chunked last and once.
    let te_lines: Vec<&[u8]> = values("transfer-encoding").collect();
    let codings: Vec<&[u8]> = te_lines
        .iter()
        .flat_map(|v| v.split(|&c| c == b','))
        .map(trim)
        .filter(|c| !c.is_empty())
        .collect();
    let chunked = if te_lines.is_empty() {
        false
    } else {
        let chunked_at: Vec<usize> = (0..codings.len())
            .filter(|&i| codings[i].eq_ignore_ascii_case(b"chunked"))
            .collect();
        if !http11 || codings.is_empty() || chunked_at != [codings.len() - 1] {
            return Err(Ref::Bad);
        }
        if !codings
            .iter()
            .all(|c| c.iter().all(|&b| is_tchar(b) || b" \t;=\"".contains(&b)))
        {
            return Err(Ref::Bad);
        }
        true
    };
    let mut lengths = Vec::new();
    for v in values("content-length") {
        for item in v.split(|&c| c == b',') {
            let item = trim(item);
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(Ref::Bad);
            }
            lengths.push(
                std::str::from_utf8(item)
                    .unwrap()
                    .parse::<u64>()
                    .map_err(|_| Ref::Bad)?,
            );
        }
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err(Ref::Bad);
    }
    let conn: Vec<Vec<u8>> = values("connection")
        .flat_map(|v| v.split(|&c| c == b','))
        .map(|t| trim(t).to_ascii_lowercase())
        .collect();
    let close = conn.iter().any(|t| t == b"close");
    let keep = conn.iter().any(|t| t == b"keep-alive");
    let cl_dropped = chunked && !lengths.is_empty();
    let keep_alive = !close && !cl_dropped && (http11 || keep);
    let mut used = head_end + 4;
    let body = if chunked {
        let (body, n) = reference_chunked(&b[used..])?;
        used += n;
        body
    } else if let Some(&n) = lengths.first() {
        let n = n as usize;
        if b.len() < used + n {
            return Err(Ref::Short);
        }
        used += n;
        b[used - n..used].to_vec()
    } else {
        Vec::new()
    };
    let req = Req {
        method: method.to_vec(),
        target: target.to_vec(),
        authority,
        body,
        keep_alive,
    };
    Ok((req, used))
}

fn reference_chunked(b: &[u8]) -> Result<(Vec<u8>, usize), Ref> {
    let mut body = Vec::new();
    let mut p = 0;
    loop {
        let eol = find(&b[p..], b"\r\n").ok_or(Ref::Short)?;
        let line = &b[p..p + eol];
        if line.len() > 4096 || line.contains(&b'\n') || line.contains(&b'\r') {
            return Err(Ref::Bad);
        }
        let (size, ext) = match line.iter().position(|&c| c == b';') {
            Some(i) => (trim(&line[..i]), Some(&line[i + 1..])),
            None => (line, None),
        };
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            return Err(Ref::Bad);
        }
        if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(Ref::Bad);
        }
        if ext.is_some_and(|e| !field_value_ok(e)) {
            return Err(Ref::Bad);
        }
        let size =
            u64::from_str_radix(std::str::from_utf8(size).unwrap(), 16).map_err(|_| Ref::Bad)?;
        p += eol + 2;
        if size == 0 {
            // Trailer section: field lines until the empty line.
            loop {
                let eol = find(&b[p..], b"\r\n").ok_or(Ref::Short)?;
                let line = &b[p..p + eol];
                p += eol + 2;
                if line.is_empty() {
                    return Ok((body, p));
                }
                let colon = line.iter().position(|&c| c == b':').ok_or(Ref::Bad)?;
                let (name, value) = (&line[..colon], &line[colon + 1..]);
                if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) || !field_value_ok(value) {
                    return Err(Ref::Bad);
                }
            }
        }
        let size = size as usize;
        if b.len() < p + size + 2 {
            // Not all there; but a wrong byte already visible after the data is still bad.
            if b.len() > p + size && b[p + size] != b'\r' {
                return Err(Ref::Bad);
            }
            return Err(Ref::Short);
        }
        body.extend_from_slice(&b[p..p + size]);
        p += size;
        if &b[p..p + 2] != b"\r\n" {
            return Err(Ref::Bad);
        }
        p += 2;
    }
}

// ---------------------------------------------------------------------------------------
// Generators.

fn chunked_body(valid: bool) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        1usize..40,
        prop::sample::select(vec!["", ";a=b", ";x", " ;q=\"v w\"", ";n=1;m"]),
    );
    let bad = prop::sample::select(vec![
        "zz\r\n",
        "-1\r\n",
        "0x5\r\n",
        "10000000000000000\r\n",
        "5 \r\n",
        "5\n",
        "5\r\nhelloXX",
        "3\r\nhello\r\n",
        "5;\0\r\n",
        " 5\r\n",
        "0\r\nBad Trailer\r\n\r\n",
        "0\r\n",
    ]);
    let trailer = prop::sample::select(vec!["", "X-Sum: 1\r\n", "A: b\r\nC: d\r\n"]);
    (
        prop::collection::vec(chunk, 0..5),
        trailer,
        bad,
        any::<u8>(),
    )
        .prop_map(move |(chunks, tr, bad, seed)| {
            let mut wire = Vec::new();
            let mut data = Vec::new();
            for (i, (n, ext)) in chunks.iter().enumerate() {
                let bytes: Vec<u8> = (0..*n)
                    .map(|j| b'a' + ((j + i + seed as usize) % 26) as u8)
                    .collect();
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&bytes);
                wire.extend_from_slice(b"\r\n");
                data.extend_from_slice(&bytes);
            }
            if valid || seed % 8 != 0 {
                wire.extend_from_slice(format!("0\r\n{tr}\r\n").as_bytes());
            } else {
                wire.extend_from_slice(bad.as_bytes());
            }
            (wire, data)
        })
}

/// Any request: mostly valid pieces with, now and then, an invalid one (an invalid piece in
/// every request would only ever test the first rejection).
fn any_request() -> impl Strategy<Value = Vec<u8>> {
    use prop::sample::select;
    let method = prop_oneof![
        8 => select(vec!["GET", "POST", "HEAD", "PUT"]),
        1 => select(vec!["OPTIONS", "CONNECT", "G(T", "get"]),
    ];
    let target = prop_oneof![
        8 => select(vec!["/", "/a/b?c=d", "http://a.example/x", "HTTP://a.example:81"]),
        1 => select(vec!["*", "http://u@a.example/", "ftp://a/", "a.example:443", "nope", "http:///x"]),
    ];
    let version = prop_oneof![8 => Just("HTTP/1.1"), 2 => Just("HTTP/1.0"), 1 => select(vec!["HTTP/1.2", "HTTP/2.0"])];
    let host = prop_oneof![
        8 => Just("Host: a.example\r\n"),
        1 => select(vec!["", "Host: a\r\nHost: b\r\n", "Host: bad host\r\n", "Host: b.example:8080\r\n"]),
    ];
    let field = prop_oneof![
        8 => select(vec!["X-A: b", "Accept: */*", "Connection: keep-alive", "Expect: 100-continue", "X-E:"]),
        1 => select(vec![
            "Connection: close", "X-A : b", " folded", "\tfolded", "X-N: a\0b", "NoColon", "X-CR: a\rb",
            "X-LF: a\nX-B: c", "Upgrade: websocket", ": v",
        ]),
    ];
    let fields = prop::collection::vec(field, 0..3);
    // The framing fields, and the body bytes that go with them (or do not).
    let framing = prop_oneof![
        3 => Just(""),
        3 => Just("Content-Length: {n}\r\n"),
        3 => Just("Transfer-Encoding: chunked\r\n"),
        1 => select(vec![
            "Content-Length: {n}, {n}\r\n", "Content-Length: 0{n}\r\n", "Content-Length: {m}\r\n",
            "Content-Length: {n}\r\nContent-Length: {m}\r\n", "Content-Length: -1\r\n", "Content-Length: x\r\n",
            "Transfer-Encoding: gzip\r\n", "Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n",
            "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            "Transfer-Encoding:\r\n",
        ]),
    ];
    let raw = prop::collection::vec(any::<u8>(), 0..30);
    let eol = prop_oneof![20 => Just("\r\n"), 1 => Just("\n")];
    (
        method,
        target,
        version,
        host,
        fields,
        framing,
        raw,
        chunked_body(false),
        eol,
    )
        .prop_map(|(m, t, v, host, fields, framing, raw, (cwire, _), eol)| {
            let wire = if framing.contains("chunked") {
                cwire
            } else if framing.is_empty() {
                Vec::new()
            } else {
                raw
            };
            let n = wire.len();
            let mut out = format!("{m} {t} {v}\r\n{host}").into_bytes();
            for f in fields {
                out.extend_from_slice(f.as_bytes());
                out.extend_from_slice(eol.as_bytes());
            }
            let framing = framing
                .replace("{n}", &n.to_string())
                .replace("{m}", &(n + 1).to_string());
            out.extend_from_slice(framing.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&wire);
            out
        })
}

/// A request valid by construction, with what the codec must yield for it.
fn valid_request() -> impl Strategy<Value = (Vec<u8>, Req)> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]);
    let target = prop::sample::select(vec!["/", "/x?y=1", "http://t.example/p", "/a/b/c"]);
    let framing = 0u8..3;
    let extra = prop::collection::vec(
        prop::sample::select(vec!["X-A: 1", "Accept: */*", "Connection: keep-alive"]),
        0..3,
    );
    (
        method,
        target,
        framing,
        extra,
        chunked_body(true),
        prop::collection::vec(any::<u8>(), 0..50),
    )
        .prop_map(|(m, t, framing, extra, (cwire, cdata), raw)| {
            let mut out = format!("{m} {t} HTTP/1.1\r\nHost: h.example\r\n").into_bytes();
            for e in extra {
                out.extend_from_slice(format!("{e}\r\n").as_bytes());
            }
            let body = match framing {
                0 => {
                    out.extend_from_slice(b"\r\n");
                    Vec::new()
                }
                1 => {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", raw.len()).as_bytes(),
                    );
                    out.extend_from_slice(&raw);
                    raw
                }
                _ => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    out.extend_from_slice(&cwire);
                    cdata
                }
            };
            let authority = Some(if t.starts_with("http://") {
                b"t.example".to_vec()
            } else {
                b"h.example".to_vec()
            });
            let req = Req {
                method: m.into(),
                target: t.into(),
                authority,
                body,
                keep_alive: true,
            };
            (out, req)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_codec_yields_what_the_reference_yields_or_rejects_with_400(
        reqs in prop::collection::vec(any_request(), 1..4),
        reads in prop::collection::vec(1usize..40, 0..12),
    ) {
        let bytes = reqs.concat();
        let want = reference(&bytes);
        let got = engine(&bytes, &reads);
        prop_assert!(got.reqs.len() <= want.reqs.len() && got.reqs[..] == want.reqs[..got.reqs.len()],
            "codec yielded {:?}, reference {:?}", got, want);
        if got.end != End::Rejected(400) {
            prop_assert_eq!(&got, &want);
        }
        // The same bytes in one read give the same answer.
        prop_assert_eq!(engine(&bytes, &[]), got);
    }

    #[test]
    fn valid_requests_are_yielded_exactly_in_any_split(
        reqs in prop::collection::vec(valid_request(), 1..4),
        reads in prop::collection::vec(1usize..64, 0..12),
    ) {
        let bytes: Vec<u8> = reqs.iter().flat_map(|(b, _)| b.clone()).collect();
        let want = Outcome { reqs: reqs.into_iter().map(|(_, r)| r).collect(), end: End::Clean };
        prop_assert_eq!(&reference(&bytes), &want);
        prop_assert_eq!(&engine(&bytes, &reads), &want);
    }
}

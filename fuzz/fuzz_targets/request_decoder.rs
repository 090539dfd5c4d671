//! Fuzzes the request side of `fulcrum::h1`: heads and bodies, pipelined, fed in reads
//! whose size the first input byte picks. Checks, beyond "never panics": the same bytes
//! in one read give the same requests and the same verdict; yielded body bytes never
//! exceed what was fed; every call that is given input makes progress (no endless loop).
#![no_main]

use fulcrum::h1::{BodyDecoder, BodyFraming, Limits, Parsed, parse_request};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Req {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// The requests and whether the bytes ended cleanly (Some(true)), mid-request (Some(false))
/// or were rejected (None).
fn run(bytes: &[u8], read: usize) -> (Vec<Req>, Option<bool>) {
    let limits = Limits { max_head_bytes: 4096 };
    let mut buf: Vec<u8> = Vec::new();
    let mut reqs = Vec::new();
    let mut body: Option<(Req, Option<BodyDecoder>, bool)> = None;
    let mut fed = 0;
    loop {
        loop {
            match body.take() {
                None => match parse_request(&buf, &limits) {
                    Err(_) => return (reqs, None),
                    Ok(Parsed::Partial) => break,
                    Ok(Parsed::Complete(h)) => {
                        assert!(h.head_len <= buf.len() && h.head_len <= limits.max_head_bytes);
                        let dec = match h.body {
                            BodyFraming::None => None,
                            BodyFraming::Length(n) => Some(BodyDecoder::length(n)),
                            BodyFraming::Chunked => Some(BodyDecoder::chunked()),
                        };
                        let req = Req { head: buf[..h.head_len].to_vec(), body: Vec::new() };
                        buf.drain(..h.head_len);
                        body = Some((req, dec, h.keep_alive));
                    }
                },
                Some((mut req, Some(mut d), keep)) if !d.is_done() => {
                    if buf.is_empty() {
                        body = Some((req, Some(d), keep));
                        break;
                    }
                    let Ok(s) = d.decode(&buf) else { return (reqs, None) };
                    assert!(s.consumed > 0 || s.done, "no progress");
                    assert!(s.consumed <= buf.len());
                    if let Some(r) = s.data {
                        assert!(r.end <= s.consumed);
                        req.body.extend_from_slice(&buf[r]);
                    }
                    buf.drain(..s.consumed);
                    if s.done {
                        reqs.push(req);
                        if !keep {
                            return (reqs, Some(true));
                        }
                    } else {
                        body = Some((req, Some(d), keep));
                    }
                }
                Some((req, _, keep)) => {
                    reqs.push(req);
                    if !keep {
                        return (reqs, Some(true));
                    }
                }
            }
        }
        if fed == bytes.len() {
            return (reqs, Some(body.is_none() && buf.is_empty()));
        }
        let next = (fed + read).min(bytes.len());
        buf.extend_from_slice(&bytes[fed..next]);
        fed = next;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else { return };
    let read = usize::from(first % 64) + 1;
    let split = run(bytes, read);
    let whole = run(bytes, bytes.len().max(1));
    let total: usize = split.0.iter().map(|r| r.head.len() + r.body.len()).sum();
    assert!(total <= bytes.len());
    // A rejection may come earlier or later only in the sense of "after the same requests".
    assert_eq!(split, whole, "read size {read} changed the outcome");
});

//! Fuzzes the response side of `fulcrum::h1`: a response head (the first input byte says
//! whether it answers HEAD and the read size) and its body, decoded in reads. Checks,
//! beyond "never panics": the same bytes in one read give the same body and verdict, and
//! the data yielded is never more than was fed.
#![no_main]

use fulcrum::h1::{BodyDecoder, Limits, Parsed, ResponseFraming, parse_response};
use libfuzzer_sys::fuzz_target;

fn run(bytes: &[u8], read: usize, head_request: bool) -> Option<(u16, Vec<u8>, bool)> {
    let limits = Limits { max_head_bytes: 4096 };
    let mut fed = 0;
    let mut head = None;
    while head.is_none() {
        fed = (fed + read).min(bytes.len());
        match parse_response(&bytes[..fed], &limits, head_request) {
            Err(_) => return None,
            Ok(Parsed::Complete(h)) => head = Some(h),
            Ok(Parsed::Partial) if fed == bytes.len() => return None,
            Ok(Parsed::Partial) => {}
        }
    }
    let h = head?;
    let mut dec = match h.body {
        ResponseFraming::NoBody => return Some((h.status, Vec::new(), true)),
        ResponseFraming::Length(n) => BodyDecoder::length(n),
        ResponseFraming::Chunked => BodyDecoder::chunked(),
        ResponseFraming::UntilClose => BodyDecoder::Close,
    };
    let mut body = Vec::new();
    let mut pos = h.head_len;
    while !dec.is_done() && pos < bytes.len() {
        let end = (pos + read).min(bytes.len());
        let s = dec.decode(&bytes[pos..end]).ok()?;
        assert!(s.consumed > 0 || s.done, "no progress");
        if let Some(r) = s.data {
            body.extend_from_slice(&bytes[pos..end][r]);
        }
        pos += s.consumed;
    }
    let clean = dec.finish().is_ok();
    assert!(body.len() <= bytes.len());
    Some((h.status, body, clean))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else { return };
    let head_request = first & 0x80 != 0;
    let read = usize::from(first & 0x3f) + 1;
    let split = run(bytes, read, head_request);
    let whole = run(bytes, bytes.len().max(1), head_request);
    assert_eq!(split, whole, "read size {read} changed the outcome");
});

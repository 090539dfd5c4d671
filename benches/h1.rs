//! The cost of fulcrum's own HTTP/1 codec (`src/h1`, issue 11): parsing a typical 400-byte
//! request head, and decoding a 64 KiB chunked body fed in 4 KiB reads (what one socket
//! read hands the decoder), with the chunked re-encoding the proxy will do.
//!
//! Run: `cargo bench --bench h1 -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fulcrum::h1::{BodyDecoder, Limits, Parsed, encode_chunk, parse_request};

/// A browser-like GET of about 400 bytes.
fn typical_head() -> Vec<u8> {
    let head = "GET /catalog/books/1234?lang=en&page=2 HTTP/1.1\r\n\
        Host: shop.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Cookie: session=4f9a2c1e7b3d8a6f; theme=dark\r\n\
        Connection: keep-alive\r\n\
        \r\n";
    head.as_bytes().to_vec()
}

/// 64 KiB of data as chunks of 1000 bytes (not aligned to the reads), then the last chunk.
fn chunked_body() -> Vec<u8> {
    let data = vec![b'x'; 64 * 1024];
    let mut out = Vec::new();
    for c in data.chunks(1000) {
        encode_chunk(c, &mut out);
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn head(c: &mut Criterion) {
    let buf = typical_head();
    let limits = Limits::default();
    let mut g = c.benchmark_group("h1");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("parse_request/{}B", buf.len()), |b| {
        b.iter(|| match parse_request(black_box(&buf), &limits) {
            Ok(Parsed::Complete(h)) => black_box(h.head_len),
            other => panic!("typical head not parsed: {other:?}"),
        })
    });
    g.finish();
}

fn body(c: &mut Criterion) {
    let wire = chunked_body();
    let mut g = c.benchmark_group("h1");
    g.throughput(Throughput::Bytes(64 * 1024));
    g.bench_function("chunked_decode/64KiB_in_4KiB_reads", |b| {
        b.iter(|| decode(&wire, None))
    });
    let mut out = Vec::with_capacity(80 * 1024);
    g.bench_function("chunked_decode_reencode/64KiB_in_4KiB_reads", |b| {
        b.iter(|| {
            out.clear();
            decode(&wire, Some(&mut out))
        })
    });
    g.finish();
}

/// Decodes `wire` read by read; with `out`, re-encodes each yielded range as a chunk.
fn decode(wire: &[u8], mut out: Option<&mut Vec<u8>>) -> usize {
    let mut dec = BodyDecoder::chunked();
    let mut total = 0;
    for read in wire.chunks(4096) {
        let mut rest = black_box(read);
        while !rest.is_empty() {
            let step = match dec.decode(rest) {
                Ok(s) => s,
                Err(e) => panic!("valid body refused: {e}"),
            };
            if let Some(r) = step.data {
                total += r.len();
                if let Some(o) = out.as_deref_mut() {
                    encode_chunk(&rest[r], o);
                }
            }
            rest = &rest[step.consumed..];
            if step.done {
                break;
            }
        }
    }
    assert!(dec.is_done());
    total
}

criterion_group!(benches, head, body);
criterion_main!(benches);

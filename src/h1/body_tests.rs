//! Tests of the body decoders and the chunked encoder, one per framing rule.

use super::*;

/// Feeds `input` in pieces of `step` bytes; the data yielded, or the first error.
fn run(mut dec: BodyDecoder, input: &[u8], step: usize) -> Result<(Vec<u8>, usize), BodyError> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut avail = 0;
    while !dec.is_done() {
        if pos == avail {
            if avail == input.len() {
                dec.finish()?;
                break;
            }
            avail = (avail + step).min(input.len());
        }
        let s = dec.decode(&input[pos..avail])?;
        if let Some(r) = s.data {
            out.extend_from_slice(&input[pos..avail][r]);
        }
        pos += s.consumed;
        if s.done {
            break;
        }
    }
    Ok((out, pos))
}

fn chunked(input: &str) -> Result<(Vec<u8>, usize), BodyError> {
    for step in [1, 2, 3, 7, 1000] {
        let r = run(BodyDecoder::chunked(), input.as_bytes(), step);
        let whole = run(BodyDecoder::chunked(), input.as_bytes(), input.len().max(1));
        assert_eq!(r, whole, "step {step} differs on {input:?}");
    }
    run(BodyDecoder::chunked(), input.as_bytes(), 5)
}

#[test]
fn length_yields_exactly_n_bytes_and_leaves_the_rest() {
    let (data, used) = run(BodyDecoder::length(5), b"helloGET", 3).unwrap();
    assert_eq!((data.as_slice(), used), (&b"hello"[..], 5));
}

#[test]
fn length_zero_is_done_at_once() {
    assert!(BodyDecoder::length(0).is_done());
}

#[test]
fn length_cut_short_is_incomplete() {
    assert_eq!(
        run(BodyDecoder::length(5), b"hel", 3),
        Err(BodyError::Incomplete)
    );
}

#[test]
fn close_yields_everything_until_eof() {
    let (data, _) = run(BodyDecoder::Close, b"all of it", 4).unwrap();
    assert_eq!(data, b"all of it");
}

#[test]
fn chunked_decodes_in_any_split_and_stops_at_its_end() {
    let (data, used) = chunked("5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT").unwrap();
    assert_eq!(data, b"hello0123456789");
    assert_eq!(used, 30);
}

#[test]
fn chunk_sizes_are_hex_any_case_with_leading_zeros() {
    assert_eq!(
        chunked("00a\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(),
        10
    );
    assert_eq!(
        chunked("A\r\n0123456789\r\n000\r\n\r\n").unwrap().0.len(),
        10
    );
}

#[test]
fn chunk_extensions_are_accepted_and_skipped() {
    let (data, _) = chunked("5;name=value;q=\"a b\"\r\nhello\r\n0 ;last\r\n\r\n").unwrap();
    assert_eq!(data, b"hello");
}

#[test]
fn a_chunk_size_that_is_not_hex_is_an_error() {
    for s in [
        "x\r\n", "-5\r\n", "+5\r\n", "0x5\r\n", " 5\r\n", "\r\n", "5 \r\n", "5 5\r\n",
    ] {
        assert_eq!(chunked(s), Err(BodyError::ChunkSize), "{s:?}");
    }
}

#[test]
fn a_chunk_size_that_overflows_is_an_error() {
    assert_eq!(
        chunked("10000000000000000\r\n"),
        Err(BodyError::ChunkSizeOverflow)
    );
    assert_eq!(
        chunked("ffffffffffffffff\r\n").unwrap_err(),
        BodyError::Incomplete
    );
}

#[test]
fn a_size_line_longer_than_the_limit_is_an_error() {
    let s = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
    assert_eq!(chunked(&s), Err(BodyError::ChunkLineTooLong));
}

#[test]
fn control_bytes_in_an_extension_are_an_error() {
    assert_eq!(
        chunked("5;a\0\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::ChunkExtension)
    );
    assert_eq!(
        chunked("5;a\nhello\r\n0\r\n\r\n"),
        Err(BodyError::ChunkExtension)
    );
}

#[test]
fn a_bare_cr_or_lf_in_a_size_line_is_an_error() {
    assert_eq!(chunked("5\rhello\r\n0\r\n\r\n"), Err(BodyError::LineEnding));
    assert_eq!(chunked("5\nhello\r\n0\r\n\r\n"), Err(BodyError::ChunkSize));
}

#[test]
fn chunk_data_longer_than_its_size_is_an_error() {
    assert_eq!(
        chunked("3\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::ChunkDataEnd)
    );
    assert_eq!(
        chunked("5\r\nhello\n0\r\n\r\n"),
        Err(BodyError::ChunkDataEnd)
    );
}

#[test]
fn only_data_of_validated_size_lines_is_yielded() {
    // The second chunk's size line is bad: only the first chunk's data came out, and
    // nothing of what follows the bad line.
    let input = b"5\r\nhello\r\nZ\r\nsmuggled\r\n0\r\n\r\n";
    let mut dec = BodyDecoder::chunked();
    let mut out = Vec::new();
    let mut pos = 0;
    let err = loop {
        match dec.decode(&input[pos..]) {
            Ok(s) => {
                if let Some(r) = s.data {
                    out.extend_from_slice(&input[pos..][r]);
                }
                pos += s.consumed;
            }
            Err(e) => break e,
        }
    };
    assert_eq!((out.as_slice(), err), (&b"hello"[..], BodyError::ChunkSize));
    // Poisoned: the error again, nothing yielded.
    assert_eq!(dec.decode(b"0\r\n\r\n"), Err(BodyError::ChunkSize));
}

#[test]
fn trailers_are_validated_and_discarded() {
    let (data, used) = chunked("1\r\na\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\nGET").unwrap();
    assert_eq!((data.as_slice(), used), (&b"a"[..], 27));
}

#[test]
fn malformed_trailers_are_an_error() {
    for t in [
        "X\r\n\r\n",
        " X: a\r\n\r\n",
        "X : a\r\n\r\n",
        "X: a\0\r\n\r\n",
        ": a\r\n\r\n",
        "X: a\n\r\n",
    ] {
        let s = format!("0\r\n{t}");
        assert!(chunked(&s).is_err(), "{t:?}");
    }
    assert_eq!(chunked("0\r\n\n"), Err(BodyError::Trailer));
    assert_eq!(chunked("0\r\n\r\r"), Err(BodyError::LineEnding));
}

#[test]
fn a_trailer_section_over_the_limit_is_an_error() {
    let s = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILER_BYTES));
    assert_eq!(chunked(&s), Err(BodyError::TrailersTooLarge));
}

#[test]
fn a_chunked_body_cut_short_is_incomplete() {
    assert_eq!(chunked("5\r\nhel"), Err(BodyError::Incomplete));
    assert_eq!(chunked("5\r\nhello\r\n0\r\n"), Err(BodyError::Incomplete));
}

#[test]
fn every_call_with_input_makes_progress() {
    let mut dec = BodyDecoder::chunked();
    let s = dec.decode(b"5").unwrap();
    assert_eq!((s.consumed, s.data, s.done), (1, None, false));
}

#[test]
fn the_encoder_writes_hex_sizes_and_round_trips() {
    assert_eq!(ChunkHead::new(1).as_bytes(), b"1\r\n");
    assert_eq!(ChunkHead::new(4096).as_bytes(), b"1000\r\n");
    assert_eq!(
        ChunkHead::new(usize::MAX).as_bytes(),
        b"ffffffffffffffff\r\n"
    );
    let mut out = Vec::new();
    encode_chunk(b"hello", &mut out);
    encode_chunk(b"", &mut out);
    encode_chunk(&[7u8; 300], &mut out);
    out.extend_from_slice(LAST_CHUNK);
    let (data, used) = run(BodyDecoder::chunked(), &out, 13).unwrap();
    assert_eq!(used, out.len());
    assert_eq!(&data[..5], b"hello");
    assert_eq!(data.len(), 305);
}

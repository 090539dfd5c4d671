//! Incremental body decoders (Content-Length, chunked, until close) and the chunked encoder.
//!
//! Each decoder is a few integers: no input can make one allocate, and it never holds
//! bytes. Fed any slice, it consumes framing bytes and yields at most one range of data
//! bytes per call ([`Step`]); the caller forwards that range and calls again with the rest.
//!
//! The chunked decoder yields the data of a chunk only once that chunk's size line,
//! extensions included, was read to its CRLF and validated, so the proxy (which re-encodes
//! with [`ChunkHead`]) never forwards a byte of a chunk it could not frame. A fault after
//! the data (no CRLF after it, a bad next size line) stops the body there: the proxy sends
//! no last chunk, so the server sees an unfinished body, never a second request.
//! Trailer fields are validated and discarded (RFC 9112 §7.1.2 lets a recipient that
//! removes the chunked coding discard them).

use std::ops::Range;

use thiserror::Error;

use super::scan::is_tchar;

/// The longest chunk-size line accepted, extensions included (HAProxy and nginx bound it
/// too): a line that never ends must not be read forever.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The most bytes the trailer section may take.
pub const MAX_TRAILER_BYTES: usize = 16384;

/// Why a body's framing was refused: 400 `bad_request` for a request body, 502
/// `upstream_broken` for a response body; the connection is closed either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyError {
    /// A chunk size that is missing or not hex (a sign, `0x`, a space inside...).
    #[error("invalid chunk size")]
    ChunkSize,
    /// A chunk size past 2^64.
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    #[error("chunk-size line too long")]
    ChunkLineTooLong,
    /// Control bytes in a chunk extension.
    #[error("invalid chunk extension")]
    ChunkExtension,
    /// A CR not followed by LF, or a LF without CR, in a framing line.
    #[error("invalid line ending in chunked framing")]
    LineEnding,
    /// Chunk data not followed by CRLF: the data was longer than its size.
    #[error("chunk data longer than its size")]
    ChunkDataEnd,
    /// A malformed trailer field line.
    #[error("invalid trailer field")]
    Trailer,
    /// A trailer section over [`MAX_TRAILER_BYTES`].
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// The connection ended before the body did.
    #[error("body ended early")]
    Incomplete,
}

/// What one call of [`BodyDecoder::decode`] did with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input used (framing and data); the rest belongs to the next call, or
    /// after `done` to the next message.
    pub consumed: usize,
    /// Data bytes to forward, as a range of the input.
    pub data: Option<Range<usize>>,
    /// The body ended (within `consumed`).
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    SizeStart,
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
}

/// The chunked decoder's state: where in the framing it is and how many bytes remain.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
    size: u64,
    line: usize,
    trailer: usize,
}

/// A body decoder, built from a head's framing decision.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// Until the connection closes (responses only).
    Close,
    /// Finished, or failed: nothing more is accepted.
    Done(Option<BodyError>),
}

impl BodyDecoder {
    /// A decoder for exactly `n` bytes.
    pub fn length(n: u64) -> Self {
        BodyDecoder::Length(n)
    }

    /// A decoder for a chunked body.
    pub fn chunked() -> Self {
        BodyDecoder::Chunked(ChunkedDecoder {
            state: Chunk::SizeStart,
            size: 0,
            line: 0,
            trailer: 0,
        })
    }

    /// The decoder of a response body framed as `framing`.
    pub fn for_response(framing: super::ResponseFraming) -> Self {
        use super::ResponseFraming as F;
        match framing {
            F::NoBody | F::Length(0) => BodyDecoder::Done(None),
            F::Length(n) => BodyDecoder::length(n),
            F::Chunked => BodyDecoder::chunked(),
            F::UntilClose => BodyDecoder::Close,
        }
    }

    /// Whether the body has ended (successfully).
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done(None) | BodyDecoder::Length(0))
    }

    /// Feeds `input`; see [`Step`]. After an error every later call returns it again.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let step = match self {
            BodyDecoder::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64) as usize;
                *remaining -= n as u64;
                Step {
                    consumed: n,
                    data: (n > 0).then_some(0..n),
                    done: *remaining == 0,
                }
            }
            BodyDecoder::Close => Step {
                consumed: input.len(),
                data: (!input.is_empty()).then_some(0..input.len()),
                done: false,
            },
            BodyDecoder::Chunked(c) => match c.decode(input) {
                Ok(step) => step,
                Err(e) => {
                    *self = BodyDecoder::Done(Some(e));
                    return Err(e);
                }
            },
            BodyDecoder::Done(Some(e)) => return Err(*e),
            BodyDecoder::Done(None) => Step {
                consumed: 0,
                data: None,
                done: true,
            },
        };
        if step.done {
            *self = BodyDecoder::Done(None);
        }
        Ok(step)
    }

    /// The connection ended: fine only for a close-delimited or finished body.
    pub fn finish(&self) -> Result<(), BodyError> {
        match self {
            BodyDecoder::Close | BodyDecoder::Done(None) | BodyDecoder::Length(0) => Ok(()),
            BodyDecoder::Done(Some(e)) => Err(*e),
            _ => Err(BodyError::Incomplete),
        }
    }
}

impl ChunkedDecoder {
    fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.state == Chunk::Data {
                let n = self.size.min((input.len() - i) as u64) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                return Ok(Step {
                    consumed: i + n,
                    data: Some(i..i + n),
                    done: false,
                });
            }
            i += 1;
            if self.byte(b)? {
                return Ok(Step {
                    consumed: i,
                    data: None,
                    done: true,
                });
            }
        }
        Ok(Step {
            consumed: i,
            data: None,
            done: false,
        })
    }

    /// One framing byte; `Ok(true)` when it ended the body.
    fn byte(&mut self, b: u8) -> Result<bool, BodyError> {
        use Chunk::*;
        if matches!(self.state, SizeStart | Size | SizeWs | Ext) {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(BodyError::ChunkLineTooLong);
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf
        ) {
            self.trailer += 1;
            if self.trailer > MAX_TRAILER_BYTES {
                return Err(BodyError::TrailersTooLarge);
            }
        }
        self.state = match (self.state, b) {
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                let d = (b as char).to_digit(16).unwrap_or(0);
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(d)))
                    .ok_or(BodyError::ChunkSizeOverflow)?;
                Size
            }
            (SizeStart, _) => return Err(BodyError::ChunkSize),
            (Size | SizeWs, b' ' | b'\t') => SizeWs,
            (Size | SizeWs, b';') => Ext,
            (Size, b'\r') => SizeLf,
            (Size | SizeWs, _) => return Err(BodyError::ChunkSize),
            (Ext, b'\r') => SizeLf,
            (Ext, b'\t' | 0x20..=0x7e | 0x80..=0xff) => Ext,
            (Ext, _) => return Err(BodyError::ChunkExtension),
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return Err(BodyError::LineEnding),
            (Data, _) => Data, // not reached: data is taken in bulk by `decode`
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.line = 0;
                SizeStart
            }
            (DataCr | DataLf, _) => return Err(BodyError::ChunkDataEnd),
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerStart | TrailerName, _) => return Err(BodyError::Trailer),
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b'\t' | 0x20..=0x7e | 0x80..=0xff) => TrailerValue,
            (TrailerValue, _) => return Err(BodyError::Trailer),
            (TrailerLf | FinalLf, b'\n') if self.state == FinalLf => return Ok(true),
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerLf | FinalLf, _) => return Err(BodyError::LineEnding),
        };
        Ok(false)
    }
}

/// The size line of one chunk, `HEX\r\n`, on the stack (18 bytes at most).
#[derive(Debug, Clone, Copy)]
pub struct ChunkHead {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkHead {
    /// The size line of a chunk of `len` bytes. `len` must not be 0: an empty chunk is the
    /// last chunk ([`LAST_CHUNK`]), and writing one by mistake would end the body.
    pub fn new(len: usize) -> Self {
        let mut bytes = [0u8; 18];
        let mut digits = 0;
        let mut n = len;
        loop {
            digits += 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        for k in 0..digits {
            let nibble = (len >> (4 * (digits - 1 - k))) & 0xf;
            if let Some(slot) = bytes.get_mut(k) {
                *slot = b"0123456789abcdef".get(nibble).copied().unwrap_or(b'0');
            }
        }
        if let Some(tail) = bytes.get_mut(digits..digits + 2) {
            tail.copy_from_slice(b"\r\n");
        }
        ChunkHead {
            bytes,
            len: digits + 2,
        }
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk to `out`; nothing for empty data (which would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(ChunkHead::new(data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;

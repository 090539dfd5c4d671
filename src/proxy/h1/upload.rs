//! A request body on its way to the server: decoded from the client's bytes by the codec,
//! and only what it validated is sent, re-encoded when chunked (a malformed chunk never
//! reaches the server, and no framing trick of the client's passes through).
//!
//! The body's bytes sit right behind the request head in the client's buffer; they are cut
//! out as they go, so the head stays readable for the whole exchange (a retry, the log)
//! and what follows the body (a pipelined request) stays where it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::{Client, ClientIo};
use crate::buffers;
use crate::h1::{self, BodyDecoder, BodyError, BodyFraming};

/// Why an upload stopped.
#[derive(Debug)]
pub enum UploadError {
    /// The client's body broke the framing rules: 400, and the connection closes.
    Body(BodyError),
    /// The client closed or failed before its body was whole.
    ClientGone,
    /// Writing to the server failed (it may have answered already and closed).
    Server(io::Error),
    /// The body grew past `max_body_bytes`: 413, and the connection closes; the bytes
    /// past the limit never reach the server.
    TooLarge,
}

/// The state of one request body's upload.
#[derive(Debug)]
pub struct Upload {
    decoder: BodyDecoder,
    chunked: bool,
    /// Where the body starts in the client's pending bytes: right after the head.
    at: usize,
    /// Bytes to write to the server, and how many of them went already.
    out: Vec<u8>,
    written: usize,
    /// Body bytes taken from the client so far (a request whose body has started cannot
    /// be sent again).
    pub streamed: u64,
    /// Body bytes taken from the client in all (the access log's `bytes_in`).
    pub taken: u64,
    done: bool,
    starved: bool,
    /// Writing to the server failed: the rest of the body cannot go.
    pub failed: bool,
    /// The most body bytes accepted (`u64::MAX`: no limit).
    limit: u64,
}

impl Upload {
    /// The upload of a body framed as `framing`, starting `at` bytes into the client's
    /// pending bytes.
    pub fn new(framing: BodyFraming, at: usize) -> Self {
        let (decoder, chunked, done) = match framing {
            BodyFraming::None => (BodyDecoder::Done(None), false, true),
            BodyFraming::Length(0) => (BodyDecoder::Done(None), false, true),
            BodyFraming::Length(n) => (BodyDecoder::length(n), false, false),
            BodyFraming::Chunked => (BodyDecoder::chunked(), true, false),
        };
        Upload {
            decoder,
            chunked,
            at,
            out: Vec::new(),
            written: 0,
            streamed: 0,
            taken: 0,
            done,
            starved: false,
            failed: false,
            limit: u64::MAX,
        }
    }

    /// At most `max` body bytes (0: no limit) go; a larger body stops the upload.
    pub fn limit(mut self, max: u64) -> Self {
        if max > 0 {
            self.limit = max;
        }
        self
    }

    /// Whether the whole body went to the server (or there was none).
    pub fn is_done(&self) -> bool {
        self.done && self.written >= self.out.len()
    }

    /// A `Content-Length` body already whole in the client's buffer: appended to `out`
    /// (the head, so both go in one write) and taken from the buffer. Returns whether it
    /// was; a body sent this way can be sent again on another connection, as the head can.
    pub fn coalesce<S>(&mut self, client: &mut Client<S>, out: &mut Vec<u8>) -> bool {
        let BodyDecoder::Length(n) = self.decoder else {
            return false;
        };
        let Some(body) = client
            .buf
            .pending()
            .get(self.at..self.at.saturating_add(n as usize))
        else {
            return false;
        };
        if body.len() as u64 != n || n > buffers::SIZE as u64 {
            return false;
        }
        out.extend_from_slice(body);
        self.taken = n;
        client.buf.cut(self.at, n as usize);
        self.decoder = BodyDecoder::Done(None);
        self.done = true;
        true
    }

    /// Moves the body on: writes what is pending to `server`, takes more from the client.
    pub fn poll<S: ClientIo, W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut Client<S>,
        server: &mut W,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            while self.written < self.out.len() {
                let rest = self.out.get(self.written..).unwrap_or_default();
                match Pin::new(&mut *server).poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) => {
                        self.failed = true;
                        return Poll::Ready(Err(UploadError::Server(
                            io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Ready(Err(e)) => {
                        self.failed = true;
                        return Poll::Ready(Err(UploadError::Server(e)));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.out.clear();
            self.written = 0;
            if self.done {
                buffers::give_write(std::mem::take(&mut self.out));
                return Poll::Ready(Ok(()));
            }
            let available = client.buf.pending().len().saturating_sub(self.at);
            if available == 0 || self.starved {
                self.starved = false;
                match client
                    .buf
                    .poll_fill(&mut client.io, cx, self.at + buffers::SIZE)
                {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(UploadError::ClientGone));
                    }
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let input = client.buf.pending().get(self.at..).unwrap_or_default();
            let step = self.decoder.decode(input).map_err(UploadError::Body);
            let step = match step {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if self.out.capacity() == 0 {
                self.out = buffers::take_write();
            }
            if let Some(data) = step.data.and_then(|r| input.get(r)) {
                if self.streamed.saturating_add(data.len() as u64) > self.limit {
                    return Poll::Ready(Err(UploadError::TooLarge));
                }
                if self.chunked {
                    h1::encode_chunk(data, &mut self.out);
                } else {
                    self.out.extend_from_slice(data);
                }
                self.streamed += data.len() as u64;
                self.taken += data.len() as u64;
            }
            client.buf.cut(self.at, step.consumed);
            // The decoder took nothing: what is pending is not enough to go on.
            self.starved = step.consumed == 0 && !step.done;
            if step.done {
                if self.chunked {
                    self.out.extend_from_slice(h1::body::LAST_CHUNK);
                }
                self.done = true;
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        buffers::give_write(std::mem::take(&mut self.out));
    }
}

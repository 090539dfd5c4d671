//! An HTTP/1 client's request body on its way to an HTTP/2 stream: decoded from the
//! client's bytes by the codec (only what it validated goes on) and handed, piece by piece,
//! to the channel hyper reads the stream's body from. Its bytes sit right behind the head
//! in the client's buffer and are cut out as they go, as the engine's own upload does.

use std::task::{Context, Poll};

use bytes::Bytes;
use tokio_util::sync::PollSender;

use super::upload::UploadError;
use super::{Client, ClientIo};
use crate::buffers;
use crate::h1::BodyDecoder;
use crate::upstream::body::Piece;

/// A request body on its way from the client's buffer into the stream's channel.
pub struct Pump {
    tx: PollSender<Piece>,
    decoder: BodyDecoder,
    /// Where the body starts in the client's pending bytes: right after the head.
    at: usize,
    /// A piece waiting for room in the channel.
    pending: Option<Piece>,
    decoded: bool,
    starved: bool,
    /// The whole body (and its end) went, or the stream stopped taking it.
    pub done: bool,
    /// Body bytes still allowed (`max_body_bytes`).
    left: u64,
}

impl Pump {
    pub fn new(tx: tokio::sync::mpsc::Sender<Piece>, decoder: BodyDecoder, at: usize) -> Self {
        Pump {
            tx: PollSender::new(tx),
            decoder,
            at,
            pending: None,
            decoded: false,
            starved: false,
            done: false,
            left: u64::MAX,
        }
    }

    /// At most `max` body bytes (0: no limit) go; a larger body stops the pump.
    pub fn limit(mut self, max: u64) -> Self {
        if max > 0 {
            self.left = max;
        }
        self
    }

    /// Moves the body on: takes more from the client, hands what is decoded over.
    pub fn poll<S: ClientIo>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut Client<S>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if let Some(piece) = self.pending.take() {
                match self.tx.poll_reserve(cx) {
                    Poll::Ready(Ok(())) => {
                        let end = matches!(piece, Piece::End);
                        if self.tx.send_item(piece).is_err() || end {
                            self.done = true;
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        self.done = true;
                        return Poll::Ready(Err(UploadError::Server(
                            std::io::ErrorKind::BrokenPipe.into(),
                        )));
                    }
                    Poll::Pending => {
                        self.pending = Some(piece);
                        return Poll::Pending;
                    }
                }
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.decoded {
                self.pending = Some(Piece::End);
                continue;
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
            let step = match self.decoder.decode(input) {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(UploadError::Body(e))),
            };
            if let Some(data) = step
                .data
                .and_then(|r| input.get(r))
                .filter(|d| !d.is_empty())
            {
                if data.len() as u64 > self.left {
                    return Poll::Ready(Err(UploadError::TooLarge));
                }
                self.left -= data.len() as u64;
                self.pending = Some(Piece::Data(Bytes::copy_from_slice(data)));
            }
            client.buf.cut(self.at, step.consumed);
            self.starved = step.consumed == 0 && !step.done;
            self.decoded = step.done;
        }
    }
}

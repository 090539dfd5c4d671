//! One attempt of a request on one server: a connection (pooled or new), the head and
//! body written, the response head awaited; and what an attempt can give.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::upload::{Upload, UploadError};
use super::{Client, ClientIo};
use crate::h1::{BodyError, ResponseError, ResponseHead};
use crate::pool::Server;
use crate::proxy::error::Refusal;
use crate::upstream::h1::{HeadError, Interim, ServerConn};
use crate::upstream::{ClientAddrs, ConnectError};

/// What one attempt on one server gave. Returned once per attempt and matched at once:
/// moving the head costs less than boxing it per request.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// A response head arrived; its body is still to be read from the connection.
    Answered(ServerConn, ResponseHead),
    /// Nothing reached the server: another server may take the request, whatever it is.
    NotSent(Unsent),
    /// Sent, and the server failed before a response head.
    Failed(Refusal),
    /// The client's body broke the framing rules (no fault of the server), or (`None`)
    /// grew past `max_body_bytes`.
    BadBody(Option<BodyError>),
    /// The client went away.
    ClientGone,
}

/// Why an attempt sent nothing.
pub enum Unsent {
    Connect(ConnectError),
}

/// How an attempt on one connection failed.
pub enum Fail {
    /// The connection ended before the first byte of a response.
    Closed,
    /// It ended or failed after the server had started answering.
    Broken,
    BadResponse(ResponseError),
    TimedOut,
    /// The client's body: malformed, or (`None`) over `max_body_bytes`.
    Body(Option<BodyError>),
    ClientGone,
}

/// One attempt of a request on one server.
pub struct Attempt<'a> {
    pub server: &'a Server,
    /// The request head, with the body when it was small enough to go along.
    pub out: &'a [u8],
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub was_head: bool,
    /// Interim answers (103) go to the client: it speaks HTTP/1.1.
    pub interim: Interim,
    /// The request may go again on a fresh connection when a pooled one closed before
    /// answering (idempotent, or bodiless).
    pub resend_ok: bool,
}

impl Attempt<'_> {
    pub async fn run<S: ClientIo>(
        &self,
        client: &mut Client<S>,
        upload: &mut Upload,
        continue_owed: &mut bool,
    ) -> Outcome {
        let addrs = self.server.proxied().then(|| ClientAddrs {
            source: client.peer,
            destination: client.io.local_addr().unwrap_or(client.peer),
        });
        let mut pooled = self.server.checkout(addrs);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                // Boxed: with keep-alive a new connection is the rare path.
                None => match Box::pin(self.server.connect(addrs, self.connect_timeout)).await {
                    Ok(c) => c,
                    Err(e) => return Outcome::NotSent(Unsent::Connect(e)),
                },
            };
            let r = self
                .exchange(&mut conn, client, upload, continue_owed)
                .await;
            match r {
                Ok(resp) => return Outcome::Answered(conn, resp),
                // A pooled connection the server closed as we used it: the request goes
                // on a fresh one when nothing of its body has been taken yet.
                Err(Fail::Closed) if reused && upload.streamed == 0 && self.resend_ok => {
                    pooled = self.server.checkout(addrs);
                }
                Err(Fail::Closed | Fail::Broken) => {
                    return Outcome::Failed(Refusal::UpstreamBroken);
                }
                Err(Fail::BadResponse(e)) => {
                    tracing::warn!(server = %self.server.full_name(), "malformed response: {e}");
                    return Outcome::Failed(Refusal::UpstreamBroken);
                }
                Err(Fail::TimedOut) => return Outcome::Failed(Refusal::UpstreamTimeout),
                Err(Fail::Body(e)) => return Outcome::BadBody(e),
                Err(Fail::ClientGone) => return Outcome::ClientGone,
            }
        }
    }

    /// Sends the head, streams the body while waiting for the response head.
    async fn exchange<S: ClientIo>(
        &self,
        conn: &mut ServerConn,
        client: &mut Client<S>,
        upload: &mut Upload,
        continue_owed: &mut bool,
    ) -> Result<ResponseHead, Fail> {
        let wait = async {
            if conn.stream.write_all(self.out).await.is_err() {
                return Err(Fail::Closed);
            }
            if *continue_owed {
                // fulcrum answers `Expect: 100-continue` itself once the server is there.
                *continue_owed = false;
                let sent = client.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                if sent.is_err() || client.io.flush().await.is_err() {
                    return Err(Fail::ClientGone);
                }
            }
            let mut uploading = !upload.is_done();
            let mut answered = false;
            loop {
                let head = self
                    .head(&mut uploading, &mut answered, conn, client, upload)
                    .await?;
                if !head.is_interim() {
                    return Ok(head);
                }
                // An interim answer (103 Early Hints) goes to the client as the server
                // wrote it, before the final one.
                let bytes = conn.buf.pending().get(..head.head_len).unwrap_or_default();
                if client.io.write_all(bytes).await.is_err() || client.io.flush().await.is_err() {
                    return Err(Fail::ClientGone);
                }
                conn.buf.consume(head.head_len);
            }
        };
        match tokio::time::timeout(self.response_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Fail::TimedOut),
        }
    }

    /// Streams the body while waiting for the next response head (interim ones returned
    /// when the client may have them).
    async fn head<S: ClientIo>(
        &self,
        uploading: &mut bool,
        answered: &mut bool,
        conn: &mut ServerConn,
        client: &mut Client<S>,
        upload: &mut Upload,
    ) -> Result<ResponseHead, Fail> {
        let (was_head, interim) = (self.was_head, self.interim);
        std::future::poll_fn(|cx| {
            if *uploading {
                match upload.poll(cx, client, &mut conn.stream) {
                    std::task::Poll::Ready(Ok(())) => *uploading = false,
                    // The server stopped reading; its answer may still come.
                    std::task::Poll::Ready(Err(UploadError::Server(e))) => {
                        tracing::debug!("the server stopped reading the request body: {e}");
                        *uploading = false;
                    }
                    std::task::Poll::Ready(Err(UploadError::Body(e))) => {
                        return std::task::Poll::Ready(Err(Fail::Body(Some(e))));
                    }
                    std::task::Poll::Ready(Err(UploadError::TooLarge)) => {
                        return std::task::Poll::Ready(Err(Fail::Body(None)));
                    }
                    std::task::Poll::Ready(Err(UploadError::ClientGone)) => {
                        return std::task::Poll::Ready(Err(Fail::ClientGone));
                    }
                    std::task::Poll::Pending => {}
                }
            } else if client.io.poll_gone(cx).is_ready() {
                return std::task::Poll::Ready(Err(Fail::ClientGone));
            }
            conn.poll_head(cx, was_head, answered, interim)
                .map_err(|e| match e {
                    HeadError::Closed => Fail::Closed,
                    HeadError::Broken => Fail::Broken,
                    HeadError::Malformed(e) => Fail::BadResponse(e),
                })
        })
        .await
    }
}

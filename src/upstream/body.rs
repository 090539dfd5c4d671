//! The request body sent to a server, whichever protocol carries it: the HTTP/1 bridge
//! frames it itself, the HTTP/2 client ([`super::h2`]) hands it to hyper as a `Body`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The request body sent upstream: the client's body streamed as it arrives, or nothing.
///
/// `Empty` is what makes a retry possible after a request was sent: a request without a
/// body can be sent again from its head alone, whereas the client's body is gone once sent.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, streamed (sent once: it cannot be replayed).
    Client(Incoming),
    /// No body: a bodiless request, which may be sent again on another server.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    /// The client's frames as they come, trailers included (gRPC sends its own).
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

//! What the engine needs of a client stream beyond reading and writing: waiting for bytes
//! without a buffer (plain TCP can; TLS must read to know), and noticing that a client
//! whose request is waiting (queued, or for its server) has gone away.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::proxy::conn::Tracked;

/// A client connection's stream.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// Ready when bytes may have arrived (or the stream ended).
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ready when the client has certainly closed its side. Bytes waiting to be read say
    /// nothing either way; then it stays pending.
    fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()>;

    /// The address the client connected to (the PROXY header fulcrum sends names it);
    /// `None` when the stream cannot tell (the header then names the client's own address).
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }
}

fn tcp_gone(stream: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
    let mut probe = [0u8; 1];
    let mut seen = tokio::io::ReadBuf::new(&mut probe);
    match stream.poll_peek(cx, &mut seen) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

impl ClientIo for Tracked<TcpStream> {
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }

    fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        tcp_gone(self.get_ref(), cx)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.get_ref().local_addr().ok()
    }
}

impl ClientIo for TlsStream<Tracked<TcpStream>> {
    /// TLS may hold decrypted bytes already, and only a read can tell: ready at once (a
    /// TLS connection keeps its buffer while it idles; the TLS session holds its own).
    fn poll_idle(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The TCP stream under TLS: its end is the client's end (a close_notify alert counts
    /// as bytes, so only the FIN after it is seen).
    fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        tcp_gone(self.get_ref().0.get_ref(), cx)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.get_ref().0.get_ref().local_addr().ok()
    }
}

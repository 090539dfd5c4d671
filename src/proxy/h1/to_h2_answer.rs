//! An HTTP/2 server's response written back to an HTTP/1 client: the head framed for the
//! client (by length when the server gave one, chunked for an HTTP/1.1 client otherwise,
//! close-delimited for HTTP/1.0), hop-by-hop fields dropped, then the body's frames as
//! they come, with the server's trailers in the last chunk.

use std::io::Write;
use std::time::Duration;

use http::Response;
use http::header;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::ClientIo;
use super::to_h2::Ctx;
use crate::buffers;
use crate::h1::{self, Version};
use crate::proxy::body::Finish;
use crate::proxy::bridge::ServerBody;
use crate::proxy::headers::is_hop_by_hop;
use crate::proxy::headers::push_number;

/// Why relaying the response stopped.
pub enum Relay {
    /// Before anything went to the client: it can still get fulcrum's 502.
    Unsent(String),
    /// After: the client's connection ends.
    Cut(String),
}

/// How the body reaches the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Writes the response head and streams its body; `Ok(keep)`: the whole answer went out,
/// and whether the connection may carry another request.
pub async fn respond<S: ClientIo>(
    cx: &mut Ctx<'_, S>,
    resp: Response<ServerBody>,
    set_cookie: Option<&str>,
    stall: Duration,
    finish: &mut Finish,
) -> Result<bool, Relay> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    let was_head = cx.head.method_is(cx.client.buf.pending(), "HEAD");
    let framing = if was_head || status == 204 || status == 304 || status < 200 {
        Framing::None
    } else {
        match (body.size_hint().exact(), cx.head.version) {
            (Some(n), _) => Framing::Length(n),
            (None, Version::Http11) => Framing::Chunked,
            (None, Version::Http10) => Framing::Close,
        }
    };
    let close = !cx.head.keep_alive || framing == Framing::Close || cx.stop.is_cancelled();
    let mut out = buffers::take_write();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status,
        parts.status.canonical_reason().unwrap_or("")
    );
    let keep_framing = framing == Framing::None && status >= 200 && status != 204;
    for (name, value) in &parts.headers {
        let n = name.as_str().as_bytes();
        let framing_field = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (framing_field && !keep_framing) || is_hop_by_hop(n) || cx.routed.response.drops(n) {
            continue;
        }
        line(&mut out, n, value.as_bytes());
    }
    out.extend_from_slice(cx.routed.response_lines);
    if let Some(c) = set_cookie {
        line(&mut out, b"Set-Cookie", c.as_bytes());
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_number(&mut out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if cx.head.version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let r = stream_body(cx, &mut body, framing, stall, finish, &mut out).await;
    buffers::give_write(out);
    r.map(|()| !close)
}

/// The body's frames to the client after the head waiting in `out` (sent with the first).
async fn stream_body<S: ClientIo>(
    cx: &mut Ctx<'_, S>,
    body: &mut ServerBody,
    framing: Framing,
    stall: Duration,
    finish: &mut Finish,
    out: &mut Vec<u8>,
) -> Result<(), Relay> {
    let mut sent = false;
    let mut trailers = None;
    // A bodiless answer (HEAD, 204, 304) takes nothing from the stream.
    #[allow(clippy::while_immutable_condition)] // left by `break` and `return`
    while framing != Framing::None {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => Err(format!(
                "the server sent nothing for {stall:?} in the middle of its body"
            )),
            Ok(Some(Err(e))) => Err(format!("the server's stream failed: {e}")),
            Ok(None) => break,
            Ok(Some(Ok(f))) => Ok(f),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) if sent => return Err(Relay::Cut(e)),
            Err(e) => return Err(Relay::Unsent(e)),
        };
        match frame.into_data() {
            Ok(data) => {
                finish.add_bytes(data.len());
                if framing == Framing::Chunked {
                    h1::encode_chunk(&data, out);
                } else {
                    out.extend_from_slice(&data);
                }
            }
            Err(f) => trailers = f.into_trailers().ok(),
        }
        if !out.is_empty() {
            write(cx, out).await.map_err(Relay::Cut)?;
            sent = true;
        }
    }
    if framing == Framing::Chunked {
        // The last chunk, with the server's trailers (RFC 9112 §7.1.2).
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    write(cx, out).await.map_err(Relay::Cut)
}

async fn write<S: ClientIo>(cx: &mut Ctx<'_, S>, out: &mut Vec<u8>) -> Result<(), String> {
    let io = &mut cx.client.io;
    let r = match io.write_all(out).await {
        Ok(()) => io.flush().await,
        Err(e) => Err(e),
    };
    out.clear();
    r.map_err(|e| format!("writing to the client failed: {e}"))
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

//! Accepting client connections: one accept loop per frontend, HTTP or TCP alike, a global connection limit
//! (a semaphore whose permit lives as long as the connection; past the limit accepting
//! simply waits), and graceful shutdown that lets in-flight requests finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::conn::{Activity, Tracked};
use super::deadlines::{Deadlines, Watched};
use super::frontend::Frontend;
use super::h1::ClientIo;
use super::http::handle;
use super::stall::StreamExec;
use super::tls::Terminator;
use crate::tasks::Tasks;

/// Binds `addr` with the options a proxy wants (address reuse, a deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false)?)
}

fn bind_std(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds `addr` once per worker (`SO_REUSEPORT` when more than one: the kernel spreads new
/// connections over the sockets). Port 0 is resolved by the first, and the others bind the
/// port it got.
pub fn bind_group(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let reuse = workers > 1;
    let first = bind_std(addr, reuse)?;
    let local = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(bind_std(local, true)?);
    }
    Ok(all)
}

/// What every accept loop shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// `[global] max_connections` client connections at once.
    pub limit: Arc<Semaphore>,
    /// Every live connection's task, so shutdown can wait for them to finish; its stop
    /// token ends accepting.
    pub tasks: Tasks,
    /// Open client connections of this frontend (for `fulcrum_client_connections`).
    pub clients: Arc<crate::metrics::ClientCount>,
    /// Memory and fd pressure: `accept` waits while it pauses.
    pub overload: Arc<crate::overload::Overload>,
}

/// How an accept loop serves what it accepts.
#[derive(Clone)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 requests, over TLS when a terminator is given.
    Http(Option<Terminator>),
    /// Whole TCP connections relayed to a server, TLS terminated first when given.
    Tcp(Option<Terminator>),
}

impl Protocol {
    /// What the certificates served say (empty without TLS).
    pub fn certificates(&self) -> Arc<[crate::certs::CertInfo]> {
        match self {
            Protocol::Http(Some(t)) | Protocol::Tcp(Some(t)) => Arc::clone(&t.certificates),
            Protocol::Http(None) | Protocol::Tcp(None) => Arc::from(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http(None) => "http",
            Protocol::Http(Some(_)) => "https",
            Protocol::Tcp(None) => "tcp",
            Protocol::Tcp(Some(_)) => "tcp+tls",
        })
    }
}

/// The client's address: the peer's, or with `accept_proxy_protocol` the one the PROXY
/// header names, read within `proxy_within` (the frontend's `client_header_timeout`;
/// `None` without `accept_proxy_protocol`). `None`:
/// no valid header in time, or fulcrum is stopping; the connection is closed unserved.
async fn client_of(
    stream: &mut TcpStream,
    peer: SocketAddr,
    proxy_within: Option<Duration>,
    stop: &CancellationToken,
) -> Option<SocketAddr> {
    let Some(header) = proxy_within else {
        return Some(peer);
    };
    tokio::select! {
        r = tokio::time::timeout(header, super::proxy_protocol::read_client(stream, peer)) => match r {
            Ok(Ok(client)) => Some(client),
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, "closing the connection: {e}");
                None
            }
            Err(_) => {
                tracing::debug!(client = %peer, "closing the connection: no PROXY header within client_header_timeout");
                None
            }
        },
        _ = stop.cancelled() => None,
    }
}

/// Accepts a connection and waits for a slot under the global limit before serving it;
/// `None` when `close` (a child of the stop token) is cancelled.
///
/// The slot is taken after the accept, not before: with several workers, a loop waiting
/// idle in `accept` with a slot in hand would keep it from a loop whose socket has a
/// client. So past the limit each loop holds at most one accepted, unserved connection,
/// and the rest wait in the kernel's queue.
async fn accept(
    listener: &TcpListener,
    shared: &Shared,
    close: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let accepted = tokio::select! {
            _ = close.cancelled() => return None,
            // Above 98 % of max_memory, or with free fds under the reserve, wait for room:
            // before accepting, and after (the loop may have been waiting when it began).
            a = async {
                shared.overload.room().await;
                let a = listener.accept().await;
                shared.overload.room().await;
                a
            } => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let permit = match Arc::clone(&shared.limit).try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => tokio::select! {
                        _ = close.cancelled() => return None,
                        p = Arc::clone(&shared.limit).acquire_owned() => p.ok()?,
                    },
                };
                return Some((stream, peer, permit));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin; the listener stays.
                shared.overload.accept_failed(&e);
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `listener` for `fe` until fulcrum stops or the frontend's own `close` (a child of
/// the stop token) is cancelled. The socket is shared, not owned: a reload that changes
/// how a frontend serves (mode, TLS) starts another loop on the same socket, so no
/// connection is refused meanwhile.
///
/// The frontend's settings are read at each accept (one atomic load; the HTTP builders are
/// rebuilt only when they changed), so a reload applies its timeouts and header limit to
/// every new connection. With `accept_proxy_protocol`, each connection's own task reads the
/// PROXY header first ([`client_of`]), before TLS or HTTP, so a slow header never holds up
/// the accept loop.
pub async fn serve(
    listener: std::net::TcpListener,
    fe: Arc<Frontend>,
    protocol: Protocol,
    shared: Shared,
    close: CancellationToken,
) {
    // Registered here, with the reactor of the worker this loop runs on.
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(frontend = %fe.name, "cannot listen: {e}");
            return;
        }
    };
    let mut current = fe.settings_full();
    // Shared by the connections (one pointer in each task rather than the builder's
    // settings: an idle connection's memory is mostly its task).
    let mut builders = Arc::new(Builders::new(&current));
    // The client timeouts of this loop's connections, all on this worker's runtime.
    let deadlines = Deadlines::new(shared.tasks.stopping().clone());
    while let Some((mut stream, peer, permit)) = accept(&listener, &shared, &close).await {
        let open = shared.clients.open();
        let _ = stream.set_nodelay(true);
        let now = fe.settings_full();
        if !Arc::ptr_eq(&now, &current) {
            builders = Arc::new(Builders::new(&now));
            current = now;
        }
        let limits = Limits {
            idle: current.client_idle_timeout.get(),
            header: current.client_header_timeout.get(),
        };
        // With `accept_proxy_protocol`, the PROXY header is read within the header timeout.
        let proxy_within = current.accept_proxy_protocol.then_some(limits.header);
        let stop = shared.tasks.stopping().clone();
        let tls = match &protocol {
            Protocol::Tcp(tls) => {
                let fe = Arc::clone(&fe);
                let tls = tls.as_ref().map(|t| t.acceptor.clone());
                shared.tasks.spawn(async move {
                    if let Some(peer) = client_of(&mut stream, peer, proxy_within, &stop).await {
                        super::tcp::serve(&fe, stream, peer, tls, limits.header).await;
                    }
                    drop((permit, open));
                });
                continue;
            }
            Protocol::Http(tls) => tls.as_ref().map(|t| t.acceptor.clone()),
        };
        let (conn, mut io) = Conn::new(Arc::clone(&fe), stream, (&deadlines, limits), stop);
        let builders = Arc::clone(&builders);
        // Two kinds of task, so that a plain connection's task is not sized for a TLS
        // session it does not have (an idle connection's memory is mostly its task).
        // Each connection's future is most of its idle memory, so nothing it holds is
        // moved once the task runs (a moved-from value keeps its room in the future): the
        // connection and the engine's client are made here and only borrowed inside.
        match tls {
            None => {
                let mut client = conn.client(io, peer, false);
                shared.tasks.spawn(async move {
                    // The PROXY header and the sniff happen once, before the connection
                    // can idle: boxed, so its task is not sized for them.
                    let proxied = match proxy_within {
                        Some(within) => Box::pin(conn.proxy_header(&mut client, within)).await,
                        None => true,
                    };
                    if proxied {
                        match Box::pin(conn.sniff(&client)).await {
                            Some(Proto::H1) => conn.serve_h1(&mut client).await,
                            Some(Proto::H2) => {
                                let io = client.io;
                                Box::pin(conn.serve_h2(&builders, io, client.peer, false)).await;
                            }
                            None => {}
                        }
                    }
                    drop((permit, open));
                })
            }
            Some(acceptor) => shared.tasks.spawn(async move {
                'conn: {
                    let Some(peer) = client_of(io.get_mut(), peer, proxy_within, &conn.stop).await
                    else {
                        break 'conn;
                    };
                    let Some(io) =
                        super::tls::handshake(&acceptor, io, limits.header, &conn.fe.name, peer)
                            .await
                    else {
                        break 'conn;
                    };
                    // RFC 9113 §3.3: over TLS, HTTP/2 is chosen by ALPN.
                    match io.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Box::pin(conn.serve_h2(&builders, io, peer, true)).await,
                        _ => conn.serve_h1(&mut conn.client(io, peer, true)).await,
                    }
                }
                drop((permit, open));
            }),
        };
    }
}

/// The HTTP/2 connection builder for a frontend's settings (HTTP/1.1 is fulcrum's own
/// engine, [`super::h1`]).
///
/// fulcrum picks the protocol itself (ALPN, or a peek at the first bytes) rather than
/// using hyper-util's `auto` builder, which reads the first bytes into its own buffer.
#[derive(Clone)]
struct Builders {
    h2: http2::Builder<StreamExec>,
}

impl Builders {
    fn new(settings: &crate::config::Frontend) -> Self {
        // Each stream's task runs watched: one whose client opens no window for
        // `client_idle_timeout` is reset and its slot freed (see `stall`).
        let mut h2 = http2::Builder::new(StreamExec {
            idle: settings.client_idle_timeout.get(),
        });
        // The header list is allowed twice `max_header_bytes`: a head a little over the
        // limit reaches `prepare` and gets fulcrum's own 431 `header_too_large`, and h2
        // refuses anything larger before decoding it whole.
        let list = (settings.max_header_bytes * 2).max(16 * 1024);
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(u32::try_from(list).unwrap_or(u32::MAX));
        Builders { h2 }
    }
}

/// The protocol a client connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

/// What a client speaking HTTP/2 without TLS sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol announced by the first bytes `seen` of a connection, or `None` while they
/// are still a prefix of the HTTP/2 preface.
fn proto_of(seen: &[u8]) -> Option<Proto> {
    let n = seen.len().min(H2_PREFACE.len());
    if seen[..n] != H2_PREFACE[..n] {
        Some(Proto::H1)
    } else if n == H2_PREFACE.len() {
        Some(Proto::H2)
    } else {
        None
    }
}

/// The client timeouts of a frontend.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    header: Duration,
}

/// One accepted client connection: what ends it besides the client (shutdown and the
/// client timeouts). The client's address is the engine's [`Client`](super::h1::Client)'s,
/// kept once.
struct Conn {
    fe: Arc<Frontend>,
    watched: Watched,
    stop: CancellationToken,
}

impl Conn {
    /// The connection on `stream`, its activity tracked for the client timeouts from now.
    fn new(
        fe: Arc<Frontend>,
        stream: TcpStream,
        (deadlines, limits): (&Arc<Deadlines>, Limits),
        stop: CancellationToken,
    ) -> (Conn, Tracked<TcpStream>) {
        let activity = Activity::new();
        let io = Tracked::new(stream, Arc::clone(&activity));
        let watched = deadlines.watch(&activity, limits.idle, limits.header);
        (Conn { fe, watched, stop }, io)
    }

    fn activity(&self) -> &Arc<Activity> {
        self.watched.activity()
    }

    /// With `accept_proxy_protocol`: reads the PROXY header within `within` (the header
    /// timeout) and takes the client's address from it; `false`: the connection is to be
    /// closed unserved.
    async fn proxy_header(
        &self,
        client: &mut super::h1::Client<Tracked<TcpStream>>,
        within: Duration,
    ) -> bool {
        match client_of(client.io.get_mut(), client.peer, Some(within), &self.stop).await {
            Some(peer) => {
                client.peer = peer;
                true
            }
            None => false,
        }
    }

    /// Waits for the first bytes of a plain connection and tells which protocol they start,
    /// without consuming them (the engine or hyper reads them itself). `None`: the client left, stayed
    /// silent past the header timeout, or fulcrum is stopping.
    async fn sniff(&self, client: &super::h1::Client<Tracked<TcpStream>>) -> Option<Proto> {
        let stream = client.io.get_ref();
        let peer = client.peer;
        let peek = async {
            let mut buf = [0u8; H2_PREFACE.len()];
            loop {
                let ready = stream.ready(Interest::READABLE).await?;
                // The peek runs inside `try_io`: a prefix of the preface counts as "would
                // block", which clears the readiness it was woken for (and only that: bytes
                // that arrived meanwhile keep theirs), so the next wait is for more bytes.
                let peeked = stream.try_io(Interest::READABLE, || {
                    let mut seen = ReadBuf::new(&mut buf);
                    let quiet = &mut Context::from_waker(Waker::noop());
                    match stream.poll_peek(quiet, &mut seen) {
                        Poll::Ready(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                        Poll::Ready(Ok(_)) => match proto_of(seen.filled()) {
                            Some(proto) => Ok(proto),
                            // The client has half-closed: no byte will follow, and hyper
                            // answers or closes on what there is.
                            None if ready.is_read_closed() => Ok(Proto::H1),
                            None => Err(std::io::ErrorKind::WouldBlock.into()),
                        },
                        Poll::Ready(Err(e)) => Err(e),
                        Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
                    }
                });
                match peeked {
                    Ok(proto) => return Ok(proto),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::select! {
            r = peek => r.map_err(|e: std::io::Error| {
                tracing::debug!(client = %peer, "connection ended before a request: {e}");
            }).ok(),
            _ = self.stop.cancelled() => None,
            () = self.activity().expired() => {
                tracing::debug!(client = %peer, "closing a connection that sent nothing");
                None
            }
        }
    }

    /// The engine's view of this connection, on `io` (TLS or not), from `peer`.
    fn client<S>(&self, io: S, peer: SocketAddr, tls: bool) -> super::h1::Client<S> {
        super::h1::Client {
            io,
            buf: crate::buffers::ReadBuf::new(),
            peer,
            tls,
            activity: Arc::clone(self.activity()),
        }
    }

    /// Serves HTTP/1.1 requests on fulcrum's own engine until the client leaves, a timeout
    /// passes or fulcrum stops (the request in progress is answered first).
    ///
    /// The client is the task's own and only borrowed here, and this is the engine's
    /// future itself, with no wrapper of its own: it is most of an idle connection's memory.
    fn serve_h1<'a, S: ClientIo>(
        &'a self,
        client: &'a mut super::h1::Client<S>,
    ) -> impl Future<Output = ()> + 'a {
        super::h1::serve(&self.fe, client, &self.stop)
    }

    /// Serves an HTTP/2 connection from `peer` through hyper. Called boxed: HTTP/1.1
    /// connections, the many, are not sized for an HTTP/2 one.
    async fn serve_h2<S: ClientIo + 'static>(
        &self,
        builders: &Builders,
        io: S,
        peer: SocketAddr,
        tls: bool,
    ) {
        let fe = Arc::clone(&self.fe);
        let act = Arc::clone(self.activity());
        let svc = service_fn(move |req| {
            let busy = act.begin();
            let fe = Arc::clone(&fe);
            // Boxed per request: hyper keeps room for one service future per
            // stream for the stream's whole life.
            Box::pin(async move {
                Ok::<_, std::convert::Infallible>(handle(fe, peer, tls, busy, req).await)
            })
        });
        self.activity().multiplexed();
        let mut conn = builders.h2.serve_connection(TokioIo::new(io), svc);
        let mut conn = Pin::new(&mut conn);
        tokio::select! {
            r = conn.as_mut() => log_end(peer, r),
            _ = self.stop.cancelled() => {
                // Finish what is in flight, answer it with `Connection: close`, then end.
                conn.as_mut().graceful_shutdown();
                log_end(peer, conn.await);
            }
            () = self.activity().expired() => {
                tracing::debug!(client = %peer, "closing an idle or stalled connection");
            }
        }
    }
}

fn log_end(peer: SocketAddr, r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_byte_decides_http1() {
        assert_eq!(proto_of(b"GET / HTTP/1.1\r\n"), Some(Proto::H1));
        assert_eq!(proto_of(b"P"), None);
        assert_eq!(proto_of(b"PO"), Some(Proto::H1));
        assert_eq!(proto_of(b"PRI * HTTP/1.1\r\n"), Some(Proto::H1));
    }

    #[test]
    fn only_the_whole_preface_is_http2() {
        assert_eq!(proto_of(&H2_PREFACE[..23]), None);
        assert_eq!(proto_of(H2_PREFACE), Some(Proto::H2));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(proto_of(&more), Some(Proto::H2));
    }
}

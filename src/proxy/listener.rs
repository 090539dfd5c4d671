//! Accepting client connections: one accept loop per frontend, a global connection limit
//! (a semaphore whose permit lives as long as the connection; past the limit accepting
//! simply waits), and graceful shutdown that lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{Activity, Tracked, expired};
use super::http::{HttpFrontend, handle};

/// Binds `addr` with the options a proxy wants (address reuse, a deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// What every accept loop shares.
#[derive(Clone)]
pub struct Shared {
    /// `[global] max_connections` client connections at once.
    pub limit: Arc<Semaphore>,
    /// Stops accepting when cancelled.
    pub stop: CancellationToken,
    /// Every live connection's task, so shutdown can wait for them to finish.
    pub tasks: TaskTracker,
    /// Open client connections of this frontend (for `fulcrum_client_connections`).
    pub clients: Arc<crate::metrics::ClientCount>,
}

/// Accepts a connection once a slot under the global limit is free.
async fn accept(
    listener: &TcpListener,
    shared: &Shared,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            _ = shared.stop.cancelled() => return None,
            p = Arc::clone(&shared.limit).acquire_owned() => p.ok()?,
        };
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => return Some((stream, peer, permit)),
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin; the listener stays.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `stop` or the frontend's own
/// `close` is cancelled, then hands the listener back: a reload that changes how a frontend
/// serves (mode, TLS) restarts the loop on the same socket, so no connection is refused.
///
/// The frontend's settings are read at each accept (one atomic load; the HTTP builder is
/// rebuilt only when they changed), so a reload applies its timeouts and header limit to
/// every new connection.
pub async fn serve_http(
    listener: TcpListener,
    fe: Arc<HttpFrontend>,
    shared: Shared,
    close: CancellationToken,
    tls: Option<TlsAcceptor>,
) -> TcpListener {
    let mut current = fe.settings.load_full();
    let mut builder = http_builder(&current);
    loop {
        let next = tokio::select! {
            _ = close.cancelled() => None,
            a = accept(&listener, &shared) => a,
        };
        let Some((stream, peer, permit)) = next else {
            break;
        };
        let now = fe.settings.load_full();
        if !Arc::ptr_eq(&now, &current) {
            builder = http_builder(&now);
            current = now;
        }
        let limits = Limits {
            idle: current.client_idle_timeout.get(),
            header: current.client_header_timeout.get(),
        };
        let open = shared.clients.open();
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = Tracked::new(stream, Arc::clone(&activity));
        let conn = Conn {
            fe: Arc::clone(&fe),
            peer,
            activity,
            limits,
            stop: shared.stop.clone(),
        };
        let builder = builder.clone();
        let tls = tls.clone();
        let header = limits.header;
        shared.tasks.spawn(async move {
            match tls {
                None => conn.serve(&builder, io, false).await,
                Some(acceptor) => match tokio::time::timeout(header, acceptor.accept(io)).await {
                    Ok(Ok(io)) => conn.serve(&builder, io, true).await,
                    Ok(Err(e)) => tracing::debug!(client = %peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                },
            }
            drop((permit, open));
        });
    }
    listener
}

/// The connection builder for a frontend's settings.
fn http_builder(settings: &crate::config::Frontend) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `conn::expired` enforces both client timeouts per connection; hyper's own header
        // timer would cost a boxed sleep and a timer-wheel entry per request.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size((settings.max_header_bytes * 2).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    builder
}

/// The client timeouts of a frontend.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    header: Duration,
}

/// One accepted client connection.
struct Conn {
    fe: Arc<HttpFrontend>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    limits: Limits,
    stop: CancellationToken,
}

impl Conn {
    /// Serves requests until the client leaves, a timeout passes or fulcrum stops.
    async fn serve<S>(self, builder: &auto::Builder<TokioExecutor>, io: S, tls: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            fe,
            peer,
            activity,
            limits,
            stop,
        } = self;
        let act = Arc::clone(&activity);
        let svc = service_fn(move |req| {
            let busy = act.begin();
            let fe = Arc::clone(&fe);
            async move { Ok::<_, std::convert::Infallible>(handle(fe, peer, tls, busy, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => log_end(peer, r),
            _ = stop.cancelled() => {
                // Finish what is in flight, answer it with `Connection: close`, then end.
                conn.as_mut().graceful_shutdown();
                log_end(peer, conn.await);
            }
            _ = expired(activity, limits.idle, limits.header) => {
                tracing::debug!(client = %peer, "closing an idle or stalled connection");
            }
        }
    }
}

fn log_end(peer: SocketAddr, r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
}

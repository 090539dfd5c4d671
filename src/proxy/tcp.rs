//! TCP mode: whole connections are balanced. Health, backups, limits and connect retries
//! apply as in HTTP mode; bytes are copied both ways until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::listener::Shared;
use crate::balance;
use crate::config;
use crate::pool::{Backend, Slot, outlier};

/// A TCP frontend; swapped whole by a reload like [`super::http::HttpFrontend`].
pub struct TcpFrontend {
    pub name: Arc<str>,
    pub settings: ArcSwap<config::Frontend>,
    pub backend: ArcSwap<Backend>,
}

impl TcpFrontend {
    pub fn new(settings: config::Frontend, backend: Arc<Backend>) -> Arc<Self> {
        Arc::new(TcpFrontend {
            name: settings.name.as_str().into(),
            settings: ArcSwap::from_pointee(settings),
            backend: ArcSwap::new(backend),
        })
    }
}

/// Serves TCP on `listener` until stopped or `close` is cancelled, then hands the listener
/// back (a reload that changes the frontend's mode restarts the loop on the same socket).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    fe: Arc<TcpFrontend>,
    shared: Shared,
    close: CancellationToken,
) -> tokio::net::TcpListener {
    loop {
        let permit = tokio::select! {
            _ = close.cancelled() => break,
            _ = shared.stop.cancelled() => break,
            p = Arc::clone(&shared.limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = close.cancelled() => break,
            _ = shared.stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let fe = Arc::clone(&fe);
        let open = shared.clients.open();
        shared.tasks.spawn(async move {
            relay(&fe, client, peer).await;
            drop((permit, open));
        });
    }
    listener
}

/// Relays one connection until either side closes. On shutdown a relay is not cut: it may
/// finish within the grace period, after which the process ends and takes it along.
async fn relay(fe: &TcpFrontend, mut client: TcpStream, peer: SocketAddr) {
    let backend = fe.backend.load_full();
    let Some((mut upstream, slot)) = connect(&backend, peer).await else {
        tracing::warn!(frontend = %fe.name, client = %peer, "no server could take the connection");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let access_log = fe.settings.load().access_log;
    let start = std::time::Instant::now();
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    if access_log {
        let (up, down) = copied.unwrap_or((0, 0));
        tracing::info!(
            target: "fulcrum::access",
            frontend = %fe.name,
            client = %peer,
            server = %slot.server().name,
            duration_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
            bytes_in = up,
            bytes_out = down,
        );
    }
}

/// Connects to a chosen server, trying others on failure up to `retries`.
async fn connect(backend: &Backend, peer: SocketAddr) -> Option<(TcpStream, Slot)> {
    let settings = backend.settings();
    let (timeout, retries) = (settings.connect_timeout.get(), settings.retries);
    drop(settings);
    let uri = http::Uri::from_static("/");
    let headers = http::HeaderMap::new();
    let info = balance::Request {
        client: peer.ip(),
        uri: &uri,
        headers: &headers,
    };
    let mut tried: Vec<usize> = Vec::new();
    // The first attempt waits in the queue when every server is at its limit; a failed
    // connect tries another server with a free slot at once.
    let mut slot = match backend.acquire_or_wait(&info).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(backend = %backend.name, "no slot for the connection: {e:?}");
            return None;
        }
    };
    for attempt in 0..=retries {
        let server = Arc::clone(slot.server());
        let why = match tokio::time::timeout(timeout, TcpStream::connect(server.addr())).await {
            Ok(Ok(s)) => {
                outlier::record(backend, &server, outlier::Outcome::Success);
                return Some((s, slot));
            }
            Ok(Err(e)) => outlier::Outcome::ConnectFailed((&e).into()),
            Err(_) => outlier::Outcome::ConnectTimedOut,
        };
        tracing::warn!(server = %server.full_name(), "{why}");
        outlier::record(backend, &server, why);
        tried.push(Arc::as_ptr(&server) as usize);
        if attempt == retries {
            break;
        }
        slot = backend.acquire(&info, &tried).ok()?;
    }
    None
}

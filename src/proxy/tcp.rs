//! TCP mode: whole connections are balanced (after TLS termination when the frontend has
//! `tls`: the servers get the plain stream). Health, backups, limits and connect retries
//! apply as in HTTP mode; bytes are copied both ways until both sides close, one fails,
//! or both stay silent for `tunnel_idle_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::frontend::Frontend;
use crate::balance;
use crate::pool::{Backend, ServerId, Slot, outlier};
use crate::upstream::{ClientAddrs, UpStream};

/// Serves one accepted connection: terminates TLS first when the frontend has `tls`
/// (within `handshake`, its `client_header_timeout`), then relays the plain stream.
pub(super) async fn serve(
    fe: &Frontend,
    client: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handshake: Duration,
) {
    let _ = client.set_nodelay(true);
    // The PROXY header sent to servers names the address the client connected to.
    let addrs = ClientAddrs {
        source: peer,
        destination: client.local_addr().unwrap_or(peer),
    };
    let Some(acceptor) = tls else {
        return relay(fe, client, addrs).await;
    };
    if let Some(tls) = super::tls::handshake(&acceptor, client, handshake, &fe.name, peer).await {
        relay(fe, tls, addrs).await;
    }
}

/// Relays one connection until it ends (see the module's doc). On shutdown a relay is not cut: it may
/// finish within the grace period, after which the process ends and takes it along.
async fn relay<C>(fe: &Frontend, mut client: C, addrs: ClientAddrs)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let peer = addrs.source;
    // Validation gives every tcp frontend a backend.
    let Some(backend) = fe.backend() else {
        return;
    };
    let Some((mut upstream, slot)) = connect(&backend, addrs).await else {
        tracing::warn!(frontend = %fe.name, client = %peer, "no server could take the connection");
        return;
    };
    let (access_log, idle) = {
        let s = fe.settings();
        (s.access_log, s.tunnel_idle_timeout.get())
    };
    let start = std::time::Instant::now();
    let (copied, end) = super::tunnel::relay(&mut client, &mut upstream, idle).await;
    if let Some(end) = end {
        tracing::debug!(frontend = %fe.name, client = %peer, "closing the connection: {end}");
    }
    // Dropped before the log line, so the slot is free by the time the line is written.
    drop((client, upstream));
    let server = Arc::clone(&slot.server().name);
    drop(slot);
    if access_log {
        let (up, down) = (copied.a_to_b, copied.b_to_a);
        tracing::info!(
            target: "fulcrum::access",
            frontend = %fe.name,
            client = %peer,
            server = %server,
            duration_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
            bytes_in = up,
            bytes_out = down,
        );
    }
}

/// Connects to a chosen server (TLS and the PROXY header as its backend says), trying
/// others on failure up to `retries`.
async fn connect(backend: &Backend, client: ClientAddrs) -> Option<(UpStream, Slot)> {
    let peer = client.source;
    let settings = backend.settings();
    let (timeout, retries) = (settings.connect_timeout.get(), settings.retries);
    drop(settings);
    let info = balance::Request::connection(peer.ip());
    let mut tried: Vec<ServerId> = Vec::new();
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
        let e = match server.connect(Some(client), timeout).await {
            Ok(conn) => {
                outlier::record(backend, &server, outlier::Outcome::Success);
                return Some((conn.stream, slot));
            }
            Err(e) => e,
        };
        tracing::warn!(server = %server.full_name(), "{} ({}): {e}", server.full_name(), server.addr());
        outlier::record(backend, &server, (&e).into());
        tried.push(server.id);
        if attempt == retries {
            break;
        }
        slot = backend.acquire(&info, &tried).ok()?;
    }
    None
}

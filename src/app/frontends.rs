//! The running frontends: for each, its socket, the object its connections read, and its
//! accept loop. What can fail (binding, reading certificates) is done by [`bind`] and
//! [`tls_for`] before anything is launched, so launching and stopping loops cannot fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::App;
use super::certificates::ServedFrontend;
use crate::certs::CertInfo;
use crate::config::{self, Config, Mode};
use crate::proxy::tls::{Terminator, TlsError};
use crate::proxy::{Frontend, Protocol, Shared, listener};

/// A socket fulcrum could not listen on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {what}: {source}")]
pub struct BindError {
    /// "frontend `www`", "the admin API".
    pub what: String,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A frontend's certificate that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FrontendTlsError {
    #[error("frontend `{frontend}`: TLS: {source}")]
    Load {
        frontend: String,
        #[source]
        source: TlsError,
    },
    /// The blocking-pool thread reading the files did not come back.
    #[error("frontend `{frontend}`: TLS: reading the files was interrupted: {source}")]
    Interrupted {
        frontend: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A bound socket and the address it got (port 0 binds an ephemeral port).
#[derive(Debug)]
pub(super) struct Bound {
    /// One socket per worker (see [`crate::workers`]); each accept loop registers a
    /// duplicate of its own, so the socket stays open when a loop stops (a reload).
    pub sockets: Vec<std::net::TcpListener>,
    pub addr: SocketAddr,
}

/// Binds `addr` for `what` with the options a proxy wants.
pub fn bind(what: String, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let failed = |source| BindError {
        what: what.clone(),
        addr,
        source,
    };
    let listener = listener::bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// Binds a frontend's address, once per worker.
pub(super) fn bind_frontend(fe: &config::Frontend) -> Result<Bound, BindError> {
    let failed = |source| BindError {
        what: format!("frontend `{}`", fe.name),
        addr: fe.bind,
        source,
    };
    let sockets = listener::bind_group(fe.bind, crate::workers::count()).map_err(failed)?;
    let addr = match sockets.first() {
        Some(s) => s.local_addr().map_err(failed)?,
        None => fe.bind,
    };
    Ok(Bound { sockets, addr })
}

/// The TLS terminator of `fe`, if it terminates TLS (HTTP or TCP mode), with its files
/// read on the blocking pool (a slow disk must not stall the requests the runtime is
/// serving meanwhile). Every file is read again at each call: a reload picks up renewals.
pub(super) async fn tls_for(
    config: &Config,
    fe: &config::Frontend,
) -> Result<Option<Terminator>, FrontendTlsError> {
    let Some(t) = &fe.tls else {
        return Ok(None);
    };
    let pairs: Vec<_> = t
        .pairs()
        .iter()
        .map(|(c, k)| (config.resolve_path(c), config.resolve_path(k)))
        .collect();
    let alpn = fe.mode == Mode::Http;
    let frontend = || fe.name.clone();
    tokio::task::spawn_blocking(move || crate::proxy::tls::terminator(&pairs, alpn))
        .await
        .map_err(|source| FrontendTlsError::Interrupted {
            frontend: frontend(),
            source,
        })?
        .map(Some)
        .map_err(|source| FrontendTlsError::Load {
            frontend: frontend(),
            source,
        })
}

/// How `fe` serves, given its TLS terminator.
pub(super) fn protocol(fe: &config::Frontend, tls: Option<Terminator>) -> Protocol {
    match fe.mode {
        Mode::Http => Protocol::Http(tls),
        Mode::Tcp => Protocol::Tcp(tls),
    }
}

/// One serving frontend.
pub(super) struct RunningFrontend {
    pub cfg: config::Frontend,
    /// What its connections read; kept across reloads that keep its mode, so keep-alive
    /// connections see the new settings and backend too.
    pub front: Arc<Frontend>,
    pub socket: Bound,
    /// What its certificates say (empty without TLS), for status, metrics and expiry.
    pub certificates: Arc<[CertInfo]>,
    /// Stops this frontend's accept loop only (open connections go on).
    close: CancellationToken,
    /// One accept loop per worker.
    loops: Vec<JoinHandle<()>>,
}

impl RunningFrontend {
    /// Stops the accept loop and waits until it no longer accepts. The socket stays open
    /// while `socket` holds it.
    pub async fn stop_accepting(self) -> (config::Frontend, Arc<Frontend>, Bound) {
        self.close.cancel();
        // A loop that panicked has stopped accepting as surely as one that returned.
        for task in self.loops {
            let _ = task.await;
        }
        (self.cfg, self.front, self.socket)
    }

    /// Stops the accept loop without waiting; the socket closes once the loop has let go.
    pub fn close(self) -> SocketAddr {
        self.close.cancel();
        self.socket.addr
    }
}

/// Every running frontend, by name, and the connection limit their loops share.
#[derive(Default)]
pub(super) struct Frontends {
    limit: Option<Arc<Semaphore>>,
    pub running: BTreeMap<String, RunningFrontend>,
}

impl Frontends {
    /// Sets the `[global] max_connections` limit every accept loop shares (at start).
    pub fn set_limit(&mut self, max_connections: usize) {
        self.limit = Some(Arc::new(Semaphore::new(max_connections)));
    }

    /// Starts the accept loop of `cfg` on `socket`. Infallible: everything that can fail
    /// happened when the socket was bound and the certificates were read. Once shutdown has
    /// begun nothing is launched: the socket closes here.
    pub fn launch(
        &mut self,
        app: &App,
        cfg: config::Frontend,
        front: Arc<Frontend>,
        socket: Bound,
        protocol: Protocol,
    ) {
        if app.tasks.stopping().is_cancelled() {
            tracing::info!(frontend = %cfg.name, "shutting down: not listening again");
            return;
        }
        let max = app
            .fds
            .get()
            .map_or(app.config().global.max_connections, |f| {
                f.effective_max_connections
            });
        let limit = self
            .limit
            .get_or_insert_with(|| Arc::new(Semaphore::new(max)));
        let shared = Shared {
            limit: Arc::clone(limit),
            tasks: app.tasks.clone(),
            clients: app.clients(&cfg.name),
            overload: Arc::clone(&app.overload),
        };
        let certificates = protocol.certificates();
        let close = app.tasks.child_token();
        tracing::info!(frontend = %cfg.name, addr = %socket.addr, backend = %cfg.backend.as_deref().unwrap_or("-"), routes = cfg.routes.len(), mode = ?protocol, "listening");
        let mut loops = Vec::with_capacity(socket.sockets.len());
        for (socket, worker) in socket
            .sockets
            .iter()
            .zip(app.workers.handles().iter().cycle())
        {
            let own = match socket.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(frontend = %cfg.name, "cannot share the listening socket with a worker: {e}");
                    continue;
                }
            };
            let serve = listener::serve(
                own,
                Arc::clone(&front),
                protocol.clone(),
                shared.clone(),
                close.clone(),
            );
            loops.push(app.tasks.spawn_on(serve, worker));
        }
        let name = cfg.name.clone();
        self.running.insert(
            name,
            RunningFrontend {
                cfg,
                front,
                socket,
                certificates,
                close,
                loops,
            },
        );
    }

    /// What the status and the expiry check show of each running frontend.
    pub fn served(&self) -> Vec<ServedFrontend> {
        self.running
            .values()
            .map(|f| ServedFrontend {
                name: f.cfg.name.clone(),
                bind: f.socket.addr,
                mode: f.cfg.mode,
                certificates: Arc::clone(&f.certificates),
            })
            .collect()
    }

    /// The address each frontend listens on now, by name.
    pub fn addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.running
            .iter()
            .map(|(n, f)| (n.clone(), f.socket.addr))
            .collect()
    }
}

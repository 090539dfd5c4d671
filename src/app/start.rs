//! Starting an instance in the order that keeps the first client safe: backends built (names
//! resolved without blocking), webhooks listening, every server checked once, saved
//! maintenance applied, and only then the frontends bound and accepting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures_util::future::try_join_all;

use super::frontends::{self, BindError, FrontendTlsError};
use super::{App, Backends, maintenance};
use crate::config::{self, Config};
use crate::events::Bus;
use crate::overload::Overload;
use crate::pool::resolve::{self, ResolveError};
use crate::pool::{Backend, Server};
use crate::proxy::Frontend;
use crate::route::Routing;
use crate::tasks::Tasks;

/// Why fulcrum could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] FrontendTlsError),
    #[error("server `{server}`: {source}")]
    Resolve {
        server: String,
        #[source]
        source: ResolveError,
    },
    /// A backend's `[tls]` files cannot be used (changed since the check, or unreadable).
    #[error("backend `{backend}`: {source}")]
    UpstreamTls {
        backend: String,
        #[source]
        source: crate::config::TlsSettingsError,
    },
    /// A worker thread that reads files did not come back.
    #[error("starting was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Builds the servers of one backend from the file, resolving every name at once.
async fn build_servers(name: &str, cfg: &config::Backend) -> Result<Vec<Arc<Server>>, StartError> {
    try_join_all(cfg.servers.iter().map(|s| async move {
        let addr = resolve::resolve(&s.address)
            .await
            .map_err(|source| StartError::Resolve {
                server: format!("{name}/{}", s.name),
                source,
            })?;
        Ok(Arc::new(Server::new(name, s, addr)))
    }))
    .await
}

impl App {
    /// Everything built from `config`, nothing started: no socket, no task. Server names
    /// are resolved here (bounded in time; an unresolvable name is an error).
    pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
        // Before any server exists: each keeps one idle pool per worker.
        let workers = crate::workers::Workers::start(config.global.threads);
        let events = Bus::new();
        let tasks = Tasks::new();
        let overload = Overload::new(events.clone());
        overload.set_ceiling(config.global.max_memory);
        let mut backends = Backends::new();
        let list = config.backends.iter().map(|(n, b)| (n.clone(), b.clone()));
        let mut connectors = super::connectors::build(config.source.clone(), list.collect())
            .await
            .map_err(|(backend, source)| StartError::UpstreamTls { backend, source })?;
        for (name, cfg) in &config.backends {
            let servers = build_servers(name, cfg).await?;
            let backend = Backend::new(name, cfg.clone(), servers, events.clone(), tasks.clone());
            if let Some(c) = connectors.remove(name) {
                backend.set_connector(c);
            }
            backends.insert(name.clone(), backend);
        }
        let cluster = match &config.cluster {
            Some(c) => Some(crate::cluster::Cluster::new(c, events.clone()).await),
            None => None,
        };
        Ok(Arc::new(App {
            config: ArcSwap::from_pointee(config),
            backends: ArcSwap::from_pointee(backends),
            events,
            tasks,
            checkers: Default::default(),
            frontends: Default::default(),
            maintenance: Default::default(),
            clients: Mutex::new(BTreeMap::new()),
            routes: Mutex::new(BTreeMap::new()),
            webhooks: Mutex::new(Default::default()),
            workers,
            discovery: Default::default(),
            overload,
            fds: Default::default(),
            cluster,
            admin_addr: Default::default(),
            served: Default::default(),
        }))
    }
}

/// Starts fulcrum with `config`: checks every server once, then binds and serves every
/// frontend. The admin plane is started by the caller (it sits above this module); the
/// returned map gives the address each frontend listens on (useful when binding port 0).
pub async fn start(config: Config) -> Result<(Arc<App>, BTreeMap<String, SocketAddr>), StartError> {
    // Discovered servers are built and checked with the file's.
    let (config, found) = super::discovery::first_round(config).await;
    let app = App::build(config.clone()).await?;
    for (backend, dns, answer) in &found {
        app.discovery.record(backend, dns, answer);
    }
    app.start_webhooks(&config.alerts);
    let backends = app.backends();
    app.checkers.start_missing(&backends, &app.tasks).await;
    // Saved maintenance applies before the first client is accepted.
    app.restore_maintenance().await;
    // With [cluster], the shared state (if etcd answers) replaces what was saved.
    app.start_cluster().await;
    app.tasks
        .spawn_background(maintenance::run(Arc::clone(&app)));
    app.sync_discovery(false);

    // The soft fd limit raised, and the client limit lowered if the fds cannot hold it.
    let fds = crate::fds::raise_and_plan(&config);
    if let Some(w) = fds.warning() {
        tracing::warn!("{w}");
    }
    app.overload.set_fd_budget(fds.fd_limit, fds.fd_reserve);
    let limit = fds.effective_max_connections;
    let _ = app.fds.set(fds);
    app.tasks.spawn_background(Arc::clone(&app.overload).run());

    let mut running = app.frontends.lock().await;
    running.set_limit(limit);
    // Bind and read every certificate first: a frontend that cannot start stops them all
    // before any accepts, and the tasks started above end with it.
    let mut ready = Vec::new();
    for fe in &config.frontends {
        let prepared = match frontends::bind_frontend(fe) {
            Ok(socket) => frontends::tls_for(&config, fe)
                .await
                .map(|tls| (socket, tls))
                .map_err(StartError::from),
            Err(e) => Err(StartError::from(e)),
        };
        match prepared {
            Ok((socket, tls)) => ready.push((fe, socket, tls)),
            Err(e) => {
                app.tasks.stop();
                return Err(e);
            }
        }
    }
    for (fe, socket, tls) in ready {
        // Validation guarantees every backend named exists.
        let routing = match Routing::build(fe, &app.backends(), None) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(frontend = %fe.name, "{e}; the frontend does not start");
                continue;
            }
        };
        app.record_routes(&fe.name, &routing);
        let front = Frontend::new(fe.clone(), routing, Arc::clone(&app.overload));
        let protocol = frontends::protocol(fe, tls);
        running.launch(&app, fe.clone(), front, socket, protocol);
    }
    let addrs = running.addrs();
    app.served.set(running.served());
    drop(running);
    app.check_certificates();
    app.tasks
        .spawn_background(Arc::clone(&app).check_certificates_daily());
    Ok((app, addrs))
}

//! A running fulcrum: everything built from one configuration, started in the right order
//! (servers checked before the first client is accepted) and stopped gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config};
use crate::events::Bus;
use crate::pool::health::{self, Streak};
use crate::pool::{Backend, Server};
use crate::proxy::listener::{self, Shared};

/// Why fulcrum could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// The state every part of a running fulcrum shares: the configuration, the backends, the
/// event bus. The admin plane and reload work through this.
pub struct App {
    pub config: ArcSwap<Config>,
    /// Backends by name; the map is swapped whole by a reload.
    pub backends: ArcSwap<BTreeMap<String, Arc<Backend>>>,
    pub events: Bus,
    /// Health checker per server, by `backend/server` and address, to stop removed ones.
    pub(crate) checkers: Mutex<BTreeMap<(String, String, String), CancellationToken>>,
    /// The running frontends and webhooks a reload replaces; its lock serialises reloads.
    pub(crate) live: tokio::sync::Mutex<crate::reload::Live>,
    /// Stops every background task at shutdown.
    pub stop: CancellationToken,
    /// Wakes the task that ends maintenance windows and sends reminders.
    pub maintenance: crate::pool::maintenance::Scheduler,
    /// Metric state that belongs to no server (client connections per frontend).
    pub metrics: crate::metrics::AppMetrics,
    /// Counters of each webhook's alerts (replaced if webhooks are started again).
    pub alerts: Mutex<Vec<Arc<crate::alerts::WebhookStats>>>,
}

impl App {
    /// Every server with its backend, as the current snapshots have them: for the
    /// passes over all servers (metrics, maintenance) that need both.
    pub fn servers(&self) -> Vec<(Arc<Backend>, Arc<Server>)> {
        self.backends
            .load()
            .values()
            .flat_map(|b| {
                b.snapshot()
                    .servers
                    .iter()
                    .map(|s| (Arc::clone(b), Arc::clone(s)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A backend by name.
    pub fn backend(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends.load().get(name).cloned()
    }

    /// Finds `SERVER` or `backend/SERVER`; an error says what is ambiguous or missing.
    pub fn find_server(&self, spec: &str) -> Result<(Arc<Backend>, Arc<Server>), String> {
        let backends = self.backends.load();
        if let Some((b, s)) = spec.split_once('/') {
            let backend = backends
                .get(b)
                .ok_or_else(|| format!("no backend named `{b}`"))?;
            let server = backend
                .server(s)
                .ok_or_else(|| format!("backend `{b}` has no server `{s}`"))?;
            return Ok((Arc::clone(backend), server));
        }
        let mut found = backends
            .values()
            .filter_map(|b| b.server(spec).map(|s| (Arc::clone(b), s)));
        match (found.next(), found.next()) {
            (None, _) => Err(format!("no server named `{spec}`")),
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(format!(
                "`{spec}` names servers in several backends; write backend/{spec}"
            )),
        }
    }
}

/// Handles to a started fulcrum.
pub struct Running {
    pub app: Arc<App>,
    /// The address each frontend listens on, by name (useful when binding port 0).
    pub frontends: BTreeMap<String, SocketAddr>,
    pub admin: SocketAddr,
    tasks: TaskTracker,
    grace: Duration,
}

impl Running {
    /// The address of frontend `name`.
    pub fn frontend(&self, name: &str) -> SocketAddr {
        self.frontends[name]
    }

    /// Stops accepting, lets in-flight requests finish up to the grace period, stops the
    /// background tasks. Returns whether everything finished within the grace period.
    pub async fn shutdown(self) -> bool {
        tracing::info!(
            "shutting down: no new connections; waiting up to {:?} for in-flight requests",
            self.grace
        );
        self.app.stop.cancel();
        self.tasks.close();
        let finished = tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!("grace period over; closing the connections still open");
        }
        finished
    }
}

/// Builds the servers of one backend, reusing live ones from `keep` (reload).
pub fn build_servers(
    name: &str,
    cfg: &config::Backend,
    keep: Option<&Backend>,
) -> Result<Vec<Arc<Server>>, StartError> {
    cfg.servers
        .iter()
        .map(|s| {
            if let Some(old) = keep
                .and_then(|b| b.server(&s.name))
                .filter(|o| o.address == s.address)
            {
                old.set_weight(s.weight);
                old.set_max_connections(s.max_connections);
                return Ok(old);
            }
            let addr = config::resolve(&s.address).map_err(|e| StartError::Other(e.to_string()))?;
            Ok(Arc::new(Server::new(name, s, addr)))
        })
        .collect()
}

impl App {
    /// Everything built from `config`, nothing started: no socket, no task.
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        let events = Bus::new();
        let mut backends = BTreeMap::new();
        for (name, cfg) in &config.backends {
            let servers = build_servers(name, cfg, None)?;
            backends.insert(
                name.clone(),
                Backend::new(name, cfg.clone(), servers, events.clone()),
            );
        }
        Ok(Arc::new(App {
            config: ArcSwap::from_pointee(config),
            backends: ArcSwap::from_pointee(backends),
            events,
            checkers: Mutex::new(BTreeMap::new()),
            live: Default::default(),
            stop: CancellationToken::new(),
            maintenance: Default::default(),
            metrics: Default::default(),
            alerts: Mutex::new(Vec::new()),
        }))
    }
}

/// Re-reads the configuration file and applies it (hot reload, see [`crate::reload`]).
/// Answers SIGHUP, the admin API's `POST /api/v1/reload` and `fulcrum ctl reload`; `Ok`
/// summarises what changed, `Err` is the located error shown to the caller.
pub async fn reload(app: &Arc<App>) -> Result<String, String> {
    crate::reload::reload(app).await
}

/// Starts fulcrum with `config`: checks every server once, then binds and serves.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let token = crate::admin::token::load_or_create(&config)
        .map_err(|e| StartError::Other(e.to_string()))?;
    let app = App::new(config.clone())?;
    let alerts_stop = app.stop.child_token();
    let hooks = crate::alerts::spawn(&app.events, &config.alerts, &alerts_stop);
    *app.alerts.lock().unwrap_or_else(|p| p.into_inner()) = hooks;
    start_checkers(&app).await;
    // Saved maintenance applies before the first client is accepted.
    crate::pool::maintenance::restore(&app);
    tokio::spawn(crate::pool::maintenance::run(Arc::clone(&app)));

    let tasks = TaskTracker::new();
    let shared = Shared {
        limit: Arc::new(Semaphore::new(config.global.max_connections)),
        stop: app.stop.clone(),
        tasks: tasks.clone(),
        clients: Arc::default(),
    };
    crate::reload::init(&app, shared, alerts_stop).await;
    let frontends = crate::reload::start_frontends(&app, &config).await?;
    let admin_listener =
        listener::bind(config.admin.addr()).map_err(|source| StartError::Bind {
            what: "the admin API".into(),
            addr: config.admin.addr(),
            source,
        })?;
    let admin = admin_listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    tasks.spawn(crate::admin::serve(admin_listener, Arc::clone(&app), token));
    tracing::info!(admin = %admin, "fulcrum is serving");
    Ok(Running {
        app,
        frontends,
        admin,
        tasks,
        grace: config.global.grace_period.get(),
    })
}

/// Runs the first check of every server without a checker (all at once, each bounded by its
/// timeout), then starts their checker loops.
pub async fn start_checkers(app: &Arc<App>) {
    let backends = app.backends.load_full();
    let mut first = tokio::task::JoinSet::new();
    {
        let checkers = app.checkers.lock().unwrap_or_else(|p| p.into_inner());
        for backend in backends.values() {
            for server in backend.snapshot().servers.iter() {
                let key = (
                    backend.name.to_string(),
                    server.name.to_string(),
                    server.address.clone(),
                );
                if checkers.contains_key(&key) {
                    continue;
                }
                let (backend, server) = (Arc::clone(backend), Arc::clone(server));
                first.spawn(async move {
                    let mut streak = Streak::default();
                    health::check_once(&backend, &server, &mut streak).await;
                    (key, backend, server, streak)
                });
            }
        }
    }
    while let Some(done) = first.join_next().await {
        let Ok((key, backend, server, streak)) = done else {
            continue;
        };
        let cancel = app.stop.child_token();
        app.checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, cancel.clone());
        tokio::spawn(health::run(backend, server, streak, cancel));
    }
}

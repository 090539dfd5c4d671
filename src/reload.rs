//! Hot reload: re-read the configuration file, compute what changed, and apply only that.
//!
//! A reload runs in two phases. The first does everything that can fail (parse and validate
//! the whole file, resolve new server addresses, bind new frontend addresses, load TLS
//! files) without touching what serves; any failure leaves the old configuration serving
//! and publishes `config_rejected`. The second phase cannot fail: it swaps backends,
//! servers and frontends in place and publishes `config_reloaded`.
//!
//! What a reload keeps and changes:
//! - A server that stays (same backend, name, address and role) is the same object: health,
//!   counters, in-flight requests, ejection, slow-start ramp and maintenance carry over. Its
//!   weight follows the file only if the file's weight for it changed; otherwise a weight set
//!   at run time (`PUT .../weight`) is kept. `max_connections` always follows the file.
//! - A new server (or one whose address or backup role changed) starts unchecked, so it takes
//!   no traffic until its first health check passes; in an existing backend it then ramps up
//!   over `slow_start` like a server coming back.
//! - A removed server leaves rotation at once; requests in flight on it finish; its checker
//!   stops. A removed backend lives on only as long as connections still hold it.
//! - A frontend whose address changed binds the new address before its old listener closes;
//!   one whose mode or TLS changed restarts its accept loop on the same socket; any other
//!   change is swapped in place (read per request or per new connection). Keep-alive
//!   connections stay open and serve with the current backend. A removed frontend stops
//!   accepting; its open connections finish on their own.
//! - `[alerts]` webhooks are restarted when they change. `[global]` and the admin `bind` and
//!   `token_file` need a restart: a change is logged as such and otherwise ignored (the
//!   stored configuration keeps the running values). `max_maintenance` applies at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::app::{App, StartError};
use crate::config::{self, Config, Mode};
use crate::events::{Event, EventKind};
use crate::pool::{Backend, Server};
use crate::proxy::http::HttpFrontend;
use crate::proxy::listener::{self, Shared};
use crate::proxy::tcp::TcpFrontend;

/// What a reload needs of the running frontends and webhooks. Held in a tokio mutex in
/// [`App`], which also serialises reloads (a SIGHUP and an API call never interleave).
#[derive(Default)]
pub struct Live {
    /// What every accept loop shares (the connection limit, the task tracker); set at start.
    shared: Option<Shared>,
    frontends: BTreeMap<String, LiveFrontend>,
    /// Stops the webhook tasks of the current `[alerts]` (a child of `App::stop`).
    alerts_stop: Option<CancellationToken>,
}

/// One serving frontend.
struct LiveFrontend {
    cfg: config::Frontend,
    front: Front,
    addr: SocketAddr,
    /// Stops this frontend's accept loop only (open connections go on).
    close: CancellationToken,
    /// The accept loop; it hands its listener back when closed.
    task: JoinHandle<TcpListener>,
}

/// The object the request path reads, by mode.
#[derive(Clone)]
enum Front {
    Http(Arc<HttpFrontend>),
    Tcp(Arc<TcpFrontend>),
}

impl Front {
    fn new(cfg: &config::Frontend, backend: Arc<Backend>) -> Front {
        match cfg.mode {
            Mode::Http => Front::Http(HttpFrontend::new(cfg.clone(), backend)),
            Mode::Tcp => Front::Tcp(TcpFrontend::new(cfg.clone(), backend)),
        }
    }

    /// Swaps settings and backend in place: the next request (HTTP) or connection (TCP) uses them.
    fn swap(&self, cfg: &config::Frontend, backend: Arc<Backend>) {
        match self {
            Front::Http(f) => {
                f.settings.store(Arc::new(cfg.clone()));
                f.backend.store(backend);
            }
            Front::Tcp(f) => {
                f.settings.store(Arc::new(cfg.clone()));
                f.backend.store(backend);
            }
        }
    }
}

/// Registers the shared accept-loop state and the webhooks' stop token (at start).
pub async fn init(app: &App, shared: Shared, alerts_stop: CancellationToken) {
    let mut live = app.live.lock().await;
    live.shared = Some(shared);
    live.alerts_stop = Some(alerts_stop);
}

/// Binds and starts every frontend of `config` (at start). Returns the bound addresses.
pub async fn start_frontends(
    app: &App,
    config: &Config,
) -> Result<BTreeMap<String, SocketAddr>, StartError> {
    let mut live = app.live.lock().await;
    let shared = live
        .shared
        .clone()
        .ok_or_else(|| StartError::Other("frontends started before init".into()))?;
    let mut addrs = BTreeMap::new();
    for fe in &config.frontends {
        let listener = bind(fe)?;
        let tls = tls_acceptor(config, fe)?;
        let backend = backend_of(app, fe)?;
        let started = spawn(app, &shared, fe, Front::new(fe, backend), listener, tls)?;
        addrs.insert(fe.name.clone(), started.addr);
        live.frontends.insert(fe.name.clone(), started);
    }
    Ok(addrs)
}

/// The address each frontend listens on now, by name (it changes when a reload rebinds).
pub async fn frontend_addrs(app: &App) -> BTreeMap<String, SocketAddr> {
    let live = app.live.lock().await;
    live.frontends
        .iter()
        .map(|(n, f)| (n.clone(), f.addr))
        .collect()
}

fn bind(fe: &config::Frontend) -> Result<TcpListener, StartError> {
    listener::bind(fe.addr()).map_err(|source| StartError::Bind {
        what: format!("frontend `{}`", fe.name),
        addr: fe.addr(),
        source,
    })
}

fn tls_acceptor(config: &Config, fe: &config::Frontend) -> Result<Option<TlsAcceptor>, StartError> {
    match (&fe.tls, fe.mode) {
        (Some(t), Mode::Http) => {
            crate::proxy::tls::acceptor(&config.resolve_path(&t.cert), &config.resolve_path(&t.key))
                .map(Some)
                .map_err(|e| StartError::Other(format!("frontend `{}`: TLS: {e}", fe.name)))
        }
        _ => Ok(None),
    }
}

fn backend_of(app: &App, fe: &config::Frontend) -> Result<Arc<Backend>, StartError> {
    app.backend(&fe.backend).ok_or_else(|| {
        StartError::Other(format!(
            "frontend `{}`: no backend `{}`",
            fe.name, fe.backend
        ))
    })
}

/// Starts the accept loop of `fe` on `listener`.
fn spawn(
    app: &App,
    shared: &Shared,
    fe: &config::Frontend,
    front: Front,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> Result<LiveFrontend, StartError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let close = app.stop.child_token();
    let shared = Shared {
        clients: app.metrics.clients(&fe.name),
        ..shared.clone()
    };
    let task = match &front {
        Front::Http(f) => shared.tasks.spawn(listener::serve_http(
            listener,
            Arc::clone(f),
            shared.clone(),
            close.clone(),
            tls,
        )),
        Front::Tcp(f) => shared.tasks.spawn(crate::proxy::tcp::serve_tcp(
            listener,
            Arc::clone(f),
            shared.clone(),
            close.clone(),
        )),
    };
    tracing::info!(frontend = %fe.name, %addr, backend = %fe.backend, mode = ?fe.mode, "listening");
    Ok(LiveFrontend {
        cfg: fe.clone(),
        front,
        addr,
        close,
        task,
    })
}

/// Re-reads the file the process was started with and applies it. `Ok` carries a short
/// summary of what changed; `Err` the located error text (the old configuration serves on).
pub async fn reload(app: &Arc<App>) -> Result<String, String> {
    let mut live = app.live.lock().await;
    let source = app.config.load().source.clone();
    let result = match config::load_file(&source) {
        Ok(new) => apply(app, &mut live, new).await,
        Err(errors) => Err(errors.to_string()),
    };
    match &result {
        Ok(summary) => {
            tracing::info!(
                "configuration reloaded from {}: {summary}",
                source.display()
            );
            app.events.publish(Event::new(
                EventKind::ConfigReloaded,
                None,
                None,
                summary.clone(),
            ));
        }
        Err(why) => {
            tracing::warn!(
                "configuration in {} rejected; the previous one keeps serving: {why}",
                source.display()
            );
            app.events.publish(Event::new(
                EventKind::ConfigRejected,
                None,
                None,
                why.clone(),
            ));
        }
    }
    result
}

/// How one frontend of the new file relates to the running one of the same name.
enum FrontendPlan {
    /// Same address, mode and TLS: swap settings and backend in place.
    Swap,
    /// Same address, other mode or TLS: restart the accept loop on the same socket.
    Restart(Option<TlsAcceptor>),
    /// New, or at another address: already bound here.
    Bind(TcpListener, Option<TlsAcceptor>),
}

/// The servers of one backend of the new file, and which of them are new.
struct BackendPlan {
    name: String,
    cfg: config::Backend,
    servers: Vec<Arc<Server>>,
    fresh: Vec<Arc<Server>>,
}

/// Applies a valid configuration. Everything fallible happens before anything changes.
async fn apply(app: &Arc<App>, live: &mut Live, new: Config) -> Result<String, String> {
    let old = app.config.load_full();
    let old_backends = app.backends.load_full();
    let shared = live
        .shared
        .clone()
        .ok_or_else(|| String::from("fulcrum has not finished starting"))?;
    let mut changes = Changes::default();

    // Phase 1: prepare; nothing serving is touched yet.
    let mut plans = Vec::new();
    let mut settle = Vec::new();
    for (name, cfg) in &new.backends {
        let running = old_backends.get(name);
        let old_cfg = old.backends.get(name);
        let mut servers = Vec::new();
        let mut fresh = Vec::new();
        for s in &cfg.servers {
            let kept = running
                .and_then(|b| b.server(&s.name))
                .filter(|o| o.address == s.address && o.backup == s.backup);
            let before = old_cfg.and_then(|c| c.servers.iter().find(|o| o.name == s.name));
            if let Some(server) = kept {
                // Applied in phase 2: a run-time weight yields only to a changed file weight.
                let weight = before
                    .is_none_or(|b| b.weight != s.weight)
                    .then_some(s.weight);
                if before.is_some_and(|b| b != s) {
                    changes.servers.changed.push(format!("{name}/{}", s.name));
                }
                settle.push((Arc::clone(&server), weight, s.max_connections));
                servers.push(server);
                continue;
            }
            let addr = config::resolve(&s.address).map_err(|e| e.to_string())?;
            let server = Arc::new(Server::new(name, s, addr));
            if before.is_some() {
                // Same name, new address or role: a new server replaces the old one.
                changes
                    .servers
                    .changed
                    .push(format!("{name}/{} (replaced)", s.name));
            } else {
                changes.servers.added.push(format!("{name}/{}", s.name));
            }
            fresh.push(Arc::clone(&server));
            servers.push(server);
        }
        match old_cfg {
            None => changes.backends.added.push(name.clone()),
            Some(o) if strip_servers(o) != strip_servers(cfg) => {
                changes.backends.changed.push(name.clone())
            }
            Some(_) => {}
        }
        plans.push(BackendPlan {
            name: name.clone(),
            cfg: cfg.clone(),
            servers,
            fresh,
        });
    }
    let mut fronts = Vec::new();
    for fe in &new.frontends {
        let plan = match live.frontends.get(&fe.name) {
            Some(cur) if cur.cfg.addr() == fe.addr() => {
                // A TLS frontend always reloads its certificate files: renewals (certbot)
                // rewrite the same paths, and a reload is how they are picked up.
                if cur.cfg.mode == fe.mode && cur.cfg.tls.is_none() && fe.tls.is_none() {
                    FrontendPlan::Swap
                } else {
                    FrontendPlan::Restart(tls_acceptor(&new, fe).map_err(|e| e.to_string())?)
                }
            }
            _ => FrontendPlan::Bind(
                bind(fe).map_err(|e| e.to_string())?,
                tls_acceptor(&new, fe).map_err(|e| e.to_string())?,
            ),
        };
        match live.frontends.get(&fe.name) {
            None => changes.frontends.added.push(fe.name.clone()),
            Some(cur) if cur.cfg != *fe => changes.frontends.changed.push(fe.name.clone()),
            Some(_) => {}
        }
        fronts.push((fe.clone(), plan));
    }

    // Phase 2: apply; nothing below can fail.
    for (server, weight, max) in settle {
        if let Some(w) = weight {
            server.set_weight(w);
        }
        server.set_max_connections(max);
    }
    let mut backends = BTreeMap::new();
    for plan in plans {
        let backend = match old_backends.get(&plan.name) {
            Some(b) => {
                // A server joining a running pool ramps up like one coming back.
                let ramp = plan.cfg.slow_start.get();
                for s in &plan.fresh {
                    s.start_ramp(ramp);
                }
                b.replace(plan.cfg, plan.servers);
                Arc::clone(b)
            }
            None => Backend::new(&plan.name, plan.cfg, plan.servers, app.events.clone()),
        };
        backends.insert(plan.name, backend);
    }
    // Servers no longer in any snapshot: their checkers stop; in-flight requests hold them.
    // (Addresses as integers: a set of raw pointers would not be `Send` across the awaits.)
    let kept: BTreeSet<usize> = backends
        .values()
        .flat_map(|b| {
            b.snapshot()
                .servers
                .iter()
                .map(|s| Arc::as_ptr(s) as usize)
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, b) in old_backends.iter() {
        if !backends.contains_key(name) {
            changes.backends.removed.push(name.clone());
        }
        for s in b.snapshot().servers.iter() {
            if kept.contains(&(Arc::as_ptr(s) as usize)) {
                continue;
            }
            if !new
                .backends
                .get(name)
                .is_some_and(|c| c.servers.iter().any(|n| n.name == *s.name))
            {
                changes.servers.removed.push(s.full_name());
            }
            let key = (name.clone(), s.name.to_string(), s.address.clone());
            let cancel = app
                .checkers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(cancel) = cancel {
                cancel.cancel();
            }
        }
    }
    let backends = Arc::new(backends);
    app.backends.store(Arc::clone(&backends));
    // First checks of new servers before any frontend points at a new backend: a frontend
    // moved to a new backend then never answers 503 while its servers are still unchecked.
    crate::app::start_checkers(app).await;

    let mut names = BTreeSet::new();
    for (fe, plan) in fronts {
        names.insert(fe.name.clone());
        // Validation guarantees the backend exists.
        let Some(backend) = backends.get(&fe.backend).cloned() else {
            continue;
        };
        let cur = live.frontends.remove(&fe.name);
        let next = match (plan, cur) {
            (FrontendPlan::Swap, Some(mut cur)) => {
                cur.front.swap(&fe, backend);
                cur.cfg = fe.clone();
                Some(cur)
            }
            (FrontendPlan::Restart(tls), Some(cur)) => {
                cur.close.cancel();
                match cur.task.await {
                    Ok(listener) => restart(app, &shared, &fe, cur.front, backend, listener, tls),
                    Err(e) => {
                        tracing::error!(frontend = %fe.name, "accept loop failed: {e}; the frontend is down until the next reload");
                        None
                    }
                }
            }
            (FrontendPlan::Bind(listener, tls), cur) => {
                // Bound in phase 1, so the new address already accepts; only now does the
                // old listener close. The frontend object stays, so keep-alive connections
                // on the old address see the new settings and backend too.
                let front = match &cur {
                    Some(c) if c.cfg.mode == fe.mode => {
                        c.front.swap(&fe, Arc::clone(&backend));
                        c.front.clone()
                    }
                    _ => Front::new(&fe, backend),
                };
                let started = spawn(app, &shared, &fe, front, listener, tls);
                if let Some(c) = cur {
                    c.close.cancel();
                    tracing::info!(frontend = %fe.name, old = %c.addr, "old listener closed");
                }
                started
                    .inspect_err(|e| tracing::error!(frontend = %fe.name, "{e}"))
                    .ok()
            }
            // Unreachable by construction (Swap and Restart are planned only for running
            // frontends); start afresh is the safe answer.
            (_, None) => None,
        };
        if let Some(next) = next {
            live.frontends.insert(fe.name.clone(), next);
        }
    }
    let gone: Vec<String> = live
        .frontends
        .keys()
        .filter(|n| !names.contains(*n))
        .cloned()
        .collect();
    for name in gone {
        if let Some(f) = live.frontends.remove(&name) {
            f.close.cancel();
            tracing::info!(frontend = %name, addr = %f.addr, "frontend removed: no longer accepting; open connections finish");
            changes.frontends.removed.push(name);
        }
    }

    if old.alerts.webhooks != new.alerts.webhooks {
        if let Some(stop) = live.alerts_stop.take() {
            stop.cancel();
        }
        let stop = app.stop.child_token();
        let hooks = crate::alerts::spawn(&app.events, &new.alerts, &stop);
        *app.alerts.lock().unwrap_or_else(|p| p.into_inner()) = hooks;
        live.alerts_stop = Some(stop);
        changes.other.push("webhooks restarted".into());
    }
    warn_restart_needed(&old, &new);
    // What needs a restart stays as it runs, so the stored configuration is what is in effect
    // (maintenance keeps saving to the state_dir it restored from).
    let mut new = new;
    new.global = old.global.clone();
    new.admin.bind = old.admin.bind.clone();
    new.admin.token_file = old.admin.token_file.clone();
    app.config.store(Arc::new(new));
    // Windows of removed servers are no longer saved.
    crate::pool::maintenance::persist(app);
    Ok(changes.summary())
}

/// Restarts a frontend's accept loop on its own socket (mode or TLS changed).
fn restart(
    app: &App,
    shared: &Shared,
    fe: &config::Frontend,
    front: Front,
    backend: Arc<Backend>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> Option<LiveFrontend> {
    let front = match (&front, fe.mode) {
        (Front::Http(_), Mode::Http) | (Front::Tcp(_), Mode::Tcp) => {
            front.swap(fe, backend);
            front
        }
        _ => Front::new(fe, backend),
    };
    spawn(app, shared, fe, front, listener, tls)
        .inspect_err(|e| tracing::error!(frontend = %fe.name, "{e}"))
        .ok()
}

/// Settings that only a restart applies: say so rather than pretend.
fn warn_restart_needed(old: &Config, new: &Config) {
    if old.admin.bind != new.admin.bind || old.admin.token_file != new.admin.token_file {
        tracing::warn!(
            "[admin] bind and token_file changes need a restart; the admin API keeps its address and token"
        );
    }
    let (a, b) = (&old.global, &new.global);
    if a.threads != b.threads
        || a.max_connections != b.max_connections
        || a.grace_period != b.grace_period
        || a.state_dir != b.state_dir
    {
        tracing::warn!(
            "[global] changes (threads, max_connections, grace_period, state_dir) need a restart"
        );
    }
}

/// A backend's settings without its server list, to tell a settings change from a server change.
fn strip_servers(b: &config::Backend) -> config::Backend {
    config::Backend {
        servers: Vec::new(),
        ..b.clone()
    }
}

/// Names added, removed and changed in one kind of section.
#[derive(Default)]
struct Delta {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Delta {
    fn describe(&self, what: &str, out: &mut Vec<String>) {
        for (verb, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if !names.is_empty() {
                out.push(format!("{what} {verb}: {}", names.join(", ")));
            }
        }
    }
}

/// What a reload changed, for `config_reloaded` and the log.
#[derive(Default)]
struct Changes {
    frontends: Delta,
    backends: Delta,
    servers: Delta,
    other: Vec<String>,
}

impl Changes {
    fn summary(&self) -> String {
        let mut out = Vec::new();
        self.frontends.describe("frontends", &mut out);
        self.backends.describe("backends", &mut out);
        self.servers.describe("servers", &mut out);
        out.extend(self.other.iter().cloned());
        if out.is_empty() {
            "no changes".into()
        } else {
            out.join("; ")
        }
    }
}

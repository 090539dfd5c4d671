//! A running fulcrum: everything built from one configuration, the owner of each piece of
//! run-time state, and the operations that change it (reload, maintenance, weights).
//!
//! Nothing below this module knows it exists: the data path (`proxy`) and the servers'
//! live state (`pool`) are handed what they need. Above it, the admin plane and the
//! command line call its methods; none of its fields is public.
//!
//! - [`start`](start::start): servers checked before the first client is accepted;
//! - `checkers`: one health checker per server, keyed by [`ServerId`];
//! - `frontends`: the accept loops a reload replaces;
//! - `reload`: a pure plan of what a new file changes, then its application;
//! - `maintenance`: windows started, ended, expired, reminded and saved;
//! - `cluster`: with `[cluster]`, the instance as a member (changes from etcd applied).

mod certificates;
mod checkers;
mod cluster;
mod connectors;
mod discovery;
mod frontends;
mod maintenance;
mod reload;
mod start;
mod state_file;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwap, Guard};
use tokio_util::sync::CancellationToken;

use crate::alerts::WebhookStats;
use crate::config::Config;
use crate::events::Bus;
use crate::fds::FdBudget;
use crate::metrics::ClientCount;
use crate::overload::Overload;
use crate::pool::{Backend, Server, ServerId};
use crate::tasks::Tasks;

pub use certificates::{ServedFrontend, WARN_WITHIN};
pub use discovery::Round as DiscoveryRound;
pub use frontends::{BindError, FrontendTlsError, bind};
pub use maintenance::StateError;
pub use reload::{
    BackendPlan, Changes, Delta, FrontendAction, FrontendPlan, Plan, ReloadError, ServerPlan, plan,
};
pub use start::{StartError, start};
pub use state_file::{Entry as SavedWindow, FILE_NAME as STATE_FILE_NAME};

/// Backends by name, swapped whole by a reload.
pub type Backends = BTreeMap<String, Arc<Backend>>;

/// One frontend's route counters: each route's name (`-`: none matched) and its tally.
pub type RouteCounts = Vec<(Arc<str>, Arc<crate::metrics::Tally>)>;

/// One running fulcrum. Built by [`start`]; shared (`Arc`) by the admin plane, the signal
/// handler and the tasks it spawns.
pub struct App {
    config: ArcSwap<Config>,
    backends: ArcSwap<Backends>,
    events: Bus,
    /// Every task of this instance; shutdown goes through it.
    tasks: Tasks,
    checkers: checkers::Checkers,
    /// The running frontends; the lock also serialises reloads (a SIGHUP and an API call
    /// never interleave).
    frontends: tokio::sync::Mutex<frontends::Frontends>,
    maintenance: maintenance::Scheduler,
    /// Open client connections per frontend, kept across reloads.
    clients: Mutex<BTreeMap<String, Arc<ClientCount>>>,
    /// Each frontend's route counters (`fulcrum_route_requests_total`), as its current
    /// routing table holds them: read by the metrics collector without the frontends' lock.
    routes: Mutex<BTreeMap<String, RouteCounts>>,
    /// The webhooks of the current `[alerts]`.
    webhooks: Mutex<Webhooks>,
    /// The runtimes client connections are served on (`[global] threads`).
    workers: crate::workers::Workers,
    /// One DNS discovery task per backend with `[discovery]`.
    discovery: discovery::Discovering,
    /// Memory and fd pressure, read by every request and accept loop (`overload`).
    overload: Arc<Overload>,
    /// The fd limit and the client limit it allows, planned once at start (`fds`).
    fds: OnceLock<FdBudget>,
    /// `[cluster]`: where shared state lives instead of `state_dir` alone.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The admin plane's address, once bound (for the cluster's instance records).
    admin_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// The running frontends and their certificates, for status, metrics and expiry.
    served: certificates::Served,
}

/// One generation of webhook tasks: its counters and what stops it.
#[derive(Default)]
struct Webhooks {
    stats: Vec<Arc<WebhookStats>>,
    stop: Option<CancellationToken>,
}

/// Why a `SERVER` or `backend/SERVER` named on the command line or in the API is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("no backend named `{0}`")]
    NoBackend(String),
    #[error("backend `{backend}` has no server `{server}`")]
    NoServer { backend: String, server: String },
    #[error("no server named `{0}`")]
    Unknown(String),
    #[error("`{0}` names servers in several backends; write backend/{0}")]
    Ambiguous(String),
}

impl App {
    /// The configuration in effect (what needs a restart keeps its running values).
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// The event bus every state change is published on.
    pub fn events(&self) -> &Bus {
        &self.events
    }

    /// Memory and fd pressure (the `max_memory` thresholds, the fd reserve).
    pub fn overload(&self) -> &Arc<Overload> {
        &self.overload
    }

    /// The fd budget planned at start; `None` before [`start`] planned it.
    pub fn fd_budget(&self) -> Option<&FdBudget> {
        self.fds.get()
    }

    /// Every task of this instance.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The backends as they are now.
    pub fn backends(&self) -> Arc<Backends> {
        self.backends.load_full()
    }

    /// A backend by name.
    pub fn backend(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends.load().get(name).cloned()
    }

    /// Every server with its backend, as the current snapshots have them: for the
    /// passes over all servers (metrics, maintenance) that need both.
    pub fn servers(&self) -> Vec<(Arc<Backend>, Arc<Server>)> {
        servers_of(&self.backends.load())
    }

    /// Finds `SERVER` or `backend/SERVER`; an error says what is ambiguous or missing.
    pub fn find_server(&self, spec: &str) -> Result<(Arc<Backend>, Arc<Server>), FindError> {
        let backends = self.backends.load();
        if let Some((b, s)) = spec.split_once('/') {
            let backend = backends
                .get(b)
                .ok_or_else(|| FindError::NoBackend(b.to_string()))?;
            let server = backend.server(s).ok_or_else(|| FindError::NoServer {
                backend: b.to_string(),
                server: s.to_string(),
            })?;
            return Ok((Arc::clone(backend), server));
        }
        let mut found = backends
            .values()
            .filter_map(|b| b.server(spec).map(|s| (Arc::clone(b), s)));
        match (found.next(), found.next()) {
            (None, _) => Err(FindError::Unknown(spec.to_string())),
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(FindError::Ambiguous(spec.to_string())),
        }
    }

    /// Shuts down gracefully: every accept loop stops and every listening socket closes at
    /// once (a new client is refused rather than left in a backlog nobody reads), requests
    /// in flight finish within `grace`, background tasks end. Returns whether everything
    /// finished within `grace`.
    ///
    /// A reload in progress holds the frontends; it sees the shutdown and launches nothing
    /// more, and the grace period counts from the start of shutdown, not from its end.
    pub async fn shutdown(&self, grace: std::time::Duration) -> bool {
        self.tasks.stop();
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        if let Ok(mut frontends) = tokio::time::timeout_at(deadline, self.frontends.lock()).await {
            for (_, frontend) in std::mem::take(&mut frontends.running) {
                frontend.close();
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let done = self.tasks.wait(left).await;
        self.workers.stop();
        done
    }

    /// Sets a server's weight at run time; the selection structure is rebuilt at once, so
    /// the next request sees it whatever the algorithm. Validation of the value is the
    /// caller's (the API answers 400 for a weight out of range).
    ///
    /// With `[cluster]` use [`change_weight`](Self::change_weight), which shares it.
    pub fn set_weight(&self, backend: &Backend, server: &Server, weight: u32) {
        let old = server.weight();
        server.set_weight(weight);
        backend.rebuild();
        tracing::info!(server = %server.full_name(), "weight changed from {old} to {weight} through the admin API");
    }

    /// [`set_weight`](Self::set_weight) for the admin API: with `[cluster]` the weight is
    /// written to etcd first (every instance applies it) and not set at all if it cannot be.
    pub async fn change_weight(
        &self,
        backend: &Backend,
        server: &Server,
        weight: u32,
    ) -> Result<(), StateError> {
        if let Some(c) = &self.cluster {
            c.write(crate::cluster::Write::Weight {
                backend: backend.name.to_string(),
                server: server.name.to_string(),
                weight,
            })
            .await?;
        }
        self.set_weight(backend, server, weight);
        Ok(())
    }

    /// The connection counter of `frontend`, created on first use (kept across reloads).
    fn clients(&self, frontend: &str) -> Arc<ClientCount> {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(frontend.to_string()).or_default())
    }

    /// Records the counters of `frontend`'s routing table (a start or a reload built it).
    pub(crate) fn record_routes(&self, frontend: &str, routing: &crate::route::Routing) {
        let list = routing
            .all()
            .map(|t| (Arc::clone(&t.name), Arc::clone(&t.counts)))
            .collect();
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(frontend.to_string(), list);
    }

    /// Every frontend's route counters, for metrics.
    pub fn route_counts(&self) -> Vec<(String, RouteCounts)> {
        let map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Every frontend's open client connections, for metrics.
    pub fn client_counts(&self) -> Vec<(String, u64)> {
        let map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.get())).collect()
    }

    /// The counters of the current webhooks, for metrics.
    pub fn webhook_stats(&self) -> Vec<Arc<WebhookStats>> {
        let hooks = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks.stats.clone()
    }

    /// Starts the webhooks of `[alerts]`, stopping those of a previous generation first (an
    /// event is then never sent by both generations).
    fn start_webhooks(&self, alerts: &crate::config::Alerts) {
        let mut hooks = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = hooks.stop.take() {
            old.cancel();
        }
        let stop = self.tasks.child_token();
        hooks.stats = match &self.cluster {
            Some(c) => crate::alerts::spawn_gated(
                &self.events,
                alerts,
                &self.tasks,
                &stop,
                cluster::gate(c),
            ),
            None => crate::alerts::spawn(&self.events, alerts, &self.tasks, &stop),
        };
        hooks.stop = Some(stop);
    }

    /// The id of every server in the current snapshots.
    fn server_ids(&self) -> std::collections::HashSet<ServerId> {
        self.servers().into_iter().map(|(_, s)| s.id).collect()
    }
}

/// Every (backend, server) pair of `backends`.
fn servers_of(backends: &Backends) -> Vec<(Arc<Backend>, Arc<Server>)> {
    backends
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

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backends = self.backends.load();
        f.debug_struct("App")
            .field("source", &self.config.load().source)
            .field("backends", &backends.keys().collect::<Vec<_>>())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

//! Carrying out a [`Plan`]: phase 1 acquires everything that can fail, phase 2 swaps it in.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::try_join_all;

use super::ReloadError;
use super::plan::{BackendPlan, Changes, FrontendAction, Plan, ServerPlan, plan};
use crate::app::frontends::{self, Bound, Frontends};
use crate::app::{App, Backends};
use crate::config::Config;
use crate::pool::{Backend, Server, resolve};
use crate::proxy::Frontend;
use crate::route::Routing;

/// What phase 1 acquired.
struct Prepared {
    /// Each backend's servers, in the plan's order.
    servers: Vec<Built>,
    /// Kept servers whose weight (when the file's changed) and limit follow the file.
    settle: Vec<Settle>,
    /// How each frontend of the plan is brought up, with what phase 1 made for it.
    frontends: Vec<Prepared1>,
}

/// A kept server, the weight to set (when the file's changed) and its limit.
type Settle = (Arc<Server>, Option<u32>, u32);

/// One backend's servers in file order (kept ones are the running objects), and which of
/// them are new.
struct Built {
    all: Vec<Arc<Server>>,
    fresh: Vec<Arc<Server>>,
}

/// One frontend, ready to swap in.
struct Prepared1 {
    action: FrontendAction,
    /// A socket bound for `Bind`.
    socket: Option<Bound>,
    /// The TLS terminator for `Restart` and `Bind` of a TLS frontend.
    tls: Option<crate::proxy::tls::Terminator>,
}

impl App {
    /// Applies a valid configuration. Everything fallible happens before anything changes.
    pub(super) async fn apply(
        self: &Arc<Self>,
        frontends: &mut Frontends,
        new: Config,
    ) -> Result<String, ReloadError> {
        let old = self.config.load_full();
        // What DNS discovery found stays: the file does not list it.
        let new = crate::app::discovery::carry_over(&old, new);
        let plan = plan(&old, &new);
        let prepared = self.prepare(&plan, &new, frontends).await?;
        let summary = plan.changes.summary();
        self.commit(frontends, plan, prepared, new).await;
        // A changed `[discovery]` restarts its task, which looks again at once.
        self.sync_discovery(true);
        Ok(summary)
    }

    /// Phase 1: builds new servers (resolving their names), binds new addresses and reads
    /// certificates. Nothing serving is touched.
    async fn prepare(
        &self,
        plan: &Plan,
        new: &Config,
        frontends: &Frontends,
    ) -> Result<Prepared, ReloadError> {
        let (servers, settle) = self.prepare_backends(plan).await?;
        let mut prepared = Vec::new();
        for fp in &plan.frontends {
            let fe = &fp.cfg;
            // Swap and Restart are planned for frontends the old file had; one that is
            // not running (it could not be) is bound like a new one.
            let action = match frontends.running.contains_key(&fe.name) {
                true => fp.action,
                false => FrontendAction::Bind,
            };
            let socket = match action {
                FrontendAction::Bind => Some(frontends::bind_frontend(fe)?),
                _ => None,
            };
            let tls = match action {
                FrontendAction::Swap => None,
                _ => frontends::tls_for(new, fe).await?,
            };
            prepared.push(Prepared1 {
                action,
                socket,
                tls,
            });
        }
        Ok(Prepared {
            servers,
            settle,
            frontends: prepared,
        })
    }

    /// Phase 1 for the backends alone: builds each new server (resolving its name, within
    /// a time limit) and collects the kept ones; nothing serving is touched. Shared by a
    /// reload and by DNS discovery, so there is one way to change a backend's servers.
    async fn prepare_backends(
        &self,
        plan: &Plan,
    ) -> Result<(Vec<Built>, Vec<Settle>), ReloadError> {
        let running = self.backends.load_full();
        let mut servers = Vec::new();
        let mut settle = Vec::new();
        for b in &plan.backends {
            let live = running.get(&b.name);
            let built = b.servers.iter().map(|s| async move {
                let kept = match s {
                    ServerPlan::Keep { name, .. } => live.and_then(|l| l.server(name)),
                    ServerPlan::Create(_) => None,
                };
                if let Some(server) = kept {
                    return Ok((server, false));
                }
                let cfg = match s {
                    ServerPlan::Create(cfg) => cfg.clone(),
                    // The file said it runs, but it does not: build it afresh.
                    ServerPlan::Keep { name, .. } => b
                        .cfg
                        .servers
                        .iter()
                        .find(|c| &c.name == name)
                        .cloned()
                        .ok_or_else(|| ReloadError::Resolve {
                            server: format!("{}/{name}", b.name),
                            source: resolve::ResolveError::NoAddress {
                                address: name.clone(),
                            },
                        })?,
                };
                let addr = resolve::resolve(&cfg.address).await.map_err(|source| {
                    ReloadError::Resolve {
                        server: format!("{}/{}", b.name, cfg.name),
                        source,
                    }
                })?;
                Ok::<_, ReloadError>((Arc::new(Server::new(&b.name, &cfg, addr)), true))
            });
            let built = try_join_all(built).await?;
            for (server, s) in built.iter().zip(&b.servers) {
                if let (
                    (srv, false),
                    ServerPlan::Keep {
                        weight,
                        max_connections,
                        ..
                    },
                ) = (server, s)
                {
                    settle.push((Arc::clone(srv), *weight, *max_connections));
                }
            }
            let fresh = built
                .iter()
                .filter(|(_, new)| *new)
                .map(|(s, _)| Arc::clone(s))
                .collect();
            servers.push(Built {
                all: built.into_iter().map(|(s, _)| s).collect(),
                fresh,
            });
        }
        Ok((servers, settle))
    }

    /// Phase 2: swaps in what phase 1 prepared. It has no error to report: what could fail
    /// was done, and each step only moves objects that exist.
    async fn commit(
        self: &Arc<Self>,
        frontends: &mut Frontends,
        plan: Plan,
        prepared: Prepared,
        new: Config,
    ) {
        let old = self.config.load_full();
        let backends = self
            .commit_backends(plan.backends, prepared.servers, prepared.settle, true)
            .await;
        for (fp, ready) in plan.frontends.into_iter().zip(prepared.frontends) {
            self.bring_up(frontends, &backends, fp.cfg, ready).await;
        }
        for name in plan.removed_frontends {
            if let Some(f) = frontends.running.remove(&name) {
                let addr = f.close();
                tracing::info!(frontend = %name, %addr, "frontend removed: no longer accepting; open connections finish");
            }
        }
        if plan.webhooks_changed {
            self.start_webhooks(&new.alerts);
        }
        for warning in &plan.needs_restart {
            tracing::warn!("{warning}");
        }
        // What needs a restart stays as it runs, so the stored configuration is what is in
        // effect (maintenance keeps saving to the state_dir it restored from).
        let mut new = new;
        // `max_memory` is the one `[global]` key a reload applies.
        self.overload.set_ceiling(new.global.max_memory);
        let max_memory = new.global.max_memory;
        new.global = old.global.clone();
        new.global.max_memory = max_memory;
        new.admin.bind = old.admin.bind;
        new.admin.token_file = old.admin.token_file.clone();
        new.cluster = old.cluster.clone();
        self.config.store(Arc::new(new));
        // Windows of removed servers are no longer saved.
        self.persist_logged().await;
    }

    /// Phase 2 for the backends alone: settles kept servers, swaps the new server lists in
    /// (new servers ramp up), stops the checkers of servers no snapshot holds and runs the
    /// first checks of new ones. Returns the backends now serving.
    async fn commit_backends(
        self: &Arc<Self>,
        plans: Vec<BackendPlan>,
        servers: Vec<Built>,
        settle: Vec<Settle>,
        connectors: bool,
    ) -> Arc<Backends> {
        for (server, weight, max) in settle {
            if let Some(w) = weight {
                server.set_weight(w);
            }
            server.set_max_connections(max);
        }
        let running = self.backends.load_full();
        let mut backends = Backends::new();
        let list = plans
            .iter()
            .map(|b| (b.name.clone(), b.cfg.clone()))
            .collect();
        // The files were read and checked moments ago by validation; one that broke since
        // leaves that backend connecting as before (logged).
        let source = self.config().source.clone();
        let built = match connectors {
            true => super::super::connectors::build(source, list).await,
            false => Ok(Default::default()),
        };
        let mut connectors = built.unwrap_or_else(|(backend, e)| {
            tracing::error!(backend = %backend, "{e}; the backends keep their previous TLS settings");
            Default::default()
        });
        for (b, Built { all, fresh }) in plans.into_iter().zip(servers) {
            let backend = match running.get(&b.name) {
                Some(live) => {
                    // A server joining a running pool ramps up like one coming back.
                    let ramp = b.cfg.slow_start.get();
                    for s in &fresh {
                        s.start_ramp(ramp);
                    }
                    live.replace(b.cfg, all);
                    Arc::clone(live)
                }
                None => Backend::new(&b.name, b.cfg, all, self.events.clone(), self.tasks.clone()),
            };
            if let Some(c) = connectors.remove(&b.name) {
                backend.set_connector(c);
            }
            backends.insert(b.name, backend);
        }
        let backends = Arc::new(backends);
        self.backends.store(Arc::clone(&backends));
        // Servers no longer in any snapshot: their checkers stop; in-flight requests hold them.
        self.checkers.retain(&self.server_ids());
        // First checks of new servers before any frontend points at a new backend: a frontend
        // moved to a new backend then never answers 503 while its servers are still unchecked.
        self.checkers.start_missing(&backends, &self.tasks).await;

        backends
    }

    /// Applies `new`, a configuration that differs from the running one only in backend
    /// server lists (DNS discovery): the backend half of a reload, under the same lock.
    /// Returns what changed.
    pub(in crate::app) async fn apply_servers(
        self: &Arc<Self>,
        new: Config,
    ) -> Result<Changes, ReloadError> {
        let old = self.config.load_full();
        let plan = plan(&old, &new);
        let (servers, settle) = self.prepare_backends(&plan).await?;
        // Only server lists changed: the backends keep their connectors (and TLS sessions).
        self.commit_backends(plan.backends, servers, settle, false)
            .await;
        self.config.store(Arc::new(new));
        Ok(plan.changes)
    }

    /// Swaps, restarts or starts one frontend as phase 1 prepared it.
    async fn bring_up(
        &self,
        frontends: &mut Frontends,
        backends: &BTreeMap<String, Arc<Backend>>,
        fe: crate::config::Frontend,
        ready: Prepared1,
    ) {
        let cur = frontends.running.remove(&fe.name);
        // Validation guarantees every backend named exists; route counters carry over.
        let previous = cur.as_ref().map(|c| c.front.routing());
        let routing = match Routing::build(&fe, backends, previous.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(frontend = %fe.name, "{e}; the frontend keeps its previous routes");
                if let Some(c) = cur {
                    frontends.running.insert(fe.name.clone(), c);
                }
                return;
            }
        };
        self.record_routes(&fe.name, &routing);
        // The frontend object stays when its mode does, so keep-alive connections see the
        // new settings and backend too; a mode change gets a new object.
        let reuse = |front: &Arc<Frontend>, old_mode, routing: Routing| {
            if old_mode == fe.mode {
                front.swap(fe.clone(), routing);
                Arc::clone(front)
            } else {
                Frontend::new(fe.clone(), routing, Arc::clone(&self.overload))
            }
        };
        match (ready.action, cur, ready.socket) {
            (FrontendAction::Swap, Some(mut cur), _) => {
                cur.front.swap(fe.clone(), routing);
                cur.cfg = fe;
                frontends.running.insert(cur.cfg.name.clone(), cur);
            }
            (FrontendAction::Restart, Some(cur), _) => {
                let (old_cfg, front, socket) = cur.stop_accepting().await;
                let front = reuse(&front, old_cfg.mode, routing);
                let protocol = frontends::protocol(&fe, ready.tls);
                frontends.launch(self, fe, front, socket, protocol);
            }
            (_, cur, Some(socket)) => {
                // Bound in phase 1, so the new address already accepts; only now does the
                // old listener close.
                let front = match &cur {
                    Some(c) => reuse(&c.front, c.cfg.mode, routing),
                    None => Frontend::new(fe.clone(), routing, Arc::clone(&self.overload)),
                };
                let protocol = frontends::protocol(&fe, ready.tls);
                let name = fe.name.clone();
                frontends.launch(self, fe, front, socket, protocol);
                if let Some(c) = cur {
                    let old = c.close();
                    tracing::info!(frontend = %name, %old, "old listener closed");
                }
            }
            // Phase 1 binds a socket for every frontend that is not running.
            (_, cur, None) => {
                tracing::error!(frontend = %fe.name, "frontend not prepared; it keeps serving as before");
                if let Some(c) = cur {
                    frontends.running.insert(fe.name.clone(), c);
                }
            }
        }
    }
}

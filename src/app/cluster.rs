//! The running instance as a cluster member: what it tells the others about itself, how a
//! change seen in etcd is applied to its servers, and which alerts it sends itself.
//!
//! Why here and not in `cluster`: applying a window or a weight needs the servers, the
//! scheduler and the event bus, which belong to the app; `cluster` only knows etcd and
//! reaches the app through [`Host`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::App;
use crate::alerts::{self, Gate};
use crate::cluster::keys::{Record, millis};
use crate::cluster::{Change, Cluster, FIRST_SYNC, Host, SharedWindow};
use crate::events::{Event, EventKind};
use crate::pool::maintenance::{End, Window};
use crate::pool::{Backend, Server, ServerState};

impl App {
    /// This instance's cluster membership, when `[cluster]` is configured.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Records the admin plane's address once it is bound (instance records show it).
    pub fn admin_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.admin_addr.set(addr);
    }

    /// Joins the cluster: the membership task starts, and start-up waits a little for the
    /// shared state so the first client already sees it. An unreachable etcd is said once
    /// and retried in the background; this instance serves alone meanwhile.
    pub(super) async fn start_cluster(self: &Arc<Self>) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let host: Arc<dyn Host> = Arc::clone(self) as Arc<dyn Host>;
        self.tasks.spawn_background(Arc::clone(&c).run(host));
        let app = Arc::clone(self);
        self.tasks.spawn_background(async move {
            loop {
                app.maintenance.persist.notified().await;
                app.persist_logged().await;
            }
        });
        if !c.wait_synced(FIRST_SYNC).await {
            tracing::warn!(
                instance = %c.name(),
                "etcd is unreachable at start: serving alone with the saved state, retrying in the background"
            );
        }
    }

    async fn apply_change(&self, change: Change) {
        let (windows, weights) = match change {
            Change::Window {
                backend,
                server,
                window,
            } => (vec![(backend, server, window)], Vec::new()),
            Change::Weight {
                backend,
                server,
                weight,
            } => (Vec::new(), vec![(backend, server, weight)]),
            Change::Snapshot { windows, weights } => {
                let mut want: BTreeMap<(String, String), SharedWindow> =
                    windows.into_iter().map(|(b, s, w)| ((b, s), w)).collect();
                let mut all = Vec::new();
                for (b, s) in self.servers() {
                    let w = want.remove(&(b.name.to_string(), s.name.to_string()));
                    all.push((b.name.to_string(), s.name.to_string(), w));
                }
                for (b, s) in want.into_keys() {
                    tracing::debug!(backend = %b, server = %s, "a shared window names a server not configured here");
                }
                (all, weights)
            }
        };
        // Weights are not in the state file and need no turn: never behind a disk write.
        for (b, s, w) in weights {
            self.apply_weight(&b, &s, w);
        }
        if windows.is_empty() {
            return;
        }
        {
            // Windows take the turn, so they interleave with changes made here in order.
            let _turn = self.maintenance.save.lock().await;
            for (b, s, w) in windows {
                self.apply_window(&b, &s, w.as_ref());
            }
        }
        // The state file is rewritten off the watch's path.
        self.maintenance.persist.notify_one();
    }

    /// Makes `server`'s window what etcd says. The caller holds the turn.
    fn apply_window(&self, backend: &str, server: &str, want: Option<&SharedWindow>) {
        let Some((backend, server)) = self.locate(backend, server) else {
            return;
        };
        let now = SystemTime::now();
        match want {
            Some(w) => {
                let same = server.maintenance.window().is_some_and(|cur| {
                    millis(cur.since) == millis(w.since)
                        && millis(cur.until) == millis(w.until)
                        && cur.reason == w.reason
                });
                if same || w.until <= now {
                    return;
                }
                let left = w.until.duration_since(now).unwrap_or_default();
                let extended = server.maintenance.is_on();
                server.maintenance.set(Window {
                    since: w.since,
                    until: w.until,
                    deadline: Instant::now() + left,
                    reason: w.reason.clone(),
                });
                backend.rebuild();
                let verb = if extended {
                    "window replaced"
                } else {
                    "out of rotation"
                };
                self.events.publish(Event::new(
                    EventKind::MaintenanceStarted,
                    Some(&backend.name),
                    Some(&server.name),
                    format!(
                        "{verb} through the cluster until {}; {} request(s) in flight drain",
                        humantime::format_rfc3339_seconds(w.until),
                        server.active()
                    ),
                ));
                self.maintenance.wake.notify_one();
            }
            None => {
                let why = match server.maintenance.window() {
                    None => return,
                    Some(cur) if cur.until <= now => End::Expired,
                    Some(_) => End::Ended,
                };
                self.end_window(&backend, &server, why);
            }
        }
    }

    fn apply_weight(&self, backend: &str, server: &str, weight: u32) {
        let Some((backend, server)) = self.locate(backend, server) else {
            return;
        };
        let old = server.weight();
        if old != weight {
            server.set_weight(weight);
            backend.rebuild();
            tracing::info!(server = %server.full_name(), "weight changed from {old} to {weight} through the cluster");
        }
    }

    fn locate(&self, backend: &str, server: &str) -> Option<(Arc<Backend>, Arc<Server>)> {
        let b = self.backend(backend)?;
        let s = b.server(server)?;
        Some((b, s))
    }
}

impl Host for App {
    fn record(&self) -> Record {
        let mut r = Record {
            admin: self
                .admin_addr
                .get()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            ..Record::default()
        };
        for (name, b) in self.backends().iter() {
            let snap = b.snapshot();
            r.healthy_primaries.insert(
                name.clone(),
                u32::try_from(snap.healthy_primaries()).unwrap_or(u32::MAX),
            );
            let down: Vec<String> = snap
                .servers
                .iter()
                .filter(|s| matches!(s.state(), ServerState::Down | ServerState::Ejected))
                .map(|s| s.name.to_string())
                .collect();
            if !down.is_empty() {
                r.down.insert(name.clone(), down);
            }
        }
        r
    }

    fn remind_every(&self) -> Duration {
        self.config().alerts.remind_every.get()
    }

    fn windows(&self) -> Vec<(String, String, SharedWindow)> {
        self.servers()
            .into_iter()
            .filter_map(|(b, s)| {
                let w = s.maintenance.window()?;
                let shared = SharedWindow {
                    since: w.since,
                    until: w.until,
                    reason: w.reason,
                };
                Some((b.name.to_string(), s.name.to_string(), shared))
            })
            .collect()
    }

    fn apply(&self, change: Change) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.apply_change(change))
    }

    fn send(&self, event: Event) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let cfg = self.config();
            let stats = self.webhook_stats();
            for w in &cfg.alerts.webhooks {
                if !alerts::wants(&w.events, &event) {
                    continue;
                }
                if let Some(st) = stats.iter().find(|s| s.url == w.url) {
                    alerts::post_now(&w.url, st, &event).await;
                }
            }
        })
    }
}

/// Which events read from the bus this instance sends itself when clustered: its own link
/// to etcd (nobody else can say it lost it), and, while it leads, what its own checks see.
/// Alerts about shared state (maintenance, membership) come from the outbox instead.
pub(super) fn gate(c: &Arc<Cluster>) -> Gate {
    let c = Arc::clone(c);
    Arc::new(move |e: &Event| match e.event {
        EventKind::ClusterUnavailable | EventKind::ClusterRestored => true,
        EventKind::MaintenanceStarted
        | EventKind::MaintenanceEnded
        | EventKind::MaintenanceExpired
        | EventKind::MaintenanceReminder
        | EventKind::InstanceDown
        | EventKind::InstanceUp => false,
        _ => c.is_leader(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_that_does_not_lead_sends_only_its_own_link_events() {
        let c = Cluster::new(&crate::config::Cluster::default(), Default::default()).await;
        let gate = gate(&c);
        let pass = |k| gate(&Event::new(k, None, None, ""));
        assert!(pass(EventKind::ClusterUnavailable) && pass(EventKind::ClusterRestored));
        for k in [
            EventKind::ServerDown,
            EventKind::MaintenanceStarted,
            EventKind::MaintenanceExpired,
            EventKind::MaintenanceReminder,
            EventKind::InstanceDown,
            EventKind::CapacityLow,
        ] {
            assert!(!pass(k), "{k}");
        }
    }
}

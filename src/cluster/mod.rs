//! `[cluster]`: several fulcrum instances sharing one runtime state through etcd (v3).
//!
//! Why: one fulcrum is itself a single point of failure, so real deployments run two or
//! more; without a shared store a server put in maintenance on one keeps taking traffic
//! from the other, and every instance sends its own copy of every alert.
//!
//! What is shared, and how (the key layout is in [`keys`]):
//! - maintenance windows and run-time weights: written to etcd by the instance whose API
//!   was called (and applied by it at once), watched by every instance and applied within
//!   a second ([`session`]);
//! - one voice for alerts: the instances elect a leader through a lease-bound key
//!   ([`leader`]); only the leader sends webhooks. Alerts about shared state go through an
//!   outbox in etcd ([`outbox`]): written with the change, posted by the leader, then
//!   marked sent, so a hand-over neither loses nor doubles one;
//! - who is there: every instance keeps a leased record of itself ([`members`]); a record
//!   that goes away is `instance_down`, one that appears `instance_up`.
//!
//! etcd unreachable: every instance keeps serving with what it last saw, says so once
//! (`cluster_unavailable`), refuses changes of shared state (the caller answers 503),
//! reconnects with backoff, resumes its watch from the last revision it saw and says so
//! once more (`cluster_restored`).
//!
//! This module knows nothing of `app`: the running instance is reached through [`Host`].

pub mod keys;
mod leader;
mod members;
mod outbox;
mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::config;
use crate::events::{Bus, Event, EventKind};
pub use keys::{Record, SharedWindow};

/// The lease of instance records and of the leader key. A dead instance's record and
/// leadership end this long after its last keep-alive: short enough that alerts move to
/// another instance within seconds, long enough that a busy instance is not taken for
/// dead (etcd's own minimum is about 2 s).
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// A change asked for through the API gives up on etcd after this and answers 503 rather
/// than hanging.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The background calls (records, campaign, leader's duties, keep-alive answers) give up
/// after this; a failure ends the session. Longer than [`OP_TIMEOUT`] so a slow answer
/// from a busy etcd is not taken for an outage: a real one breaks the connection (or
/// gRPC's keep-alive notices a silent peer within seven seconds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long start-up waits for the first snapshot from etcd before serving alone.
pub const FIRST_SYNC: Duration = Duration::from_secs(2);

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The running instance, as the cluster sees it. Implemented by `app::App`.
pub trait Host: Send + Sync {
    /// This instance's record (name, version and `last_seen` are filled in here).
    fn record(&self) -> Record;
    /// `[alerts] remind_every` now.
    fn remind_every(&self) -> Duration;
    /// The windows running here now (backend, server, window): what a first instance
    /// brings into an empty cluster.
    fn windows(&self) -> Vec<(String, String, SharedWindow)>;
    /// Applies a change seen in etcd to the servers.
    fn apply(&self, change: Change) -> BoxFuture<'_>;
    /// Posts one alert to every webhook that wants it; returns once done (or given up).
    fn send(&self, event: Event) -> BoxFuture<'_>;
}

/// A change of shared state seen in etcd.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A window started or replaced (`Some`), or ended (`None`).
    Window {
        backend: String,
        server: String,
        window: Option<SharedWindow>,
    },
    Weight {
        backend: String,
        server: String,
        weight: u32,
    },
    /// Everything, read at once (at the first connection, or when the watch history was
    /// compacted away): windows absent here end.
    Snapshot {
        windows: Vec<(String, String, SharedWindow)>,
        weights: Vec<(String, String, u32)>,
    },
}

/// A change this instance asks the cluster to make.
#[derive(Clone, Debug)]
pub enum Write {
    /// Start or replace (`Some`) or end (`None`) a window; `event` is its alert.
    Window {
        backend: String,
        server: String,
        window: Option<SharedWindow>,
        event: Event,
    },
    Weight {
        backend: String,
        server: String,
        weight: u32,
    },
}

/// Why a change of shared state was not made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster store unreachable: {0}")]
pub struct Unreachable(pub String);

/// The members as this instance last saw them.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub leader: Option<String>,
    pub instances: Vec<Record>,
}

/// The connection of the current session, for writes from the API and for leaving.
#[derive(Default)]
struct Link {
    client: Option<Client>,
    lease: i64,
}

/// This instance's membership of a cluster. Shared (`Arc`) by the app, the admin plane and
/// the cluster's own task.
pub struct Cluster {
    keys: keys::Keys,
    name: String,
    endpoints: Vec<String>,
    events: Bus,
    link: Mutex<Link>,
    /// A session is connected, synchronised and watching.
    up: AtomicBool,
    /// `cluster_unavailable` was published and `cluster_restored` not yet.
    announced_down: AtomicBool,
    leader: AtomicBool,
    leaving: AtomicBool,
    view: ArcSwap<View>,
    /// The last etcd revision applied: a new session's watch resumes after it.
    revision: AtomicI64,
    synced: tokio::sync::watch::Sender<bool>,
    /// The members read last (the baseline of `instance_down`/`instance_up`), kept across
    /// sessions.
    seen: tokio::sync::Mutex<Option<members::Seen>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("up", &self.up.load(Ordering::Relaxed))
            .field("leader", &self.leader.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A member named by `cfg` (or by the host name), not connected yet.
    pub async fn new(cfg: &config::Cluster, events: Bus) -> Arc<Cluster> {
        let name = if cfg.instance.is_empty() {
            host_name().await
        } else {
            cfg.instance.clone()
        };
        Arc::new(Cluster {
            keys: keys::Keys::new(&cfg.prefix),
            name,
            endpoints: cfg.etcd.clone(),
            events,
            link: Mutex::new(Link::default()),
            up: AtomicBool::new(false),
            announced_down: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            view: ArcSwap::from_pointee(View::default()),
            revision: AtomicI64::new(0),
            synced: tokio::sync::watch::channel(false).0,
            seen: tokio::sync::Mutex::new(None),
        })
    }

    /// This instance's name in the cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether etcd is reachable now (changes of shared state are refused otherwise).
    pub fn available(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether this instance is the leader (the one that sends alerts).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire) && self.available()
    }

    /// The members and the leader as last seen.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Waits up to `limit` for the first snapshot of shared state; false if none came.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Makes `change` in etcd (with its alert in the outbox, in one transaction); an error
    /// means nothing changed.
    pub async fn write(&self, change: Write) -> Result<(), Unreachable> {
        if !self.available() {
            return Err(Unreachable("not connected; retrying".into()));
        }
        let mut client = self
            .client()
            .ok_or_else(|| Unreachable("not connected; retrying".into()))?;
        let ops = match change {
            Write::Window {
                backend,
                server,
                window,
                event,
            } => {
                let key = self.keys.window(&backend, &server);
                let mut ops = match window {
                    Some(w) => vec![TxnOp::put(key, w.encode(), None)],
                    None => vec![
                        TxnOp::delete(key, None),
                        TxnOp::delete(self.keys.reminded(&backend, &server), None),
                    ],
                };
                ops.push(outbox::put_op(
                    &self.keys,
                    &outbox::unique_id(&self.name),
                    &event,
                ));
                ops
            }
            Write::Weight {
                backend,
                server,
                weight,
            } => vec![TxnOp::put(
                self.keys.weight(&backend, &server),
                keys::WeightValue { weight }.encode(),
                None,
            )],
        };
        let txn = Txn::new().and_then(ops);
        match tokio::time::timeout(OP_TIMEOUT, client.txn(txn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Unreachable(e.to_string())),
            Err(_) => Err(Unreachable(format!(
                "no answer within {}",
                humantime::format_duration(OP_TIMEOUT)
            ))),
        }
    }

    /// Leaves the cluster at shutdown: the lease is revoked, so the record and (if held)
    /// the leadership go at once instead of after [`LEASE_TTL`].
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let (client, lease) = {
            let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
            (link.client.take(), std::mem::take(&mut link.lease))
        };
        if let (Some(mut client), true) = (client, lease != 0) {
            match tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await {
                Ok(Ok(_)) => tracing::info!(instance = %self.name, "left the cluster"),
                Ok(Err(e)) => tracing::warn!("could not leave the cluster cleanly: {e}"),
                Err(_) => {
                    tracing::warn!("could not leave the cluster cleanly: etcd did not answer")
                }
            }
        }
        self.up.store(false, Ordering::Release);
        self.leader.store(false, Ordering::Release);
    }

    /// Keeps this instance in the cluster until shutdown: sessions one after the other,
    /// with backoff between them. Spawn it as a background task.
    pub async fn run(self: Arc<Self>, host: Arc<dyn Host>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            let began = tokio::time::Instant::now();
            let ended = session::run(&self, &host).await;
            self.lost(&ended);
            if began.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn client(&self) -> Option<Client> {
        let link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        link.client.clone()
    }

    /// A session is synchronised and watching: changes are accepted again.
    fn connected(&self, client: Client, lease: i64) {
        {
            let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
            *link = Link {
                client: Some(client),
                lease,
            };
        }
        self.up.store(true, Ordering::Release);
        self.synced.send_replace(true);
        if self.announced_down.swap(false, Ordering::AcqRel) {
            self.events.publish(Event::new(
                EventKind::ClusterRestored,
                None,
                None,
                format!(
                    "instance {} reached etcd again and caught up with the shared state",
                    self.name
                ),
            ));
        } else {
            tracing::info!(instance = %self.name, endpoints = ?self.endpoints, "joined the cluster");
        }
    }

    /// A session ended: serve on with the last state, say so once.
    fn lost(&self, why: &str) {
        self.up.store(false, Ordering::Release);
        self.leader.store(false, Ordering::Release);
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        if !self.announced_down.swap(true, Ordering::AcqRel) {
            self.events.publish(Event::new(
                EventKind::ClusterUnavailable,
                None,
                None,
                format!(
                    "instance {} cannot reach etcd ({why}); serving alone with the last state \
                     it saw, refusing changes of shared state, retrying",
                    self.name
                ),
            ));
        } else {
            tracing::debug!("etcd still unreachable: {why}");
        }
    }

    fn set_leader(&self, name: Option<String>) {
        let me = name.as_deref() == Some(self.name.as_str());
        let was = self.leader.swap(me, Ordering::AcqRel);
        if me && !was {
            tracing::info!(instance = %self.name, "this instance now leads the cluster and sends its alerts");
        }
        let view = self.view.load();
        if view.leader != name {
            self.view.store(Arc::new(View {
                leader: name,
                instances: view.instances.clone(),
            }));
        }
    }

    fn set_instances(&self, instances: Vec<Record>) {
        let view = self.view.load();
        self.view.store(Arc::new(View {
            leader: view.leader.clone(),
            instances,
        }));
    }
}

/// The wait between sessions doubles from this...
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// ... to this: an etcd back from a restart is found within two seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The host name, for `instance = ""`.
async fn host_name() -> String {
    let name = tokio::fs::read_to_string("/proc/sys/kernel/hostname")
        .await
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        "fulcrum".to_string()
    } else {
        name
    }
}

/// An etcd call with [`OP_TIMEOUT`], its error as text.
async fn timed<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("etcd did not answer in time".into()),
    }
}

/// `key` does not exist (a transaction guard).
fn absent(key: String) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, 0)
}

/// Now, as the wall clock says (windows are wall-clock times shared between machines).
fn now() -> SystemTime {
    SystemTime::now()
}

//! A backend: its settings and the selection snapshot requests read.
//!
//! The snapshot (candidate set + selection structure) is one `ArcSwap`, so a request does a
//! single lock-free load and sees servers and structure that belong together. Rebuilds come
//! from health flips and the admin plane; they are serialised by a mutex that the request
//! path never touches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use super::capacity::Capacity;
use super::outlier::Outliers;
use super::queue::{Queue, Ticket};
use super::retry_budget::RetryBudget;
use super::server::{Health, Server, ServerId, Slot};
use super::{clock, slow_start};
use crate::balance;
use crate::balance::{Candidate, Selector};
use crate::config;
use crate::events::{Bus, Event, EventKind};
use crate::tasks::Tasks;
use crate::upstream::Connector;

/// Why [`Backend::acquire`] found no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// No server is eligible at all (down, out of rotation).
    NoCandidates,
    /// Eligible servers exist but each is at its `max_connections`.
    AllBusy,
    /// Every eligible server has already been tried for this request.
    AllTried,
    /// Every server is at its limit and `max_queue` requests are waiting already.
    QueueFull,
    /// The request waited `queue_timeout` in the queue without a slot freeing.
    QueueTimeout,
}

/// Who serves right now, and how to choose among them.
#[derive(Debug)]
pub struct Snapshot {
    /// Every server of the backend, in file order (primaries and backups).
    pub servers: Vec<Arc<Server>>,
    /// The eligible set: healthy primaries, else healthy backups, else empty.
    pub candidates: Vec<Candidate>,
    /// Whether `candidates` are backups.
    pub using_backups: bool,
    pub selector: Selector,
}

impl Snapshot {
    /// Healthy primaries, for status and capacity alarms.
    pub fn healthy_primaries(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| !s.backup && is_eligible(s))
            .count()
    }
}

/// Whether a server may take new requests at all (per-request limits are checked at pick).
/// An ejected server is out until its ejection ends (passive health, see `outlier`).
fn is_eligible(server: &Server) -> bool {
    server.health() == Health::Up
        && !server.maintenance.is_on()
        && !server.agent.is_drained()
        && !server.is_ejected()
}

/// One backend. The object lives as long as a backend of that name is configured, so the
/// tasks that hold it (health checkers) stay valid across reloads.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    settings: ArcSwap<config::Backend>,
    snapshot: ArcSwap<Snapshot>,
    /// Serialises rebuilds and remembers who served after the last one, so each change of
    /// regime (primaries, backups, nobody) is announced once.
    rebuild_lock: Mutex<Serving>,
    events: Bus,
    /// Where the backend's timers run (ejection ends, the slow-start ticker).
    tasks: Tasks,
    /// Requests fulcrum answered itself (no server), by frontend and status: for metrics.
    pub refusals: crate::metrics::Tally,
    // Protection (issue 3).
    /// This backend, for the timers it spawns (ejection end, slow-start ticker).
    me: Weak<Backend>,
    /// Requests waiting for a slot when every candidate is at its limit.
    queue: Arc<Queue>,
    capacity: Capacity,
    outliers: Outliers,
    /// Retries allowed beyond connect failures: 20 % of requests over 10 s.
    pub retry_budget: RetryBudget,
    /// Whether the slow-start ticker runs.
    ramp_ticker: AtomicBool,
    /// How its servers are connected to (TLS, PROXY header); set at start and every reload.
    connector: ArcSwap<Connector>,
}

/// Who takes a backend's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serving {
    Primaries,
    Backups,
    Nobody,
}

impl Backend {
    /// A backend over `servers` (already built, in file order), announcing on `events` and
    /// running its timers as background tasks of `tasks`.
    pub fn new(
        name: &str,
        settings: config::Backend,
        servers: Vec<Arc<Server>>,
        events: Bus,
        tasks: Tasks,
    ) -> Arc<Self> {
        let queue = Arc::new(Queue::default());
        for s in &servers {
            s.attach_queue(&queue);
        }
        let snapshot = build(&settings, servers);
        queue.set_candidates(candidate_servers(&snapshot));
        Arc::new_cyclic(|me| Backend {
            name: name.into(),
            settings: ArcSwap::from_pointee(settings),
            snapshot: ArcSwap::from_pointee(snapshot),
            rebuild_lock: Mutex::new(Serving::Primaries),
            events,
            tasks,
            refusals: crate::metrics::Tally::default(),
            me: me.clone(),
            queue,
            capacity: Capacity::default(),
            outliers: Outliers::default(),
            retry_budget: RetryBudget::default(),
            ramp_ticker: AtomicBool::new(false),
            connector: ArcSwap::from_pointee(Connector::default()),
        })
    }

    /// Connects to the servers through `connector` from now on (start, reload); the
    /// servers a later [`replace`](Self::replace) brings take it too.
    pub fn set_connector(&self, connector: Arc<Connector>) {
        for s in &self.snapshot().servers {
            s.set_connector(&connector);
        }
        self.connector.store(connector);
    }

    /// How the servers are connected to now.
    pub fn connector(&self) -> Arc<Connector> {
        self.connector.load_full()
    }

    /// The current snapshot: one atomic load.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current settings.
    pub fn settings(&self) -> arc_swap::Guard<Arc<config::Backend>> {
        self.settings.load()
    }

    /// The event bus this backend publishes on.
    pub fn events(&self) -> &Bus {
        &self.events
    }

    /// Where this backend's timers run.
    pub(super) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// A server by name.
    pub fn server(&self, name: &str) -> Option<Arc<Server>> {
        self.snapshot()
            .servers
            .iter()
            .find(|s| &*s.name == name)
            .cloned()
    }

    /// Chooses a server for `req` that has a free slot and is not in `tried`, and takes
    /// the slot: the one selection routine HTTP and TCP frontends share.
    pub fn acquire(&self, req: &balance::Request<'_>, tried: &[ServerId]) -> Result<Slot, NoSlot> {
        let snap = self.snapshot();
        if snap.candidates.is_empty() {
            return Err(NoSlot::NoCandidates);
        }
        let mut slot = None;
        let mut untried = false;
        snap.selector.pick(req, &snap.candidates, &mut |c| {
            if tried.contains(&c.server.id) {
                return false;
            }
            untried = true;
            slot = c.server.try_acquire();
            slot.is_some()
        });
        match slot {
            Some(s) => Ok(s),
            None if untried => Err(NoSlot::AllBusy),
            None => Err(NoSlot::AllTried),
        }
    }

    /// Recomputes the candidate set and selection structure from the servers' live state,
    /// and publishes the backend-level events that a change implies.
    pub fn rebuild(&self) {
        self.rebuild_without_ticker();
        self.start_ramp_ticker();
    }

    /// Replaces settings and servers (a reload), keeping what callers hold valid.
    pub fn replace(&self, settings: config::Backend, servers: Vec<Arc<Server>>) {
        {
            let mut serving = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
            let connector = self.connector.load_full();
            for s in &servers {
                s.attach_queue(&self.queue);
                s.set_connector(&connector);
            }
            let new = build(&settings, servers);
            self.settings.store(Arc::new(settings));
            self.install(&mut serving, new);
        }
        self.after_rebuild();
        self.start_ramp_ticker();
    }

    /// [`rebuild`](Self::rebuild) without starting the slow-start ticker (the ticker's own step).
    pub(super) fn rebuild_without_ticker(&self) {
        {
            // A poisoned lock only means another rebuild panicked; what it guards is a
            // summary that the next rebuild recomputes.
            let mut serving = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.snapshot.load_full();
            let settings = self.settings.load_full();
            let new = build(&settings, old.servers.clone());
            self.install(&mut serving, new);
        }
        self.after_rebuild();
    }

    /// Announces and publishes `new`, and points the queue at its candidates.
    fn install(&self, serving: &mut Serving, new: Snapshot) {
        self.announce(serving, &new);
        self.queue.set_candidates(candidate_servers(&new));
        let min_healthy = self.settings.load().min_healthy;
        self.capacity
            .check(&self.name, min_healthy, &new, &self.events);
        self.snapshot.store(Arc::new(new));
    }

    /// Outside the rebuild lock (a slot handed over or dropped may dispatch again): serve
    /// waiters from new capacity, or send them away when nothing can serve.
    fn after_rebuild(&self) {
        if self.snapshot().candidates.is_empty() {
            self.queue.fail_all();
        } else {
            self.queue.dispatch(None);
        }
    }

    /// Like [`acquire`](Self::acquire) for a first attempt, but when every candidate is at
    /// its limit the request waits in the backend's FIFO queue for the first slot that frees
    /// on any eligible server, up to `queue_timeout`. Dropping the future (the client went
    /// away) leaves the queue at once.
    pub async fn acquire_or_wait(&self, req: &balance::Request<'_>) -> Result<Slot, NoSlot> {
        // Nobody may overtake those already waiting: with a queue, join it.
        if self.queue.is_empty() {
            match self.acquire(req, &[]) {
                Err(NoSlot::AllBusy) => {}
                other => return other,
            }
        } else if self.snapshot().candidates.is_empty() {
            return Err(NoSlot::NoCandidates);
        }
        let timeout = self.settings().queue_timeout.get();
        let mut ticket = self.enqueue()?;
        // Boxed: the wait is the rare path, and its timer would otherwise enlarge every
        // request's future (which hyper keeps allocated for each idle client connection).
        Box::pin(async move {
            match tokio::time::timeout(timeout, ticket.wait()).await {
                Ok(Some(slot)) => Ok(slot),
                Ok(None) => Err(NoSlot::NoCandidates),
                Err(_) => Err(NoSlot::QueueTimeout),
            }
        })
        .await
    }

    /// Joins the back of the queue (`QueueFull` when `max_queue` wait already): the
    /// synchronous half of [`acquire_or_wait`](Self::acquire_or_wait), which the simulator
    /// drives in virtual time by polling the ticket. A slot that freed just before joining
    /// is handed over at once (see [`Queue::join`]).
    pub fn enqueue(&self) -> Result<Ticket, NoSlot> {
        let max_queue = self.settings().max_queue as usize;
        let ticket = self.queue.join(max_queue).ok_or(NoSlot::QueueFull)?;
        self.queue.dispatch(None);
        Ok(ticket)
    }

    /// Requests waiting in the queue now (`fulcrum_backend_queue_length`).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// A weak handle to this backend, for timers that must not keep it alive.
    pub(super) fn weak(&self) -> Weak<Backend> {
        self.me.clone()
    }

    pub(super) fn outliers(&self) -> &Outliers {
        &self.outliers
    }

    /// Whether any server is ramping up (slow start).
    pub(super) fn any_ramping(&self) -> bool {
        let now = clock::now_ms();
        self.snapshot()
            .servers
            .iter()
            .any(|s| s.ramp_factor(now) < 1.0)
    }

    fn start_ramp_ticker(&self) {
        if self.any_ramping() {
            let ramp = self.settings().slow_start.get();
            slow_start::ensure_ticker(self.me.clone(), &self.ramp_ticker, ramp, &self.tasks);
        }
    }

    /// The ticker ended.
    pub(super) fn ramp_ticker_stopped(&self) {
        self.ramp_ticker.store(false, Ordering::Release);
    }

    /// Claims the ticker flag; `false` if it was free (the caller now owns it).
    pub(super) fn ramp_ticker_claim(&self) -> bool {
        self.ramp_ticker.swap(true, Ordering::AcqRel)
    }

    /// Publishes `backup_active` or `backend_unavailable` when the regime changes. Nothing is
    /// said while a server has not had its first check: at start-up the order in which the
    /// first checks finish would otherwise produce false alarms.
    fn announce(&self, serving: &mut Serving, new: &Snapshot) {
        if new.servers.iter().any(|s| s.health() == Health::Unknown) {
            return;
        }
        let now = match (new.candidates.is_empty(), new.using_backups) {
            (true, _) => Serving::Nobody,
            (false, true) => Serving::Backups,
            (false, false) => Serving::Primaries,
        };
        if now == *serving {
            return;
        }
        *serving = now;
        let name = Some(&*self.name);
        match now {
            Serving::Nobody => self.events.publish(Event::new(
                EventKind::BackendUnavailable,
                name,
                None,
                "no server can take requests: every primary and backup is out of rotation; answering 503",
            )),
            Serving::Backups => {
                let names: Vec<&str> = new.candidates.iter().map(|c| &*c.server.name).collect();
                self.events.publish(Event::new(
                    EventKind::BackupActive,
                    name,
                    None,
                    format!("no primary is up; serving from backup {}", names.join(", ")),
                ));
            }
            Serving::Primaries => {}
        }
    }
}

fn candidate_servers(snap: &Snapshot) -> Vec<Arc<Server>> {
    snap.candidates
        .iter()
        .map(|c| Arc::clone(&c.server))
        .collect()
}

/// The snapshot for `servers` in their present state.
fn build(settings: &config::Backend, servers: Vec<Arc<Server>>) -> Snapshot {
    // While a server ramps up, or its agent asks for less than its full weight, weights are
    // scaled so that its fraction is expressible.
    let now = clock::now_ms();
    let factor = |s: &Server| s.ramp_factor(now) * s.agent.factor();
    let scale = if servers.iter().any(|s| factor(s) < 1.0) {
        slow_start::WEIGHT_SCALE
    } else {
        1
    };
    let candidate = |s: &Arc<Server>| Candidate {
        server: Arc::clone(s),
        weight: slow_start::effective_weight(s.weight(), factor(s), scale),
    };
    let mut candidates: Vec<Candidate> = servers
        .iter()
        .filter(|s| !s.backup && is_eligible(s))
        .map(candidate)
        .collect();
    let mut using_backups = false;
    if candidates.is_empty() {
        let backups = servers.iter().filter(|s| s.backup && is_eligible(s));
        candidates = if settings.all_backups {
            backups.map(candidate).collect()
        } else {
            backups.take(1).map(candidate).collect()
        };
        using_backups = !candidates.is_empty();
    }
    // Least-connections hooks its candidates into its tree as it builds; a server that is no
    // longer a candidate, or a backend that changed algorithm, must stop feeding the old one.
    for s in &servers {
        s.set_load_hook(None);
    }
    let selector = Selector::build(settings, &candidates);
    Snapshot {
        servers,
        candidates,
        using_backups,
        selector,
    }
}

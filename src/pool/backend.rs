//! A backend: its settings and the selection snapshot requests read.
//!
//! The snapshot (candidate set + selection structure) is one `ArcSwap`, so a request does a
//! single lock-free load and sees servers and structure that belong together. Rebuilds come
//! from health flips and the admin plane; they are serialised by a mutex that the request
//! path never touches.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::server::{Health, Server, Slot};
use crate::balance;
use crate::balance::{Candidate, Selector};
use crate::config;
use crate::events::{Bus, Event, EventKind};

/// Why [`Backend::acquire`] found no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// No server is eligible at all (down, out of rotation).
    NoCandidates,
    /// Eligible servers exist but each is at its `max_connections`.
    AllBusy,
    /// Every eligible server has already been tried for this request.
    AllTried,
}

/// Who serves right now, and how to choose among them.
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
fn is_eligible(server: &Server) -> bool {
    server.health() == Health::Up
}

/// One backend. The object lives as long as a backend of that name is configured, so the
/// tasks that hold it (health checkers) stay valid across reloads.
pub struct Backend {
    pub name: Arc<str>,
    settings: ArcSwap<config::Backend>,
    snapshot: ArcSwap<Snapshot>,
    rebuild_lock: Mutex<()>,
    events: Bus,
}

impl Backend {
    /// A backend over `servers` (already built, in file order).
    pub fn new(
        name: &str,
        settings: config::Backend,
        servers: Vec<Arc<Server>>,
        events: Bus,
    ) -> Arc<Self> {
        let snapshot = build(&settings, servers);
        Arc::new(Backend {
            name: name.into(),
            settings: ArcSwap::from_pointee(settings),
            snapshot: ArcSwap::from_pointee(snapshot),
            rebuild_lock: Mutex::new(()),
            events,
        })
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
    pub fn acquire(&self, req: &balance::Request<'_>, tried: &[usize]) -> Result<Slot, NoSlot> {
        let snap = self.snapshot();
        if snap.candidates.is_empty() {
            return Err(NoSlot::NoCandidates);
        }
        let mut slot = None;
        let mut untried = false;
        snap.selector.pick(req, &snap.candidates, &mut |c| {
            if tried.contains(&(Arc::as_ptr(&c.server) as usize)) {
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
        // A poisoned lock only means another rebuild panicked; the data it guards is `()`.
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot.load_full();
        let settings = self.settings.load_full();
        let new = build(&settings, old.servers.clone());
        self.announce(&old, &new);
        self.snapshot.store(Arc::new(new));
    }

    /// Replaces settings and servers (a reload), keeping what callers hold valid.
    pub fn replace(&self, settings: config::Backend, servers: Vec<Arc<Server>>) {
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot.load_full();
        let new = build(&settings, servers);
        self.settings.store(Arc::new(settings));
        self.announce(&old, &new);
        self.snapshot.store(Arc::new(new));
    }

    fn announce(&self, old: &Snapshot, new: &Snapshot) {
        let name = Some(&*self.name);
        let first_build = old.servers.iter().all(|s| s.health() == Health::Unknown);
        if new.candidates.is_empty() && (!old.candidates.is_empty() || first_build) {
            self.events.publish(Event::new(
                EventKind::BackendUnavailable,
                name,
                None,
                "no server can take requests: every primary and backup is out of rotation; answering 503",
            ));
        } else if new.using_backups && (!old.using_backups || old.candidates.is_empty()) {
            let names: Vec<&str> = new.candidates.iter().map(|c| &*c.server.name).collect();
            self.events.publish(Event::new(
                EventKind::BackupActive,
                name,
                None,
                format!("no primary is up; serving from backup {}", names.join(", ")),
            ));
        }
    }
}

/// The snapshot for `servers` in their present state.
fn build(settings: &config::Backend, servers: Vec<Arc<Server>>) -> Snapshot {
    let candidate = |s: &Arc<Server>| Candidate {
        server: Arc::clone(s),
        weight: s.weight(),
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
    let selector = Selector::build(settings, &candidates);
    Snapshot {
        servers,
        candidates,
        using_backups,
        selector,
    }
}

//! One server's live state, shared by the request path, the health checker and the admin
//! plane. Everything the request path reads is an atomic: no lock is taken to pick a server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::balance::Ewma;
use crate::config;
use crate::proxy::upstream::ConnPool;

/// What the active health checks last concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No check has finished yet.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
}

/// The server's live state. Identity (backend, name, address text) never changes for the
/// life of the object: a reload that changes the address makes a new server.
pub struct Server {
    pub backend: Arc<str>,
    pub name: Arc<str>,
    /// The address as written (`host:port`); re-resolved by the health checker.
    pub address: String,
    pub backup: bool,
    /// The resolved address that new connections go to.
    resolved: ArcSwap<SocketAddr>,
    /// Weight as configured or set at run time.
    weight: AtomicU32,
    /// Requests in flight to this server at once; 0 = unlimited.
    max_connections: AtomicU32,
    health: AtomicU8,
    /// Requests in flight now.
    active: AtomicU32,
    requests_total: AtomicU64,
    checks_ok: AtomicU64,
    checks_failed: AtomicU64,
    /// Unix milliseconds of the last finished check, and whether it passed.
    last_check_ms: AtomicU64,
    last_check_ok: AtomicBool,
    /// Idle keep-alive connections to this server.
    pub conns: ConnPool,
    /// Response-time estimate for `peak_ewma`, fed when a response head arrives.
    pub ewma: Ewma,
}

impl Server {
    /// A server from its configuration; `resolved` is the address validation found.
    pub fn new(backend: &str, cfg: &config::Server, resolved: SocketAddr) -> Self {
        Server {
            backend: backend.into(),
            name: cfg.name.as_str().into(),
            address: cfg.address.clone(),
            backup: cfg.backup,
            resolved: ArcSwap::from_pointee(resolved),
            weight: AtomicU32::new(cfg.weight),
            max_connections: AtomicU32::new(cfg.max_connections),
            health: AtomicU8::new(Health::Unknown as u8),
            active: AtomicU32::new(0),
            requests_total: AtomicU64::new(0),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            last_check_ok: AtomicBool::new(false),
            conns: ConnPool::default(),
            ewma: Ewma::default(),
        }
    }

    /// `backend/server`, the name used in logs and on the command line.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.backend, self.name)
    }

    pub fn addr(&self) -> SocketAddr {
        **self.resolved.load()
    }

    pub fn set_addr(&self, addr: SocketAddr) {
        if self.addr() != addr {
            self.resolved.store(Arc::new(addr));
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    pub fn max_connections(&self) -> u32 {
        self.max_connections.load(Ordering::Relaxed)
    }

    pub fn set_max_connections(&self, n: u32) {
        self.max_connections.store(n, Ordering::Relaxed);
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets the health; returns the previous value.
    pub fn set_health(&self, h: Health) -> Health {
        Health::from_u8(self.health.swap(h as u8, Ordering::AcqRel))
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Whether one more request fits under `max_connections` right now.
    pub fn has_slot(&self) -> bool {
        let max = self.max_connections();
        max == 0 || self.active() < max
    }

    /// Takes a slot if one is free. The compare-and-swap makes the limit exact under any
    /// concurrency: two requests can never both take the last slot.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max_connections();
        let mut cur = self.active.load(Ordering::Relaxed);
        loop {
            if max != 0 && cur >= max {
                return None;
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            server: Arc::clone(self),
        })
    }

    /// Records one finished health check.
    pub fn record_check(&self, ok: bool) {
        if ok {
            self.checks_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.checks_failed.fetch_add(1, Ordering::Relaxed);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_check_ms.store(now, Ordering::Relaxed);
        self.last_check_ok.store(ok, Ordering::Relaxed);
    }

    /// (passed, failed) health checks so far.
    pub fn check_counts(&self) -> (u64, u64) {
        (
            self.checks_ok.load(Ordering::Relaxed),
            self.checks_failed.load(Ordering::Relaxed),
        )
    }

    /// The last check: unix milliseconds and whether it passed; `None` before the first.
    pub fn last_check(&self) -> Option<(u64, bool)> {
        match self.last_check_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some((ms, self.last_check_ok.load(Ordering::Relaxed))),
        }
    }
}

/// One request's hold on a server's capacity; dropping it frees the slot.
pub struct Slot {
    server: Arc<Server>,
}

impl Slot {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::AcqRel);
    }
}

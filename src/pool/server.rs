//! One server's live state, shared by the request path, the health checker and the admin
//! plane. Everything the request path reads is an atomic: no lock is taken to pick a server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::maintenance::Maintenance;
use super::queue::Queue;
use super::{clock, slow_start};
use crate::balance::{Ewma, LoadHook};
use crate::config;
use crate::metrics::ServerStats;
use crate::upstream::h1::{IdleConns, ServerConn};
use crate::upstream::h2::H2Conns;
use crate::upstream::{ClientAddrs, ConnectError, Connector, Target};

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

/// What a server is doing, as status shows it (`state` in the README's admin API reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Takes its full share.
    Up,
    /// Failed its health checks (or has not passed one yet).
    Down,
    /// Taken out of rotation by an operator.
    Maintenance,
    /// Leaving rotation: in-flight requests finish, no new ones come.
    Draining,
    /// Taken out by passive health (outlier detection) for a while.
    Ejected,
    /// Back in rotation and ramping up its share (slow start).
    Starting,
}

impl ServerState {
    /// The name used in the API, the CLI and events.
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Down => "down",
            ServerState::Maintenance => "maintenance",
            ServerState::Draining => "draining",
            ServerState::Ejected => "ejected",
            ServerState::Starting => "starting",
        }
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A server's identity for the life of the process: given once when the server object is
/// created and never reused, so a reload that replaces a server (new address or role) makes
/// a new identity, and comparing identities never depends on where an object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(u64);

impl ServerId {
    /// No server: what an empty slot of a fixed-size list of tried servers holds.
    pub const NONE: ServerId = ServerId(0);

    fn next() -> ServerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ServerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The server's live state. Identity (id, backend, name, address text) never changes for
/// the life of the object: a reload that changes the address makes a new server.
#[derive(Debug)]
pub struct Server {
    pub id: ServerId,
    pub backend: Arc<str>,
    pub name: Arc<str>,
    /// The address as written (`host:port`); re-resolved by the health checker.
    pub address: String,
    pub backup: bool,
    /// Found through DNS discovery rather than written in the file (status shows it).
    pub discovered: bool,
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
    /// Checks that could not run because fulcrum itself was out of fds: neither result.
    checks_unknown: AtomicU64,
    /// Unix milliseconds of the last finished check, and whether it passed.
    last_check_ms: AtomicU64,
    last_check_ok: AtomicBool,
    /// Idle keep-alive connections to this server, one list per worker.
    pub idle: IdleConns,
    /// Multiplexed HTTP/2 connections (`protocol = "h2"`), one list per worker.
    pub h2: H2Conns,
    /// Response-time estimate for `peak_ewma`, fed when a response head arrives.
    pub ewma: Ewma,
    /// Admin plane (issue 4): maintenance window and request metrics.
    pub maintenance: Maintenance,
    pub stats: ServerStats,

    // Protection (issue 3): passive health, slow start, the queue a freed slot goes to.
    /// 5xx answers or connect errors in a row; any success resets it.
    consecutive_failures: AtomicU32,
    /// How many times this server has been ejected (also the id of the current ejection).
    ejections: AtomicU32,
    /// Ejections in a row without a long quiet spell between them: the multiplier of the
    /// next ejection's length, so one bad day does not lengthen every ejection forever.
    ejection_streak: AtomicU32,
    /// When the last ejection ended (`clock::now_ms`), 0 if never.
    ejection_ended_ms: AtomicU64,
    /// Non-zero while ejected: the clock time (`clock::now_ms`) the ejection ends.
    ejected_until_ms: AtomicU64,
    /// When the slow-start ramp began (`clock::now_ms`; 0 = not ramping), and its length.
    ramp_start_ms: AtomicU64,
    ramp_len_ms: AtomicU64,
    /// The backend's queue: a freed slot is handed to its oldest waiter.
    queue: ArcSwapOption<Queue>,

    // Selection (issue 5).
    /// The least-connections tree leaf this server keeps current, while its backend uses
    /// least-connections; `load_hooked` says whether there is one, so that servers under
    /// other algorithms pay one relaxed load per slot taken or freed.
    load_hook: ArcSwapOption<LoadHook>,
    load_hooked: AtomicBool,

    // Issue 13: how connections are opened, and what the server's agent last said.
    /// The backend's connector (TLS, PROXY header) and this server's TLS name.
    target: ArcSwap<Target>,
    /// What the `fulcrum-agent` header of the health checks asks for (see [`super::agent`]).
    pub agent: super::agent::AgentState,
}

impl Server {
    /// A server from its configuration; `resolved` is the address validation found.
    pub fn new(backend: &str, cfg: &config::Server, resolved: SocketAddr) -> Self {
        Server {
            id: ServerId::next(),
            backend: backend.into(),
            name: cfg.name.as_str().into(),
            address: cfg.address.clone(),
            backup: cfg.backup,
            discovered: cfg.discovered,
            resolved: ArcSwap::from_pointee(resolved),
            weight: AtomicU32::new(cfg.weight),
            max_connections: AtomicU32::new(cfg.max_connections),
            health: AtomicU8::new(Health::Unknown as u8),
            active: AtomicU32::new(0),
            requests_total: AtomicU64::new(0),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            checks_unknown: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            last_check_ok: AtomicBool::new(false),
            idle: IdleConns::default(),
            h2: H2Conns::default(),
            ewma: Ewma::default(),
            maintenance: Maintenance::default(),
            stats: ServerStats::default(),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejection_streak: AtomicU32::new(0),
            ejection_ended_ms: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ramp_start_ms: AtomicU64::new(0),
            ramp_len_ms: AtomicU64::new(0),
            queue: ArcSwapOption::empty(),
            load_hook: ArcSwapOption::empty(),
            load_hooked: AtomicBool::new(false),
            target: ArcSwap::from_pointee(Target::default()),
            agent: super::agent::AgentState::default(),
        }
    }

    /// Connects through `connector` from now on (a start, a reload). Idle connections made
    /// under other settings (plain vs TLS, another PROXY mode) are closed.
    pub fn set_connector(&self, connector: &Arc<Connector>) {
        let old = self.target.load();
        if !old.connector.same_settings(connector) {
            self.idle.clear();
        }
        self.target
            .store(Arc::new(Target::new(Arc::clone(connector), &self.address)));
    }

    /// How connections to this server are opened now.
    pub fn target(&self) -> arc_swap::Guard<Arc<Target>> {
        self.target.load()
    }

    /// Whether connections to this server start with a PROXY header (`send_proxy_protocol`):
    /// only then does the data path need the client's addresses (the local one costs a
    /// system call).
    pub fn proxied(&self) -> bool {
        self.target().connector.proxy != config::SendProxy::Off
    }

    /// An idle connection that may carry a request of `client`: with the PROXY protocol a
    /// connection serves only the client its header named; without, any (`client` is then
    /// `None`, see [`proxied`](Self::proxied)).
    pub fn checkout(&self, client: Option<ClientAddrs>) -> Option<ServerConn> {
        self.idle.checkout(client.filter(|_| self.proxied()))
    }

    /// Opens a new connection for `client` within `timeout` (see [`crate::upstream::connect`]).
    pub async fn connect(
        &self,
        client: Option<ClientAddrs>,
        timeout: Duration,
    ) -> Result<ServerConn, ConnectError> {
        let target = self.target.load_full();
        crate::upstream::h1::connect(self.addr(), &target, client, timeout).await
    }

    /// `backend/server`, the name used in logs and on the command line.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.backend, self.name)
    }

    pub fn addr(&self) -> SocketAddr {
        **self.resolved.load()
    }

    /// Points new connections at `addr` (the name now resolves elsewhere) and closes the
    /// idle ones to the old address, so a DNS switch takes effect under steady traffic too.
    pub fn set_addr(&self, addr: SocketAddr) {
        if self.addr() != addr {
            self.resolved.store(Arc::new(addr));
            self.idle.clear();
            self.h2.clear();
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

    /// `max_connections` as it applies now: lowered while the server ramps up (slow start).
    pub fn effective_max_connections(&self) -> u32 {
        let max = self.max_connections();
        // Not ramping (nearly always): no clock read on the request path.
        if max == 0 || self.ramp_start_ms.load(Ordering::Acquire) == 0 {
            return max;
        }
        slow_start::effective_max(max, self.ramp_factor(clock::now_ms()))
    }

    /// Whether one more request fits under `max_connections` right now.
    pub fn has_slot(&self) -> bool {
        let max = self.effective_max_connections();
        max == 0 || self.active() < max
    }

    /// Takes a slot if one is free. The compare-and-swap makes the limit exact under any
    /// concurrency: two requests can never both take the last slot.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let max = self.effective_max_connections();
        // SeqCst: pairs with the queue's length (see `Slot::drop` and `Queue::join`).
        let mut cur = self.active.load(Ordering::SeqCst);
        loop {
            if max != 0 && cur >= max {
                return None;
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.refresh_load_hook();
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

    /// Records a check that could not run for a reason of fulcrum's own (out of fds): it
    /// says nothing about the server, so its state and last result stay.
    pub fn record_check_unknown(&self) {
        self.checks_unknown.fetch_add(1, Ordering::Relaxed);
    }

    /// Checks that could not run (see [`record_check_unknown`](Self::record_check_unknown)).
    pub fn unknown_checks(&self) -> u64 {
        self.checks_unknown.load(Ordering::Relaxed)
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

// Protection (issue 3): state, passive health, slow start, queue hand-off.
impl Server {
    /// The state shown to operators: maintenance first (it is what a person decided), then
    /// health, ejection and the slow-start ramp.
    pub fn state(&self) -> ServerState {
        if self.maintenance.is_on() {
            if self.active() > 0 {
                ServerState::Draining
            } else {
                ServerState::Maintenance
            }
        } else if self.agent.is_drained() && self.health() == Health::Up {
            // Its agent asked for no new requests (`fulcrum-agent: drain`).
            ServerState::Draining
        } else if self.health() == Health::Unknown {
            ServerState::Starting
        } else if self.health() == Health::Down {
            ServerState::Down
        } else if self.is_ejected() {
            ServerState::Ejected
        } else if self.ramp_factor(clock::now_ms()) < 1.0 {
            ServerState::Starting
        } else {
            ServerState::Up
        }
    }

    /// Whether passive health has taken this server out for now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Acquire) != 0
    }

    /// A success: the failure streak starts again.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A failure; returns the failures in a row so far.
    pub fn record_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// How many times the server has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Acquire)
    }

    /// Ejects until `until_ms` (clock time); returns which ejection this is (1, 2, ...).
    pub fn eject(&self, until_ms: u64) -> u32 {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms
            .store(until_ms.max(1), Ordering::Release);
        self.ejections.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Ends the ejection; returns whether the server was ejected.
    pub fn end_ejection(&self) -> bool {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejection_ended_ms
            .store(clock::now_ms(), Ordering::Release);
        self.ejected_until_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// The multiplier for a new ejection at `now_ms`: one more than the streak, which starts
    /// again after `quiet_ms` without an ejection (Envoy decays its multiplier likewise).
    pub fn next_ejection_multiplier(&self, now_ms: u64, quiet_ms: u64) -> u32 {
        let ended = self.ejection_ended_ms.load(Ordering::Acquire);
        if ended != 0 && now_ms.saturating_sub(ended) > quiet_ms {
            self.ejection_streak.store(0, Ordering::Release);
        }
        self.ejection_streak.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// When the current ejection ends (clock ms), if ejected.
    pub fn ejected_until_ms(&self) -> Option<u64> {
        match self.ejected_until_ms.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Begins the slow-start ramp now, lasting `len` (zero: no ramp).
    pub fn start_ramp(&self, len: Duration) {
        if len.is_zero() {
            self.ramp_start_ms.store(0, Ordering::Release);
            return;
        }
        self.ramp_len_ms
            .store(len.as_millis() as u64, Ordering::Release);
        self.ramp_start_ms.store(clock::now_ms(), Ordering::Release);
    }

    /// The slow-start factor at `now_ms` in `(0, 1]`; 1.0 when not ramping.
    pub fn ramp_factor(&self, now_ms: u64) -> f64 {
        let start = self.ramp_start_ms.load(Ordering::Acquire);
        if start == 0 {
            return 1.0;
        }
        slow_start::factor(start, self.ramp_len_ms.load(Ordering::Acquire), now_ms)
    }

    /// Points freed slots of this server at `queue`.
    pub fn attach_queue(&self, queue: &Arc<Queue>) {
        self.queue.store(Some(Arc::clone(queue)));
    }
}

// Selection (issue 5): the least-connections tree follows the in-flight count.
impl Server {
    /// Points this server at its leaf in a least-connections tree, or at none (`None`: the
    /// backend uses another algorithm, or the server is no longer a candidate).
    pub fn set_load_hook(&self, hook: Option<Arc<LoadHook>>) {
        self.load_hooked.store(hook.is_some(), Ordering::Relaxed);
        self.load_hook.store(hook);
    }

    /// Brings the tree leaf (if any) up to date with the in-flight count: after every change
    /// of the count, and once when the hook is set.
    pub fn refresh_load_hook(&self) {
        if self.load_hooked.load(Ordering::Relaxed)
            && let Some(hook) = self.load_hook.load().as_ref()
        {
            hook.refresh(&self.active);
        }
    }
}

/// One request's hold on a server's capacity; dropping it frees the slot.
#[derive(Debug)]
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
        // SeqCst pairs with the queue's: a waiter that joins while this slot frees either
        // sees the lower count itself or is seen here (see `Queue::join`).
        self.server.active.fetch_sub(1, Ordering::SeqCst);
        self.server.refresh_load_hook();
        if let Some(q) = self.server.queue.load().as_ref()
            && !q.is_empty()
        {
            q.dispatch(Some(&self.server));
        }
    }
}

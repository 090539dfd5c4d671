//! The body of `GET /api/v1/status` (the README's "Admin API" reference), also what `fulcrum ctl status` reads.
//! Fields beyond the interface's are additions, never renames.

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::metrics::DURATION_BUCKETS;
use crate::pool::{Backend, Server};

/// Every backend and server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub backends: Vec<BackendStatus>,
    /// Every frontend and its routes; absent from older fulcrums.
    #[serde(default)]
    pub frontends: Vec<FrontendStatus>,
    /// RFC 3339 time (milliseconds) this status was taken, so a client can count down
    /// maintenance windows against fulcrum's clock rather than its own.
    #[serde(default)]
    pub now: Option<String>,
    /// Upper bounds in seconds of the request-duration buckets that every server's
    /// `duration_counts` follows (the last count, one past these, is `+Inf`).
    #[serde(default)]
    pub duration_buckets: Vec<f64>,
    /// The process's own limits and pressure (fds, memory); absent from older fulcrums.
    #[serde(default)]
    pub process: Option<ProcessStatus>,
}

/// One frontend as configured: where it listens, where its routes lead and what its
/// certificates say.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrontendStatus {
    pub name: String,
    /// The address it listens on (the bound port when the file said 0).
    pub bind: String,
    pub mode: String,
    /// The backend of requests no route matches (every request without routes); null: 404.
    pub backend: Option<String>,
    pub routes: Vec<RouteStatus>,
    /// Empty without TLS; the default certificate first.
    #[serde(default)]
    pub certificates: Vec<CertificateStatus>,
}

/// One served certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The DNS names of its SAN.
    pub names: Vec<String>,
    /// RFC 3339 time it expires.
    pub not_after: String,
}

/// One route: its name and either the backend it forwards to or its redirect target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
}

impl FrontendStatus {
    /// `fe` as configured, with what its running accept loop serves (`served`: every
    /// running frontend) for its bound address and certificates.
    fn of(fe: &crate::config::Frontend, served: &[crate::app::ServedFrontend]) -> FrontendStatus {
        let running = served.iter().find(|s| s.name == fe.name);
        FrontendStatus {
            name: fe.name.clone(),
            bind: running.map_or(fe.bind, |r| r.bind).to_string(),
            mode: match fe.mode {
                crate::config::Mode::Http => "http".into(),
                crate::config::Mode::Tcp => "tcp".into(),
            },
            backend: fe.backend.clone(),
            routes: fe
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| RouteStatus {
                    name: crate::config::route_name(&fe.name, i, r),
                    backend: r.backend.clone(),
                    redirect: r.redirect.clone(),
                })
                .collect(),
            certificates: running
                .map(|r| {
                    r.certificates
                        .iter()
                        .map(|c| CertificateStatus {
                            names: c.names.clone(),
                            not_after: c.not_after_rfc3339(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// fulcrum's own limits: what the fd limit allows, and where memory stands against
/// `max_memory`, so an operator sees why clients wait or get 503 `overloaded`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The fd limit and the client limit it allows (planned at start).
    pub fds: Option<crate::fds::FdBudget>,
    /// Set when the fd limit lowered the client limit: what to change.
    pub fd_warning: Option<String>,
    /// Open fds at the monitor's last count.
    pub open_fds: u64,
    /// Whether client accept loops wait because free fds are under the reserve.
    pub fds_low: bool,
    pub resident_memory_bytes: u64,
    /// `[global] max_memory` in bytes; null when unset.
    pub max_memory_bytes: Option<u64>,
    /// normal | shedding (new requests get 503 overloaded) | pausing (accepting waits too)
    pub memory_state: String,
}

impl ProcessStatus {
    fn of(app: &App) -> ProcessStatus {
        let o = app.overload();
        let fds = app.fd_budget().cloned();
        ProcessStatus {
            fd_warning: fds.as_ref().and_then(|f| f.warning()),
            fds,
            open_fds: o.open_fds(),
            fds_low: o.fds_low(),
            resident_memory_bytes: o.resident_bytes(),
            max_memory_bytes: o.ceiling(),
            memory_state: o.level().name().to_string(),
        }
    }
}

/// One backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub algorithm: String,
    pub healthy_primaries: usize,
    pub min_healthy: u32,
    /// Whether backups are serving because no primary is up.
    #[serde(default)]
    pub using_backups: bool,
    pub servers: Vec<ServerStatus>,
    /// With `[discovery]`: the name asked, rounds done and how the last one went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<crate::app::DiscoveryRound>,
}

/// One server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub address: String,
    /// up | down | maintenance | draining | ejected | starting
    pub state: String,
    pub backup: bool,
    pub weight: u32,
    /// Requests in flight now.
    pub active: u32,
    pub requests_total: u64,
    /// RFC 3339, when a maintenance window is running.
    pub maintenance_until: Option<String>,
    pub maintenance_reason: Option<String>,
    /// RFC 3339 time of the last finished health check, and whether it passed.
    #[serde(default)]
    pub last_check: Option<String>,
    #[serde(default)]
    pub last_check_ok: Option<bool>,
    /// Requests this server answered (any status), as counted for `/metrics`.
    #[serde(default)]
    pub responses_total: u64,
    /// Of those, answers with a 5xx status.
    #[serde(default)]
    pub errors_total: u64,
    /// Requests per request-duration bucket since start (not cumulative; `+Inf` last):
    /// a client takes the difference of two readings for a window's p50/p99.
    #[serde(default)]
    pub duration_counts: Vec<u64>,
    /// Found through the backend's `[discovery]` (DNS), not written in the file.
    #[serde(default)]
    pub discovered: bool,
    /// The last `fulcrum-agent` header value its health checks answered; null: none.
    #[serde(default)]
    pub agent: Option<String>,
}

impl Status {
    /// The live state of `app`.
    pub fn of(app: &App) -> Status {
        let served = app.served();
        Status {
            backends: app
                .backends()
                .values()
                .map(|b| BackendStatus::of(b, app.discovery_round(&b.name)))
                .collect(),
            frontends: app
                .config()
                .frontends
                .iter()
                .map(|fe| FrontendStatus::of(fe, &served))
                .collect(),
            now: Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
            duration_buckets: DURATION_BUCKETS.to_vec(),
            process: Some(ProcessStatus::of(app)),
        }
    }
}

impl BackendStatus {
    fn of(b: &Backend, discovery: Option<crate::app::DiscoveryRound>) -> BackendStatus {
        let snap = b.snapshot();
        let settings = b.settings();
        BackendStatus {
            name: b.name.to_string(),
            algorithm: settings.algorithm.name().to_string(),
            healthy_primaries: snap.healthy_primaries(),
            min_healthy: settings.min_healthy,
            using_backups: snap.using_backups,
            servers: snap.servers.iter().map(|s| ServerStatus::of(s)).collect(),
            discovery,
        }
    }
}

impl ServerStatus {
    /// One server's live state.
    pub fn of(s: &Server) -> ServerStatus {
        let window = s.maintenance.window();
        let last = s.last_check();
        let (responses_total, errors_total) = s.stats.requests.totals();
        let (_, _, buckets) = s.stats.duration.read();
        ServerStatus {
            name: s.name.to_string(),
            address: s.address.clone(),
            state: s.state().name().to_string(),
            backup: s.backup,
            weight: s.weight(),
            active: s.active(),
            requests_total: s.requests_total(),
            maintenance_until: window
                .as_ref()
                .map(|w| humantime::format_rfc3339_seconds(w.until).to_string()),
            maintenance_reason: window.map(|w| w.reason),
            last_check: last.map(|(ms, _)| {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                humantime::format_rfc3339_millis(t).to_string()
            }),
            last_check_ok: last.map(|(_, ok)| ok),
            responses_total,
            errors_total,
            duration_counts: buckets.into_iter().map(|(_, n)| n).collect(),
            discovered: s.discovered,
            agent: s.agent.last(),
        }
    }
}

//! The configuration file: its schema (this module), how it is read and checked as a whole
//! (`load`), and how errors point at the file, line, column and key (`locate`).
//!
//! Every default here is the one the README's "Configuration reference" names; `deny_unknown_fields` everywhere so a
//! typo is an error rather than a silently ignored knob.

mod defaults;
mod discovery;
mod duration;
mod health;
mod load;
mod locate;
mod protocol;
mod routes;
mod size;
mod tls;
mod upstream;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

pub use discovery::{Discovery, DnsQuery};
pub use duration::{Dur, DurError};
pub use health::{Health, HealthKind, is_header_value, is_token};
pub use load::{ConfigError, ConfigErrors, load_file, parse_str};
pub use protocol::UpstreamProtocol;
pub use routes::{HeaderRules, Route, route_name};
pub use size::{ByteSize, SizeError};
pub use tls::{CertPair, Tls};
pub use upstream::{SendProxy, TlsSettingsError, UpstreamTls};
pub use validate::{EVENT_NAMES, ResolveError, resolve};

/// The whole configuration, as read from one file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    #[serde(default)]
    pub alerts: Alerts,
    /// `[cluster]`: present = runtime state shared with other instances through etcd.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// The file this came from (empty for the embedded demo); relative paths start here.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Process-wide settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// Client connections held at once; past it accepting waits rather than failing.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub grace_period: Dur,
    /// Where maintenance state and the generated admin token live; by default systemd's
    /// `$STATE_DIRECTORY` when it is set (`StateDirectory=`), else `.fulcrum`.
    pub state_dir: PathBuf,
    /// fulcrum's own memory ceiling (resident memory; `""` = none): above 95 % of it new
    /// requests get 503 `overloaded`, above 98 % new connections wait. Applied by a reload.
    #[serde(deserialize_with = "size::optional_size")]
    pub max_memory: Option<ByteSize>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            threads: 0,
            max_connections: 20_000,
            grace_period: Dur::secs(30),
            state_dir: default_state_dir(std::env::var_os("STATE_DIRECTORY")),
            max_memory: None,
        }
    }
}

/// The first folder of `$STATE_DIRECTORY` (systemd sets it, a `:`-separated list, for
/// `StateDirectory=`), else `.fulcrum`.
fn default_state_dir(state_directory: Option<std::ffi::OsString>) -> PathBuf {
    state_directory
        .and_then(|dirs| std::env::split_paths(&dirs).find(|d| !d.as_os_str().is_empty()))
        .unwrap_or_else(|| PathBuf::from(".fulcrum"))
}

/// The admin plane: API, dashboard, metrics.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    #[serde(deserialize_with = "bind_addr")]
    pub bind: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// The longest maintenance window one call may ask for, so "for a test" cannot mean forever.
    pub max_maintenance: Dur,
    /// `Host` values the admin plane accepts besides loopback names and addresses and its
    /// own address (the DNS-rebinding guard): `name` (any port) or `name:port`, compared
    /// case-insensitively. Applied by a reload.
    pub allowed_hosts: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            bind: SocketAddr::from(([127, 0, 0, 1], 9900)),
            token_file: None,
            max_maintenance: Dur::secs(24 * 3600),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Reads an `IP:port` to listen on, refusing anything else (a host name, a missing port)
/// with a message that says what is expected; the error is located at the key like any
/// other value error.
fn bind_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP:port to listen on (e.g. 127.0.0.1:8080 or [::]:8080)"
        ))
    })
}

/// What a frontend balances: HTTP requests or whole TCP connections.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

/// A listening socket and the backend it feeds.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    #[serde(deserialize_with = "bind_addr")]
    pub bind: SocketAddr,
    /// Where requests go when no route matches (and every request of a `mode = "tcp"`
    /// frontend); without one, an unrouted request gets 404 `no_route`.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Every connection must begin with a PROXY protocol (v1 or v2) header, read before
    /// anything else (TLS included); its source address becomes the client's.
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    #[serde(default = "defaults::client_header_timeout")]
    pub client_header_timeout: Dur,
    #[serde(default = "defaults::client_idle_timeout")]
    pub client_idle_timeout: Dur,
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// HTTP/2: streams one client connection may have open at once (its SETTINGS), and so
    /// the most server slots one connection can hold.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// `mode = "tcp"` connections (and, with the HTTP/1 engine, Upgrade tunnels) silent this
    /// long in both directions are closed.
    #[serde(default = "defaults::tunnel_idle_timeout")]
    pub tunnel_idle_timeout: Dur,
    #[serde(default = "defaults::yes")]
    pub access_log: bool,
    #[serde(default)]
    pub access_log_format: LogFormat,
    /// Tried in order; the first that matches a request decides where it goes.
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub request_headers: HeaderRules,
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// The largest request body accepted (0: no limit); larger gets 413 `body_too_large`.
    #[serde(default)]
    pub max_body_bytes: u64,
}

/// How access log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` pairs after the time and level, as `tracing` writes them.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The selection algorithms; see `balance`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    Random,
    PowerOfTwo,
    PeakEwma,
    ConsistentHash,
    Maglev,
    First,
}

impl Algorithm {
    /// Every algorithm, in the order documentation and the simulator list them.
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::Random,
        Algorithm::PowerOfTwo,
        Algorithm::PeakEwma,
        Algorithm::ConsistentHash,
        Algorithm::Maglev,
        Algorithm::First,
    ];

    /// The name used in the configuration file and the API.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::Random => "random",
            Algorithm::PowerOfTwo => "power_of_two",
            Algorithm::PeakEwma => "peak_ewma",
            Algorithm::ConsistentHash => "consistent_hash",
            Algorithm::Maglev => "maglev",
            Algorithm::First => "first",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the hash algorithms hash.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    #[default]
    SourceIp,
    Path,
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

impl HashKey {
    /// Parses `source_ip`, `path`, `header:NAME`, `cookie:NAME`, `query:NAME`.
    pub fn parse(text: &str) -> Result<Self, HashKeyError> {
        let bad = || HashKeyError(text.to_string());
        match text.split_once(':') {
            None if text == "source_ip" => Ok(HashKey::SourceIp),
            None if text == "path" => Ok(HashKey::Path),
            Some((_, "")) | None => Err(bad()),
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| bad()),
            Some(("cookie", name)) => Ok(HashKey::Cookie(name.to_string())),
            Some(("query", name)) => Ok(HashKey::Query(name.to_string())),
            Some(_) => Err(bad()),
        }
    }
}

/// A `hash_key` that is none of the forms [`HashKey::parse`] knows; the text is quoted back
/// with the forms there are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a hash key; use source_ip, path, header:NAME, cookie:NAME or query:NAME")]
pub struct HashKeyError(pub String);

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HashKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of HTTP statuses a health check accepts, written `200-399` or `200`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    /// Parses `200-399` or a single `204`.
    pub fn parse(text: &str) -> Result<Self, StatusRangeError> {
        let bad = || StatusRangeError(text.to_string());
        let (low, high) = match text.split_once('-') {
            Some((l, h)) => (l.trim(), h.trim()),
            None => (text.trim(), text.trim()),
        };
        let low: u16 = low.parse().map_err(|_| bad())?;
        let high: u16 = high.parse().map_err(|_| bad())?;
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            return Err(bad());
        }
        Ok(StatusRange { low, high })
    }

    /// Whether `status` is inside.
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

/// A health check's `expect_status` that is not `LOW-HIGH` (or one status) within 100-599;
/// the text is quoted back with an example.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a status range; write e.g. 200-399 or 204")]
pub struct StatusRangeError(pub String);

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange {
            low: 200,
            high: 399,
        }
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StatusRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A pool of servers and how requests are spread over them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub hash_key: HashKey,
    #[serde(default)]
    pub hash_balance_factor: f64,
    #[serde(default)]
    pub sticky_cookie: String,
    #[serde(default = "defaults::min_healthy")]
    pub min_healthy: u32,
    #[serde(default)]
    pub all_backups: bool,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: Dur,
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    #[serde(default = "defaults::max_queue")]
    pub max_queue: u32,
    #[serde(default = "defaults::queue_timeout")]
    pub queue_timeout: Dur,
    #[serde(default = "defaults::slow_start")]
    pub slow_start: Dur,
    /// The protocol spoken to the servers (`http1` or `h2`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub outlier: Outlier,
    /// Present: connect to the servers over TLS (proxied traffic and health checks).
    pub tls: Option<UpstreamTls>,
    #[serde(default)]
    pub send_proxy_protocol: SendProxy,
    /// The file's servers (then, at run time, the discovered ones after them); may be
    /// empty when `discovery` finds them.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Servers found through DNS, besides or instead of `servers`.
    #[serde(default)]
    pub discovery: Option<Discovery>,
}

/// Passive checks on live traffic.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Dur,
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Dur::secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// One server of a backend.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    pub address: String,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    #[serde(default = "defaults::server_max_connections")]
    pub max_connections: u32,
    #[serde(default)]
    pub backup: bool,
    /// Found through `[discovery]`, not written in the file (never read from it): a reload
    /// keeps such servers, and status marks them.
    #[serde(skip)]
    pub discovered: bool,
}

/// Where events are sent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    pub remind_every: Dur,
    pub webhooks: Vec<Webhook>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            remind_every: Dur::secs(15 * 60),
            webhooks: Vec::new(),
        }
    }
}

/// One webhook and the events it wants.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default = "defaults::all_events")]
    pub events: Vec<String>,
}

/// `[cluster]`: several instances sharing maintenance windows and run-time weights through
/// etcd (v3), one of them (the leader) sending the alerts. Read at start; a reload keeps the
/// running values.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// etcd endpoints (`http://host:port`).
    pub etcd: Vec<String>,
    /// Every key fulcrum writes lives under this prefix, so clusters can share one etcd.
    pub prefix: String,
    /// This instance's name among the others; empty = the host name.
    pub instance: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            etcd: vec!["http://127.0.0.1:2379".into()],
            prefix: "/fulcrum".into(),
            instance: String::new(),
        }
    }
}

/// The weight limit: like HAProxy's, it keeps round-robin tables small and a typo from
/// meaning "send everything here".
pub const MAX_WEIGHT: u32 = 256;

/// The most `retries` a backend may ask for. Validation refuses more, and the request path
/// keeps the servers a request has tried in an array of `MAX_RETRIES + 1` on the stack.
pub const MAX_RETRIES: u32 = 10;

impl Config {
    /// Resolves a path from the file against the file's folder, as the README's configuration reference promises.
    pub fn resolve_path(&self, path: &std::path::Path) -> PathBuf {
        resolve_path_from(&self.source, path)
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve_path(&self.global.state_dir)
    }
}

/// [`Config::resolve_path`] for a configuration read from `source`, for work that runs
/// after the configuration itself has moved on (a reload building connectors off the runtime).
pub fn resolve_path_from(source: &std::path::Path, path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match source.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn state_dir_defaults_to_systemds_state_directory() {
        let default = |v: Option<&str>| super::default_state_dir(v.map(Into::into));
        assert_eq!(default(None), PathBuf::from(".fulcrum"));
        assert_eq!(default(Some("")), PathBuf::from(".fulcrum"));
        assert_eq!(
            default(Some("/var/lib/fulcrum")),
            PathBuf::from("/var/lib/fulcrum")
        );
        assert_eq!(
            default(Some("/var/lib/fulcrum:/var/lib/other")),
            PathBuf::from("/var/lib/fulcrum")
        );
    }
}

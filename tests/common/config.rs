//! One typed configuration builder for every test: [`Setup`] holds `[global]`, `[admin]`,
//! the frontends, the backends (with their health checks and servers) and `[alerts]` as
//! TOML values, renders them with the `toml` crate (so quoting is always right) and starts a
//! real fulcrum from the result.
//!
//! The defaults are the ones every test has relied on: admin on 127.0.0.1:0, frontend `www`
//! on 127.0.0.1:0 feeding backend `b` without an access log, `grace_period = "5s"`, and
//! health checks every 100 ms (timeout 100 ms, rise 2, fall 2) for every backend. Unless
//! told otherwise with [`Setup::state_dir`], each `Setup` names a fresh temporary state
//! directory of its own, kept alive by the setup and by every [`Fulcrum`] started from it,
//! so no test ever sees another's saved maintenance or admin token.
//!
//! ```ignore
//! let f = Setup::new()
//!     .global("max_connections", 2)
//!     .frontend(|f| f.client_idle_timeout("300ms"))
//!     .backend("b", |b| b.algorithm("least_connections").health_slow())
//!     .server(&a, |s| s.weight(3))
//!     .server(&b, |s| s.backup())
//!     .start()
//!     .await;
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use toml::{Table, Value};

use super::TestServer;

/// A whole fulcrum configuration under construction.
pub struct Setup {
    global: Table,
    admin: Table,
    frontends: Vec<Frontend>,
    backends: Vec<(String, Backend)>,
    alerts: Alerts,
    state: StateDir,
    /// `[cluster]`, when set.
    cluster: Option<Table>,
}

/// Where a configuration keeps its state (`[global] state_dir`).
enum StateDir {
    /// A fresh temporary directory, made when first needed.
    Own(OnceLock<Arc<tempfile::TempDir>>),
    /// A directory the test owns (to look inside it, or to share it between two starts).
    At(PathBuf),
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// The defaults (see the module documentation); backend `b` appears with its first
    /// server or its first [`backend`](Self::backend) call.
    pub fn new() -> Setup {
        let mut global = Table::new();
        global.insert("grace_period".into(), "5s".into());
        let mut admin = Table::new();
        admin.insert("bind".into(), "127.0.0.1:0".into());
        Setup {
            global,
            admin,
            frontends: vec![Frontend::new("www", "b")],
            backends: Vec::new(),
            alerts: Alerts::default(),
            state: StateDir::Own(OnceLock::new()),
            cluster: None,
        }
    }

    /// Adds `[cluster]`: etcd at `endpoints`, this instance named `instance`, keys under
    /// `prefix`.
    pub fn cluster(mut self, endpoints: &[String], prefix: &str, instance: &str) -> Self {
        let mut t = Table::new();
        t.insert("etcd".into(), endpoints.to_vec().into());
        t.insert("prefix".into(), prefix.into());
        t.insert("instance".into(), instance.into());
        self.cluster = Some(t);
        self
    }

    /// Sets a `[global]` key (`state_dir` has its own method).
    pub fn global(mut self, key: &str, value: impl Into<Value>) -> Self {
        assert_ne!(key, "state_dir", "use Setup::state_dir");
        self.global.insert(key.into(), value.into());
        self
    }

    /// Sets an `[admin]` key.
    pub fn admin(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.admin.insert(key.into(), value.into());
        self
    }

    /// Keeps state in `dir` instead of a fresh temporary directory of this setup's own.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state = StateDir::At(dir.into());
        self
    }

    /// Changes frontend `www`.
    pub fn frontend(self, edit: impl FnOnce(Frontend) -> Frontend) -> Self {
        self.frontend_named("www", edit)
    }

    /// Changes frontend `name`, adding it first if there is none: on 127.0.0.1:0, feeding
    /// the backend of the same name, without an access log.
    pub fn frontend_named(mut self, name: &str, edit: impl FnOnce(Frontend) -> Frontend) -> Self {
        let at = self.frontends.iter().position(|f| f.name() == name);
        match at {
            Some(i) => {
                let f = self.frontends.remove(i);
                self.frontends.insert(i, edit(f));
            }
            None => self.frontends.push(edit(Frontend::new(name, name))),
        }
        self
    }

    /// Changes backend `name`, adding it first if there is none (with the fast health
    /// checks of [`Backend::health_fast`] and no servers).
    pub fn backend(mut self, name: &str, edit: impl FnOnce(Backend) -> Backend) -> Self {
        match self.backends.iter().position(|(n, _)| n == name) {
            Some(i) => {
                let (n, b) = self.backends.remove(i);
                self.backends.insert(i, (n, edit(b)));
            }
            None => self.backends.push((name.into(), edit(Backend::new()))),
        }
        self
    }

    /// Adds `server` to backend `b`, with the keys `edit` sets.
    pub fn server(self, server: &TestServer, edit: impl FnOnce(Server) -> Server) -> Self {
        self.backend("b", |b| b.server(server, edit))
    }

    /// Adds each of `servers` to backend `b`, with no further keys.
    pub fn servers(self, servers: &[&TestServer]) -> Self {
        self.backend("b", |b| b.servers(servers))
    }

    /// Adds a server for any address (a closed port, a raw TCP server) to backend `b`.
    pub fn server_at(
        self,
        name: &str,
        addr: SocketAddr,
        edit: impl FnOnce(Server) -> Server,
    ) -> Self {
        self.backend("b", |b| b.server_at(name, addr, edit))
    }

    /// Changes `[alerts]`.
    pub fn alerts(mut self, edit: impl FnOnce(Alerts) -> Alerts) -> Self {
        self.alerts = edit(std::mem::take(&mut self.alerts));
        self
    }

    /// The state directory this configuration names (made now if it is the setup's own).
    pub fn state_path(&self) -> PathBuf {
        match &self.state {
            StateDir::At(p) => p.clone(),
            StateDir::Own(_) => self.own_state().unwrap().path().to_path_buf(),
        }
    }

    fn own_state(&self) -> Option<Arc<tempfile::TempDir>> {
        match &self.state {
            StateDir::At(_) => None,
            StateDir::Own(cell) => Some(Arc::clone(cell.get_or_init(|| {
                Arc::new(
                    tempfile::Builder::new()
                        .prefix("fulcrum-test-")
                        .tempdir()
                        .expect("a temporary state directory"),
                )
            }))),
        }
    }

    /// The configuration as TOML text, sections in the order a person would write them.
    pub fn toml(&self) -> String {
        let mut global = self.global.clone();
        let state = self.state_path();
        let state = state.to_str().expect("a UTF-8 state directory");
        global.insert("state_dir".into(), state.into());
        let frontends: Vec<Value> = self.frontends.iter().map(|f| f.0.clone().into()).collect();
        let backends: Table = self
            .backends
            .iter()
            .map(|(n, b)| (n.clone(), b.to_value()))
            .collect();
        let mut sections = vec![
            ("global", Value::Table(global)),
            ("admin", Value::Table(self.admin.clone())),
            ("frontends", Value::Array(frontends)),
            ("backends", Value::Table(backends)),
        ];
        if let Some(alerts) = self.alerts.to_value() {
            sections.push(("alerts", alerts));
        }
        if let Some(cluster) = &self.cluster {
            sections.push(("cluster", Value::Table(cluster.clone())));
        }
        let mut text = String::new();
        for (key, value) in sections {
            let mut one = Table::new();
            one.insert(key.into(), value);
            text += &toml::to_string(&one).expect("a configuration renders as TOML");
            text.push('\n');
        }
        text
    }

    /// Starts fulcrum from this configuration (as `test.toml`, never written to disk).
    pub async fn start(&self) -> Fulcrum {
        let text = self.toml();
        let cfg = fulcrum::config::parse_str(&text, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}\n{text}"));
        self.started(cfg).await
    }

    /// Writes this configuration to `path` and starts fulcrum from that file, so that a
    /// reload has a file to re-read and relative paths start from its folder.
    pub async fn start_from(&self, path: &Path) -> Fulcrum {
        std::fs::write(path, self.toml()).unwrap();
        let cfg = fulcrum::config::load_file(path)
            .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
        self.started(cfg).await
    }

    async fn started(&self, cfg: fulcrum::config::Config) -> Fulcrum {
        let state = cfg.state_dir();
        Fulcrum {
            running: fulcrum::runtime::start(cfg).await.expect("fulcrum starts"),
            state,
            _own_state: self.own_state(),
        }
    }
}

/// A running fulcrum and the state directory it was started with (kept until it is dropped
/// or shut down). Everything of [`fulcrum::runtime::Running`] is reachable through it.
pub struct Fulcrum {
    running: fulcrum::runtime::Running,
    state: PathBuf,
    _own_state: Option<Arc<tempfile::TempDir>>,
}

impl Fulcrum {
    /// Where this instance keeps maintenance state and its generated admin token.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// [`fulcrum::runtime::Running::shutdown`].
    pub async fn shutdown(self) -> bool {
        self.running.shutdown().await
    }
}

impl Deref for Fulcrum {
    type Target = fulcrum::runtime::Running;

    fn deref(&self) -> &fulcrum::runtime::Running {
        &self.running
    }
}

/// One `[[frontends]]` entry.
pub struct Frontend(Table);

impl Frontend {
    fn new(name: &str, backend: &str) -> Frontend {
        Frontend(Table::new())
            .set("name", name)
            .bind("127.0.0.1:0")
            .backend(backend)
            .access_log(false)
    }

    fn name(&self) -> &str {
        self.0["name"].as_str().unwrap()
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn bind(self, addr: impl Into<String>) -> Self {
        self.set("bind", addr.into())
    }

    pub fn backend(self, name: &str) -> Self {
        self.set("backend", name)
    }

    pub fn access_log(self, on: bool) -> Self {
        self.set("access_log", on)
    }

    pub fn mode_tcp(self) -> Self {
        self.set("mode", "tcp")
    }

    pub fn tls(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let mut tls = Table::new();
        tls.insert("cert".into(), path(cert.as_ref()).into());
        tls.insert("key".into(), path(key.as_ref()).into());
        self.set("tls", tls)
    }

    pub fn client_idle_timeout(self, d: &str) -> Self {
        self.set("client_idle_timeout", d)
    }

    pub fn client_header_timeout(self, d: &str) -> Self {
        self.set("client_header_timeout", d)
    }

    pub fn max_header_bytes(self, n: u32) -> Self {
        self.set("max_header_bytes", n)
    }

    /// Drops a key set so far (e.g. the default `backend`, for a frontend of routes only).
    pub fn unset(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }
}

/// One `[backends.NAME]` table with its `health` table and servers.
pub struct Backend {
    keys: Table,
    health: Health,
    servers: Vec<Table>,
    discovery: Option<Discovery>,
}

impl Backend {
    fn new() -> Backend {
        Backend {
            keys: Table::new(),
            health: Health(Table::new()),
            servers: Vec::new(),
            discovery: None,
        }
        .health_fast()
    }

    fn to_value(&self) -> Value {
        let mut t = self.keys.clone();
        if !self.health.0.is_empty() {
            t.insert("health".into(), self.health.0.clone().into());
        }
        let servers: Vec<Value> = self.servers.iter().cloned().map(Value::Table).collect();
        t.insert("servers".into(), servers.into());
        if let Some(d) = &self.discovery {
            t.insert("discovery".into(), d.0.clone().into());
        }
        t.into()
    }

    /// Adds (or changes) the `discovery` table: servers from DNS name `dns` (an SRV name or
    /// `name:port`), with the keys `edit` sets.
    pub fn discovery(mut self, dns: &str, edit: impl FnOnce(Discovery) -> Discovery) -> Self {
        let d = self
            .discovery
            .take()
            .unwrap_or_else(|| Discovery(Table::new()));
        self.discovery = Some(edit(d.set("dns", dns)));
        self
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key.into(), value.into());
        self
    }

    pub fn algorithm(self, name: &str) -> Self {
        self.set("algorithm", name)
    }

    pub fn hash_key(self, key: &str) -> Self {
        self.set("hash_key", key)
    }

    pub fn sticky_cookie(self, name: &str) -> Self {
        self.set("sticky_cookie", name)
    }

    pub fn min_healthy(self, n: u32) -> Self {
        self.set("min_healthy", n)
    }

    pub fn all_backups(self, on: bool) -> Self {
        self.set("all_backups", on)
    }

    pub fn retries(self, n: u32) -> Self {
        self.set("retries", n)
    }

    pub fn max_queue(self, n: u32) -> Self {
        self.set("max_queue", n)
    }

    pub fn queue_timeout(self, d: &str) -> Self {
        self.set("queue_timeout", d)
    }

    pub fn connect_timeout(self, d: &str) -> Self {
        self.set("connect_timeout", d)
    }

    pub fn response_timeout(self, d: &str) -> Self {
        self.set("response_timeout", d)
    }

    pub fn slow_start(self, d: &str) -> Self {
        self.set("slow_start", d)
    }

    /// Sets a key of the `outlier` table (passive checks on live traffic).
    pub fn outlier(mut self, key: &str, value: impl Into<Value>) -> Self {
        let outlier = self
            .keys
            .entry("outlier")
            .or_insert_with(|| Table::new().into());
        outlier
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value.into());
        self
    }

    /// Changes the `health` table.
    pub fn health(mut self, edit: impl FnOnce(Health) -> Health) -> Self {
        self.health = edit(self.health);
        self
    }

    /// Checks every 100 ms (timeout 100 ms), 2 to rise, 2 to fall: the default.
    pub fn health_fast(self) -> Self {
        self.health(|h| h.reset().interval("100ms").timeout("100ms").rise(2).fall(2))
    }

    /// Checks that practically never run again after the start-up check (every 60 s,
    /// timeout 1 s, 1 to rise, 1 to fall): for tests that break a server behind fulcrum's
    /// back and want the data path, not the checker, to notice.
    pub fn health_slow(self) -> Self {
        self.health(|h| h.reset().interval("60s").timeout("1s").rise(1).fall(1))
    }

    /// Adds `server` (its name and address), with the keys `edit` sets.
    pub fn server(self, server: &TestServer, edit: impl FnOnce(Server) -> Server) -> Self {
        self.server_at(&server.name, server.addr, edit)
    }

    /// Adds each of `servers`, with no further keys.
    pub fn servers(self, servers: &[&TestServer]) -> Self {
        servers.iter().fold(self, |b, s| b.server(s, |s| s))
    }

    /// Adds a server for any address (a closed port, a raw TCP server).
    pub fn server_at(
        mut self,
        name: &str,
        addr: SocketAddr,
        edit: impl FnOnce(Server) -> Server,
    ) -> Self {
        let s = Server(Table::new())
            .set("name", name)
            .set("address", addr.to_string());
        self.servers.push(edit(s).0);
        self
    }
}

/// The `discovery` table of a backend.
pub struct Discovery(Table);

impl Discovery {
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn interval(self, d: &str) -> Self {
        self.set("interval", d)
    }

    /// The DNS server to ask (`IP:port`).
    pub fn nameserver(self, addr: impl Into<String>) -> Self {
        self.set("nameserver", addr.into())
    }
}

/// The `health` table of a backend.
pub struct Health(Table);

impl Health {
    /// Forgets every key set so far: fulcrum's own defaults for all that is not set after.
    pub fn reset(mut self) -> Self {
        self.0.clear();
        self
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Checks by TCP connect only (the default kind is `http`).
    pub fn tcp(self) -> Self {
        self.set("kind", "tcp")
    }

    pub fn interval(self, d: &str) -> Self {
        self.set("interval", d)
    }

    pub fn timeout(self, d: &str) -> Self {
        self.set("timeout", d)
    }

    pub fn rise(self, n: u32) -> Self {
        self.set("rise", n)
    }

    pub fn fall(self, n: u32) -> Self {
        self.set("fall", n)
    }
}

/// One `[[backends.NAME.servers]]` entry beyond its name and address.
pub struct Server(Table);

impl Server {
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn weight(self, w: u32) -> Self {
        self.set("weight", w)
    }

    pub fn max_connections(self, n: u32) -> Self {
        self.set("max_connections", n)
    }

    pub fn backup(self) -> Self {
        self.set("backup", true)
    }
}

/// The `[alerts]` table and its webhooks.
#[derive(Default)]
pub struct Alerts {
    keys: Table,
    webhooks: Vec<Table>,
}

impl Alerts {
    fn to_value(&self) -> Option<Value> {
        if self.keys.is_empty() && self.webhooks.is_empty() {
            return None;
        }
        let mut t = self.keys.clone();
        if !self.webhooks.is_empty() {
            let hooks: Vec<Value> = self.webhooks.iter().cloned().map(Value::Table).collect();
            t.insert("webhooks".into(), hooks.into());
        }
        Some(t.into())
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key.into(), value.into());
        self
    }

    /// Adds a webhook calling `url`, with the keys `edit` sets (all events unless told).
    pub fn webhook(mut self, url: &str, edit: impl FnOnce(Webhook) -> Webhook) -> Self {
        self.webhooks
            .push(edit(Webhook(Table::new()).set("url", url)).0);
        self
    }
}

/// One `[[alerts.webhooks]]` entry.
pub struct Webhook(Table);

impl Webhook {
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn events(self, events: &[&str]) -> Self {
        self.set("events", events.to_vec())
    }
}

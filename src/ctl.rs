//! `fulcrum ctl`: operates a running fulcrum through its admin API, finding the address
//! and token in the same configuration file that fulcrum runs with.
//!
//! Exit codes (the README's "`fulcrum ctl`" reference): 0 success; 1 bad usage or configuration (unreadable file,
//! unknown server, a value the API refuses); 2 a runtime failure (fulcrum not running,
//! token refused, no answer).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::admin::status::Status;
use crate::admin::token;
use crate::config::{self, Config};
use crate::http_client::{self, CallError};

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What `fulcrum ctl` can do.
#[derive(Subcommand, Debug, Clone)]
pub enum Action {
    /// The state of every backend and server, as a table.
    Status,
    /// Take SERVER out of rotation until the time runs out.
    Maintenance {
        server: String,
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End maintenance now.
    Enable { server: String },
    /// Set a weight at run time (1 to 256).
    Weight { server: String, weight: u32 },
    /// Reload the configuration file.
    Reload,
    /// The instances of the cluster (`[cluster]`), as a table.
    Cluster,
}

/// Why a ctl command failed, with its exit code.
#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

fn usage(message: impl Into<String>) -> CtlError {
    CtlError {
        code: 1,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> CtlError {
    CtlError {
        code: 2,
        message: message.into(),
    }
}

/// Runs `action` for the command line and turns the result into output and an exit code.
pub fn main(config: &Path, action: Action) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(config, &action)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fulcrum ctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Runs `action` against the fulcrum configured by the file at `config`; returns what to
/// print.
pub async fn run(config: &Path, action: &Action) -> Result<String, CtlError> {
    // The file and the token are read (and names resolved) on the blocking pool.
    let path = config.to_path_buf();
    let admin = tokio::task::spawn_blocking(move || {
        let cfg = config::load_file(&path)
            .map_err(|e| usage(format!("{e}\n{} error(s) in {}", e.0.len(), path.display())))?;
        Admin::from_config(&cfg)
    })
    .await
    .map_err(|e| runtime(format!("reading the configuration failed: {e}")))??;
    match action {
        Action::Status => {
            let status: Status = admin.get_json("/api/v1/status").await?;
            Ok(table(&status))
        }
        Action::Maintenance {
            server,
            duration,
            reason,
        } => {
            let (b, s) = admin.resolve(server).await?;
            let body = json!({ "for": duration, "reason": reason.clone().unwrap_or_default() });
            let v = admin
                .send(
                    Method::POST,
                    &server_path(&b, &s, "maintenance"),
                    Some(body),
                )
                .await?;
            let until = v["server"]["maintenance_until"].as_str().unwrap_or("?");
            Ok(format!(
                "{b}/{s} is in maintenance until {until}; in-flight requests drain\n"
            ))
        }
        Action::Enable { server } => {
            let (b, s) = admin.resolve(server).await?;
            let v = admin
                .send(Method::DELETE, &server_path(&b, &s, "maintenance"), None)
                .await?;
            let state = v["server"]["state"].as_str().unwrap_or("?");
            if v["ended"].as_bool() == Some(false) {
                Ok(format!("{b}/{s} was not in maintenance (state {state})\n"))
            } else {
                Ok(format!("{b}/{s} is back in rotation (state {state})\n"))
            }
        }
        Action::Weight { server, weight } => {
            let (b, s) = admin.resolve(server).await?;
            admin
                .send(
                    Method::PUT,
                    &server_path(&b, &s, "weight"),
                    Some(json!({ "weight": weight })),
                )
                .await?;
            Ok(format!("{b}/{s} weight is now {weight}\n"))
        }
        Action::Reload => {
            admin.send(Method::POST, "/api/v1/reload", None).await?;
            Ok(format!("reloaded {}\n", config.display()))
        }
        Action::Cluster => {
            let v = admin.send(Method::GET, "/api/v1/cluster", None).await?;
            Ok(cluster_table(&v))
        }
    }
}

/// `GET /api/v1/cluster` as a table, one row per instance, then every server the instances
/// disagree about (down for some, up for others: a split view).
pub fn cluster_table(v: &serde_json::Value) -> String {
    use crate::cluster::Record;
    let leader = v["leader"].as_str().unwrap_or("");
    let instances: Vec<Record> = serde_json::from_value(v["instances"].clone()).unwrap_or_default();
    let mut rows = vec![
        [
            "INSTANCE",
            "ROLE",
            "ADMIN",
            "VERSION",
            "LAST SEEN",
            "HEALTHY PRIMARIES",
        ]
        .map(String::from),
    ];
    for r in &instances {
        let healthy: Vec<String> = r
            .healthy_primaries
            .iter()
            .map(|(b, n)| format!("{b}={n}"))
            .collect();
        let role = if r.name == leader { "leader" } else { "member" };
        rows.push([
            r.name.clone(),
            role.into(),
            r.admin.clone(),
            r.version.clone(),
            r.last_seen.clone(),
            healthy.join(" "),
        ]);
    }
    let mut out = aligned(&rows);
    let mut servers: Vec<(&String, &String)> = instances
        .iter()
        .flat_map(|r| {
            r.down
                .iter()
                .flat_map(|(b, ss)| ss.iter().map(move |s| (b, s)))
        })
        .collect();
    servers.sort();
    servers.dedup();
    for (b, s) in servers {
        let (down, up): (Vec<&Record>, Vec<&Record>) = instances
            .iter()
            .filter(|r| r.healthy_primaries.contains_key(b))
            .partition(|r| r.down.get(b).is_some_and(|d| d.contains(s)));
        if !up.is_empty() {
            let names = |rs: &[&Record]| {
                rs.iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "split view: {b}/{s} is down on {} and up on {}",
                names(&down),
                names(&up)
            );
        }
    }
    if let Some("unreachable") = v["store"].as_str() {
        out.push_str("etcd is unreachable from this instance: this is the last view it saw\n");
    }
    out
}

fn server_path(b: &str, s: &str, what: &str) -> String {
    format!("/api/v1/backends/{b}/servers/{s}/{what}")
}

/// Where the admin API is and the token to show it.
struct Admin {
    addr: SocketAddr,
    token: String,
}

impl Admin {
    fn from_config(cfg: &Config) -> Result<Admin, CtlError> {
        let mut addr = cfg.admin.bind;
        // A wildcard bind is reached on loopback from this machine.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let path = token::path(cfg);
        let token = token::read(&path).map_err(|e| {
            usage(format!(
                "{e} (fulcrum writes it at its first start when admin.token_file is not set)"
            ))
        })?;
        Ok(Admin { addr, token })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, CtlError> {
        let uri = http_client::admin_uri(self.addr, path).map_err(|e| usage(e.to_string()))?;
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        let body = match body {
            Some(v) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let answer = http_client::call(method, &uri, &headers, body, CALL_TIMEOUT)
            .await
            .map_err(|e| match e {
                CallError::Refused(_) => runtime(format!(
                    "fulcrum is not running on {} (connection refused)",
                    self.addr
                )),
                other => runtime(other.to_string()),
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        let error = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).trim().to_string());
        match answer.status {
            200..=299 => Ok(value),
            401 => Err(runtime(format!(
                "the admin API on {} refused the token; it does not match the one this configuration names",
                self.addr
            ))),
            400 | 404 => Err(usage(error)),
            other => Err(runtime(format!("the admin API answered {other}: {error}"))),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, CtlError> {
        self.call(method, path, body).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CtlError> {
        let v = self.call(Method::GET, path, None).await?;
        serde_json::from_value(v)
            .map_err(|e| runtime(format!("unexpected answer from {path}: {e}")))
    }

    /// `backend/server`, or a server name that must be unique across backends.
    async fn resolve(&self, spec: &str) -> Result<(String, String), CtlError> {
        if let Some((b, s)) = spec.split_once('/') {
            return Ok((b.to_string(), s.to_string()));
        }
        let status: Status = self.get_json("/api/v1/status").await?;
        let found: Vec<String> = status
            .backends
            .iter()
            .filter(|b| b.servers.iter().any(|s| s.name == spec))
            .map(|b| b.name.clone())
            .collect();
        match found.as_slice() {
            [b] => Ok((b.clone(), spec.to_string())),
            [] => Err(usage(format!("no server named `{spec}`"))),
            several => Err(usage(format!(
                "`{spec}` names servers in backends {}; write BACKEND/{spec}",
                several.join(", ")
            ))),
        }
    }
}

/// The status as an aligned table, one row per server, then one line per backend.
pub fn table(status: &Status) -> String {
    let mut rows = vec![
        [
            "BACKEND",
            "SERVER",
            "ADDRESS",
            "STATE",
            "WEIGHT",
            "ACTIVE",
            "REQUESTS",
            "MAINTENANCE",
        ]
        .map(String::from),
    ];
    for b in &status.backends {
        for s in &b.servers {
            let name = match (s.backup, s.discovered) {
                (true, _) => format!("{} (backup)", s.name),
                (false, true) => format!("{} (dns)", s.name),
                (false, false) => s.name.clone(),
            };
            let maintenance = match (&s.maintenance_until, &s.maintenance_reason) {
                (Some(u), Some(r)) if !r.is_empty() => format!("until {u}: {r}"),
                (Some(u), _) => format!("until {u}"),
                _ => String::new(),
            };
            rows.push([
                b.name.clone(),
                name,
                s.address.clone(),
                s.state.clone(),
                s.weight.to_string(),
                s.active.to_string(),
                s.requests_total.to_string(),
                maintenance,
            ]);
        }
    }
    let mut out = aligned(&rows);
    for b in &status.backends {
        let low = if b.healthy_primaries < b.min_healthy as usize {
            "  BELOW min_healthy"
        } else {
            ""
        };
        let backups = if b.using_backups {
            ", serving from backups"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "backend {}: {}, {} healthy primaries (min_healthy {}){backups}{low}",
            b.name, b.algorithm, b.healthy_primaries, b.min_healthy
        );
    }
    if let Some(p) = &status.process {
        process_line(&mut out, p);
    }
    out
}

/// fulcrum's own limits, under the table: memory against `max_memory`, fds, the client limit.
fn process_line(out: &mut String, p: &crate::admin::status::ProcessStatus) {
    let mib = |b: u64| format!("{:.1}MiB", b as f64 / f64::from(1 << 20));
    let memory = match p.max_memory_bytes {
        Some(max) => format!(
            "memory {} of max_memory {} ({})",
            mib(p.resident_memory_bytes),
            mib(max),
            p.memory_state
        ),
        None => format!("memory {}", mib(p.resident_memory_bytes)),
    };
    let fds = match &p.fds {
        Some(f) => format!(
            ", {} of {} fds open, up to {} client connections",
            p.open_fds, f.fd_limit, f.effective_max_connections
        ),
        None => String::new(),
    };
    let _ = writeln!(out, "fulcrum: {memory}{fds}");
    if let Some(w) = &p.fd_warning {
        let _ = writeln!(out, "WARNING: {w}");
    }
}

/// Rows as a table: each column as wide as its widest cell, two spaces between columns,
/// no trailing blanks.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

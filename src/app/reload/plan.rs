//! What a new configuration changes, decided from the two files alone: no socket, no task,
//! no clock. [`plan`] is a pure function, so every rule of a reload is unit-tested here.
//!
//! The rules:
//! - A server that stays (same backend, name, address and role) is the same object: health,
//!   counters, in-flight requests, ejection, slow-start ramp and maintenance carry over. Its
//!   weight follows the file only if the file's weight for it changed; otherwise a weight set
//!   at run time (`PUT .../weight`) is kept. `max_connections` always follows the file.
//! - A new server (or one whose address or backup role changed) starts unchecked, so it takes
//!   no traffic until its first health check passes; in an existing backend it then ramps up
//!   over `slow_start` like a server coming back.
//! - A frontend whose address changed binds the new address before its old listener closes;
//!   one whose mode or TLS changed restarts its accept loop on the same socket (a TLS
//!   frontend always does, so that renewed certificate files are read); any other change
//!   is swapped in place.
//! - `[alerts]` webhooks are restarted when they change. `[global]` and the admin `bind` and
//!   `token_file` need a restart: the plan says so, and the running values stay in effect.
//!   The rest of `[admin]` (`max_maintenance`, `allowed_hosts`) is read by each admin
//!   request, so it applies as soon as the new configuration is stored.

use std::collections::BTreeSet;

use crate::config::{self, Config};

/// Everything a reload will do, in the order it does it.
#[derive(Debug)]
pub struct Plan {
    /// Every backend of the new file.
    pub backends: Vec<BackendPlan>,
    /// Every frontend of the new file.
    pub frontends: Vec<FrontendPlan>,
    /// Frontends of the old file that the new one drops.
    pub removed_frontends: Vec<String>,
    /// Whether `[alerts]` webhooks change (they are restarted).
    pub webhooks_changed: bool,
    /// Settings that changed but apply only at the next start, for a warning.
    pub needs_restart: Vec<&'static str>,
    /// What changed, for `config_reloaded` and the log.
    pub changes: Changes,
}

/// One backend of the new file.
#[derive(Debug)]
pub struct BackendPlan {
    pub name: String,
    pub cfg: config::Backend,
    /// Whether a backend of that name runs already (it is updated in place).
    pub exists: bool,
    /// Its servers in file order.
    pub servers: Vec<ServerPlan>,
}

/// One server of a new backend.
#[derive(Debug, PartialEq)]
pub enum ServerPlan {
    /// The running server of that name stays; `weight` is set only when the file's changed.
    Keep {
        name: String,
        weight: Option<u32>,
        max_connections: u32,
    },
    /// A server to build (new, or replacing one with another address or role).
    Create(config::Server),
}

/// One frontend of the new file.
#[derive(Debug)]
pub struct FrontendPlan {
    pub cfg: config::Frontend,
    pub action: FrontendAction,
}

/// How a frontend of the new file relates to the running one of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendAction {
    /// Same address, mode and no TLS: swap settings and backend in place.
    Swap,
    /// Same address, other mode or TLS: restart the accept loop on the same socket.
    Restart,
    /// New, or at another address: bind it (before the old address closes).
    Bind,
}

/// Decides what turning `old` into `new` takes. Both are valid configurations.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut changes = Changes::default();
    let backends = new
        .backends
        .iter()
        .map(|(name, cfg)| backend(old.backends.get(name), name, cfg, &mut changes))
        .collect();
    for (name, before) in &old.backends {
        match new.backends.get(name) {
            None => {
                changes.backends.removed.push(name.clone());
                for s in &before.servers {
                    changes.servers.removed.push(format!("{name}/{}", s.name));
                }
            }
            Some(after) => {
                for s in &before.servers {
                    if !after.servers.iter().any(|n| n.name == s.name) {
                        changes.servers.removed.push(format!("{name}/{}", s.name));
                    }
                }
            }
        }
    }
    let frontends = new
        .frontends
        .iter()
        .map(|fe| {
            let before = old.frontends.iter().find(|o| o.name == fe.name);
            match before {
                None => changes.frontends.added.push(fe.name.clone()),
                Some(b) if b != fe => changes.frontends.changed.push(fe.name.clone()),
                Some(_) => {}
            }
            FrontendPlan {
                cfg: fe.clone(),
                action: frontend_action(before, fe),
            }
        })
        .collect();
    let names: BTreeSet<&str> = new.frontends.iter().map(|f| f.name.as_str()).collect();
    let removed_frontends: Vec<String> = old
        .frontends
        .iter()
        .filter(|f| !names.contains(f.name.as_str()))
        .map(|f| f.name.clone())
        .collect();
    changes.frontends.removed = removed_frontends.clone();
    if old.global.max_memory != new.global.max_memory {
        let show =
            |m: Option<config::ByteSize>| m.map_or_else(|| "off".to_string(), |m| m.to_string());
        changes.other.push(format!(
            "max_memory {} -> {}",
            show(old.global.max_memory),
            show(new.global.max_memory)
        ));
    }
    let webhooks_changed = old.alerts.webhooks != new.alerts.webhooks;
    if webhooks_changed {
        changes.other.push("webhooks restarted".into());
    }
    Plan {
        backends,
        frontends,
        removed_frontends,
        webhooks_changed,
        needs_restart: needs_restart(old, new),
        changes,
    }
}

fn backend(
    before: Option<&config::Backend>,
    name: &str,
    cfg: &config::Backend,
    changes: &mut Changes,
) -> BackendPlan {
    let servers = cfg
        .servers
        .iter()
        .map(|s| {
            let old = before.and_then(|c| c.servers.iter().find(|o| o.name == s.name));
            match old {
                Some(o) if o.address == s.address && o.backup == s.backup => {
                    if o != s {
                        changes.servers.changed.push(format!("{name}/{}", s.name));
                    }
                    ServerPlan::Keep {
                        name: s.name.clone(),
                        // A run-time weight yields only to a changed file weight.
                        weight: (o.weight != s.weight).then_some(s.weight),
                        max_connections: s.max_connections,
                    }
                }
                Some(_) => {
                    // Same name, new address or role: a new server replaces the old one.
                    changes
                        .servers
                        .changed
                        .push(format!("{name}/{} (replaced)", s.name));
                    ServerPlan::Create(s.clone())
                }
                None => {
                    changes.servers.added.push(format!("{name}/{}", s.name));
                    ServerPlan::Create(s.clone())
                }
            }
        })
        .collect();
    match before {
        None => changes.backends.added.push(name.to_string()),
        Some(o) if strip_servers(o) != strip_servers(cfg) => {
            changes.backends.changed.push(name.to_string())
        }
        Some(_) => {}
    }
    BackendPlan {
        name: name.to_string(),
        cfg: cfg.clone(),
        exists: before.is_some(),
        servers,
    }
}

fn frontend_action(before: Option<&config::Frontend>, fe: &config::Frontend) -> FrontendAction {
    match before {
        Some(cur) if cur.bind == fe.bind => {
            // A TLS frontend always reloads its certificate files: renewals (certbot)
            // rewrite the same paths, and a reload is how they are picked up.
            if cur.mode == fe.mode && cur.tls.is_none() && fe.tls.is_none() {
                FrontendAction::Swap
            } else {
                FrontendAction::Restart
            }
        }
        _ => FrontendAction::Bind,
    }
}

/// Settings that only a restart applies: say so rather than pretend.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.admin.bind != new.admin.bind || old.admin.token_file != new.admin.token_file {
        out.push(
            "[admin] bind and token_file changes need a restart; the admin API keeps its address and token",
        );
    }
    let (a, b) = (&old.global, &new.global);
    if a.threads != b.threads
        || a.max_connections != b.max_connections
        || a.grace_period != b.grace_period
        || a.state_dir != b.state_dir
    {
        out.push(
            "[global] changes (threads, max_connections, grace_period, state_dir) need a restart",
        );
    }
    if old.cluster != new.cluster {
        out.push("[cluster] changes need a restart; this instance stays in the cluster it joined");
    }
    out
}

/// A backend's settings without its server list, to tell a settings change from a server change.
fn strip_servers(b: &config::Backend) -> config::Backend {
    config::Backend {
        servers: Vec::new(),
        ..b.clone()
    }
}

/// Names added, removed and changed in one kind of section.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Delta {
    fn describe(&self, what: &str, out: &mut Vec<String>) {
        for (verb, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if !names.is_empty() {
                out.push(format!("{what} {verb}: {}", names.join(", ")));
            }
        }
    }
}

/// What a reload changes, for `config_reloaded` and the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub frontends: Delta,
    pub backends: Delta,
    pub servers: Delta,
    pub other: Vec<String>,
}

impl Changes {
    /// One line: "frontends changed: www; servers added: b/s3", or "no changes".
    pub fn summary(&self) -> String {
        let mut out = Vec::new();
        self.frontends.describe("frontends", &mut out);
        self.backends.describe("backends", &mut out);
        self.servers.describe("servers", &mut out);
        out.extend(self.other.iter().cloned());
        if out.is_empty() {
            "no changes".into()
        } else {
            out.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with frontend `www` on `bind` (plus `frontend` keys) and backend `b`
    /// with `servers` (`name address [extra keys]` lines, `;`-separated keys).
    fn cfg(bind: &str, frontend: &str, backend: &str, servers: &[&str]) -> Config {
        let mut text = format!(
            "[[frontends]]\nname = \"www\"\nbind = \"{bind}\"\nbackend = \"b\"\n{frontend}\n\
             [backends.b]\n{backend}\n"
        );
        for s in servers {
            let mut parts = s.splitn(3, ' ');
            let (name, addr) = (parts.next().unwrap(), parts.next().unwrap());
            let extra = parts.next().unwrap_or("").replace(';', "\n");
            text += &format!(
                "[[backends.b.servers]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n"
            );
        }
        crate::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap()
    }

    const A: &str = "127.0.0.1:8080";

    #[test]
    fn nothing_changed_is_nothing_to_do() {
        let old = cfg(A, "", "", &["s1 127.0.0.1:1", "s2 127.0.0.1:2"]);
        let p = plan(&old, &old.clone());
        assert_eq!(p.changes.summary(), "no changes");
        assert_eq!(p.frontends[0].action, FrontendAction::Swap);
        assert!(p.backends[0].exists);
        assert!(
            p.backends[0]
                .servers
                .iter()
                .all(|s| matches!(s, ServerPlan::Keep { weight: None, .. }))
        );
        assert!(p.removed_frontends.is_empty() && !p.webhooks_changed);
        assert!(p.needs_restart.is_empty());
    }

    #[test]
    fn servers_are_kept_replaced_added_and_removed() {
        let old = cfg(
            A,
            "",
            "",
            &["keep 127.0.0.1:1", "moved 127.0.0.1:2", "gone 127.0.0.1:3"],
        );
        let new = cfg(
            A,
            "",
            "",
            &[
                "keep 127.0.0.1:1 max_connections = 7",
                "moved 127.0.0.1:9",
                "fresh 127.0.0.1:4",
            ],
        );
        let p = plan(&old, &new);
        let servers = &p.backends[0].servers;
        assert_eq!(
            servers[0],
            ServerPlan::Keep {
                name: "keep".into(),
                weight: None,
                max_connections: 7
            }
        );
        assert!(matches!(&servers[1], ServerPlan::Create(s) if s.address == "127.0.0.1:9"));
        assert!(matches!(&servers[2], ServerPlan::Create(s) if s.name == "fresh"));
        assert_eq!(
            p.changes.summary(),
            "servers added: b/fresh; servers removed: b/gone; servers changed: b/keep, b/moved (replaced)"
        );
    }

    #[test]
    fn a_backup_role_change_replaces_the_server() {
        let old = cfg(A, "", "", &["s1 127.0.0.1:1", "s2 127.0.0.1:2"]);
        let new = cfg(
            A,
            "",
            "",
            &["s1 127.0.0.1:1", "s2 127.0.0.1:2 backup = true"],
        );
        let p = plan(&old, &new);
        assert!(matches!(p.backends[0].servers[1], ServerPlan::Create(_)));
    }

    #[test]
    fn only_a_changed_file_weight_overrides_a_runtime_weight() {
        let old = cfg(A, "", "", &["s1 127.0.0.1:1 weight = 2"]);
        let same = plan(&old, &cfg(A, "", "", &["s1 127.0.0.1:1 weight = 2"]));
        assert!(matches!(
            same.backends[0].servers[0],
            ServerPlan::Keep { weight: None, .. }
        ));
        let changed = plan(&old, &cfg(A, "", "", &["s1 127.0.0.1:1 weight = 5"]));
        assert!(matches!(
            changed.backends[0].servers[0],
            ServerPlan::Keep {
                weight: Some(5),
                ..
            }
        ));
    }

    #[test]
    fn frontend_actions_follow_address_mode_and_tls() {
        let servers = ["s1 127.0.0.1:1"];
        let old = cfg(A, "", "", &servers);
        let timeout = cfg(A, "client_idle_timeout = \"5s\"", "", &servers);
        assert_eq!(
            plan(&old, &timeout).frontends[0].action,
            FrontendAction::Swap
        );
        assert_eq!(
            plan(&old, &timeout).changes.summary(),
            "frontends changed: www"
        );
        let tcp = cfg(A, "mode = \"tcp\"", "", &servers);
        assert_eq!(
            plan(&old, &tcp).frontends[0].action,
            FrontendAction::Restart
        );
        let moved = cfg("127.0.0.1:8081", "", "", &servers);
        assert_eq!(plan(&old, &moved).frontends[0].action, FrontendAction::Bind);
    }

    #[test]
    fn backend_settings_and_removed_frontends_are_reported() {
        let servers = ["s1 127.0.0.1:1"];
        let old = cfg(A, "", "", &servers);
        let new = cfg(A, "", "algorithm = \"least_connections\"", &servers);
        assert_eq!(plan(&old, &new).changes.summary(), "backends changed: b");
        let mut fewer = new.clone();
        fewer.frontends.clear();
        let p = plan(&old, &fewer);
        assert_eq!(p.removed_frontends, vec!["www".to_string()]);
        assert!(p.changes.summary().starts_with("frontends removed: www"));
    }

    #[test]
    fn global_and_admin_changes_need_a_restart() {
        let servers = ["s1 127.0.0.1:1"];
        let old = cfg(A, "", "", &servers);
        let mut new = old.clone();
        new.global.threads = 3;
        new.admin.bind = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(plan(&old, &new).needs_restart.len(), 2);
    }
}

//! DNS discovery at run time: one task per backend with `[discovery]`, resolving its name
//! every `interval` and applying a change as a diff through the reload machinery
//! ([`App::apply_servers`]): new servers are health-checked before they take traffic and
//! then slow-started, removed ones leave rotation and finish their in-flight requests.
//!
//! The discovered servers live in the configuration in effect (marked `discovered`), after
//! the file's: a reload keeps them (see [`carry_over`]) and a lookup that fails, or answers
//! no records, leaves them as they are. A reload that changes a backend's `[discovery]`
//! restarts its task; shutdown ends every task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::App;
use crate::config::{self, Config};
use crate::discovery::{Answer, Discoverer, describe, merge};
use crate::events::{Event, EventKind};

/// The running discovery tasks by backend, with the settings each was started with, and
/// what each task's rounds found.
#[derive(Debug, Default)]
pub(super) struct Discovering {
    running: Mutex<HashMap<String, (config::Discovery, CancellationToken)>>,
    rounds: Mutex<HashMap<String, Round>>,
}

/// How a backend's discovery is doing, for status: an operator sees a DNS server that
/// stopped answering before the servers it found go stale.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Round {
    /// The name asked.
    pub dns: String,
    /// Rounds finished since the task started.
    pub rounds: u64,
    /// `ok`, `empty` (no records: the last set is kept) or `failed: WHY` (kept too).
    pub last: String,
}

impl Discovering {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (config::Discovery, CancellationToken)>> {
        // Plain data: valid even if a holder panicked.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a round of `backend`'s discovery of `dns` and what it gave.
    pub(super) fn record(&self, backend: &str, dns: &str, answer: &Answer) {
        let last = match answer {
            Answer::Servers(_) => "ok".to_string(),
            Answer::Empty => "empty".to_string(),
            Answer::Failed(why) => format!("failed: {why}"),
        };
        let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let r = rounds.entry(backend.to_string()).or_insert_with(|| Round {
            dns: dns.to_string(),
            rounds: 0,
            last: String::new(),
        });
        if r.dns != dns {
            r.dns = dns.to_string();
            r.rounds = 0;
        }
        r.rounds += 1;
        r.last = last;
    }
}

/// `new` (a file just read) with the servers discovered so far carried over from `old`, for
/// every backend that has `[discovery]` in both: a reload never drops what DNS found (a
/// restarted task's first round applies its own answer as a diff).
pub(super) fn carry_over(old: &Config, mut new: Config) -> Config {
    for (name, b) in new.backends.iter_mut() {
        let Some(before) = old.backends.get(name) else {
            continue;
        };
        if b.discovery.is_none() || before.discovery.is_none() {
            continue;
        }
        let found: Vec<config::Server> = before
            .servers
            .iter()
            .filter(|s| s.discovered)
            .cloned()
            .collect();
        let (all, _) = merge(&b.servers, &found);
        b.servers = all;
    }
    new
}

/// Discovered names that a file server of backend `name` has already.
fn warn_skipped(name: &str, skipped: &[String]) {
    for s in skipped {
        tracing::warn!(
            backend = name,
            "discovered server {s} has the name of a server in the file; the file's is kept"
        );
    }
}

/// The servers of `b` that discovery found.
fn discovered(b: &config::Backend) -> Vec<config::Server> {
    b.servers.iter().filter(|s| s.discovered).cloned().collect()
}

impl App {
    /// Starts, restarts or stops discovery tasks so that each backend with `[discovery]` in
    /// the configuration in effect has one task with its settings. `first_now`: the first
    /// round runs at once (after a reload); else after one interval (start-up has just run
    /// a first round itself).
    pub(super) fn sync_discovery(self: &Arc<Self>, first_now: bool) {
        let config = self.config.load_full();
        let mut running = self.discovery.lock();
        running.retain(|name, (cfg, cancel)| {
            let same = config
                .backends
                .get(name)
                .and_then(|b| b.discovery.as_ref())
                .is_some_and(|d| d == cfg);
            if !same {
                cancel.cancel();
            }
            same
        });
        for (name, b) in &config.backends {
            let Some(d) = &b.discovery else { continue };
            if running.contains_key(name) {
                continue;
            }
            let cancel = self.tasks.child_token();
            running.insert(name.clone(), (d.clone(), cancel.clone()));
            let task = run(Arc::clone(self), name.clone(), d.clone(), cancel, first_now);
            self.tasks.spawn_background(task);
        }
    }

    /// How backend `name`'s discovery is doing; `None` without `[discovery]`.
    pub fn discovery_round(&self, name: &str) -> Option<Round> {
        self.config().backends.get(name)?.discovery.as_ref()?;
        let rounds = self
            .discovery
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        rounds.get(name).cloned()
    }

    /// Applies `found` as backend `name`'s discovered servers, under the reload lock.
    /// Nothing happens when they are the servers it has already, or when the task that
    /// looked them up (`cfg`, `cancel`) has been replaced meanwhile.
    async fn apply_discovered(
        self: &Arc<Self>,
        name: &str,
        cfg: &config::Discovery,
        cancel: &CancellationToken,
        found: Vec<config::Server>,
    ) {
        let _reload = self.frontends.lock().await;
        if self.tasks.stopping().is_cancelled() || cancel.is_cancelled() {
            return;
        }
        let old = self.config.load_full();
        // A reload may have changed the backend's discovery since the lookup began.
        let Some(b) = old
            .backends
            .get(name)
            .filter(|b| b.discovery.as_ref() == Some(cfg))
        else {
            return;
        };
        let file: Vec<config::Server> = b
            .servers
            .iter()
            .filter(|s| !s.discovered)
            .cloned()
            .collect();
        let (all, skipped) = merge(&file, &found);
        let before = discovered(b);
        let after: Vec<config::Server> = all.iter().filter(|s| s.discovered).cloned().collect();
        let Some(detail) = describe(&before, &after) else {
            return;
        };
        // Said when the set changes, not at every round.
        warn_skipped(name, &skipped);
        let mut new = (*old).clone();
        if let Some(nb) = new.backends.get_mut(name) {
            nb.servers = all;
        }
        match self.apply_servers(new).await {
            Ok(_) => {
                self.events.publish(Event::new(
                    EventKind::DiscoveryChanged,
                    Some(name),
                    None,
                    detail,
                ));
                // Maintenance windows of removed servers are no longer saved.
                self.persist_logged().await;
            }
            Err(e) => {
                tracing::warn!(backend = name, "discovered servers not applied: {e}")
            }
        }
    }
}

/// Resolves every backend's `[discovery]` once, at start-up, so that the first client finds
/// the discovered servers (checked with the others before any frontend accepts). A backend
/// whose name does not resolve starts with its file servers and is retried every interval.
pub(super) async fn first_round(mut config: Config) -> (Config, Vec<(String, String, Answer)>) {
    let rounds = config.backends.iter().filter_map(|(name, b)| {
        let d = b.discovery.clone()?;
        let name = name.clone();
        Some(async move {
            let answer = match Discoverer::new(&d).await {
                Ok(discoverer) => discoverer.lookup(&[]).await,
                Err(e) => Answer::Failed(e.to_string()),
            };
            (name, d, answer)
        })
    });
    let mut done = Vec::new();
    for (name, d, answer) in futures_util::future::join_all(rounds).await {
        let Some(b) = config.backends.get_mut(&name) else {
            continue;
        };
        match &answer {
            Answer::Servers(found) => {
                let found: Vec<config::Server> = found.iter().map(|f| f.to_server()).collect();
                tracing::info!(
                    backend = name,
                    "discovery: `{}` gives {} server(s)",
                    d.dns,
                    found.len()
                );
                let (all, skipped) = merge(&b.servers, &found);
                warn_skipped(&name, &skipped);
                b.servers = all;
            }
            Answer::Empty => tracing::warn!(
                backend = name,
                "discovery: `{}` has no records yet; retrying every {}",
                d.dns,
                d.interval
            ),
            Answer::Failed(why) => tracing::warn!(
                backend = name,
                "discovery: `{}` did not resolve ({why}); retrying every {}",
                d.dns,
                d.interval
            ),
        }
        done.push((name, d.dns, answer));
    }
    (config, done)
}

/// What the last round did, so that a DNS server that stays down is reported when it goes
/// down and when it comes back, not at every interval.
#[derive(PartialEq)]
enum Last {
    Ok,
    Empty,
    Failed,
}

/// One backend's discovery loop, until `cancel` (a reload changed or removed its
/// `[discovery]`) or shutdown.
async fn run(
    app: Arc<App>,
    name: String,
    cfg: config::Discovery,
    cancel: CancellationToken,
    first_now: bool,
) {
    let interval = cfg.interval.get();
    // The system resolver's files may be missing for a while (a container starting up):
    // try again every interval rather than give up on the backend.
    let discoverer = loop {
        match Discoverer::new(&cfg).await {
            Ok(d) => break d,
            Err(e) => {
                tracing::error!(
                    backend = name,
                    "discovery cannot start: {e}; retrying every {}",
                    cfg.interval
                );
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    };
    let mut last = Last::Ok;
    let mut wait = if first_now { Duration::ZERO } else { interval };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let previous = app
            .config()
            .backends
            .get(&name)
            .map(discovered)
            .unwrap_or_default();
        let answer = tokio::select! {
            _ = cancel.cancelled() => return,
            a = discoverer.lookup(&previous) => a,
        };
        let kept = previous.len();
        app.discovery.record(&name, &cfg.dns, &answer);
        match answer {
            Answer::Servers(found) => {
                if last != Last::Ok {
                    tracing::info!(backend = name, "discovery: `{}` answers again", cfg.dns);
                }
                last = Last::Ok;
                let found = found.iter().map(|f| f.to_server()).collect();
                // A task of its own, like a reload: stopping this loop (shutdown, a reload
                // restarting it) never leaves a change half applied.
                let (a, n, c, k) = (Arc::clone(&app), name.clone(), cfg.clone(), cancel.clone());
                let applying = app
                    .tasks
                    .spawn(async move { a.apply_discovered(&n, &c, &k, found).await });
                if let Err(e) = applying.await {
                    tracing::error!(backend = name, "applying discovered servers failed: {e}");
                }
            }
            Answer::Empty => {
                if last != Last::Empty {
                    tracing::warn!(
                        backend = name,
                        "discovery: `{}` answered no records; keeping the last {kept} server(s)",
                        cfg.dns
                    );
                }
                last = Last::Empty;
            }
            Answer::Failed(why) => {
                if last != Last::Failed {
                    tracing::warn!(
                        backend = name,
                        "discovery: `{}` did not resolve ({why}); keeping the last {kept} server(s)",
                        cfg.dns
                    );
                }
                last = Last::Failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(discovery: bool, servers: &[(&str, bool)]) -> Config {
        let mut text = String::from(
            "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n[backends.b]\n",
        );
        if discovery {
            text +=
                "[backends.b.discovery]\ndns = \"api.test:80\"\nnameserver = \"127.0.0.1:53\"\n";
        }
        for (i, _) in servers.iter().enumerate() {
            text += &format!(
                "[[backends.b.servers]]\nname = \"f{i}\"\naddress = \"127.0.0.1:{}\"\n",
                i + 1
            );
        }
        let mut c = crate::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        for ((name, discovered), s) in servers
            .iter()
            .zip(&mut c.backends.get_mut("b").unwrap().servers)
        {
            s.name = name.to_string();
            s.discovered = *discovered;
        }
        c
    }

    fn names(c: &Config) -> Vec<(String, bool)> {
        c.backends["b"]
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.discovered))
            .collect()
    }

    #[test]
    fn a_reload_carries_discovered_servers_while_discovery_stays() {
        let running = cfg(true, &[("web", false), ("10.0.0.1:80", true)]);
        let file = cfg(true, &[("web", false), ("new", false)]);
        let kept = carry_over(&running, file);
        assert_eq!(
            names(&kept),
            [
                ("web".to_string(), false),
                ("new".to_string(), false),
                ("10.0.0.1:80".to_string(), true)
            ]
        );
        // Discovery removed from the file: what it found goes too.
        let file = cfg(false, &[("web", false)]);
        assert_eq!(
            names(&carry_over(&running, file)),
            [("web".to_string(), false)]
        );
        // A file server of the same name wins.
        let file = cfg(true, &[("10.0.0.1:80", false)]);
        assert_eq!(
            names(&carry_over(&running, file)),
            [("10.0.0.1:80".to_string(), false)]
        );
    }
}

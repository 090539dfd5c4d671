//! Maintenance that expires: a server taken out by hand drains (no new requests, in-flight
//! ones finish) and stays out only until its window runs out, then returns subject to its
//! health. While any server is out by hand, a reminder repeats every `remind_every`, so a
//! server taken out "for a test" cannot be forgotten silently.
//!
//! The per-server state (`pool::maintenance`) is what the request path reads; this module
//! is the service around it: the operations the admin plane calls, the one task that ends
//! windows and sends reminders, and the state file that carries windows across restarts.
//! The file is written on the blocking pool, one write at a time, in the order of the
//! changes. A change asked for by hand (start, end) is saved before it is applied and not
//! applied at all if it cannot be saved; a window that runs out ends even if the save fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::App;
use super::state_file::{self, Entry};
use crate::events::{Event, EventKind};
use crate::pool::maintenance::{End, Window};
use crate::pool::{Backend, Server};

/// Why the maintenance state could not be saved. A change asked for through the API is then
/// not applied; one that happens by itself (a window running out, a reload dropping a
/// server) applies in memory anyway and would not survive a restart.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot save state: {} in {}: {source}", state_file::FILE_NAME, dir.display())]
    Save {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("saving maintenance state was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    /// `[cluster]`: etcd did not take the change, so it was not made (the API answers 503).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::Unreachable),
}

/// Wakes the expiry task when a window starts or ends, so it can re-plan its sleep, and
/// serialises writes of the state file.
#[derive(Debug, Default)]
pub(super) struct Scheduler {
    pub(super) wake: Notify,
    /// The turn to save: held from computing a state to applying it. Callers that could be
    /// cancelled midway (an admin request whose client hangs up) run as tasks of their own,
    /// so a turn is never given up while its write goes on.
    pub(super) save: tokio::sync::Mutex<()>,
    /// `[cluster]`: asks for the state file to be rewritten after a change seen in etcd, by
    /// a task of its own, so the watch never waits for the disk (requests coalesce).
    pub(super) persist: Notify,
}

impl App {
    /// Takes `server` out of rotation for `length`; replaces a window already running.
    ///
    /// The new state is saved first and applied only once it is on disk: if it cannot be
    /// saved, nothing changes (no window, no event) and the error says why.
    pub async fn start_maintenance(
        &self,
        backend: &Backend,
        server: &Server,
        length: Duration,
        reason: String,
    ) -> Result<Window, StateError> {
        // Whole milliseconds: the precision the cluster stores, so the window watched back
        // from etcd is recognised as this one.
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(crate::cluster::keys::millis(SystemTime::now()));
        let window = Window {
            since: now,
            until: now + length,
            deadline: Instant::now() + length,
            reason,
        };
        // The turn is held from computing the state to applying it, so saves and changes
        // happen in the same order and the file never lags behind a change made after it.
        let _turn = self.maintenance.save.lock().await;
        let entry = Entry {
            backend: backend.name.to_string(),
            server: server.name.to_string(),
            since: window.since,
            until: window.until,
            reason: window.reason.clone(),
        };
        let shared = crate::cluster::SharedWindow {
            since: window.since,
            until: window.until,
            reason: window.reason.clone(),
        };
        let alert = || {
            Event::new(
                EventKind::MaintenanceStarted,
                Some(&backend.name),
                Some(&server.name),
                format!(
                    "out of rotation by hand for {} ({}), until {}",
                    humantime::format_duration(round_secs(length)),
                    if shared.reason.is_empty() {
                        "no reason given"
                    } else {
                        &shared.reason
                    },
                    humantime::format_rfc3339_seconds(shared.until)
                ),
            )
        };
        self.commit_window(
            backend,
            server,
            Some(shared.clone()),
            alert,
            self.windows_except(server, Some(entry)),
        )
        .await?;
        let extended = server.maintenance.is_on();
        server.maintenance.set(window.clone());
        backend.rebuild();
        let why = if window.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", window.reason)
        };
        let verb = if extended {
            "window replaced"
        } else {
            "out of rotation"
        };
        self.events.publish(Event::new(
            EventKind::MaintenanceStarted,
            Some(&backend.name),
            Some(&server.name),
            format!(
                "{verb} by hand for {}{why}, until {}; {} request(s) in flight drain",
                humantime::format_duration(round_secs(length)),
                humantime::format_rfc3339_seconds(window.until),
                server.active()
            ),
        ));
        self.maintenance.wake.notify_one();
        Ok(window)
    }

    /// Ends `server`'s window now (`End::Ended`) or if it has run out (`End::Expired`);
    /// returns it, or `None` when there was none to end.
    ///
    /// Ending by hand is saved first and applied only once on disk: if it cannot be saved
    /// the window keeps running and the error says why. A window that ran out ends anyway
    /// (the failure is logged): its time is over whatever the disk says, and a restart would
    /// end it at once too.
    pub async fn end_maintenance(
        &self,
        backend: &Backend,
        server: &Server,
        why: End,
    ) -> Result<Option<Window>, StateError> {
        let _turn = self.maintenance.save.lock().await;
        if self.cluster.as_ref().is_some_and(|c| !c.available()) {
            return Err(crate::cluster::Unreachable("not connected; retrying".into()).into());
        }
        let due = Instant::now();
        let ends = server
            .maintenance
            .window()
            .is_some_and(|w| why == End::Ended || w.deadline <= due);
        if !ends {
            return Ok(None);
        }
        let saved = if why == End::Ended {
            let alert = || {
                let held = server
                    .maintenance
                    .window()
                    .and_then(|w| SystemTime::now().duration_since(w.since).ok())
                    .unwrap_or_default();
                Event::new(
                    EventKind::MaintenanceEnded,
                    Some(&backend.name),
                    Some(&server.name),
                    format!(
                        "maintenance ended by hand after {}; back in rotation subject to health",
                        humantime::format_duration(round_secs(held))
                    ),
                )
            };
            self.commit_window(
                backend,
                server,
                None,
                alert,
                self.windows_except(server, None),
            )
            .await
        } else {
            self.save(self.windows_except(server, None)).await
        };
        match saved {
            Ok(()) => {}
            Err(e) if why == End::Expired => {
                tracing::error!("{e}; the window ends anyway, and a restart would end it too")
            }
            Err(e) => return Err(e),
        }
        Ok(self.end_window(backend, server, why))
    }

    /// Ends the window in memory and announces it; the caller saves.
    pub(super) fn end_window(
        &self,
        backend: &Backend,
        server: &Server,
        why: End,
    ) -> Option<Window> {
        let due = Instant::now();
        let window = server
            .maintenance
            .take_if(|w| why == End::Ended || w.deadline <= due)?;
        // Back from maintenance: ramp up like any returning server (slow start).
        server.start_ramp(backend.settings().slow_start.get());
        backend.rebuild();
        self.announce_end(backend, &server.name, &window, why, server.state().name());
        self.maintenance.wake.notify_one();
        Some(window)
    }

    fn announce_end(&self, backend: &Backend, server: &str, w: &Window, why: End, state: &str) {
        let held = SystemTime::now()
            .duration_since(w.since)
            .unwrap_or_default();
        let (kind, what) = match why {
            End::Ended => (EventKind::MaintenanceEnded, "ended by hand"),
            End::Expired => (EventKind::MaintenanceExpired, "window ran out"),
        };
        self.events.publish(Event::new(
            kind,
            Some(&backend.name),
            Some(server),
            format!(
                "maintenance {what} after {}; back in rotation subject to health (now {state})",
                humantime::format_duration(round_secs(held))
            ),
        ));
    }

    /// Every running window but `server`'s, plus `entry`: the state a change to `server`
    /// would leave.
    fn windows_except(&self, server: &Server, entry: Option<Entry>) -> Vec<Entry> {
        self.windows_but(Some(server.id), entry)
    }

    /// Every running window, except that of server `skip`, plus `entry`.
    fn windows_but(&self, skip: Option<crate::pool::ServerId>, entry: Option<Entry>) -> Vec<Entry> {
        self.servers()
            .into_iter()
            .filter(|(_, s)| Some(s.id) != skip)
            .filter_map(|(b, s)| {
                s.maintenance.window().map(|w| Entry {
                    backend: b.name.to_string(),
                    server: s.name.to_string(),
                    since: w.since,
                    until: w.until,
                    reason: w.reason,
                })
            })
            .chain(entry)
            .collect()
    }

    /// Saves a change of `server`'s window made by hand: with `[cluster]` to etcd with its
    /// alert (`alert` builds it), the state file then being only this instance's copy (a
    /// failure to write it is logged); without, to the state file. An error means nothing
    /// was changed. The caller holds the turn.
    async fn commit_window(
        &self,
        backend: &Backend,
        server: &Server,
        window: Option<crate::cluster::SharedWindow>,
        alert: impl FnOnce() -> Event,
        entries: Vec<Entry>,
    ) -> Result<(), StateError> {
        let Some(c) = &self.cluster else {
            return self.save(entries).await;
        };
        c.write(crate::cluster::Write::Window {
            backend: backend.name.to_string(),
            server: server.name.to_string(),
            window,
            event: alert(),
        })
        .await?;
        if let Err(e) = self.save(entries).await {
            tracing::warn!("{e}; the change is in the cluster store, this instance's copy lags");
        }
        Ok(())
    }

    /// Writes `entries` as the whole state file, off the runtime. The caller holds the turn.
    async fn save(&self, entries: Vec<Entry>) -> Result<(), StateError> {
        let dir = self.config().state_dir();
        let at = dir.clone();
        tokio::task::spawn_blocking(move || state_file::save(&at, &entries))
            .await?
            .map_err(|source| StateError::Save { dir, source })
    }

    /// Writes every running window to the state file, off the runtime. Writes are taken
    /// one at a time and each reads the windows once it has the turn, so the file always
    /// ends with the latest state.
    pub async fn persist(&self) -> Result<(), StateError> {
        let _turn = self.maintenance.save.lock().await;
        self.save(self.windows_but(None, None)).await
    }

    /// [`persist`](Self::persist), logging a failure: the change applies in memory anyway.
    pub(super) async fn persist_logged(&self) {
        if let Err(e) = self.persist().await {
            tracing::error!("{e}; a restart would forget it");
        }
    }

    /// Restores the windows saved by an earlier run. One that ran out while fulcrum was
    /// stopped ends at once with `maintenance_expired`. Call before frontends accept traffic.
    pub(super) async fn restore_maintenance(&self) {
        let dir = self.config().state_dir();
        let loaded = tokio::task::spawn_blocking(move || state_file::load(&dir)).await;
        let entries = match loaded {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                tracing::error!("{e}; starting without saved maintenance windows");
                return;
            }
            Err(e) => {
                tracing::error!("reading saved maintenance failed ({e}); starting without it");
                return;
            }
        };
        let now = SystemTime::now();
        for e in entries {
            let Some(backend) = self.backend(&e.backend) else {
                tracing::warn!(backend = %e.backend, server = %e.server, "saved maintenance names a backend no longer configured; dropped");
                continue;
            };
            let Some(server) = backend.server(&e.server) else {
                tracing::warn!(backend = %e.backend, server = %e.server, "saved maintenance names a server no longer configured; dropped");
                continue;
            };
            let window = Window {
                since: e.since,
                until: e.until,
                deadline: Instant::now() + e.until.duration_since(now).unwrap_or_default(),
                reason: e.reason,
            };
            if e.until <= now {
                self.announce_end(&backend, &server.name, &window, End::Expired, "restarting");
                continue;
            }
            tracing::warn!(
                backend = %e.backend, server = %e.server,
                "still in maintenance until {} ({})",
                humantime::format_rfc3339_seconds(e.until), window.reason
            );
            server.maintenance.set(window);
            backend.rebuild();
        }
        self.persist_logged().await;
    }

    fn remind(&self, out: &[(Arc<Backend>, Arc<Server>, Window)]) {
        let now = SystemTime::now();
        for (backend, server, w) in out {
            let held = now.duration_since(w.since).unwrap_or_default();
            let left = w.until.duration_since(now).unwrap_or_default();
            let reason = if w.reason.is_empty() {
                "no reason given".to_string()
            } else {
                w.reason.clone()
            };
            self.events.publish(Event::new(
                EventKind::MaintenanceReminder,
                Some(&backend.name),
                Some(&server.name),
                format!(
                    "still out of rotation by hand ({reason}): out for {}, back in {}",
                    humantime::format_duration(round_secs(held)),
                    humantime::format_duration(round_secs(left))
                ),
            ));
        }
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Ends windows as they run out and repeats `maintenance_reminder` while any server is out
/// by hand. One background task for the whole process, sleeping until the next thing to do;
/// it ends at shutdown.
pub(super) async fn run(app: Arc<App>) {
    let mut next_reminder: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let mut out = Vec::new();
        let mut expired = false;
        for (backend, server) in app.servers() {
            let Some(w) = server.maintenance.window() else {
                continue;
            };
            if w.deadline <= now {
                expired |= app.end_window(&backend, &server, End::Expired).is_some();
            } else {
                earliest = Some(earliest.map_or(w.deadline, |e| e.min(w.deadline)));
                out.push((backend, server, w));
            }
        }
        if expired {
            app.persist_logged().await;
        }
        let remind_every = app.config().alerts.remind_every.get();
        next_reminder = match next_reminder {
            _ if out.is_empty() => None,
            None => Some(now + remind_every),
            Some(at) if at <= now => {
                app.remind(&out);
                Some(now + remind_every)
            }
            keep => keep,
        };
        let wake_at = match (earliest, next_reminder) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = app.maintenance.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;

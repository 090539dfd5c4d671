//! Maintenance that expires: a server taken out by hand drains (no new requests, in-flight
//! ones finish) and stays out only until its window runs out, then returns subject to its
//! health. While any server is out by hand, a reminder repeats every `remind_every`, so a
//! server taken out "for a test" cannot be forgotten silently.
//!
//! The per-server part ([`Maintenance`]) is what the request path reads (one atomic); the
//! rest are the operations the admin plane calls and the one task that ends windows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::maintenance_file::{self, Entry};
use super::{Backend, Server};
use crate::app::App;
use crate::events::{Event, EventKind};

/// One maintenance window.
#[derive(Clone, Debug)]
pub struct Window {
    /// When it started and when it ends, as wall-clock times (shown and persisted).
    pub since: SystemTime,
    pub until: SystemTime,
    /// When it ends on tokio's clock (what the expiry task sleeps on; pausable in tests).
    pub deadline: Instant,
    pub reason: String,
}

/// A server's maintenance state. `on` mirrors whether a window exists, so the request
/// path's eligibility check is one atomic load and never takes the lock.
#[derive(Default)]
pub struct Maintenance {
    on: AtomicBool,
    window: Mutex<Option<Window>>,
}

impl Maintenance {
    /// Whether the server is out of rotation by hand.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// The current window, if any.
    pub fn window(&self) -> Option<Window> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Window>> {
        // The guarded value is plain data, valid even if a holder panicked.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, w: Window) {
        let mut g = self.lock();
        *g = Some(w);
        self.on.store(true, Ordering::Release);
    }

    /// Ends the window if `due` says so (checked under the lock, so an expiry and a DELETE
    /// or a new window racing each other end it at most once).
    fn take_if(&self, due: impl FnOnce(&Window) -> bool) -> Option<Window> {
        let mut g = self.lock();
        if !g.as_ref().is_some_and(due) {
            return None;
        }
        self.on.store(false, Ordering::Release);
        g.take()
    }
}

/// Why a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Ended by hand (`DELETE`, `fulcrum ctl enable`).
    Ended,
    /// The time ran out.
    Expired,
}

/// Wakes the expiry task when a window starts or ends, so it can re-plan its sleep.
#[derive(Default)]
pub struct Scheduler {
    wake: Notify,
    /// Serialises writes of the state file.
    save: Mutex<()>,
}

/// Takes `server` out of rotation for `length`; replaces a window already running.
pub fn start(
    app: &App,
    backend: &Backend,
    server: &Server,
    length: Duration,
    reason: String,
) -> Window {
    let now = SystemTime::now();
    let window = Window {
        since: now,
        until: now + length,
        deadline: Instant::now() + length,
        reason,
    };
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
    app.events.publish(Event::new(
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
    persist(app);
    app.maintenance.wake.notify_one();
    window
}

/// Ends `server`'s window now; returns it, or `None` when there was none.
pub fn end(app: &App, backend: &Backend, server: &Server, why: End) -> Option<Window> {
    let due = Instant::now();
    let window = server
        .maintenance
        .take_if(|w| why == End::Ended || w.deadline <= due)?;
    // Back from maintenance: ramp up like any returning server (slow start).
    server.start_ramp(backend.settings().slow_start.get());
    backend.rebuild();
    announce_end(
        app,
        backend,
        &server.name,
        &window,
        why,
        server.state().name(),
    );
    persist(app);
    app.maintenance.wake.notify_one();
    Some(window)
}

fn announce_end(app: &App, backend: &Backend, server: &str, w: &Window, why: End, state: &str) {
    let held = SystemTime::now()
        .duration_since(w.since)
        .unwrap_or_default();
    let (kind, what) = match why {
        End::Ended => (EventKind::MaintenanceEnded, "ended by hand"),
        End::Expired => (EventKind::MaintenanceExpired, "window ran out"),
    };
    app.events.publish(Event::new(
        kind,
        Some(&backend.name),
        Some(server),
        format!(
            "maintenance {what} after {}; back in rotation subject to health (now {state})",
            humantime::format_duration(round_secs(held))
        ),
    ));
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Writes every running window to the state file; a failure is logged (the windows still
/// apply in memory, but would not survive a restart).
pub fn persist(app: &App) {
    let _g = app
        .maintenance
        .save
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entries: Vec<Entry> = app
        .servers()
        .into_iter()
        .filter_map(|(b, s)| {
            s.maintenance.window().map(|w| Entry {
                backend: b.name.to_string(),
                server: s.name.to_string(),
                since: w.since,
                until: w.until,
                reason: w.reason,
            })
        })
        .collect();
    let dir = app.config.load().state_dir();
    if let Err(e) = maintenance_file::save(&dir, &entries) {
        tracing::error!(
            "cannot save maintenance state in {}: {e}; a restart would forget it",
            dir.display()
        );
    }
}

/// Restores the windows saved by an earlier run. One that ran out while fulcrum was
/// stopped ends at once with `maintenance_expired`. Call before frontends accept traffic.
pub fn restore(app: &App) {
    let dir = app.config.load().state_dir();
    let entries = match maintenance_file::load(&dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e}; starting without saved maintenance windows");
            return;
        }
    };
    let now = SystemTime::now();
    for e in entries {
        let Some(backend) = app.backend(&e.backend) else {
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
            announce_end(
                app,
                &backend,
                &server.name,
                &window,
                End::Expired,
                "restarting",
            );
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
    persist(app);
}

/// Ends windows as they run out and repeats `maintenance_reminder` while any server is out
/// by hand. One task for the whole process, sleeping until the next thing to do.
pub async fn run(app: Arc<App>) {
    let mut next_reminder: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let mut out = Vec::new();
        for (backend, server) in app.servers() {
            let Some(w) = server.maintenance.window() else {
                continue;
            };
            if w.deadline <= now {
                end(&app, &backend, &server, End::Expired);
            } else {
                earliest = Some(earliest.map_or(w.deadline, |e| e.min(w.deadline)));
                out.push((backend, server, w));
            }
        }
        let remind_every = app.config.load().alerts.remind_every.get();
        next_reminder = match next_reminder {
            _ if out.is_empty() => None,
            None => Some(now + remind_every),
            Some(at) if at <= now => {
                remind(&app, &out);
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
            _ = app.stop.cancelled() => return,
            _ = app.maintenance.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

fn remind(app: &App, out: &[(Arc<Backend>, Arc<Server>, Window)]) {
    let now = SystemTime::now();
    for (backend, server, w) in out {
        let held = now.duration_since(w.since).unwrap_or_default();
        let left = w.until.duration_since(now).unwrap_or_default();
        let reason = if w.reason.is_empty() {
            "no reason given".to_string()
        } else {
            w.reason.clone()
        };
        app.events.publish(Event::new(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::pool::Health;
    use tokio::sync::broadcast;

    fn app(dir: &std::path::Path) -> Arc<App> {
        let text = format!(
            "[global]\nstate_dir = \"{}\"\n[alerts]\nremind_every = \"10m\"\n\
             [[frontends]]\nname = \"f\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backends.b.servers]]\nname = \"s1\"\naddress = \"127.0.0.1:1\"\n\
             [[backends.b.servers]]\nname = \"s2\"\naddress = \"127.0.0.1:2\"\n",
            dir.display()
        );
        let cfg = crate::config::parse_str(&text, &dir.join("f.toml")).unwrap();
        let app = App::new(cfg).unwrap();
        let b = app.backend("b").unwrap();
        for s in b.snapshot().servers.iter() {
            s.set_health(Health::Up);
        }
        b.rebuild();
        app
    }

    fn in_rotation(b: &Backend, name: &str) -> bool {
        b.snapshot()
            .candidates
            .iter()
            .any(|c| &*c.server.name == name)
    }

    /// The next event and how long after `t0` it came (the clock is paused: exact).
    /// Capacity alarms (issue 3's panic guard) accompany maintenance; these tests are about
    /// the maintenance events themselves, so they skip them.
    async fn next(rx: &mut broadcast::Receiver<Event>, t0: Instant) -> (EventKind, Duration) {
        loop {
            let e = rx.recv().await.unwrap();
            if !matches!(
                e.event,
                EventKind::CapacityLow | EventKind::CapacityRestored
            ) {
                return (e.event, t0.elapsed());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expires_on_time_with_reminders_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (b, s) = app.find_server("b/s1").unwrap();
        let mut rx = app.events.subscribe();
        tokio::spawn(run(Arc::clone(&app)));
        let t0 = Instant::now();
        start(&app, &b, &s, Duration::from_secs(25 * 60), "disk".into());
        assert!(!in_rotation(&b, "s1") && in_rotation(&b, "s2"));
        let min = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(
            next(&mut rx, t0).await,
            (EventKind::MaintenanceStarted, min(0))
        );
        assert_eq!(
            next(&mut rx, t0).await,
            (EventKind::MaintenanceReminder, min(10))
        );
        assert_eq!(
            next(&mut rx, t0).await,
            (EventKind::MaintenanceReminder, min(20))
        );
        assert_eq!(
            next(&mut rx, t0).await,
            (EventKind::MaintenanceExpired, min(25))
        );
        assert!(in_rotation(&b, "s1"));
        assert!(s.maintenance.window().is_none());
        // Nothing is out by hand any more: no further reminder.
        let quiet = tokio::time::timeout(min(60), next(&mut rx, t0)).await;
        assert!(quiet.is_err(), "unexpected event {quiet:?}");
        assert_eq!(maintenance_file::load(dir.path()).unwrap(), Vec::new());
    }

    #[tokio::test(start_paused = true)]
    async fn ended_by_hand_never_expires_later() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (b, s) = app.find_server("s1").unwrap();
        let mut rx = app.events.subscribe();
        tokio::spawn(run(Arc::clone(&app)));
        let t0 = Instant::now();
        start(&app, &b, &s, Duration::from_secs(60), String::new());
        assert_eq!(maintenance_file::load(dir.path()).unwrap().len(), 1);
        assert!(end(&app, &b, &s, End::Ended).is_some());
        assert!(end(&app, &b, &s, End::Ended).is_none(), "ends once");
        assert_eq!(next(&mut rx, t0).await.0, EventKind::MaintenanceStarted);
        assert_eq!(next(&mut rx, t0).await.0, EventKind::MaintenanceEnded);
        assert!(in_rotation(&b, "s1"));
        let quiet = tokio::time::timeout(Duration::from_secs(3600), next(&mut rx, t0)).await;
        assert!(quiet.is_err(), "unexpected event {quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn restore_keeps_running_windows_and_ends_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let entry = |server: &str, until| Entry {
            backend: "b".into(),
            server: server.into(),
            since: now - Duration::from_secs(7200),
            until,
            reason: format!("{server} work"),
        };
        maintenance_file::save(
            dir.path(),
            &[
                entry("s1", now - Duration::from_secs(60)),
                entry("s2", now + Duration::from_secs(3600)),
                entry("gone", now + Duration::from_secs(3600)),
            ],
        )
        .unwrap();
        let app = app(dir.path());
        let mut rx = app.events.subscribe();
        restore(&app);
        let e = rx.try_recv().unwrap();
        assert_eq!(
            (e.event, e.server.as_deref()),
            (EventKind::MaintenanceExpired, Some("s1"))
        );
        let b = app.backend("b").unwrap();
        assert!(in_rotation(&b, "s1") && !in_rotation(&b, "s2"));
        let w = b.server("s2").unwrap().maintenance.window().unwrap();
        assert_eq!(w.reason, "s2 work");
        let saved = maintenance_file::load(dir.path()).unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].server, "s2");
    }
}

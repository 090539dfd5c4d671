//! The certificates fulcrum serves, as the admin plane and the expiry check see them, and
//! `certificate_expiring`: published at start, after each reload and once a day for every
//! served certificate within [`WARN_WITHIN`] of its `not_after` (or past it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::App;
use crate::certs::CertInfo;
use crate::config::Mode;
use crate::events::{Event, EventKind};

/// How close to `not_after` a certificate must be for `certificate_expiring`.
pub const WARN_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often the running check looks again: certificates do not change between reloads,
/// only the clock moves, and a day is the resolution the 14-day warning needs.
const EVERY: Duration = Duration::from_secs(24 * 3600);

/// One running frontend as status and the expiry check show it.
#[derive(Clone, Debug)]
pub struct ServedFrontend {
    pub name: String,
    /// The address it listens on (the bound port when the file said 0).
    pub bind: SocketAddr,
    pub mode: Mode,
    /// Empty without TLS; the default certificate first.
    pub certificates: Arc<[CertInfo]>,
}

/// The running frontends, replaced whole after start and each reload; read without a lock
/// by the admin plane and metrics.
#[derive(Debug, Default)]
pub struct Served {
    now: ArcSwap<Vec<ServedFrontend>>,
}

impl Served {
    /// Every running frontend, by name.
    pub fn get(&self) -> Arc<Vec<ServedFrontend>> {
        self.now.load_full()
    }

    pub(super) fn set(&self, frontends: Vec<ServedFrontend>) {
        self.now.store(Arc::new(frontends));
    }
}

/// The `certificate_expiring` events for `frontends` at `now`: one per certificate within
/// [`WARN_WITHIN`] of its expiry or past it. Pure, so it is tested without a clock.
pub fn expiring(frontends: &[ServedFrontend], now: SystemTime) -> Vec<Event> {
    let mut out = Vec::new();
    for fe in frontends {
        for c in fe.certificates.iter() {
            let left = c.not_after.duration_since(now);
            let detail = match left {
                Ok(left) if left > WARN_WITHIN => continue,
                Ok(left) => format!(
                    "frontend `{}`: the certificate for {} expires at {} (in {} days)",
                    fe.name,
                    c.joined_names(),
                    c.not_after_rfc3339(),
                    left.as_secs() / 86_400
                ),
                Err(_) => format!(
                    "frontend `{}`: the certificate for {} expired at {}",
                    fe.name,
                    c.joined_names(),
                    c.not_after_rfc3339()
                ),
            };
            let mut event = Event::new(EventKind::CertificateExpiring, None, None, detail);
            event.at = now;
            out.push(event);
        }
    }
    out
}

impl App {
    /// The running frontends and their certificates.
    pub fn served(&self) -> Arc<Vec<ServedFrontend>> {
        self.served.get()
    }

    /// Publishes `certificate_expiring` for every served certificate close to or past its
    /// expiry (start, reload and the daily task call it).
    pub fn check_certificates(&self) {
        for event in expiring(&self.served.get(), SystemTime::now()) {
            self.events.publish(event);
        }
    }

    /// Runs [`check_certificates`](Self::check_certificates) once a day (the first run is
    /// the start's own, so this waits a day before its first).
    pub(super) async fn check_certificates_daily(self: Arc<Self>) {
        let start = tokio::time::Instant::now() + EVERY;
        let mut every = tokio::time::interval_at(start, EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.check_certificates();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(not_after: SystemTime) -> ServedFrontend {
        ServedFrontend {
            name: "www".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 443)),
            mode: Mode::Http,
            certificates: vec![CertInfo {
                names: vec!["a.example".into(), "*.b.example".into()],
                not_after,
            }]
            .into(),
        }
    }

    #[test]
    fn far_from_expiry_is_quiet() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let fe = served(now + WARN_WITHIN + Duration::from_secs(60));
        assert!(expiring(&[fe], now).is_empty());
    }

    #[test]
    fn within_fourteen_days_names_frontend_names_and_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let fe = served(now + Duration::from_secs(3 * 86_400 + 10));
        let events = expiring(&[fe], now);
        assert_eq!(events.len(), 1);
        let d = &events[0].detail;
        assert!(
            d.contains("`www`") && d.contains("a.example,*.b.example"),
            "{d}"
        );
        assert!(
            d.contains("2001-09-12T01:46:50Z") && d.contains("in 3 days"),
            "{d}"
        );
        assert_eq!(events[0].event, EventKind::CertificateExpiring);
    }

    #[test]
    fn an_expired_certificate_is_announced_too() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let fe = served(now - Duration::from_secs(60));
        let events = expiring(&[fe], now);
        assert_eq!(events.len(), 1);
        assert!(events[0].detail.contains("expired at"));
    }
}

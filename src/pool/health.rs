//! Active health checks: one task per server, flipping state only when `rise` successes or
//! `fall` failures in a row cross the threshold, and announcing each flip once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Backend, Health, Server};
use crate::events::{Event, EventKind};

pub use super::probe::{Probe, ProbeFailure, Probed, probe};

/// Consecutive results, and the threshold logic that turns them into a state.
#[derive(Debug, Default)]
pub struct Streak {
    ok: u32,
    failed: u32,
}

impl Streak {
    /// Feeds one result; returns the new health when a threshold is crossed.
    pub fn feed(&mut self, current: Health, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        if passed {
            self.ok += 1;
            self.failed = 0;
        } else {
            self.failed += 1;
            self.ok = 0;
        }
        match current {
            // The first check at start-up decides alone: nobody wants to wait `rise`
            // intervals before serving, nor to send traffic to a server that is dead.
            Health::Unknown => Some(if passed { Health::Up } else { Health::Down }),
            Health::Up if self.failed >= fall => Some(Health::Down),
            Health::Down if self.ok >= rise => Some(Health::Up),
            _ => None,
        }
    }
}

/// Runs one check of `server` and applies the result. Returns whether the health flipped.
pub async fn check_once(backend: &Backend, server: &Arc<Server>, streak: &mut Streak) -> bool {
    let settings = backend.settings().health.clone();
    // A resolver that hangs must not freeze this server's checks: the lookup shares the
    // probe's time limit.
    if let Some(addr) = reresolve(&server.address, settings.timeout.get()).await {
        server.set_addr(addr);
    }
    let Probed { result, agent } = probe(server, &settings).await;
    if let Some(said) = agent {
        super::agent::feedback(backend, server, said.as_deref());
    }
    if let Err(why) = &result
        && why.is_local_fd_exhaustion()
    {
        // fulcrum could not open a socket: that says nothing about the server, whose state
        // stays as it is (a full fd table must not take healthy servers down).
        tracing::warn!(server = %server.full_name(), "health check not run: {why}; the server keeps its state");
        server.record_check_unknown();
        return false;
    }
    server.record_check(result.is_ok());
    let current = server.health();
    let Some(next) = streak.feed(current, result.is_ok(), settings.rise, settings.fall) else {
        return false;
    };
    server.set_health(next);
    if next == current {
        return false;
    }
    if current == Health::Down && next == Health::Up {
        // Back after being down (not at start-up): ramp up rather than take a full share.
        server.start_ramp(backend.settings().slow_start.get());
    }
    announce(backend, server, current, next, &result);
    backend.rebuild();
    true
}

fn announce(backend: &Backend, server: &Server, from: Health, to: Health, result: &Probe) {
    let (kind, detail) = match (to, result) {
        (Health::Up, _) if from == Health::Unknown => return,
        (Health::Up, _) => (
            EventKind::ServerUp,
            format!("{} passed its health checks", server.address),
        ),
        (_, Err(why)) => (
            EventKind::ServerDown,
            format!("{} failed its health check: {why}", server.address),
        ),
        (_, Ok(())) => (EventKind::ServerDown, format!("{} is down", server.address)),
    };
    backend.events().publish(Event::new(
        kind,
        Some(&backend.name),
        Some(&server.name),
        detail,
    ));
}

/// A host name is resolved again at every check, within `within`; an IP literal never is.
/// `None` (the server keeps its last good address) when the name does not resolve in time.
async fn reresolve(address: &str, within: Duration) -> Option<std::net::SocketAddr> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    match super::resolve::resolve_within(address, within).await {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::warn!(address, "{e}; the server keeps its last address");
            None
        }
    }
}

/// The checker loop for one server, until `cancel`. The first check has already run
/// (see [`check_once`]) when this is spawned after start-up.
pub async fn run(
    backend: Arc<Backend>,
    server: Arc<Server>,
    mut streak: Streak,
    cancel: CancellationToken,
) {
    loop {
        let interval = backend.settings().health.interval.get();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(jitter(interval)) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = check_once(&backend, &server, &mut streak) => {}
        }
        // Idle upstream connections are not watched between requests; this is when those
        // the server closed are let go.
        server.idle.prune();
    }
}

/// Spreads checks by up to a tenth of the interval, so that hundreds of servers are not
/// all probed in the same millisecond.
fn jitter(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    if spread == 0 {
        return interval;
    }
    interval + Duration::from_millis(fastrand::u64(..spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Dur;

    #[test]
    fn only_fulcrums_own_fd_exhaustion_is_not_a_server_failure() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let connect = |n| ProbeFailure::Connect {
            addr,
            source: std::io::Error::from_raw_os_error(n),
        };
        assert!(connect(rustix::io::Errno::MFILE.raw_os_error()).is_local_fd_exhaustion());
        assert!(connect(rustix::io::Errno::NFILE.raw_os_error()).is_local_fd_exhaustion());
        assert!(!connect(rustix::io::Errno::CONNREFUSED.raw_os_error()).is_local_fd_exhaustion());
        assert!(!ProbeFailure::TimedOut(Dur::secs(1)).is_local_fd_exhaustion());
    }

    #[test]
    fn flips_only_on_thresholds() {
        let mut s = Streak::default();
        assert_eq!(s.feed(Health::Unknown, true, 2, 3), Some(Health::Up));
        assert_eq!(s.feed(Health::Up, false, 2, 3), None);
        assert_eq!(s.feed(Health::Up, false, 2, 3), None);
        assert_eq!(s.feed(Health::Up, false, 2, 3), Some(Health::Down));
        assert_eq!(s.feed(Health::Down, true, 2, 3), None);
        assert_eq!(s.feed(Health::Down, false, 2, 3), None);
        assert_eq!(s.feed(Health::Down, true, 2, 3), None);
        assert_eq!(s.feed(Health::Down, true, 2, 3), Some(Health::Up));
    }
}

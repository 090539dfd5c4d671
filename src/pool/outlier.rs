//! Passive health (outlier detection) on real traffic: `consecutive_failures` 5xx answers or
//! connect errors in a row eject a server for `base_ejection` × the number of times it has
//! been ejected in a row (at most 10 × base; the count starts again after a server has
//! stayed in for 10 × base). Never more than `max_ejection_percent` of the backend's
//! servers are out at once, and never the last server that can serve: with one server left,
//! a partial outage must not become a total one (fail open).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, Server, clock};
use crate::events::{Event, EventKind};

/// The longest ejection, in multiples of `base_ejection` (Envoy caps the same way).
pub const MAX_MULTIPLIER: u32 = 10;

/// How long the `n`-th ejection lasts.
pub fn ejection_duration(base: Duration, n: u32) -> Duration {
    base * n.clamp(1, MAX_MULTIPLIER)
}

/// Serialises ejection decisions of one backend, so two failing servers cannot both pass
/// the percentage check at once. A std `Mutex`: no await under it.
#[derive(Default)]
pub struct Outliers {
    lock: Mutex<()>,
}

/// Why a server may not be ejected now, if it may not.
pub fn refusal(servers: &[Arc<Server>], server: &Server, max_percent: u32) -> Option<String> {
    let ejected = servers.iter().filter(|s| s.is_ejected()).count();
    if (ejected + 1) * 100 > max_percent as usize * servers.len() {
        return Some(format!(
            "{ejected} of {} servers are ejected already (max_ejection_percent {max_percent})",
            servers.len()
        ));
    }
    let others_serving = servers
        .iter()
        .any(|s| s.id != server.id && s.health() == super::Health::Up && !s.is_ejected());
    if !others_serving {
        return Some("it is the last server that can serve".into());
    }
    None
}

/// Records the outcome of one request on `server`: `Ok` for an answer below 500, `Err` with
/// what went wrong otherwise. Ejects the server when its failures in a row reach the limit.
pub fn record(backend: &Backend, server: &Arc<Server>, outcome: Result<(), &str>) {
    let why = match outcome {
        Ok(()) => return server.record_success(),
        Err(why) => why,
    };
    let settings = backend.settings();
    let o = &settings.outlier;
    if o.consecutive_failures == 0 || server.is_ejected() {
        return;
    }
    let failures = server.record_failure();
    if failures < o.consecutive_failures {
        return;
    }
    let (base, max_percent, slow_start) = (
        o.base_ejection.get(),
        o.max_ejection_percent,
        settings.slow_start.get(),
    );
    drop(settings);
    let _serial = backend
        .outliers()
        .lock
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if server.is_ejected() {
        return;
    }
    if let Some(no) = refusal(&backend.snapshot().servers, server, max_percent) {
        server.record_success();
        tracing::warn!(
            server = %server.full_name(),
            "{failures} failures in a row (last: {why}) but not ejected: {no}"
        );
        return;
    }
    let now = clock::now_ms();
    // A server that stayed in for as long as the longest ejection starts its streak again.
    let quiet = ejection_duration(base, MAX_MULTIPLIER).as_millis() as u64;
    let duration = ejection_duration(base, server.next_ejection_multiplier(now, quiet));
    let until = now + duration.as_millis() as u64;
    let n = server.eject(until);
    backend.events().publish(Event::new(
        EventKind::ServerEjected,
        Some(&backend.name),
        Some(&server.name),
        format!(
            "{failures} failures in a row (last: {why}); ejected for {} (ejection #{n})",
            humantime::format_duration(duration)
        ),
    ));
    backend.rebuild();
    spawn_return(backend, server, n, duration, slow_start);
}

fn spawn_return(backend: &Backend, server: &Arc<Server>, n: u32, after: Duration, ramp: Duration) {
    let (weak, server) = (backend.weak(), Arc::clone(server));
    backend.tasks().spawn_background(async move {
        tokio::time::sleep(after).await;
        if let Some(b) = weak.upgrade() {
            end_ejection(&b, &server, n, after, ramp);
        }
    });
}

/// Ends ejection number `n` of `server` (a later ejection has its own timer).
fn end_ejection(backend: &Backend, server: &Server, n: u32, lasted: Duration, ramp: Duration) {
    if server.ejections() != n || !server.end_ejection() {
        return;
    }
    if server.health() == super::Health::Up {
        server.start_ramp(ramp);
        let ramp_text = if ramp.is_zero() {
            String::from("at full weight")
        } else {
            format!("ramping up over {}", humantime::format_duration(ramp))
        };
        backend.events().publish(Event::new(
            EventKind::ServerUp,
            Some(&backend.name),
            Some(&server.name),
            format!(
                "returns from ejection after {}; {ramp_text}",
                humantime::format_duration(lasted)
            ),
        ));
    }
    backend.rebuild();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejections_grow_and_are_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(ejection_duration(base, 1), base);
        assert_eq!(ejection_duration(base, 3), base * 3);
        assert_eq!(ejection_duration(base, 50), base * 10);
    }
}

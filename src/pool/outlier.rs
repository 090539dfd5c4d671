//! Passive health (outlier detection) on real traffic: `consecutive_failures` 5xx answers or
//! connect errors in a row eject a server for `base_ejection` × the number of times it has
//! been ejected in a row (at most 10 × base; the count starts again after a server has
//! stayed in for 10 × base). Never more than `max_ejection_percent` of the backend's
//! servers are out at once, and never the last server that can serve: with one server left,
//! a partial outage must not become a total one (fail open).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, Server, clock};
use crate::events::{Event, EventKind};
use crate::upstream::ConnectError;

/// The longest ejection, in multiples of `base_ejection` (Envoy caps the same way).
pub const MAX_MULTIPLIER: u32 = 10;

/// How long the `n`-th ejection lasts.
pub fn ejection_duration(base: Duration, n: u32) -> Duration {
    base * n.clamp(1, MAX_MULTIPLIER)
}

/// Serialises ejection decisions of one backend, so two failing servers cannot both pass
/// the percentage check at once. A std `Mutex`: no await under it.
#[derive(Debug, Default)]
pub struct Outliers {
    lock: Mutex<()>,
}

/// What one request (HTTP) or connection attempt (TCP) on a server came to, as passive
/// health counts it. The request path records one for every attempt, so it is `Copy` and
/// holds no text: its `Display` runs only when an ejection, or a refusal to eject, is
/// logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500, or (TCP) a connection made.
    Success,
    /// An answer with this status (5xx).
    Status(u16),
    /// A gRPC call that ended with this `grpc-status`, one that means the server failed
    /// (UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS; see `proxy::grpc`).
    Grpc(u16),
    /// The TCP connect failed (refused, unreachable, reset).
    ConnectFailed(IoCause),
    /// No connection within `connect_timeout`.
    ConnectTimedOut,
    /// The request was sent and the connection broke before the response.
    Broken,
    /// The request was sent and no response came within `response_timeout`.
    TimedOut,
}

impl Outcome {
    /// A connect that failed because fulcrum itself is out of fds: not the server's failure.
    pub fn is_local_fd_exhaustion(&self) -> bool {
        matches!(self, Outcome::ConnectFailed(IoCause::Os(code))
            if crate::fds::is_exhaustion(&std::io::Error::from_raw_os_error(*code)))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Status(s) => write!(f, "status {s}"),
            Outcome::Grpc(s) => write!(f, "grpc-status {s}"),
            Outcome::ConnectFailed(cause) => write!(f, "connect failed: {cause}"),
            Outcome::ConnectTimedOut => f.write_str("connect timed out"),
            // The `x-fulcrum-error` codes these failures answer with.
            Outcome::Broken => f.write_str("upstream_broken"),
            Outcome::TimedOut => f.write_str("upstream_timeout"),
        }
    }
}

/// What an io error was, kept without the error (which is neither `Copy` nor cheap): its
/// OS error number, which prints as the error did, else its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoCause {
    Os(i32),
    Kind(std::io::ErrorKind),
}

impl From<&std::io::Error> for IoCause {
    fn from(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => IoCause::Os(code),
            None => IoCause::Kind(e.kind()),
        }
    }
}

impl fmt::Display for IoCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IoCause::Os(code) => std::io::Error::from_raw_os_error(code).fmt(f),
            IoCause::Kind(kind) => std::io::Error::from(kind).fmt(f),
        }
    }
}

/// Why a server that reached `consecutive_failures` stays in rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spared {
    /// Ejecting it would put more than `max_ejection_percent` of the servers out.
    TooManyEjected {
        ejected: usize,
        servers: usize,
        max_percent: u32,
    },
    /// No other server is up and in rotation (fail open).
    LastServer,
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Spared::TooManyEjected {
                ejected,
                servers,
                max_percent,
            } => write!(
                f,
                "{ejected} of {servers} servers are ejected already (max_ejection_percent {max_percent})"
            ),
            Spared::LastServer => f.write_str("it is the last server that can serve"),
        }
    }
}

/// Why a server may not be ejected now, if it may not.
pub fn refusal(servers: &[Arc<Server>], server: &Server, max_percent: u32) -> Option<Spared> {
    let ejected = servers.iter().filter(|s| s.is_ejected()).count();
    if (ejected + 1) * 100 > max_percent as usize * servers.len() {
        return Some(Spared::TooManyEjected {
            ejected,
            servers: servers.len(),
            max_percent,
        });
    }
    let others_serving = servers
        .iter()
        .any(|s| s.id != server.id && s.health() == super::Health::Up && !s.is_ejected());
    if !others_serving {
        return Some(Spared::LastServer);
    }
    None
}

/// Records the outcome of one request on `server`. Any outcome but `Success` is a failure;
/// the server is ejected when its failures in a row reach the limit.
pub fn record(backend: &Backend, server: &Arc<Server>, outcome: Outcome) {
    if outcome == Outcome::Success {
        return server.record_success();
    }
    if outcome.is_local_fd_exhaustion() {
        // fulcrum could not open a socket (EMFILE/ENFILE): nothing the server did.
        return;
    }
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
            "{failures} failures in a row (last: {outcome}) but not ejected: {no}"
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
            "{failures} failures in a row (last: {outcome}); ejected for {} (ejection #{n})",
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

/// What a failed connect tells passive health.
impl From<&ConnectError> for Outcome {
    fn from(e: &ConnectError) -> Self {
        match e {
            ConnectError::Failed(io) => Outcome::ConnectFailed(io.into()),
            ConnectError::TimedOut => Outcome::ConnectTimedOut,
            ConnectError::Tls(io) | ConnectError::Proxy(io) => Outcome::ConnectFailed(io.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_before() {
        assert_eq!(Outcome::Status(500).to_string(), "status 500");
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            Outcome::ConnectFailed(IoCause::from(&refused)).to_string(),
            format!("connect failed: {refused}")
        );
        assert_eq!(Outcome::ConnectTimedOut.to_string(), "connect timed out");
    }

    #[test]
    fn fulcrums_own_fd_exhaustion_is_not_the_servers_failure() {
        let cause =
            |n| Outcome::ConnectFailed(IoCause::from(&std::io::Error::from_raw_os_error(n)));
        assert!(cause(rustix::io::Errno::MFILE.raw_os_error()).is_local_fd_exhaustion());
        assert!(cause(rustix::io::Errno::NFILE.raw_os_error()).is_local_fd_exhaustion());
        assert!(!cause(rustix::io::Errno::CONNREFUSED.raw_os_error()).is_local_fd_exhaustion());
        assert!(!Outcome::ConnectTimedOut.is_local_fd_exhaustion());
    }

    #[test]
    fn ejections_grow_and_are_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(ejection_duration(base, 1), base);
        assert_eq!(ejection_duration(base, 3), base * 3);
        assert_eq!(ejection_duration(base, 50), base * 10);
    }
}

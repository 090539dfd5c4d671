//! Agent feedback: a health check answer's `fulcrum-agent` header lets a server report its
//! own pressure before it falls over. `weight=N%` scales its share to N % of its weight
//! (0 % drains it), `drain` stops new requests while the header says so (like maintenance
//! without an expiry; requests in flight finish), `ready` or no header restores it.
//!
//! The request path reads two atomics (through the snapshot that [`super::Backend::rebuild`]
//! builds from them); the last value, for status, sits behind a lock only the health
//! checker and the admin plane take.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The response header a server's agent answers in.
pub const HEADER: &str = "fulcrum-agent";

/// What one `fulcrum-agent` value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Full share, in rotation.
    Ready,
    /// Out of rotation for new requests.
    Drain,
    /// This percentage of the configured weight (1..=100).
    Weight(u32),
}

/// Reads a header value; `None` for one that means nothing (it is ignored).
pub fn parse(value: &str) -> Option<Ask> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("ready") {
        return Some(Ask::Ready);
    }
    if v.eq_ignore_ascii_case("drain") {
        return Some(Ask::Drain);
    }
    let n = v
        .strip_prefix("weight=")
        .or_else(|| v.strip_prefix("WEIGHT="))?
        .trim()
        .strip_suffix('%')?
        .trim()
        .parse::<u32>()
        .ok()?;
    match n {
        0 => Some(Ask::Drain),
        1..=100 => Some(Ask::Weight(n)),
        _ => None,
    }
}

/// One server's agent state.
#[derive(Debug)]
pub struct AgentState {
    /// Share of the configured weight, in percent (100 without an agent).
    percent: AtomicU32,
    drained: AtomicBool,
    /// The last header value as the server sent it; `None`: no header.
    last: Mutex<Option<String>>,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            percent: AtomicU32::new(100),
            drained: AtomicBool::new(false),
            last: Mutex::new(None),
        }
    }
}

/// What changed after an answer, for the log and the events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub drained_before: bool,
    pub drained_now: bool,
    pub percent_before: u32,
    pub percent_now: u32,
}

impl AgentState {
    /// Whether the agent keeps the server out of rotation.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// The share of the weight the agent allows, as a factor in `(0, 1]`.
    pub fn factor(&self) -> f64 {
        f64::from(self.percent.load(Ordering::Acquire)) / 100.0
    }

    /// The last `fulcrum-agent` value, for status.
    pub fn last(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Plain data, valid even if a holder panicked.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one check answer's header (`None`: the answer had none, which restores the
    /// server). Returns what changed in rotation or share, if anything did.
    pub fn apply(&self, value: Option<&str>) -> Option<Change> {
        *self.lock() = value.map(str::to_string);
        let ask = match value {
            None => Ask::Ready,
            Some(v) => match parse(v) {
                Some(a) => a,
                None => {
                    tracing::debug!("ignoring `{HEADER}: {v}`: not ready, drain or weight=N%");
                    return None;
                }
            },
        };
        let (drain, percent) = match ask {
            Ask::Ready => (false, 100),
            Ask::Drain => (true, self.percent.load(Ordering::Acquire)),
            Ask::Weight(n) => (false, n),
        };
        let drained_before = self.drained.swap(drain, Ordering::AcqRel);
        let percent_before = self.percent.swap(percent, Ordering::AcqRel);
        let change = Change {
            drained_before,
            drained_now: drain,
            percent_before,
            percent_now: percent,
        };
        (drained_before != drain || percent_before != percent).then_some(change)
    }
}

/// Applies what one check answer's agent said to `server`: a change of rotation or share
/// is logged at WARN, rebuilds the backend's snapshot (so selection sees it), and a drain
/// and its end are announced as `maintenance_started` / `maintenance_ended` (an agent's
/// drain is maintenance without an expiry; no event kind of its own exists).
pub fn feedback(backend: &super::Backend, server: &super::Server, value: Option<&str>) {
    let Some(change) = server.agent.apply(value) else {
        return;
    };
    let said = value.map_or_else(
        || "no agent header".to_string(),
        |v| format!("`{HEADER}: {v}`"),
    );
    let who = server.full_name();
    let kind = match (change.drained_before, change.drained_now) {
        (false, true) => Some(crate::events::EventKind::MaintenanceStarted),
        (true, false) => Some(crate::events::EventKind::MaintenanceEnded),
        _ => None,
    };
    let detail = if change.drained_now {
        format!(
            "{} drained by its agent ({said}): no new requests",
            server.address
        )
    } else {
        format!(
            "{} now takes {}% of its weight, as its agent asks ({said})",
            server.address, change.percent_now
        )
    };
    tracing::warn!(server = %who, "{detail}");
    backend.rebuild();
    if let Some(kind) = kind {
        backend.events().publish(crate::events::Event::new(
            kind,
            Some(&backend.name),
            Some(&server.name),
            detail,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_forms() {
        assert_eq!(parse("ready"), Some(Ask::Ready));
        assert_eq!(parse(" Drain "), Some(Ask::Drain));
        assert_eq!(parse("weight=50%"), Some(Ask::Weight(50)));
        assert_eq!(parse("weight=0%"), Some(Ask::Drain));
        assert_eq!(parse("weight=101%"), None);
        assert_eq!(parse("weight=50"), None);
        assert_eq!(parse("maybe"), None);
    }

    #[test]
    fn applies_and_reports_changes_once() {
        let a = AgentState::default();
        assert_eq!(a.apply(None), None);
        let c = a.apply(Some("weight=25%")).unwrap();
        assert_eq!((c.percent_before, c.percent_now), (100, 25));
        assert_eq!(a.apply(Some("weight=25%")), None);
        assert!((a.factor() - 0.25).abs() < 1e-9);
        assert!(a.apply(Some("drain")).unwrap().drained_now);
        assert!(a.is_drained());
        assert_eq!(a.last().as_deref(), Some("drain"));
        let c = a.apply(None).unwrap();
        assert!(c.drained_before && !c.drained_now);
        assert_eq!(a.last(), None);
        assert!((a.factor() - 1.0).abs() < 1e-9);
    }
}

//! The layout of fulcrum's keys under `[cluster] prefix` and the JSON of their values.
//!
//! Pure functions only (no etcd), so the layout and every malformed-value path are unit
//! tested. A value that does not parse is reported with its key by the caller and ignored:
//! another program (or an older fulcrum) writing under the prefix must never crash one.
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `P/maintenance/B/S` | [`WindowValue`] | none |
//! | `P/weight/B/S` | [`WeightValue`] | none |
//! | `P/reminded/B/S` | unix milliseconds of the last reminder sent | none |
//! | `P/instances/NAME` | [`Record`] | the instance's |
//! | `P/leader` | the leader's name | the leader's |
//! | `P/outbox/ID` | [`OutboxEntry`]: an alert not yet sent | none |
//! | `P/sent/ID` | empty: the alert ID was sent | one hour |

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventKind};

/// The key builder for one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is, when fulcrum reads it back from a watch or a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Window {
        backend: String,
        server: String,
    },
    Weight {
        backend: String,
        server: String,
    },
    /// Instance records, the leader, the outbox and the marks: read by the tasks that own
    /// them, not applied to servers.
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The whole prefix, with its trailing `/` (what a watch or range of everything uses).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn window(&self, backend: &str, server: &str) -> String {
        format!("{}/maintenance/{backend}/{server}", self.prefix)
    }

    pub fn windows(&self) -> String {
        format!("{}/maintenance/", self.prefix)
    }

    pub fn weight(&self, backend: &str, server: &str) -> String {
        format!("{}/weight/{backend}/{server}", self.prefix)
    }

    pub fn reminded(&self, backend: &str, server: &str) -> String {
        format!("{}/reminded/{backend}/{server}", self.prefix)
    }

    pub fn reminders(&self) -> String {
        format!("{}/reminded/", self.prefix)
    }

    pub fn instance(&self, name: &str) -> String {
        format!("{}/instances/{name}", self.prefix)
    }

    pub fn instances(&self) -> String {
        format!("{}/instances/", self.prefix)
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    pub fn outbox(&self, id: &str) -> String {
        format!("{}/outbox/{id}", self.prefix)
    }

    pub fn outboxes(&self) -> String {
        format!("{}/outbox/", self.prefix)
    }

    pub fn sent(&self, id: &str) -> String {
        format!("{}/sent/{id}", self.prefix)
    }

    /// What `key` is; `None` when it is not under this prefix or not one of fulcrum's
    /// shapes (a `maintenance/` key without both a backend and a server, say).
    pub fn kind(&self, key: &str) -> Option<Kind> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let pair = |tail: &str| {
            let (b, s) = tail.split_once('/')?;
            (!b.is_empty() && !s.is_empty() && !s.contains('/'))
                .then(|| (b.to_string(), s.to_string()))
        };
        if let Some(tail) = rest.strip_prefix("maintenance/") {
            let (backend, server) = pair(tail)?;
            return Some(Kind::Window { backend, server });
        }
        if let Some(tail) = rest.strip_prefix("weight/") {
            let (backend, server) = pair(tail)?;
            return Some(Kind::Weight { backend, server });
        }
        Some(Kind::Other)
    }

    /// The `B/S` of a `reminded/B/S` key.
    pub fn reminded_of(&self, key: &str) -> Option<(String, String)> {
        let tail = key.strip_prefix(&self.reminders())?;
        let (b, s) = tail.split_once('/')?;
        Some((b.to_string(), s.to_string()))
    }
}

/// A maintenance window as stored: wall-clock times, because every instance has its own
/// monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowValue {
    pub since: String,
    pub until: String,
    #[serde(default)]
    pub reason: String,
}

/// A window whose times are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedWindow {
    pub since: SystemTime,
    pub until: SystemTime,
    pub reason: String,
}

impl SharedWindow {
    pub fn encode(&self) -> String {
        let v = WindowValue {
            since: humantime::format_rfc3339_millis(self.since).to_string(),
            until: humantime::format_rfc3339_millis(self.until).to_string(),
            reason: self.reason.clone(),
        };
        serde_json::to_string(&v).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<SharedWindow, String> {
        let v: WindowValue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let time = |t: &str| humantime::parse_rfc3339(t).map_err(|e| format!("`{t}`: {e}"));
        let w = SharedWindow {
            since: time(&v.since)?,
            until: time(&v.until)?,
            reason: v.reason,
        };
        if w.until < w.since {
            return Err("`until` is before `since`".into());
        }
        Ok(w)
    }
}

/// A run-time weight as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightValue {
    pub weight: u32,
}

impl WeightValue {
    pub fn encode(self) -> String {
        serde_json::to_string(&self).unwrap_or_default()
    }

    /// The weight, refused outside `1..=max`.
    pub fn decode(bytes: &[u8], max: u32) -> Result<u32, String> {
        let v: WeightValue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(1..=max).contains(&v.weight) {
            return Err(format!("weight {} is not between 1 and {max}", v.weight));
        }
        Ok(v.weight)
    }
}

/// One instance as it describes itself (`GET /api/v1/cluster`), refreshed every second
/// under its lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// Its admin API, `IP:port`.
    pub admin: String,
    pub version: String,
    /// When it last wrote this record (RFC 3339).
    pub last_seen: String,
    /// Healthy primaries per backend, as its own health checks see them.
    pub healthy_primaries: BTreeMap<String, u32>,
    /// Servers it sees out of service (down or ejected) per backend: what shows a server
    /// one instance sees down and another up (a split view).
    #[serde(default)]
    pub down: BTreeMap<String, Vec<String>>,
}

impl Record {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// An alert waiting in etcd for the leader to send it. Written in the same transaction as
/// the change it announces, so a change is never made without its alert, and removed (with
/// a `sent/` mark) only after the leader posted it: a leader that dies midway leaves it for
/// the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub event: String,
    pub backend: Option<String>,
    pub server: Option<String>,
    pub at: String,
    pub detail: String,
}

impl OutboxEntry {
    pub fn of(e: &Event) -> OutboxEntry {
        OutboxEntry {
            event: e.event.name().to_string(),
            backend: e.backend.clone(),
            server: e.server.clone(),
            at: humantime::format_rfc3339_millis(e.at).to_string(),
            detail: e.detail.clone(),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, String> {
        let v: OutboxEntry = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let kind = EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == v.event)
            .ok_or_else(|| format!("no event named `{}`", v.event))?;
        let at = humantime::parse_rfc3339(&v.at).map_err(|e| format!("`{}`: {e}", v.at))?;
        Ok(Event {
            event: kind,
            backend: v.backend,
            server: v.server,
            at,
            detail: v.detail,
        })
    }
}

/// Unix milliseconds, the value of a `reminded/` mark.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time of a `reminded/` mark.
pub fn from_millis(bytes: &[u8]) -> Option<SystemTime> {
    let ms: u64 = std::str::from_utf8(bytes).ok()?.trim().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_kind() {
        let k = Keys::new("/fulcrum/");
        assert_eq!(k.window("b", "s"), "/fulcrum/maintenance/b/s");
        assert_eq!(
            k.kind(&k.window("b", "s")),
            Some(Kind::Window {
                backend: "b".into(),
                server: "s".into()
            })
        );
        assert_eq!(
            k.kind(&k.weight("b", "s")),
            Some(Kind::Weight {
                backend: "b".into(),
                server: "s".into()
            })
        );
        assert_eq!(k.kind(&k.leader()), Some(Kind::Other));
        assert_eq!(k.kind("/fulcrum/maintenance/only-backend"), None);
        assert_eq!(k.kind("/fulcrum/maintenance/b/s/extra"), None);
        assert_eq!(k.kind("/fulcrumx/maintenance/b/s"), None);
        assert_eq!(k.kind("/other/maintenance/b/s"), None);
        assert_eq!(
            k.reminded_of(&k.reminded("b", "s")),
            Some(("b".into(), "s".into()))
        );
    }

    #[test]
    fn values_round_trip_and_malformed_ones_are_errors() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let w = SharedWindow {
            since: t,
            until: t + Duration::from_secs(60),
            reason: "disk".into(),
        };
        assert_eq!(SharedWindow::decode(w.encode().as_bytes()), Ok(w.clone()));
        for bad in [
            &b"not json"[..],
            br#"{"since":"x","until":"y"}"#,
            br#"{"since":"2024-01-01T00:00:00Z","until":"2023-01-01T00:00:00Z"}"#,
            br#"{"since":"2024-01-01T00:00:00Z","until":"2025-01-01T00:00:00Z","x":1}"#,
        ] {
            assert!(SharedWindow::decode(bad).is_err());
        }
        assert_eq!(
            WeightValue::decode(WeightValue { weight: 3 }.encode().as_bytes(), 256),
            Ok(3)
        );
        assert!(WeightValue::decode(br#"{"weight":0}"#, 256).is_err());
        assert!(WeightValue::decode(br#"{"weight":-1}"#, 256).is_err());
        assert!(WeightValue::decode(b"3", 256).is_err());
        let e = Event::new(EventKind::MaintenanceExpired, Some("b"), Some("s"), "gone");
        let back = OutboxEntry::decode(OutboxEntry::of(&e).encode().as_bytes()).unwrap();
        assert_eq!(back.event, EventKind::MaintenanceExpired);
        assert_eq!(back.detail, "gone");
        assert!(OutboxEntry::decode(br#"{"event":"nope","at":"x","detail":""}"#).is_err());
        assert_eq!(from_millis(millis(t).to_string().as_bytes()), Some(t));
        assert_eq!(from_millis(b"x"), None);
    }
}

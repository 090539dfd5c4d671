//! State changes as events on one channel that logs, alerts, metrics and the dashboard all read.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// What happened. The names are part of the outside interface (the README's "Alerts" reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ServerDown,
    ServerUp,
    ServerEjected,
    MaintenanceStarted,
    MaintenanceEnded,
    MaintenanceExpired,
    MaintenanceReminder,
    CapacityLow,
    CapacityRestored,
    BackupActive,
    BackendUnavailable,
    ConfigReloaded,
    ConfigRejected,
    /// DNS discovery added or removed servers (the detail says which).
    DiscoveryChanged,
    /// fulcrum's own memory crossed a `max_memory` threshold (either way).
    Overloaded,
    /// `[cluster]`: a member's lease ended / began (its record went away / appeared).
    InstanceDown,
    InstanceUp,
    /// `[cluster]`: this instance lost / regained its etcd connection.
    ClusterUnavailable,
    ClusterRestored,
    /// A served certificate expires within 14 days, or has expired (at start, reload, daily).
    CertificateExpiring,
}

impl EventKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [EventKind; 20] = [
        EventKind::ServerDown,
        EventKind::ServerUp,
        EventKind::ServerEjected,
        EventKind::MaintenanceStarted,
        EventKind::MaintenanceEnded,
        EventKind::MaintenanceExpired,
        EventKind::MaintenanceReminder,
        EventKind::CapacityLow,
        EventKind::CapacityRestored,
        EventKind::BackupActive,
        EventKind::BackendUnavailable,
        EventKind::ConfigReloaded,
        EventKind::ConfigRejected,
        EventKind::DiscoveryChanged,
        EventKind::Overloaded,
        EventKind::InstanceDown,
        EventKind::InstanceUp,
        EventKind::ClusterUnavailable,
        EventKind::ClusterRestored,
        EventKind::CertificateExpiring,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ServerDown => "server_down",
            EventKind::ServerUp => "server_up",
            EventKind::ServerEjected => "server_ejected",
            EventKind::MaintenanceStarted => "maintenance_started",
            EventKind::MaintenanceEnded => "maintenance_ended",
            EventKind::MaintenanceExpired => "maintenance_expired",
            EventKind::MaintenanceReminder => "maintenance_reminder",
            EventKind::CapacityLow => "capacity_low",
            EventKind::CapacityRestored => "capacity_restored",
            EventKind::BackupActive => "backup_active",
            EventKind::BackendUnavailable => "backend_unavailable",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConfigRejected => "config_rejected",
            EventKind::DiscoveryChanged => "discovery_changed",
            EventKind::Overloaded => "overloaded",
            EventKind::InstanceDown => "instance_down",
            EventKind::InstanceUp => "instance_up",
            EventKind::ClusterUnavailable => "cluster_unavailable",
            EventKind::ClusterRestored => "cluster_restored",
            EventKind::CertificateExpiring => "certificate_expiring",
        }
    }

    /// Events that mean capacity dropped are warnings; the rest are information.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::ServerDown
                | EventKind::ServerEjected
                | EventKind::MaintenanceStarted
                | EventKind::MaintenanceReminder
                | EventKind::CapacityLow
                | EventKind::BackupActive
                | EventKind::BackendUnavailable
                | EventKind::ConfigRejected
                | EventKind::Overloaded
                | EventKind::InstanceDown
                | EventKind::ClusterUnavailable
                | EventKind::CertificateExpiring
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event, in the JSON shape the README's "Alerts" reference fixes.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub backend: Option<String>,
    pub server: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub detail: String,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl Event {
    /// An event stamped now.
    pub fn new(
        event: EventKind,
        backend: Option<&str>,
        server: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Event {
            event,
            backend: backend.map(str::to_string),
            server: server.map(str::to_string),
            at: SystemTime::now(),
            detail: detail.into(),
        }
    }

    /// The JSON text sent to webhooks and the event stream.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// How many events a slow reader may fall behind before it starts missing the oldest.
const BUS_CAPACITY: usize = 1024;

/// The one channel every state change goes through. Publishing never blocks: a reader
/// that lags loses the oldest events (and learns it did), the data path never waits.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
    /// Events published, by kind (index = the kind's position in [`EventKind::ALL`]),
    /// counted here rather than by a reader so a lagging reader cannot lose counts.
    counts: Arc<[AtomicU64; EventKind::ALL.len()]>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Bus {
            tx,
            counts: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Logs the event and sends it to every subscriber.
    pub fn publish(&self, event: Event) {
        let backend = event.backend.as_deref().unwrap_or("-");
        let server = event.server.as_deref().unwrap_or("-");
        if event.event.is_warning() {
            tracing::warn!(event = %event.event, backend, server, "{}", event.detail);
        } else {
            tracing::info!(event = %event.event, backend, server, "{}", event.detail);
        }
        self.counts[event.event as usize].fetch_add(1, Ordering::Relaxed);
        // No subscriber is fine: the log above already has it.
        let _ = self.tx.send(event);
    }

    /// How many events of each kind were published so far (for `fulcrum_events_total`).
    pub fn counts(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL
            .iter()
            .map(|k| (*k, self.counts[*k as usize].load(Ordering::Relaxed)))
    }

    /// A new reader that sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_index_matches_all() {
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        let bus = Bus::new();
        bus.publish(Event::new(EventKind::ConfigRejected, None, None, "x"));
        let n: Vec<_> = bus.counts().filter(|(_, n)| *n > 0).collect();
        assert_eq!(n, vec![(EventKind::ConfigRejected, 1)]);
    }
}

//! The panic guard: when fewer healthy primaries than `min_healthy` remain, fulcrum keeps
//! serving with what there is (it never refuses because capacity is low) and says so loudly:
//! `capacity_low` names every primary out of rotation and why, and `capacity_restored`
//! follows when enough are back. This is the alarm that was missing in the incident, where
//! a server left out "for a test" went unnoticed for a day and a half.

use std::sync::Mutex;

use super::{Health, Snapshot};
use crate::events::{Bus, Event, EventKind};

/// Whether the backend is below `min_healthy`, and at what count it last said so.
///
/// A std `Mutex` (checks come from rebuilds, already serialised; never held across an await).
#[derive(Debug, Default)]
pub struct Capacity {
    /// `Some(healthy)` while low: the count last announced.
    low: Mutex<Option<usize>>,
}

impl Capacity {
    /// Compares `snap` with `min_healthy` and publishes on a change: entering low, dropping
    /// further while low, or recovering.
    pub fn check(&self, backend: &str, min_healthy: u32, snap: &Snapshot, events: &Bus) {
        // Before every server's first check the picture is incomplete; start-up settles it.
        if snap.servers.iter().any(|s| s.health() == Health::Unknown) {
            return;
        }
        let healthy = snap.healthy_primaries();
        let primaries = snap.servers.iter().filter(|s| !s.backup).count();
        let mut low = self.low.lock().unwrap_or_else(|p| p.into_inner());
        let below = healthy < min_healthy as usize;
        match (*low, below) {
            (None, true) => {}
            (Some(last), true) if healthy < last => {}
            (Some(_), false) => {
                *low = None;
                events.publish(Event::new(
                    EventKind::CapacityRestored,
                    Some(backend),
                    None,
                    format!(
                        "{healthy} of {primaries} primaries healthy again (min_healthy {min_healthy})"
                    ),
                ));
                return;
            }
            _ => return,
        }
        *low = Some(healthy);
        let out: Vec<String> = snap
            .servers
            .iter()
            .filter(|s| !s.backup)
            .filter(|s| !snap.candidates.iter().any(|c| c.server.id == s.id))
            .map(|s| format!("{} {}", s.name, s.state()))
            .collect();
        let out = if out.is_empty() {
            String::from("none out of rotation: fewer primaries are configured than min_healthy")
        } else {
            format!("out of rotation: {}", out.join(", "))
        };
        events.publish(Event::new(
            EventKind::CapacityLow,
            Some(backend),
            None,
            format!(
                "only {healthy} of {primaries} primaries healthy (min_healthy {min_healthy}); {out}; \
                 serving with what is left"
            ),
        ));
    }
}

//! Monotonic milliseconds for the per-server timers (ejection, slow start).
//!
//! Read from tokio's clock rather than `std::time::Instant`, so that tests can pause and
//! advance time (`start_paused = true`) and see ejections end and ramps finish at once.

use std::sync::OnceLock;

use tokio::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call; never 0, so that 0 can mean "unset" in an atomic.
pub fn now_ms() -> u64 {
    Instant::now()
        .saturating_duration_since(epoch())
        .as_millis() as u64
        + 1
}

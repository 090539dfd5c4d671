//! Slow start: a server that comes back (after being down, ejected or in maintenance, never at
//! fulcrum's start-up) ramps its effective weight and its `max_connections` linearly from a
//! small fraction to full over `slow_start`, so a cold cache or JIT is not hit by a full share
//! at once.
//!
//! Candidate weights are fixed when the selection structure is built, so while any server
//! ramps a small ticker task rebuilds the backend a few times a second; it ends when no
//! server ramps any more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Backend;
use crate::tasks::Tasks;

/// The share a returning server starts with. Envoy's default minimum weight is 10 % too:
/// low enough to protect a cold server, high enough that it warms up from real traffic.
pub const MIN_FRACTION: f64 = 0.1;

/// While some server ramps, every weight is multiplied by this so that a fraction of a
/// small weight (1 × 10 %) can still be expressed as an integer weight.
pub const WEIGHT_SCALE: u32 = 20;

/// How many rebuilds a ramp takes (one per step), bounded below so short ramps do not spin.
const STEPS: u32 = 20;
const MIN_STEP: Duration = Duration::from_millis(50);

/// The ramp factor in `(0, 1]` at `now_ms` for a ramp that began at `start_ms` and lasts
/// `len_ms`; 1.0 when there is no ramp (start 0) or it is over.
pub fn factor(start_ms: u64, len_ms: u64, now_ms: u64) -> f64 {
    if start_ms == 0 || len_ms == 0 {
        return 1.0;
    }
    let elapsed = now_ms.saturating_sub(start_ms);
    if elapsed >= len_ms {
        return 1.0;
    }
    MIN_FRACTION + (1.0 - MIN_FRACTION) * (elapsed as f64 / len_ms as f64)
}

/// The weight a candidate is built with: `weight × scale × factor`, never below 1 (a
/// weight of 0, set at run time, stays 0).
pub fn effective_weight(weight: u32, factor: f64, scale: u32) -> u32 {
    if weight == 0 {
        return 0;
    }
    let w = f64::from(weight.saturating_mul(scale)) * factor;
    (w.round() as u32).max(1)
}

/// `max_connections` during a ramp, never below 1; 0 (unlimited) stays unlimited.
pub fn effective_max(max: u32, factor: f64) -> u32 {
    if max == 0 || factor >= 1.0 {
        return max;
    }
    ((f64::from(max) * factor).round() as u32).clamp(1, max)
}

/// Starts the ticker for `backend` unless one runs already (`running` is its flag). The
/// ticker is a background task of `tasks`: it ends at shutdown.
pub fn ensure_ticker(backend: Weak<Backend>, running: &AtomicBool, ramp: Duration, tasks: &Tasks) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let step = (ramp / STEPS).max(MIN_STEP);
    let spawned = tasks.spawn_background(async move {
        loop {
            tokio::time::sleep(step).await;
            let Some(b) = backend.upgrade() else { return };
            if !tick(&b) {
                return;
            }
        }
    });
    // Outside a runtime (unit tests of the pure logic) there is nothing to tick.
    if !spawned {
        running.store(false, Ordering::Release);
    }
}

/// One step: rebuild; returns whether to keep ticking.
fn tick(b: &Arc<Backend>) -> bool {
    b.rebuild_without_ticker();
    if b.any_ramping() {
        return true;
    }
    b.ramp_ticker_stopped();
    // A ramp that began between the check and the flag being cleared restarts the ticker.
    if b.any_ramping() && !b.ramp_ticker_claim() {
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_the_minimum() {
        assert_eq!(factor(0, 1000, 500), 1.0, "no ramp");
        assert!((factor(1, 1000, 1) - MIN_FRACTION).abs() < 1e-9);
        assert!((factor(1, 1000, 501) - 0.55).abs() < 1e-9);
        assert_eq!(factor(1, 1000, 1001), 1.0);
        assert_eq!(factor(1, 0, 5), 1.0, "slow_start 0 = off");
    }

    #[test]
    fn weights_and_limits_scale() {
        assert_eq!(effective_weight(1, 0.1, WEIGHT_SCALE), 2);
        assert_eq!(effective_weight(1, 1.0, WEIGHT_SCALE), 20);
        assert_eq!(effective_weight(1, 0.01, 1), 1, "never zero");
        assert_eq!(effective_max(10, 0.1), 1);
        assert_eq!(effective_max(10, 0.55), 6);
        assert_eq!(effective_max(10, 1.0), 10);
        assert_eq!(effective_max(0, 0.1), 0, "unlimited stays unlimited");
    }
}

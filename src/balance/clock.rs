//! The clock selection reads (peak EWMA's ages): monotonic nanoseconds since the process
//! started, or virtual time when the simulator sets it for its thread.
//!
//! Selection code never reads `Instant::now()` itself, so `fulcrum simulate` can drive the
//! very same code in virtual time and get the same answer on every run.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    static VIRTUAL: Cell<Option<u64>> = const { Cell::new(None) };
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on the selection clock.
pub fn now_ns() -> u64 {
    match VIRTUAL.with(Cell::get) {
        Some(t) => t,
        None => EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64,
    }
}

/// Sets (or with `None` clears) this thread's virtual time: the simulator's hook.
pub fn set_virtual(now_ns: Option<u64>) {
    VIRTUAL.with(|v| v.set(now_ns));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_overrides_and_clears() {
        set_virtual(Some(42));
        assert_eq!(now_ns(), 42);
        set_virtual(None);
        let a = now_ns();
        assert!(now_ns() >= a);
    }
}

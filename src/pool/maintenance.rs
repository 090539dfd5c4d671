//! A server's maintenance state: whether an operator took it out of rotation, and the
//! window that says until when. This is what the request path reads (one atomic); starting
//! and ending windows, their expiry, reminders and persistence belong to the running
//! instance (`app::maintenance`), which owns the clock and the state file.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use tokio::time::Instant;

/// One maintenance window.
#[derive(Clone, Debug)]
pub struct Window {
    /// When it started and when it ends, as wall-clock times (shown and persisted).
    pub since: SystemTime,
    pub until: SystemTime,
    /// When it ends on tokio's clock (what the expiry task sleeps on; pausable in tests).
    pub deadline: Instant,
    pub reason: String,
}

/// A server's maintenance state. `on` mirrors whether a window exists, so the request
/// path's eligibility check is one atomic load and never takes the lock.
#[derive(Debug, Default)]
pub struct Maintenance {
    on: AtomicBool,
    window: Mutex<Option<Window>>,
}

impl Maintenance {
    /// Whether the server is out of rotation by hand.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// The current window, if any.
    pub fn window(&self) -> Option<Window> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Window>> {
        // The guarded value is plain data, valid even if a holder panicked.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or replaces) the window.
    pub fn set(&self, w: Window) {
        let mut g = self.lock();
        *g = Some(w);
        self.on.store(true, Ordering::Release);
    }

    /// Ends the window if `due` says so (checked under the lock, so an expiry and a DELETE
    /// or a new window racing each other end it at most once).
    pub fn take_if(&self, due: impl FnOnce(&Window) -> bool) -> Option<Window> {
        let mut g = self.lock();
        if !g.as_ref().is_some_and(due) {
            return None;
        }
        self.on.store(false, Ordering::Release);
        g.take()
    }
}

/// Why a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Ended by hand (`DELETE`, `fulcrum ctl enable`).
    Ended,
    /// The time ran out.
    Expired,
}

//! fulcrum's own pressure: its resident memory against `[global] max_memory`, and its free
//! file descriptors against the reserve (see `fds`). Envoy's overload manager is the model:
//! a monitor measures off the request path, the request path reads one atomic.
//!
//! - at 95 % of `max_memory` fulcrum *sheds*: new requests get 503 `overloaded`;
//! - at 98 % it *pauses*: accept loops take no new connection until memory drops;
//! - each threshold is left 1 % below where it was crossed (94 %, 97 %), so memory
//!   hovering at a threshold does not flap, and every crossing either way is an
//!   `overloaded` event;
//! - accept loops also pause while free fds are under the reserve, so that health checks
//!   and the admin API keep theirs when clients fill the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::ByteSize;
use crate::events::{Bus, Event, EventKind};

/// How often the monitor measures.
pub const INTERVAL: Duration = Duration::from_millis(200);

const SHED: u8 = 1;
const PAUSE: u8 = 2;
const FDS_LOW: u8 = 4;

/// Where memory stands against `max_memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Normal,
    /// New requests are refused (503 `overloaded`).
    Shedding,
    /// New connections wait, and new requests are still refused.
    Pausing,
}

impl Level {
    /// The name in `GET /api/v1/status`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Shedding => "shedding",
            Level::Pausing => "pausing",
        }
    }
}

/// The level for `rss` under `ceiling` (0 = no ceiling), coming from `prev`: thresholds at
/// 95 % and 98 %, each left 1 % lower.
pub fn next_level(rss: u64, ceiling: u64, prev: Level) -> Level {
    if ceiling == 0 {
        return Level::Normal;
    }
    let permille = u128::from(rss) * 1000 / u128::from(ceiling);
    let pause_at = if prev == Level::Pausing { 970 } else { 980 };
    let shed_at = if prev >= Level::Shedding { 940 } else { 950 };
    if permille >= pause_at {
        Level::Pausing
    } else if permille >= shed_at {
        Level::Shedding
    } else {
        Level::Normal
    }
}

/// The shared pressure state: written by the monitor, read by every request and accept.
#[derive(Debug)]
pub struct Overload {
    /// `SHED | PAUSE | FDS_LOW` bits: what the request path and accept loops read.
    flags: AtomicU8,
    /// Resident memory in bytes at the last measurement.
    rss: AtomicU64,
    /// `max_memory` in bytes; 0 = none. Set at start and by each reload.
    ceiling: AtomicU64,
    /// Open fds at the last count, the soft limit, and the reserve kept free.
    open_fds: AtomicU64,
    fd_limit: AtomicU64,
    fd_reserve: AtomicU64,
    /// Woken when accepting may go on.
    room: Notify,
    events: Bus,
}

impl Overload {
    /// No pressure yet; events are published on `events`.
    pub fn new(events: Bus) -> Arc<Self> {
        Arc::new(Overload {
            flags: AtomicU8::new(0),
            rss: AtomicU64::new(0),
            ceiling: AtomicU64::new(0),
            open_fds: AtomicU64::new(0),
            fd_limit: AtomicU64::new(0),
            fd_reserve: AtomicU64::new(0),
            room: Notify::new(),
            events,
        })
    }

    /// Whether new requests are refused with 503 `overloaded`: one relaxed load.
    #[inline]
    pub fn shedding(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & SHED != 0
    }

    /// Whether accept loops wait (memory above 98 %, or free fds under the reserve).
    #[inline]
    pub fn pausing(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (PAUSE | FDS_LOW) != 0
    }

    /// Returns once a new connection may be accepted: at once unless [`pausing`](Self::pausing).
    pub async fn room(&self) {
        while self.pausing() {
            // Woken by the monitor; the timeout covers a wake-up that raced the check.
            let _ = tokio::time::timeout(INTERVAL, self.room.notified()).await;
        }
    }

    /// An accept that failed: out of fds (EMFILE/ENFILE) pauses accepting at once, until
    /// the monitor counts room again.
    pub fn accept_failed(&self, e: &std::io::Error) {
        if crate::fds::is_exhaustion(e) {
            self.flags.fetch_or(FDS_LOW, Ordering::Relaxed);
        }
    }

    /// Sets `max_memory` (start, reload); the next measurement applies it.
    pub fn set_ceiling(&self, max_memory: Option<ByteSize>) {
        self.ceiling
            .store(max_memory.map_or(0, ByteSize::get), Ordering::Relaxed);
    }

    /// Sets the fd limit and the reserve the accept loops keep free (at start).
    pub fn set_fd_budget(&self, limit: u64, reserve: u64) {
        self.fd_limit.store(limit, Ordering::Relaxed);
        self.fd_reserve.store(reserve, Ordering::Relaxed);
    }

    /// Resident memory at the last measurement, in bytes (0 before the first).
    pub fn resident_bytes(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// `max_memory` in bytes, if set.
    pub fn ceiling(&self) -> Option<u64> {
        Some(self.ceiling.load(Ordering::Relaxed)).filter(|c| *c > 0)
    }

    /// Open fds at the last count (0 before the first).
    pub fn open_fds(&self) -> u64 {
        self.open_fds.load(Ordering::Relaxed)
    }

    /// Where memory stands now.
    pub fn level(&self) -> Level {
        let f = self.flags.load(Ordering::Relaxed);
        if f & PAUSE != 0 {
            Level::Pausing
        } else if f & SHED != 0 {
            Level::Shedding
        } else {
            Level::Normal
        }
    }

    /// Whether accepting is paused because free fds are under the reserve.
    pub fn fds_low(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & FDS_LOW != 0
    }

    /// The monitor: measures every [`INTERVAL`] on the blocking pool (procfs reads stay off
    /// the runtime's threads) and applies what it finds. Runs until shutdown.
    pub async fn run(self: Arc<Self>) {
        let page = rustix::param::page_size() as u64;
        let mut tick: u64 = 0;
        loop {
            // fds are counted every second while far from the limit (the count costs a
            // directory read that grows with it), every tick when close or short.
            let limit = self.fd_limit.load(Ordering::Relaxed);
            let close = self.fds_low() || self.open_fds() * 2 > limit;
            let count_fds = limit > 0 && (close || tick.is_multiple_of(5));
            let measured = tokio::task::spawn_blocking(move || measure(page, count_fds)).await;
            match measured {
                Ok((rss, fds)) => {
                    if let Some(rss) = rss {
                        self.apply_memory(rss);
                    }
                    if let Some(open) = fds {
                        self.apply_fds(open);
                    }
                }
                Err(e) => tracing::warn!("the memory monitor's measurement did not return: {e}"),
            }
            tick = tick.wrapping_add(1);
            tokio::time::sleep(INTERVAL).await;
        }
    }

    /// Applies one memory measurement: flags, events.
    pub fn apply_memory(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
        let ceiling = self.ceiling.load(Ordering::Relaxed);
        let prev = self.level();
        let next = next_level(rss, ceiling, prev);
        if next == prev {
            return;
        }
        let mut set = 0;
        if next >= Level::Shedding {
            set |= SHED;
        }
        if next == Level::Pausing {
            set |= PAUSE;
        }
        let _ = self
            .flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                Some((f & !(SHED | PAUSE)) | set)
            });
        if next < Level::Pausing {
            self.room.notify_waiters();
        }
        self.announce(prev, next, rss, ceiling);
    }

    /// Applies one fd count: pauses accepting under the reserve, resumes above it.
    fn apply_fds(&self, open: u64) {
        self.open_fds.store(open, Ordering::Relaxed);
        let limit = self.fd_limit.load(Ordering::Relaxed);
        let reserve = self.fd_reserve.load(Ordering::Relaxed);
        let low = limit.saturating_sub(open) < reserve;
        let was = self.fds_low();
        if low {
            self.flags.fetch_or(FDS_LOW, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!FDS_LOW, Ordering::Relaxed);
            self.room.notify_waiters();
        }
        match (was, low) {
            (false, true) => tracing::warn!(
                "{open} of {limit} file descriptors open: fewer than {reserve} free, \
                 client connections wait so that health checks and the admin API keep working"
            ),
            (true, false) => {
                tracing::info!("{open} of {limit} file descriptors open: accepting clients again")
            }
            _ => {}
        }
    }

    /// One `overloaded` event per threshold crossed, in the order they were crossed.
    fn announce(&self, prev: Level, next: Level, rss: u64, ceiling: u64) {
        let (rss, max) = (mib(rss), ByteSize(ceiling));
        let say = |detail: String| {
            self.events
                .publish(Event::new(EventKind::Overloaded, None, None, detail));
        };
        if prev < Level::Shedding && next >= Level::Shedding {
            say(format!(
                "resident memory {rss} is above 95 % of max_memory {max}: new requests get 503 overloaded"
            ));
        }
        if prev < Level::Pausing && next == Level::Pausing {
            say(format!(
                "resident memory {rss} is above 98 % of max_memory {max}: new connections wait"
            ));
        }
        if prev == Level::Pausing && next < Level::Pausing {
            say(format!(
                "resident memory {rss} is below 97 % of max_memory {max}: accepting new connections again"
            ));
        }
        if prev >= Level::Shedding && next == Level::Normal {
            let of = if ceiling == 0 {
                "no max_memory is set any more".to_string()
            } else {
                format!("below 94 % of max_memory {max}")
            };
            say(format!(
                "resident memory {rss} is {of}: new requests are served again"
            ));
        }
    }
}

/// Bytes as MiB with one decimal, for event details.
fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / f64::from(1 << 20))
}

/// Resident memory (from `/proc/self/statm`, counted in pages) and, when asked, open fds.
/// Blocking: runs on the blocking pool.
fn measure(page: u64, count_fds: bool) -> (Option<u64>, Option<u64>) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages.saturating_mul(page));
    let fds = count_fds.then(crate::fds::open_count).and_then(Result::ok);
    (rss, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_crossed_at_95_and_98_and_left_1_percent_lower() {
        use Level::*;
        let at = |permille: u64, prev| next_level(permille, 1000, prev);
        assert_eq!(at(949, Normal), Normal);
        assert_eq!(at(950, Normal), Shedding);
        assert_eq!(at(980, Normal), Pausing);
        assert_eq!(at(945, Shedding), Shedding);
        assert_eq!(at(939, Shedding), Normal);
        assert_eq!(at(975, Pausing), Pausing);
        assert_eq!(at(969, Pausing), Shedding);
        assert_eq!(at(100, Pausing), Normal);
        assert_eq!(
            next_level(u64::MAX, 0, Pausing),
            Normal,
            "no ceiling, no pressure"
        );
    }

    #[test]
    fn each_crossing_is_one_event_and_flags_follow() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let o = Overload::new(bus);
        o.set_ceiling(Some(ByteSize(1000)));
        o.apply_memory(990);
        assert!(o.shedding() && o.pausing());
        o.apply_memory(960);
        assert!(o.shedding() && !o.pausing());
        o.apply_memory(10);
        assert!(!o.shedding() && !o.pausing());
        let details: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .inspect(|e| assert_eq!(e.event, EventKind::Overloaded))
            .map(|e| e.detail)
            .collect();
        assert_eq!(details.len(), 4, "{details:?}");
        assert!(details[0].contains("above 95 %"));
        assert!(details[1].contains("above 98 %"));
        assert!(details[2].contains("below 97 %"));
        assert!(details[3].contains("served again"));
    }

    #[test]
    fn free_fds_under_the_reserve_pause_accepting() {
        let o = Overload::new(Bus::new());
        o.set_fd_budget(256, 34);
        o.apply_fds(200);
        assert!(!o.pausing());
        o.apply_fds(230);
        assert!(o.pausing() && !o.shedding());
        o.apply_fds(100);
        assert!(!o.pausing());
        o.accept_failed(&std::io::Error::from_raw_os_error(
            rustix::io::Errno::MFILE.raw_os_error(),
        ));
        assert!(o.pausing());
    }
}

//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard limit at start, and the
//! budget that keeps a full fd table from being taken for dead servers.
//!
//! Every client connection may cost two fds (its own and one to a server). If the limit
//! cannot hold `[global] max_connections` of them plus what fulcrum needs besides (its
//! listeners, one health-check connection per server, webhooks, a few admin connections
//! and its own files), the client limit is lowered to what fits, and `run`, `check` and
//! `GET /api/v1/status` say so. What is left over is the reserve: health checks and the
//! admin API keep working while clients fill their share (HAProxy derives its `maxconn`
//! from the fd limit the same way).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// fds fulcrum itself holds whatever the load: standard streams, the runtime's epoll and
/// wake-up fds, the signal pipe, log and state files, resolver sockets.
const BASE: u64 = 32;
/// Admin connections that must stay possible when clients fill their share.
const ADMIN: u64 = 16;
/// The soft limit asked for when the hard limit is unlimited (Linux's default `nr_open`).
const UNLIMITED_CAP: u64 = 1 << 20;

/// The fd limit and what it allows; computed once at start (the limit is process-wide).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdBudget {
    /// The soft limit found at start.
    pub soft_limit_at_start: u64,
    /// The soft limit in effect (raised to the hard limit when allowed).
    pub fd_limit: u64,
    /// The hard limit; `None` = unlimited.
    pub hard_limit: Option<u64>,
    /// fds needed for `max_connections` clients (two each) and everything else.
    pub fds_needed: u64,
    /// `[global] max_connections` as configured.
    pub max_connections: usize,
    /// Client connections accepted at once: `max_connections`, or less when the limit
    /// cannot hold them.
    pub effective_max_connections: usize,
    /// Free fds below which the client accept loops pause, so that health checks and the
    /// admin API still get theirs.
    pub fd_reserve: u64,
}

impl FdBudget {
    /// The budget of `config` under a soft limit `limit`; pure.
    pub fn plan(config: &Config, soft_limit_at_start: u64, limit: u64, hard: Option<u64>) -> Self {
        let servers: usize = config.backends.values().map(|b| b.servers.len()).sum();
        // Per worker: one socket per frontend, its reactor's epoll and wake-up fds; plus
        // the admin listener.
        let workers = crate::workers::wanted(config.global.threads) as u64;
        let listeners = workers * (config.frontends.len() as u64 + 2) + 1;
        let reserve = ADMIN + servers as u64 + config.alerts.webhooks.len() as u64 + 16;
        let fixed = BASE + listeners + reserve;
        let max = config.global.max_connections;
        let needed = fixed.saturating_add((max as u64).saturating_mul(2));
        let fits = usize::try_from(limit.saturating_sub(fixed) / 2).unwrap_or(usize::MAX);
        FdBudget {
            soft_limit_at_start,
            fd_limit: limit,
            hard_limit: hard,
            fds_needed: needed,
            max_connections: max,
            effective_max_connections: max.min(fits).max(1),
            fd_reserve: reserve,
        }
    }

    /// What an operator must hear when the limit lowers the client limit.
    pub fn warning(&self) -> Option<String> {
        (self.effective_max_connections < self.max_connections).then(|| {
            format!(
                "the open files limit ({}) cannot hold max_connections = {} (two fds each, \
                 {} fds in all with servers, checks and admin): at most {} client connections \
                 are accepted at once; raise the limit (LimitNOFILE= in systemd, ulimit -n) \
                 to {} or lower max_connections",
                self.fd_limit,
                self.max_connections,
                self.fds_needed,
                self.effective_max_connections,
                self.fds_needed
            )
        })
    }
}

impl fmt::Display for FdBudget {
    /// The `check` summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hard = self
            .hard_limit
            .map_or_else(|| "unlimited".to_string(), |h| h.to_string());
        write!(
            f,
            "open files limit {} (soft {} at start, hard {hard}): ",
            self.fd_limit, self.soft_limit_at_start
        )?;
        match self.warning() {
            Some(w) => write!(f, "WARNING: {w}"),
            None => write!(
                f,
                "holds max_connections = {} ({} fds needed)",
                self.max_connections, self.fds_needed
            ),
        }
    }
}

/// The soft and hard `RLIMIT_NOFILE` now (`None` = unlimited).
fn limits() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (l.current, l.maximum)
}

/// The soft limit `run` will reach: the hard limit (capped when unlimited).
fn target(hard: Option<u64>) -> u64 {
    hard.unwrap_or(UNLIMITED_CAP)
}

/// Raises the soft limit to the hard limit, then plans `config`'s budget under the result.
/// Two system calls, no file: safe to call on a runtime thread.
pub fn raise_and_plan(config: &Config) -> FdBudget {
    let (soft, hard) = limits();
    let before = soft.unwrap_or(UNLIMITED_CAP);
    let want = target(hard);
    if soft.is_some() && before < want {
        let new = rustix::process::Rlimit {
            current: Some(want),
            maximum: hard,
        };
        if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Nofile, new) {
            tracing::warn!("cannot raise the open files limit from {before} to {want}: {e}");
        }
    }
    let now = limits().0.unwrap_or(UNLIMITED_CAP);
    if now > before {
        tracing::info!("open files limit raised from {before} to {now}");
    }
    FdBudget::plan(config, before, now, hard)
}

/// What `run` would plan for `config` here, without changing any limit (for `check`).
pub fn plan_without_raising(config: &Config) -> FdBudget {
    let (soft, hard) = limits();
    let before = soft.unwrap_or(UNLIMITED_CAP);
    FdBudget::plan(config, before, before.max(target(hard)), hard)
}

/// Open fds of this process, counted in `/proc/self/fd`. Blocking (a directory read that
/// grows with the count): only for a blocking-pool thread.
pub fn open_count() -> std::io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Whether `e` means fulcrum itself is out of fds (EMFILE: this process; ENFILE: the
/// system), rather than anything about the peer.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    let errno = e.raw_os_error();
    errno == Some(rustix::io::Errno::MFILE.raw_os_error())
        || errno == Some(rustix::io::Errno::NFILE.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize) -> Config {
        let text = format!(
            "[global]\nthreads = 1\nmax_connections = {max_connections}\n\
             [[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backends.b.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
             [[backends.b.servers]]\nname = \"c\"\naddress = \"127.0.0.1:2\"\n"
        );
        crate::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_large_limit_holds_max_connections() {
        let b = FdBudget::plan(&config(20_000), 1024, 1 << 20, Some(1 << 20));
        assert_eq!(b.effective_max_connections, 20_000);
        assert!(b.warning().is_none());
        assert!(b.to_string().contains("holds max_connections = 20000"));
    }

    #[test]
    fn a_small_limit_lowers_the_client_limit_and_keeps_a_reserve() {
        let b = FdBudget::plan(&config(20_000), 256, 256, Some(256));
        // 256 fds: 32 base, one worker's listener, epoll and wake-up fds plus the admin
        // listener, 16 admin + 2 checks + 16 spare kept in reserve.
        assert_eq!(b.fd_reserve, 34);
        assert_eq!(b.effective_max_connections, (256 - 32 - 4 - 34) / 2);
        let w = b.warning().unwrap();
        assert!(w.contains("at most 93 client connections"), "{w}");
        assert!(b.to_string().contains("WARNING"));
    }

    #[test]
    fn an_absurd_limit_still_accepts_one_client() {
        let b = FdBudget::plan(&config(10), 16, 16, Some(16));
        assert_eq!(b.effective_max_connections, 1);
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert!(is_exhaustion(&e(rustix::io::Errno::MFILE.raw_os_error())));
        assert!(is_exhaustion(&e(rustix::io::Errno::NFILE.raw_os_error())));
        assert!(!is_exhaustion(&e(
            rustix::io::Errno::CONNREFUSED.raw_os_error()
        )));
    }
}

//! Running as a `Type=notify` systemd service (`packaging/fulcrum.service`): fulcrum tells the
//! service manager when it is ready, reloading and stopping, keeps a one-line `STATUS=` up to
//! date ("2/2 primaries healthy") and answers the watchdog, all through the `NOTIFY_SOCKET`
//! datagram protocol of sd_notify(3).
//!
//! Without `NOTIFY_SOCKET` in the environment every method here does nothing. Nothing here
//! blocks the runtime: the socket is non-blocking, and a datagram the manager's queue cannot
//! take at once is dropped (the next status or ping follows within one tick).
//!
//! The watchdog keep-alive (`WATCHDOG=1`) is sent by a task on fulcrum's own runtime, at half
//! of `WATCHDOG_USEC`, so a runtime that stops running tasks stops pinging and systemd
//! restarts the process.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;

/// How often the status line is refreshed when no watchdog asks for faster pings.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The longest `STATUS=` text sent; systemd shows it on one line of `systemctl status`.
const STATUS_MAX: usize = 200;

/// fulcrum's side of the service manager's notification socket.
#[derive(Debug)]
pub struct Service {
    /// `None` without `NOTIFY_SOCKET`: every method is then a no-op.
    link: Option<Arc<Link>>,
    /// Ends the status and watchdog task when the service value is dropped (after shutdown,
    /// so the watchdog is answered while connections drain).
    stop: CancellationToken,
}

/// The socket and what the status line says besides health.
#[derive(Debug)]
struct Link {
    socket: UnixDatagram,
    to: SocketAddr,
    /// The outcome of the last reload, shown after the health part of `STATUS=`.
    note: Mutex<Option<String>>,
    /// The last `STATUS=` sent, so that the periodic refresh sends only changes.
    shown: Mutex<String>,
    /// Whether a failed send has been logged (later ones are logged at debug level only).
    warned: AtomicBool,
}

impl Service {
    /// Called once `app::start` has returned, that is once every listener is bound and every
    /// server has had its first health check: sends `READY=1` with the first status line,
    /// and starts the task that refreshes the status and answers the watchdog.
    pub fn ready(app: &Arc<App>) -> Service {
        let stop = CancellationToken::new();
        let link = Link::from_env().map(Arc::new);
        if let Some(link) = &link {
            link.send_with_status("READY=1\n", app);
            let watchdog = watchdog_interval(
                std::env::var_os("WATCHDOG_USEC").as_deref(),
                std::env::var_os("WATCHDOG_PID").as_deref(),
                std::process::id(),
            );
            // A task of the process, not of the instance: it must go on answering the
            // watchdog while shutdown drains connections, when the instance's tasks have
            // been told to stop. It ends when this `Service` is dropped.
            tokio::spawn(keep_alive(
                Arc::clone(link),
                Arc::clone(app),
                watchdog,
                stop.clone(),
            ));
        }
        Service { link, stop }
    }

    /// Before a reload: `RELOADING=1` with the `MONOTONIC_USEC=` that systemd 253 and later
    /// require with it.
    pub fn reloading(&self) {
        if let Some(link) = &self.link {
            link.send(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
                monotonic_usec()
            ));
        }
    }

    /// After a reload, applied or rejected: `READY=1` (the old configuration serves on when
    /// the new one was rejected) and a status line that says which.
    pub fn reloaded(&self, app: &Arc<App>, outcome: &Result<String, crate::app::ReloadError>) {
        let Some(link) = &self.link else { return };
        let note = match outcome {
            Ok(summary) => format!("reloaded: {}", first_line(summary)),
            Err(error) => format!(
                "reload rejected, previous configuration serving: {}",
                first_line(&error.to_string())
            ),
        };
        *link.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
        link.send_with_status("READY=1\n", app);
    }

    /// At SIGTERM/SIGINT, before draining: `STOPPING=1`.
    pub fn stopping(&self) {
        if let Some(link) = &self.link {
            link.send("STOPPING=1\nSTATUS=shutting down: draining in-flight requests");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Link {
    /// The socket named by `NOTIFY_SOCKET`, if any: a path, or `@name` for an abstract one.
    fn from_env() -> Option<Link> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let made = notify_address(&name).and_then(|to| {
            let socket = UnixDatagram::unbound()?;
            socket.set_nonblocking(true)?;
            Ok(Link {
                socket,
                to,
                note: Mutex::new(None),
                shown: Mutex::new(String::new()),
                warned: AtomicBool::new(false),
            })
        });
        match made {
            Ok(link) => Some(link),
            Err(e) => {
                tracing::warn!(
                    "NOTIFY_SOCKET={} cannot be used ({e}); systemd will not hear from fulcrum",
                    name.to_string_lossy()
                );
                None
            }
        }
    }

    /// Sends one notification; never waits.
    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.to) {
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!("cannot notify systemd: {e}");
            } else {
                tracing::warn!("cannot notify systemd ({e}); later failures are logged at debug");
            }
        }
    }

    /// Sends `prefix` (assignments, each ending in a newline) and the status line.
    fn send_with_status(&self, prefix: &str, app: &App) {
        let status = self.status(app);
        self.send(&format!("{prefix}STATUS={status}"));
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The status line: healthy primaries per backend, then the last reload's outcome.
    fn status(&self, app: &App) -> String {
        let backends = app.backends();
        let counts: Vec<(&str, usize, usize)> = backends
            .values()
            .map(|b| {
                let snap = b.snapshot();
                let primaries = snap.servers.iter().filter(|s| !s.backup).count();
                (&*b.name, snap.healthy_primaries(), primaries)
            })
            .collect();
        let note = self.note.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status_line(&counts, note.as_deref())
    }
}

/// Refreshes `STATUS=` when it changes and sends `WATCHDOG=1` at half the watchdog interval.
async fn keep_alive(
    link: Arc<Link>,
    app: Arc<App>,
    watchdog: Option<Duration>,
    stop: CancellationToken,
) {
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ping = if watchdog.is_some() {
            "WATCHDOG=1\n"
        } else {
            ""
        };
        let changed = link.status(&app) != *link.shown.lock().unwrap_or_else(|p| p.into_inner());
        if changed {
            link.send_with_status(ping, &app);
        } else if !ping.is_empty() {
            link.send(ping.trim_end());
        }
    }
}

/// `NOTIFY_SOCKET` as a socket address: a file system path, or `@name` for the abstract
/// namespace.
fn notify_address(name: &OsStr) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match name.as_bytes() {
        [b'@', rest @ ..] => SocketAddr::from_abstract_name(rest),
        [b'/', ..] => SocketAddr::from_pathname(name),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor @abstract",
        )),
    }
}

/// The keep-alive interval systemd asks for (`WATCHDOG_USEC`), unless `WATCHDOG_PID` names
/// another process.
fn watchdog_interval(usec: Option<&OsStr>, pid: Option<&OsStr>, me: u32) -> Option<Duration> {
    let parse = |v: &OsStr| v.to_str()?.trim().parse::<u64>().ok();
    if let Some(pid) = pid
        && parse(pid) != Some(u64::from(me))
    {
        return None;
    }
    usec.and_then(parse)
        .filter(|&u| u > 0)
        .map(Duration::from_micros)
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let micros = u64::try_from(t.tv_nsec / 1_000).unwrap_or(0);
    secs * 1_000_000 + micros
}

/// "2/2 primaries healthy" for one backend, "a 2/2, b 1/3 primaries healthy" for several,
/// then the note.
fn status_line(counts: &[(&str, usize, usize)], note: Option<&str>) -> String {
    let mut line = match counts {
        [(_, up, all)] => format!("{up}/{all} primaries healthy"),
        _ => {
            let each: Vec<String> = counts
                .iter()
                .map(|(name, up, all)| format!("{name} {up}/{all}"))
                .collect();
            format!("{} primaries healthy", each.join(", "))
        }
    };
    if let Some(note) = note {
        line.push_str("; ");
        line.push_str(note);
    }
    shorten(line)
}

/// The first line of a possibly multi-line text, saying how many lines follow.
fn first_line(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("").trim().to_string();
    match lines.count() {
        0 => first,
        n => format!("{first} (and {n} more line(s), see the log)"),
    }
}

/// Cuts a status line to `STATUS_MAX` bytes, on a character boundary.
fn shorten(mut line: String) -> String {
    if line.len() > STATUS_MAX {
        let mut end = STATUS_MAX - 3;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_healthy_primaries() {
        assert_eq!(status_line(&[("b", 2, 2)], None), "2/2 primaries healthy");
        assert_eq!(
            status_line(&[("a", 1, 3), ("b", 2, 2)], Some("reloaded: no change")),
            "a 1/3, b 2/2 primaries healthy; reloaded: no change"
        );
    }

    #[test]
    fn status_is_one_short_line() {
        let note = first_line("f.toml:3:1: key `x`: bad\nf.toml:4:1: key `y`: bad\n");
        assert_eq!(
            note,
            "f.toml:3:1: key `x`: bad (and 1 more line(s), see the log)"
        );
        let long = status_line(&[("b", 0, 1)], Some(&"é".repeat(300)));
        assert!(long.len() <= STATUS_MAX && long.ends_with("..."), "{long}");
        assert!(!long.contains('\n'));
    }

    #[test]
    fn watchdog_interval_honours_its_pid() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval(os("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(os("30000000"), os("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(os("30000000"), os("8"), 7), None);
        assert_eq!(watchdog_interval(os("0"), None, 7), None);
        assert_eq!(watchdog_interval(os("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn notify_socket_is_a_path_or_abstract() {
        use std::os::linux::net::SocketAddrExt;
        let path = notify_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abs = notify_address(OsStr::new("@fulcrum/notify")).unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"fulcrum/notify"[..]));
        assert!(notify_address(OsStr::new("relative")).is_err());
    }

    #[test]
    fn monotonic_clock_is_read() {
        let (a, b) = (monotonic_usec(), monotonic_usec());
        assert!(a > 0 && b >= a);
    }
}

//! The HTTP access log: one line per request, formatted by hand and written by a thread of
//! its own, so that it costs the request path a few hundred instructions and never blocks.
//!
//! Going through `tracing` cost about 20 µs of CPU per request (its field visitors, the
//! `fmt` machinery, ANSI styling, a `String` per event and a channel send); that was as
//! much as the proxying itself. Here a worker thread formats the line into a buffer of its
//! own (digits with `itoa`, the date cached per second), then appends it under a short lock
//! to a shared buffer that a writer thread swaps out and writes to standard output every
//! [`FLUSH_EVERY`] or whenever [`WAKE_AT`] bytes are pending.
//!
//! **Lossy by design**: when more than [`MAX_PENDING`] bytes are waiting (standard output
//! stalls: a full pipe, a slow disk), new lines are dropped and counted, and the writer
//! reports how many with a line of its own. The request path never waits on the log.
//!
//! The log is on for frontends with `access_log = true` (the default), unless `RUST_LOG`
//! disables the `fulcrum::access` target at INFO (e.g. `RUST_LOG=warn`, or
//! `RUST_LOG=info,fulcrum::access=off`), which is checked once at start-up.
//! The line keeps the format `tracing` gave it:
//! `2026-11-25T08:35:59.123456Z  INFO frontend=www client=192.0.2.7:51234 method=GET
//! path=/books status=200 server=web1 duration_ms=0.412 bytes=1234 bytes_in=0 complete=true
//! route=- request_id=4f2a...` (`bytes` to the client, `bytes_in` from it: for a WebSocket
//! tunnel, each way).

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::headers::{push_ip, push_number};

/// Bytes pending beyond which lines are dropped (about 25,000 lines).
pub const MAX_PENDING: usize = 4 << 20;
/// Bytes pending at which the writer is woken before its next periodic flush.
pub const WAKE_AT: usize = 64 << 10;
/// How often the writer flushes whatever is pending.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where lines go: the process-wide sink, set up by [`init`].
static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

struct Sink {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The writer was woken for this batch already.
    woken: bool,
    stop: bool,
}

/// Stops the writer thread and writes what is pending when dropped.
#[derive(Debug)]
pub struct Guard {
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            sink.pending.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            sink.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the writer thread (to standard output) if `enabled`; lines written before, or
/// when not enabled, are discarded. Call once, after the `tracing` subscriber is set.
pub fn init(enabled: bool) -> Guard {
    if !enabled {
        return Guard { thread: None };
    }
    let sink = Arc::new(Sink {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    if SINK.set(Arc::clone(&sink)).is_err() {
        return Guard { thread: None };
    }
    let thread = std::thread::Builder::new()
        .name("fulcrum-log".into())
        .spawn(move || writer(&sink, &mut std::io::stdout()))
        .ok();
    Guard { thread }
}

/// Whether `init` turned the log on: frontends skip gathering the line's facts otherwise.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Lines dropped because standard output could not keep up.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

fn writer(sink: &Sink, out: &mut impl Write) {
    let mut spare = Vec::with_capacity(WAKE_AT * 2);
    let mut reported = 0;
    loop {
        let stop = {
            let mut p = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
            if p.buf.is_empty() && !p.stop {
                p = sink
                    .wake
                    .wait_timeout(p, FLUSH_EVERY)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            std::mem::swap(&mut p.buf, &mut spare);
            p.woken = false;
            p.stop
        };
        if !spare.is_empty() {
            // One `write_all` on `Stdout` holds its lock throughout: the other logs (through
            // `tracing`) interleave between batches of whole lines, never inside a line.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            // A burst may have grown the buffer far beyond the usual batch: give it back.
            if spare.capacity() > MAX_PENDING / 2 {
                spare = Vec::with_capacity(WAKE_AT * 2);
            }
        }
        let dropped = sink.dropped.load(Ordering::Relaxed);
        if dropped != reported {
            let _ = writeln!(
                out,
                "{}  WARN {} access log lines dropped so far: standard output could not keep up",
                Timestamp::now().as_str(),
                dropped
            );
            reported = dropped;
        }
        if stop {
            return;
        }
    }
}

/// The facts of one access log line, gathered as the request goes.
#[derive(Debug)]
pub struct Line {
    pub frontend: Arc<str>,
    pub client: SocketAddr,
    pub method: http::Method,
    /// The request's path (without its query, which may carry secrets).
    pub path: Box<str>,
    pub status: u16,
    pub server: Option<Arc<str>>,
    pub start: Instant,
    /// The request's host, lower-cased, without its port.
    pub host: Box<str>,
    /// The route taken; `None` on a frontend without routes.
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// The client's `x-request-id`, or the one fulcrum made.
    pub request_id: Box<str>,
    /// Request body bytes taken from the client (for a tunnel: bytes client to server).
    pub bytes_in: u64,
    /// From the request's start to the server's response head.
    pub first_byte: Option<Duration>,
    /// `access_log_format = "json"`.
    pub json: bool,
}

/// One line of `access_log_format = "json"`.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    frontend: &'a str,
    client: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    route: Option<&'a str>,
    backend: Option<&'a str>,
    server: Option<&'a str>,
    request_id: &'a str,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    first_byte_ms: Option<f64>,
    complete: bool,
}

thread_local! {
    /// The line being formatted, reused by every request of this thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The date and time to the second, formatted once per second.
    static CLOCK: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

impl Line {
    /// Formats the line and hands it to the writer; drops it when the writer is far behind.
    pub fn write(self, bytes: u64, complete: bool) {
        let Some(sink) = SINK.get() else {
            return;
        };
        let micros = self.start.elapsed().as_micros();
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            self.format(line, micros, bytes, complete);
            let mut p = sink.pending.lock().unwrap_or_else(|p| p.into_inner());
            if p.buf.len() + line.len() > MAX_PENDING {
                drop(p);
                sink.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            p.buf.extend_from_slice(line);
            if p.buf.len() >= WAKE_AT && !p.woken {
                p.woken = true;
                drop(p);
                sink.wake.notify_one();
            }
        });
    }

    fn format(&self, out: &mut Vec<u8>, micros: u128, bytes: u64, complete: bool) {
        if self.json {
            return self.format_json(out, micros, bytes, complete);
        }
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(Timestamp::now().as_str().as_bytes());
        out.extend_from_slice(b"  INFO frontend=");
        out.extend_from_slice(self.frontend.as_bytes());
        out.extend_from_slice(b" client=");
        write_addr(out, self.client);
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" status=");
        out.extend_from_slice(num.format(self.status).as_bytes());
        out.extend_from_slice(b" server=");
        out.extend_from_slice(self.server.as_deref().unwrap_or("-").as_bytes());
        out.extend_from_slice(b" duration_ms=");
        out.extend_from_slice(num.format(micros / 1000).as_bytes());
        let frac = (micros % 1000) as u16;
        out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
        out.extend_from_slice(b" bytes=");
        out.extend_from_slice(num.format(bytes).as_bytes());
        out.extend_from_slice(b" bytes_in=");
        out.extend_from_slice(num.format(self.bytes_in).as_bytes());
        out.extend_from_slice(if complete {
            b" complete=true"
        } else {
            b" complete=false"
        });
        out.extend_from_slice(b" route=");
        out.extend_from_slice(self.route.as_deref().unwrap_or("-").as_bytes());
        out.extend_from_slice(b" request_id=");
        // A client's id is a header value: visible text, which may hold spaces.
        for &b in self.request_id.as_bytes() {
            out.push(if b.is_ascii_graphic() { b } else { b'_' });
        }
        out.push(b'\n');
    }

    fn format_json(&self, out: &mut Vec<u8>, micros: u128, bytes: u64, complete: bool) {
        let now = Timestamp::now();
        let line = JsonLine {
            time: now.as_str(),
            frontend: &self.frontend,
            client: self.client.to_string(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status: self.status,
            route: self.route.as_deref(),
            backend: self.backend.as_deref(),
            server: self.server.as_deref(),
            request_id: &self.request_id,
            bytes_in: self.bytes_in,
            bytes_out: bytes,
            duration_ms: micros as f64 / 1000.0,
            first_byte_ms: self.first_byte.map(|d| d.as_micros() as f64 / 1000.0),
            complete,
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        } else {
            out.clear();
        }
    }
}

/// `a.b.c.d:port` without the formatting machinery; IPv6 through `Display` (rare on the
/// hot path).
fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            push_ip(out, IpAddr::V4(*a.ip()));
            out.push(b':');
            push_number(out, a.port());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), as `tracing`'s default format writes it.
struct Timestamp([u8; 27]);

impl Timestamp {
    fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = d.as_secs();
        let mut ts = [0u8; 27];
        CLOCK.with_borrow_mut(|(cached, text)| {
            if *cached != secs {
                *text = format_seconds(secs);
                *cached = secs;
            }
            ts[..19].copy_from_slice(&text[..]);
        });
        ts[19] = b'.';
        let mut us = d.subsec_micros();
        for i in (20..26).rev() {
            ts[i] = b'0' + (us % 10) as u8;
            us /= 10;
        }
        ts[26] = b'Z';
        Timestamp(ts)
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for Unix seconds (proleptic Gregorian, UTC).
fn format_seconds(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = [0u8; 19];
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y as u64, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[i] = c;
    }
    out
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(&format_seconds(0), b"1970-01-01T00:00:00");
        assert_eq!(&format_seconds(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&format_seconds(1_795_591_559), b"2026-11-25T07:25:59");
        assert_eq!(&format_seconds(4_107_542_399), b"2100-02-28T23:59:59");
    }

    #[test]
    fn line_has_every_field() {
        let line = Line {
            frontend: "www".into(),
            client: "192.0.2.7:51234".parse().unwrap(),
            method: http::Method::GET,
            path: "/books".into(),
            status: 200,
            server: Some("web1".into()),
            start: Instant::now(),
            host: "www.example.com".into(),
            route: Some("site".into()),
            backend: Some("web".into()),
            request_id: "4f2a".into(),
            bytes_in: 10,
            first_byte: Some(Duration::from_micros(2_500)),
            json: false,
        };
        let mut out = Vec::new();
        line.format(&mut out, 12_345, 1234, true);
        let text = String::from_utf8(out).unwrap();
        let (ts, rest) = text.split_at(27);
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert_eq!(
            rest,
            "  INFO frontend=www client=192.0.2.7:51234 method=GET path=/books status=200 \
             server=web1 duration_ms=12.345 bytes=1234 bytes_in=10 complete=true route=site request_id=4f2a\n"
        );
        let json = Line {
            json: true,
            host: "www.example.com".into(),
            route: Some("site".into()),
            backend: Some("web".into()),
            request_id: "4f2a".into(),
            server: Some("web1".into()),
            frontend: "www".into(),
            path: "/books \"x\"".into(),
            start: line.start,
            ..line
        };
        let mut out = Vec::new();
        json.format(&mut out, 12_345, 1234, true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/books \"x\"");
        assert_eq!(v["route"], "site");
        assert_eq!(v["bytes_in"], 10);
        assert_eq!(v["bytes_out"], 1234);
        assert_eq!(v["first_byte_ms"], 2.5);
        assert_eq!(v["duration_ms"], 12.345);
        assert!(out.ends_with(b"}\n"));
        let v6 = Line {
            client: "[2001:db8::1]:443".parse().unwrap(),
            server: None,
            json: false,
            route: None,
            path: "/books".into(),
            ..json
        };
        let mut out = Vec::new();
        v6.format(&mut out, 7, 0, false);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "client=[2001:db8::1]:443 method=GET path=/books status=200 server=- \
                 duration_ms=0.007 bytes=0 bytes_in=10 complete=false route=- request_id=4f2a\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn writer_flushes_and_reports_drops() {
        let sink = Sink {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(3),
        };
        {
            let mut p = sink.pending.lock().unwrap();
            p.buf.extend_from_slice(b"one\ntwo\n");
            p.stop = true;
        }
        let mut out = Vec::new();
        writer(&sink, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("one\ntwo\n"), "{text}");
        assert!(text.contains("3 access log lines dropped"), "{text}");
    }
}

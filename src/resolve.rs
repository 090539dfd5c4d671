//! Every host-name lookup fulcrum makes (server addresses at start, reload and each health
//! check, webhook URLs, validation) goes through here, so that none blocks a runtime thread
//! and each has a time limit: a DNS server that hangs delays only the lookup, never the
//! requests being served (even with `threads = 1`). DNS discovery has its own asynchronous
//! resolver (`discovery`), bounded the same way.
//!
//! - [`resolve`] / [`resolve_within`]: asynchronous; the system resolver runs on the blocking
//!   pool (tokio's `lookup_host`) and the caller stops waiting at the limit.
//! - [`resolve_all_blocking`]: for synchronous callers that are not on the runtime
//!   (validation, which `check`, start-up and a reload's blocking-pool read run): each name on
//!   a helper thread, all at once, one deadline for the lot.
//! - [`LastGood`]: a lookup that fails or times out answers the last address that name had,
//!   for repeated lookups of the same name (webhooks).
//!
//! An IP literal is never looked up.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// How long one name may take to resolve when servers are built (start, reload), a file is
/// validated, or a webhook is called.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a `host:port` gave no socket address. Validation shows it beside the key; start-up
/// and reload refuse the configuration with it.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{address}` needs a port (host:port)")]
    NoPort { address: String },
    /// The lookup succeeded with an empty answer.
    #[error("`{address}` resolves to no address")]
    NoAddress { address: String },
    #[error("`{address}` does not resolve: {source}")]
    Lookup {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The resolver did not answer in time.
    #[error("`{address}` did not resolve within {within:?}")]
    TimedOut { address: String, within: Duration },
}

/// What is left to look up: `Ok` when `address` needs no lookup (an IP literal) or cannot
/// have one (no port).
fn literal(address: &str) -> Option<Result<SocketAddr, ResolveError>> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Some(Ok(addr));
    }
    if !address.contains(':') {
        return Some(Err(ResolveError::NoPort {
            address: address.to_string(),
        }));
    }
    None
}

fn first(
    address: &str,
    found: std::io::Result<impl Iterator<Item = SocketAddr>>,
) -> Result<SocketAddr, ResolveError> {
    match found {
        Ok(mut addrs) => addrs.next().ok_or_else(|| ResolveError::NoAddress {
            address: address.to_string(),
        }),
        Err(source) => Err(ResolveError::Lookup {
            address: address.to_string(),
            source,
        }),
    }
}

/// Resolves `host:port` (an IP or a name) to its first address, within [`RESOLVE_TIMEOUT`].
pub async fn resolve(address: &str) -> Result<SocketAddr, ResolveError> {
    resolve_within(address, RESOLVE_TIMEOUT).await
}

/// Resolves `host:port` to its first address, giving up after `within`.
pub async fn resolve_within(address: &str, within: Duration) -> Result<SocketAddr, ResolveError> {
    bounded(address, within, shared_lookup(address)).await
}

/// A system lookup in flight, which every caller asking for the same name waits on.
type InFlight = Shared<BoxFuture<'static, Result<Vec<SocketAddr>, Arc<std::io::Error>>>>;

/// The system lookups running now, by name.
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, InFlight>>> = LazyLock::new(Default::default);

/// The system resolver's answer for `address`, through one lookup per name at a time: a
/// caller that gives up (its time limit) leaves the lookup running on the blocking pool, so
/// while a DNS server hangs, asking again joins that lookup instead of tying up one more
/// blocking thread at every health check.
async fn shared_lookup(address: &str) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    let lookup = {
        // Plain data: valid even if a holder panicked.
        let mut running = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        running
            .entry(address.to_string())
            .or_insert_with(|| {
                let owned = address.to_string();
                // A task of its own: the lookup ends (and leaves the map) even if every
                // caller has stopped waiting.
                let task = tokio::spawn(async move {
                    let found = tokio::net::lookup_host(owned.as_str())
                        .await
                        .map(|a| a.collect::<Vec<_>>())
                        .map_err(Arc::new);
                    let mut running = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
                    running.remove(&owned);
                    found
                });
                async move {
                    task.await
                        .unwrap_or_else(|e| Err(Arc::new(std::io::Error::other(e))))
                }
                .boxed()
                .shared()
            })
            .clone()
    };
    lookup
        .await
        .map(Vec::into_iter)
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
}

/// `lookup` for `address`, bounded by `within` (the seam the tests use).
async fn bounded<F, I>(
    address: &str,
    within: Duration,
    lookup: F,
) -> Result<SocketAddr, ResolveError>
where
    F: Future<Output = std::io::Result<I>>,
    I: Iterator<Item = SocketAddr>,
{
    if let Some(done) = literal(address) {
        return done;
    }
    match tokio::time::timeout(within, lookup).await {
        Ok(found) => first(address, found),
        Err(_) => Err(ResolveError::TimedOut {
            address: address.to_string(),
            within,
        }),
    }
}

/// Resolves every address of `addresses` at once, each on a thread of its own, and waits at
/// most `within` for all of them; a name still unresolved then is `TimedOut` (its thread is
/// left to finish on its own). Blocks the calling thread: never call it on the runtime.
pub fn resolve_all_blocking(
    addresses: &[&str],
    within: Duration,
) -> Vec<Result<SocketAddr, ResolveError>> {
    all_blocking_with(addresses, within, |a| {
        a.to_socket_addrs().map(|v| v.collect::<Vec<_>>())
    })
}

fn all_blocking_with(
    addresses: &[&str],
    within: Duration,
    lookup: fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> Vec<Result<SocketAddr, ResolveError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out: Vec<Option<Result<SocketAddr, ResolveError>>> = Vec::new();
    let mut waiting = 0;
    for (i, address) in addresses.iter().enumerate() {
        match literal(address) {
            Some(done) => out.push(Some(done)),
            None => {
                out.push(None);
                let (tx, owned) = (tx.clone(), address.to_string());
                let spawned = std::thread::Builder::new()
                    .name("fulcrum-resolve".into())
                    .spawn(move || {
                        let found = lookup(&owned).map(|v| v.into_iter());
                        // The receiver may have stopped waiting: nobody to tell.
                        let _ = tx.send((i, first(&owned, found)));
                    });
                match spawned {
                    Ok(_) => waiting += 1,
                    Err(source) => {
                        out[i] = Some(Err(ResolveError::Lookup {
                            address: address.to_string(),
                            source,
                        }))
                    }
                }
            }
        }
    }
    let deadline = std::time::Instant::now() + within;
    while waiting > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, result)) => {
                out[i] = Some(result);
                waiting -= 1;
            }
            Err(_) => break,
        }
    }
    out.into_iter()
        .zip(addresses)
        .map(|(r, address)| {
            r.unwrap_or_else(|| {
                Err(ResolveError::TimedOut {
                    address: address.to_string(),
                    within,
                })
            })
        })
        .collect()
}

/// The last address each name resolved to, for callers that look the same names up again
/// and again: when a lookup fails or times out, the last good address is used (with a WARN)
/// rather than failing a call the old address would serve.
#[derive(Debug, Default)]
pub struct LastGood {
    known: Mutex<HashMap<String, SocketAddr>>,
}

impl LastGood {
    /// Resolves `address` within `within`; on failure, the address it had last time, if any.
    pub async fn resolve(
        &self,
        address: &str,
        within: Duration,
    ) -> Result<SocketAddr, ResolveError> {
        self.remember(address, resolve_within(address, within).await)
    }

    fn remember(
        &self,
        address: &str,
        result: Result<SocketAddr, ResolveError>,
    ) -> Result<SocketAddr, ResolveError> {
        // Plain data: valid even if a holder panicked.
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(addr) => {
                if address.parse::<SocketAddr>().is_err() {
                    known.insert(address.to_string(), addr);
                }
                Ok(addr)
            }
            Err(e) => match known.get(address) {
                Some(last) => {
                    tracing::warn!("{e}; using its last address {last}");
                    Ok(*last)
                }
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn literals_names_and_mistakes() {
        assert_eq!(
            resolve("127.0.0.1:80").await.unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 80))
        );
        assert!(resolve("localhost:80").await.unwrap().ip().is_loopback());
        assert!(matches!(
            resolve("localhost").await,
            Err(ResolveError::NoPort { .. })
        ));
    }

    /// A resolver that never answers, on the blocking pool as the system resolver runs: the
    /// lookup gives up at its limit, and a single runtime thread keeps running other tasks
    /// meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hanging_lookup_times_out_without_stalling_the_runtime() {
        let ticks = Arc::new(AtomicU64::new(0));
        let t = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let hanging = async {
            tokio::task::spawn_blocking(|| {
                std::thread::sleep(Duration::from_secs(3));
                Ok(Vec::<SocketAddr>::new().into_iter())
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let started = std::time::Instant::now();
        let r = bounded("hangs.example:80", Duration::from_millis(300), hanging).await;
        let took = started.elapsed();
        assert!(matches!(r, Err(ResolveError::TimedOut { .. })), "{r:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(ticks.load(Ordering::SeqCst) >= 10, "the runtime stalled");
        ticker.abort();
    }

    #[test]
    fn blocking_lookups_run_at_once_under_one_deadline() {
        fn hang(_: &str) -> std::io::Result<Vec<SocketAddr>> {
            std::thread::sleep(Duration::from_secs(5));
            Ok(Vec::new())
        }
        let started = std::time::Instant::now();
        let out = all_blocking_with(
            &["a.example:1", "10.0.0.1:2", "b.example:3", "nope"],
            Duration::from_millis(300),
            hang,
        );
        // Two hanging names cost one deadline, not two.
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(out[0], Err(ResolveError::TimedOut { .. })));
        assert_eq!(
            out[1].as_ref().unwrap(),
            &SocketAddr::from(([10, 0, 0, 1], 2))
        );
        assert!(matches!(out[2], Err(ResolveError::TimedOut { .. })));
        assert!(matches!(out[3], Err(ResolveError::NoPort { .. })));
    }

    #[test]
    fn a_failed_lookup_answers_the_last_good_address() {
        let cache = LastGood::default();
        let addr = SocketAddr::from(([192, 0, 2, 7], 443));
        let fail = || ResolveError::TimedOut {
            address: "hooks.example:443".into(),
            within: Duration::from_secs(1),
        };
        // Never resolved: the failure stands.
        assert!(cache.remember("hooks.example:443", Err(fail())).is_err());
        assert_eq!(cache.remember("hooks.example:443", Ok(addr)).unwrap(), addr);
        assert_eq!(
            cache.remember("hooks.example:443", Err(fail())).unwrap(),
            addr
        );
        // A newer answer replaces it.
        let moved = SocketAddr::from(([192, 0, 2, 8], 443));
        assert_eq!(
            cache.remember("hooks.example:443", Ok(moved)).unwrap(),
            moved
        );
        assert_eq!(
            cache.remember("hooks.example:443", Err(fail())).unwrap(),
            moved
        );
    }
}

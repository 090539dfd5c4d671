//! `threads > 1`: one single-threaded tokio runtime per thread, each with its own listening
//! socket per frontend (`SO_REUSEPORT`: the kernel spreads new connections over them) and
//! its own idle upstream connections, so a request never crosses threads: no work-stealing
//! queue, no cross-thread wake-up, no socket driven by another thread's reactor.
//!
//! Worker 0 is the runtime fulcrum was started on (it also runs the admin plane, health
//! checks and reloads); the others are threads started here, each running until
//! [`Workers::stop`]. Tasks spawned on any of them are tracked by the one `Tasks`, so
//! graceful shutdown waits for every connection wherever it runs.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How many workers this process runs: read by whatever keeps one item per worker (each
/// server's idle connections), set once when the workers start.
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The number of workers (1 until [`Workers::start`] started more).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed).max(1)
}

/// The index of the worker running on this thread (0 off the worker threads).
pub fn current() -> usize {
    INDEX.get()
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

/// How many workers `threads` asks for: 0 is one per core.
pub fn wanted(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

impl Workers {
    /// Worker 0 is the current runtime; `wanted(threads) - 1` threads are started beside it.
    /// A thread that cannot start leaves fewer workers (said in a WARN), never none.
    pub fn start(threads: usize) -> Workers {
        let stop = CancellationToken::new();
        let mut handles = vec![Handle::current()];
        for i in 1..wanted(threads) {
            match start_one(i, stop.clone()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    tracing::warn!("cannot start worker thread {i}: {e}; running with {i}");
                    break;
                }
            }
        }
        COUNT.fetch_max(handles.len(), Ordering::Relaxed);
        Workers { handles, stop }
    }

    /// One handle per worker, worker 0 first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Lets the worker threads end (whatever they still run is dropped with them).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start_one(index: usize, stop: CancellationToken) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("fulcrum-{index}"))
        .spawn(move || {
            INDEX.set(index);
            rt.block_on(stop.cancelled());
        })?;
    Ok(handle)
}

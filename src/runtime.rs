//! The process around a running fulcrum: the tokio runtime, logging, signals, and the one
//! place that composes an instance with its admin plane (the admin plane sits above `app`,
//! so `app` cannot start it itself).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{self, App};
use crate::config::Config;

/// Why fulcrum could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    App(#[from] app::StartError),
    /// The admin token could not be read or created.
    #[error(transparent)]
    Token(#[from] crate::admin::token::TokenError),
    #[error(transparent)]
    Admin(#[from] app::BindError),
    /// A worker thread that reads files did not come back.
    #[error("starting was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Handles to a started fulcrum.
#[derive(Debug)]
pub struct Running {
    pub app: Arc<App>,
    /// The address each frontend listened on at start, by name (useful when binding port 0;
    /// [`App::frontend_addrs`] follows reloads).
    pub frontends: BTreeMap<String, SocketAddr>,
    pub admin: SocketAddr,
    grace: Duration,
}

impl Running {
    /// The address of frontend `name` at start.
    pub fn frontend(&self, name: &str) -> SocketAddr {
        self.frontends[name]
    }

    /// Stops accepting, lets in-flight requests finish up to the grace period, stops every
    /// background task. Returns whether everything finished within the grace period.
    pub async fn shutdown(self) -> bool {
        tracing::info!(
            "shutting down: no new connections; waiting up to {:?} for in-flight requests",
            self.grace
        );
        let finished = self.app.shutdown(self.grace).await;
        if !finished {
            tracing::warn!("grace period over; closing the connections still open");
        }
        finished
    }
}

/// Starts fulcrum with `config`: every server checked once, every frontend bound and
/// serving, then the admin plane.
pub async fn start(config: Config) -> Result<Running, LaunchError> {
    let for_token = config.clone();
    // The token file is read (or written) on the blocking pool.
    let token =
        tokio::task::spawn_blocking(move || crate::admin::token::load_or_create(&for_token))
            .await?
            .map_err(LaunchError::Token)?;
    let (app, frontends) = app::start(config.clone()).await?;
    let (listener, admin) = match app::bind("the admin API".into(), config.admin.bind) {
        Ok(bound) => bound,
        Err(e) => {
            // Nothing was served yet: stop what started, without waiting.
            app.shutdown(Duration::ZERO).await;
            return Err(e.into());
        }
    };
    app.admin_bound(admin);
    app.tasks()
        .spawn(crate::admin::serve(listener, Arc::clone(&app), token));
    tracing::info!(admin = %admin, "fulcrum is serving");
    Ok(Running {
        app,
        frontends,
        admin,
        grace: config.global.grace_period.get(),
    })
}

/// Both log writers; dropping it writes out what is pending.
#[derive(Debug)]
pub struct LogGuard {
    // Field order is drop order: access lines first, then the rest.
    _access: crate::proxy::access_log::Guard,
    _tracing: tracing_appender::non_blocking::WorkerGuard,
}

/// Sets up logging: `RUST_LOG` honoured, `info` by default, written off the request path.
/// The access log has a writer of its own (see `proxy::access_log`); `RUST_LOG` can still
/// turn it off (`fulcrum::access=off`, or any level above `info`).
pub fn init_logging() -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line is handed to a writer thread; if logging falls far behind, lines are
    // dropped (and counted by tracing-appender) rather than stalling requests.
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
    let access = tracing::enabled!(target: "fulcrum::access", tracing::Level::INFO);
    LogGuard {
        _access: crate::proxy::access_log::init(access),
        _tracing: guard,
    }
}

/// The runtime fulcrum starts on: single-threaded, whatever `threads` says. It is worker
/// 0; with `threads > 1` the others are started beside it, each a single-threaded runtime
/// of its own with its own listening sockets (see [`crate::workers`]).
///
/// Why not tokio's multi-threaded scheduler: its worker's local run queue holds 256 tasks;
/// past that, woken tasks wait in a shared queue from which it takes one task about every
/// 200 µs of work, so they starve. With 1,000 busy client connections behind one thread
/// the p99 latency was 246 ms against a p50 of 11 ms, and 58 ms with the single-threaded
/// scheduler, whose run queue is one FIFO (`bench/README.md`); and a request that stays on
/// one thread never pays for a cross-thread wake-up.
pub fn build(_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("fulcrum")
        .build()
}

/// `fulcrum run`: serve until SIGTERM/SIGINT, then shut down gracefully.
pub fn serve(cfg: Config) -> ExitCode {
    let _log = init_logging();
    let rt = match build(cfg.global.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        // Installed before anything listens: SIGHUP's default action would end the process,
        // and so would SIGTERM's between READY=1 and the first wait (systemd may stop a
        // service the moment it is ready).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let stop = StopSignals::install();
        let running = match start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        // Every listener is bound and every server checked once: tell systemd (if it asks).
        let service = crate::systemd::Service::ready(&running.app);
        serve_until_stopped(&running.app, hup, stop, &service).await;
        service.stopping();
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Reloads the configuration on each SIGHUP (the usual daemon convention, as HAProxy and
/// nginx do) until SIGTERM or SIGINT; a rejected file is logged and the old one serves on.
async fn serve_until_stopped(
    app: &Arc<App>,
    hup: std::io::Result<tokio::signal::unix::Signal>,
    stop: StopSignals,
    service: &crate::systemd::Service,
) {
    let mut hup = match hup {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP ({e}); reload through the admin API");
            return stop.wait().await;
        }
    };
    let stop = stop.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                // The outcome is logged and published by the reload itself.
                service.reloading();
                let outcome = app.reload().await;
                service.reloaded(app, &outcome);
            }
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made: one that arrives before the
/// wait begins is kept for it rather than ending the process without its shutdown.
#[derive(Debug)]
pub struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    /// Installs the handlers (inside a runtime).
    pub fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => {
                tracing::error!("cannot listen for signals; stop fulcrum with SIGKILL");
                StopSignals(None)
            }
        }
    }

    /// Resolves on SIGTERM or SIGINT.
    pub async fn wait(self) {
        let Some((mut term, mut int)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn every_worker_gets_the_single_threaded_scheduler() {
        let flavor = |n| super::build(n).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::CurrentThread);
    }
}

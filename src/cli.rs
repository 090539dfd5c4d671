//! The command line (INTERFACE.md): `run`, `check`, `demo`, `ctl`, `simulate`, `completions`.
//!
//! Exit codes: 0 success, 1 bad usage or bad configuration, 2 a runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "fulcrum",
    version,
    about = "An HTTP and TCP load balancer that never lets one server be crushed"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve with a configuration file.
    Run {
        #[arg(short, long, default_value = "fulcrum.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary.
    Check {
        #[arg(short, long, default_value = "fulcrum.toml")]
        config: PathBuf,
    },
    /// Start built-in demo servers and the balancer on 127.0.0.1:8080, admin on :9900.
    Demo,
    /// Operate a running fulcrum through its admin API.
    Ctl {
        #[arg(short, long, default_value = "fulcrum.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Replay a traffic/failure scenario against every algorithm, offline.
    Simulate {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// A built-in scenario (booktiful, heterogeneous, hot-keys, flapping) or a TOML file.
        #[arg(long, default_value = "booktiful")]
        scenario: String,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also write a chart of in-flight requests per server over time to this SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions {
        #[arg(value_enum)]
        shell: crate::completions::Shell,
    },
}

/// How `fulcrum simulate` prints its comparison.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What `fulcrum ctl` can do.
#[derive(Subcommand, Debug, Clone)]
pub enum CtlAction {
    /// The state of every backend and server, as a table.
    Status,
    /// Take SERVER out of rotation until the time runs out.
    Maintenance {
        server: String,
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End maintenance now.
    Enable { server: String },
    /// Set a weight at run time (1 to 256).
    Weight { server: String, weight: u32 },
    /// Reload the configuration file.
    Reload,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage_error { 1 } else { 0 });
        }
    };
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => match load(&config) {
            Ok(cfg) => serve(cfg),
            Err(code) => code,
        },
        Command::Demo => crate::demo::main(),
        Command::Ctl { config, action } => crate::ctl::main(&config, action),
        Command::Simulate {
            config,
            scenario,
            format,
            svg,
        } => simulate(config.as_deref(), &scenario, format, svg.as_deref()),
        Command::Completions { shell } => crate::completions::main(shell),
    }
}

/// `fulcrum simulate`: exit 1 for a bad scenario or configuration, 2 if the chart cannot
/// be written.
fn simulate(config: Option<&Path>, scenario: &str, format: Format, svg: Option<&Path>) -> ExitCode {
    let sc = match crate::simulate::load(scenario) {
        Ok(sc) => sc,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let (sc, settings) = match config {
        None => (sc, crate::simulate::default_settings()),
        Some(path) => {
            let cfg = match load(path) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            match sc.with_config(&cfg) {
                Ok(both) => both,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
        }
    };
    let report = crate::simulate::compare_all(&sc, &settings);
    match format {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!("{}", report.json()),
    }
    if let Some(path) = svg
        && let Err(e) = std::fs::write(path, report.svg())
    {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Loads and validates a file, printing every error; exit code 1 on failure.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load_file(path).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{} error(s) in {}", errors.0.len(), path.display());
        ExitCode::from(1)
    })
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            print!("{}", summary(&cfg));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The one-screen summary `check` prints.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", cfg.source.display());
    for fe in &cfg.frontends {
        let tls = if fe.tls.is_some() { " tls" } else { "" };
        // The mode as the file spells it (`http`, `tcp`).
        let mode = match fe.mode {
            config::Mode::Http => "http",
            config::Mode::Tcp => "tcp",
        };
        let _ = writeln!(
            out,
            "frontend {} {mode}{tls} on {} -> backend {}",
            fe.name, fe.bind, fe.backend
        );
    }
    for (name, b) in &cfg.backends {
        let _ = writeln!(
            out,
            "backend {name}: {} over {} server(s), health {} every {}, min_healthy {}",
            b.algorithm,
            b.servers.len(),
            if b.health.kind == config::HealthKind::Tcp {
                "tcp"
            } else {
                "http"
            },
            b.health.interval,
            b.min_healthy
        );
        for s in &b.servers {
            let role = if s.backup { " backup" } else { "" };
            let limit = match s.max_connections {
                0 => "unlimited".to_string(),
                n => n.to_string(),
            };
            let _ = writeln!(
                out,
                "  server {} {} weight {} max_connections {limit}{role}",
                s.name, s.address, s.weight
            );
        }
    }
    let _ = writeln!(out, "admin on {}", cfg.admin.bind);
    out
}

/// Both log writers; dropping it writes out what is pending.
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

/// A tokio runtime with `threads` workers (0 = one per core).
///
/// One thread gets tokio's single-threaded scheduler rather than the multi-threaded one
/// with one worker. The multi-threaded worker's local run queue holds 256 tasks; past
/// that, woken tasks wait in a shared queue from which it takes one task about every
/// 200 µs of work (tokio's self-tuned global queue interval), so they starve. With
/// 1,000 busy client connections that split the clients in two: behind one fulcrum
/// thread, the p99 latency was 246 ms against a p50 of 11 ms, and 58 ms with the
/// single-threaded scheduler, whose run queue is one FIFO (`bench/README.md`).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().thread_name("fulcrum").build()
}

/// `fulcrum run`: serve until SIGTERM/SIGINT, then shut down gracefully.
pub fn serve(cfg: Config) -> ExitCode {
    let _log = init_logging();
    let rt = match runtime(cfg.global.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        // Installed before anything listens: SIGHUP's default action would end the process.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let running = match crate::app::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        // Every listener is bound and every server checked once: tell systemd (if it asks).
        let service = crate::systemd::Service::ready(&running.app);
        serve_until_stopped(&running.app, hup, &service).await;
        service.stopping();
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Reloads the configuration on each SIGHUP (the usual daemon convention, as HAProxy and
/// nginx do) until SIGTERM or SIGINT; a rejected file is logged and the old one serves on.
async fn serve_until_stopped(
    app: &std::sync::Arc<crate::app::App>,
    hup: std::io::Result<tokio::signal::unix::Signal>,
    service: &crate::systemd::Service,
) {
    let mut hup = match hup {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP ({e}); reload through the admin API");
            return wait_for_stop_signal().await;
        }
    };
    let stop = wait_for_stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                // The outcome is logged and published by the reload itself.
                service.reloading();
                let outcome = crate::app::reload(app).await;
                service.reloaded(app, &outcome);
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop fulcrum with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_thread_gets_the_single_threaded_scheduler() {
        let flavor = |n| super::runtime(n).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
    }
}

//! The command line (the README's "Command line" reference): `run`, `check`, `demo`,
//! `ctl`, `simulate`, `completions`. Parsing and dispatch only: the process (runtime, logging, signals)
//! is `runtime`, operating a running instance is `ctl`.
//!
//! Exit codes: 0 success, 1 bad usage or bad configuration, 2 a runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

pub mod completions;

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
        action: crate::ctl::Action,
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
        shell: completions::Shell,
    },
}

/// How `fulcrum simulate` prints its comparison.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
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
        Command::Completions { shell } => completions::main(shell),
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

/// One line per certificate of a frontend: its names and when it expires (or why it
/// cannot be read, which validation has already reported).
fn certificate_lines(cfg: &Config, tls: &config::Tls, out: &mut String) {
    use std::fmt::Write;
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    for (cert, key) in tls.pairs() {
        let (cert, key) = (cfg.resolve_path(&cert), cfg.resolve_path(&key));
        match crate::certs::load_pair(&cert, &key, &provider) {
            Ok(c) => {
                let _ = writeln!(
                    out,
                    "  certificate {}: {} expires {}",
                    cert.display(),
                    c.info.joined_names(),
                    c.info.not_after_rfc3339()
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  certificate {}: {e}", cert.display());
            }
        }
    }
}

/// One route as `check` prints it: its name, what it matches, where it goes.
fn route_line(frontend: &str, i: usize, r: &config::Route) -> String {
    let mut line = config::route_name(frontend, i, r);
    if !r.host.is_empty() {
        line += &format!(" host {}", r.host.join(","));
    }
    if let Some(p) = &r.path {
        line += &format!(" path {p}");
    }
    if let Some(p) = &r.path_prefix {
        line += &format!(" path_prefix {p}");
    }
    if !r.methods.is_empty() {
        line += &format!(" methods {}", r.methods.join(","));
    }
    for (n, v) in &r.headers {
        line += &format!(" header {n}={v}");
    }
    match (&r.backend, &r.redirect) {
        (Some(b), _) if r.strip_prefix => line += &format!(" -> backend {b} (prefix stripped)"),
        (Some(b), _) => line += &format!(" -> backend {b}"),
        (None, Some(to)) => line += &format!(" -> redirect {} {to}", r.redirect_status),
        (None, None) => {}
    }
    line
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
        let default = match &fe.backend {
            Some(b) => format!("backend {b}"),
            None => "404 no_route".into(),
        };
        if fe.routes.is_empty() {
            let _ = writeln!(
                out,
                "frontend {} {mode}{tls} on {} -> {default}",
                fe.name, fe.bind
            );
            if let Some(t) = &fe.tls {
                certificate_lines(cfg, t, &mut out);
            }
            continue;
        }
        let _ = writeln!(out, "frontend {} {mode}{tls} on {}:", fe.name, fe.bind);
        if let Some(t) = &fe.tls {
            certificate_lines(cfg, t, &mut out);
        }
        for (i, r) in fe.routes.iter().enumerate() {
            let _ = writeln!(out, "  route {}", route_line(&fe.name, i, r));
        }
        let _ = writeln!(out, "  otherwise -> {default}");
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
        if let Some(d) = &b.discovery {
            let ns = if d.nameserver.is_empty() {
                "the system resolver"
            } else {
                d.nameserver.as_str()
            };
            let _ = writeln!(
                out,
                "  discovery {} every {} (asking {ns})",
                d.dns, d.interval
            );
        }
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
    if let Some(m) = cfg.global.max_memory {
        let _ = writeln!(
            out,
            "max_memory {m}: 503 overloaded above 95 %, accepting waits above 98 %"
        );
    }
    // What `run` would find here (same user, same limits): the soft limit raised to the hard one.
    let _ = writeln!(out, "{}", crate::fds::plan_without_raising(cfg));
    if let Some(c) = &cfg.cluster {
        let name = if c.instance.is_empty() {
            "(host name)"
        } else {
            &c.instance
        };
        let _ = writeln!(
            out,
            "cluster: instance {name} on etcd {} under {}",
            c.etcd.join(", "),
            c.prefix
        );
    }
    out
}

/// `fulcrum run`: serve until SIGTERM/SIGINT (see [`crate::runtime::serve`]).
fn serve(cfg: Config) -> ExitCode {
    crate::runtime::serve(cfg)
}

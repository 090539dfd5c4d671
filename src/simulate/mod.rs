//! `fulcrum simulate`: replays a traffic and failure scenario against every algorithm, with
//! and without `max_connections`, driving the real selection code (`Backend::acquire`,
//! server slots and limits, the backend's FIFO queue) in virtual time, and recommends one.
//!
//! `scenario` reads the TOML, `engine` runs it, `report` prints it, `builtins` holds the
//! named scenarios. Same input, same output: byte for byte.

pub mod builtins;
pub mod engine;
mod keys;
pub mod report;
pub mod scenario;

use std::path::Path;

pub use engine::Run;
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

use crate::config::{self, Algorithm};

/// Reads a scenario: a built-in name, or else a file.
pub fn load(name_or_file: &str) -> Result<Scenario, ScenarioError> {
    if let Some(text) = builtins::get(name_or_file) {
        return Scenario::parse(text, &format!("built-in scenario {name_or_file}"));
    }
    let path = Path::new(name_or_file);
    let text = std::fs::read_to_string(path).map_err(|source| {
        let names: Vec<&str> = builtins::BUILTINS.iter().map(|(n, _)| *n).collect();
        ScenarioError::Unreadable {
            name: name_or_file.to_string(),
            builtins: names.join(", "),
            source,
        }
    })?;
    Scenario::parse(&text, &path.display().to_string())
}

/// Backend settings with every default, for scenarios run without a configuration.
pub fn default_settings() -> config::Backend {
    // The schema's own defaults: parsing an empty backend cannot fail.
    toml::from_str("servers = []").unwrap_or_else(|e| unreachable!("default backend: {e}"))
}

/// Runs `sc` once per algorithm in `algorithms`, without and with limits.
pub fn compare<'a>(
    sc: &'a Scenario,
    settings: &config::Backend,
    algorithms: &[Algorithm],
) -> Report<'a> {
    let mut runs = Vec::new();
    for &alg in algorithms {
        for limits in [false, true] {
            runs.push(engine::run(sc, settings, alg, limits));
        }
    }
    Report { scenario: sc, runs }
}

/// Runs `sc` against every algorithm.
pub fn compare_all<'a>(sc: &'a Scenario, settings: &config::Backend) -> Report<'a> {
    compare(sc, settings, &Algorithm::ALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses() {
        for (name, _) in builtins::BUILTINS {
            load(name).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            load("no-such-scenario")
                .unwrap_err()
                .to_string()
                .contains("booktiful")
        );
    }

    #[test]
    fn same_scenario_same_output_byte_for_byte() {
        let sc = load("flapping").unwrap();
        let algs = [
            Algorithm::RoundRobin,
            Algorithm::PeakEwma,
            Algorithm::ConsistentHash,
        ];
        let a = compare(&sc, &default_settings(), &algs);
        let b = compare(&sc, &default_settings(), &algs);
        assert_eq!(a.text(), b.text());
        assert_eq!(a.json(), b.json());
        assert_eq!(a.svg(), b.svg());
        let mut other = sc.clone();
        other.seed += 1;
        let c = compare(&other, &default_settings(), &algs);
        assert_ne!(a.json(), c.json(), "the seed matters");
    }

    #[test]
    fn booktiful_crashes_without_limits_and_holds_with_them() {
        let sc = load("booktiful").unwrap();
        // Four algorithms keep the debug-build test short; the CLI runs all eight.
        let algs = [
            Algorithm::RoundRobin,
            Algorithm::LeastConnections,
            Algorithm::PeakEwma,
            Algorithm::Maglev,
        ];
        let report = compare(&sc, &default_settings(), &algs);
        for run in &report.runs {
            if run.limits {
                assert_eq!(run.crashes, 0, "{} with limits", run.algorithm);
                assert_eq!(run.failed, 0, "{} with limits", run.algorithm);
                assert!(run.peak.iter().all(|&p| p <= 16));
            } else {
                assert!(run.crashes > 0, "{} without limits", run.algorithm);
            }
        }
        let best = &report.runs[report.best().unwrap()];
        assert!(best.limits);
        assert!(report.text().contains("recommendation: algorithm = "));
        assert!(report.svg().starts_with("<svg"));
    }
}

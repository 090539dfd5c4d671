//! A simulation scenario: servers as they really behave (workers, service time, memory),
//! the traffic, what happens when, and the seed. Written in TOML; see `builtins.rs` for
//! complete examples.

use serde::{Deserialize, Deserializer};

use crate::config::{self, Config, Dur, DurError};

/// One scenario, as read from TOML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Same seed, same run: arrivals, keys, service times and random picks all follow it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long traffic arrives; requests still in flight then are followed to their end.
    pub duration: Dur,
    #[serde(default)]
    pub settings: Settings,
    pub servers: Vec<ServerModel>,
    /// The arrival rate over time: each phase holds from `at` until the next.
    pub traffic: Vec<Phase>,
    #[serde(default)]
    pub keys: Keys,
    #[serde(default)]
    pub events: Vec<Event>,
}

fn default_seed() -> u64 {
    1
}

/// The balancer settings the scenario runs with (a subset of a backend's).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub max_queue: u32,
    pub queue_timeout: Dur,
    pub retries: u32,
    pub hash_balance_factor: f64,
    /// The active health checks: how soon a crash or a return is noticed.
    pub health_interval: Dur,
    pub rise: u32,
    pub fall: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_queue: 1000,
            queue_timeout: Dur::secs(5),
            retries: 1,
            hash_balance_factor: 0.0,
            health_interval: Dur::secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// A simulated server: the balancer's view (weight, limit, backup) and its behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerModel {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// Used in the runs "with limits"; the runs "without" set 0 (unlimited).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default)]
    pub backup: bool,
    /// Requests served at once; more wait inside the server (and hold memory).
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Time one request takes on a worker: `const:20ms`, `exp:50ms`, `uniform:10ms-90ms`.
    pub service: Service,
    /// Memory each request in the server holds, in MB.
    #[serde(default)]
    pub memory_per_request_mb: f64,
    /// Past this much memory the server crashes, losing every request it holds; 0 = never.
    #[serde(default)]
    pub memory_limit_mb: f64,
    /// How long a crashed server takes to come back.
    #[serde(default = "default_restart")]
    pub restart_after: Dur,
}

fn one() -> u32 {
    1
}
fn default_max_connections() -> u32 {
    100
}
fn default_workers() -> u32 {
    8
}
fn default_restart() -> Dur {
    Dur::secs(30)
}

/// A service-time distribution, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Service {
    Const(u64),
    Exp(u64),
    Uniform(u64, u64),
}

impl Service {
    /// Parses `const:20ms`, `exp:50ms`, `uniform:10ms-90ms`.
    pub fn parse(text: &str) -> Result<Self, ServiceError> {
        let ns = |t: &str| Dur::parse(t).map(|d| d.get().as_nanos() as u64);
        let text_owned = || text.to_string();
        match text.split_once(':') {
            Some(("const", d)) => Ok(Service::Const(ns(d)?)),
            Some(("exp", d)) => Ok(Service::Exp(ns(d)?)),
            Some(("uniform", r)) => {
                let (lo, hi) = r
                    .split_once('-')
                    .ok_or_else(|| ServiceError::NotARange(text_owned()))?;
                let (lo, hi) = (ns(lo)?, ns(hi)?);
                if lo > hi {
                    return Err(ServiceError::LowAboveHigh(text_owned()));
                }
                Ok(Service::Uniform(lo, hi))
            }
            _ => Err(ServiceError::Unknown(text_owned())),
        }
    }

    /// One service time drawn from `rng`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        match *self {
            Service::Const(d) => d,
            Service::Exp(mean) => {
                // Inverse transform; 1 - u is in (0, 1] so the logarithm is finite.
                let u = 1.0 - rng.f64();
                (-(mean as f64) * u.ln()) as u64
            }
            Service::Uniform(lo, hi) => rng.u64(lo..=hi),
        }
    }
}

/// Why a server's `service` is not a distribution; TOML parsing shows it with its line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// A duration inside it does not parse.
    #[error(transparent)]
    Duration(#[from] DurError),
    #[error("`{0}`: write uniform:LOW-HIGH")]
    NotARange(String),
    #[error("`{0}`: LOW is above HIGH")]
    LowAboveHigh(String),
    /// Neither `const:`, `exp:` nor `uniform:`.
    #[error("`{0}` is not a service time; write const:20ms, exp:50ms or uniform:10ms-90ms")]
    Unknown(String),
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Service::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One phase of traffic: from `at`, `rate` requests per second (Poisson arrivals).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub at: Dur,
    pub rate: f64,
}

/// Which key each request carries (what the hash algorithms hash).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    pub distribution: KeyDistribution,
    /// How many distinct keys (clients, users) there are.
    pub count: u32,
    /// Zipf's exponent: 1.0 is the classic "a few keys are most of the traffic".
    pub exponent: f64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            distribution: KeyDistribution::Uniform,
            count: 10_000,
            exponent: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyDistribution {
    Uniform,
    Zipf,
}

/// Something that happens to a server at a given time (and again `every` so often).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub at: Dur,
    pub server: String,
    pub action: Action,
    /// For `slow`: service times are multiplied by this (1 = back to normal).
    #[serde(default = "one_f")]
    pub factor: f64,
    /// For `maintenance`: how long until it returns by itself (absent: until `return`).
    #[serde(default, rename = "for")]
    pub duration: Option<Dur>,
    /// Repeat the event this often until the traffic ends.
    #[serde(default)]
    pub every: Option<Dur>,
}

fn one_f() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Taken out of rotation for good (the outage: removed and forgotten).
    Remove,
    /// Taken out of rotation, back after `for` (or at a `return`).
    Maintenance,
    /// Back in rotation.
    Return,
    /// Service times multiplied by `factor`.
    Slow,
    /// The process dies now, losing what it holds, and restarts after `restart_after`.
    Crash,
}

/// Why a scenario cannot run: it cannot be read, is not valid TOML for a scenario, fails
/// a check, or (with `--config`) the configuration has no backend to run it on. Printed
/// to the operator of `fulcrum simulate` as is.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Neither a built-in name nor a readable file; `builtins` lists the names there are.
    #[error("{name}: not a built-in scenario ({builtins}) and cannot be read: {source}")]
    Unreadable {
        name: String,
        builtins: String,
        #[source]
        source: std::io::Error,
    },
    /// `origin` is a file name or `built-in scenario NAME`; the TOML error has the line.
    #[error("{origin}: {source}")]
    Toml {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    /// Parsed, but fails a check; `origin` as for `Toml`.
    #[error("{origin}: {problem}")]
    Invalid {
        origin: String,
        #[source]
        problem: Problem,
    },
    /// Fails a check once a configuration's servers and settings replaced its own.
    #[error(transparent)]
    Check(#[from] Problem),
    #[error("the configuration has no backend")]
    NoBackend,
    #[error("the configuration has no backend `{0}`")]
    UnknownBackend(String),
}

/// What `Scenario::check` refuses, each naming the key at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("servers: at least one server is needed")]
    NoServers,
    #[error("servers[{index}].name: `{name}` is used twice")]
    DuplicateServer { index: usize, name: String },
    #[error("servers[{0}].workers: must be at least 1")]
    NoWorkers(usize),
    #[error("servers[{0}]: memory cannot be negative")]
    NegativeMemory(usize),
    #[error("traffic: at least one phase is needed")]
    NoTraffic,
    #[error("traffic[{0}].rate: between 0 and 1000000 per second")]
    RateOutOfRange(usize),
    #[error("traffic[{0}].at: phases must be in time order")]
    PhasesOutOfOrder(usize),
    #[error("keys.count: must be at least 1")]
    NoKeys,
    #[error("events[{index}].server: no server named `{server}`")]
    UnknownServer { index: usize, server: String },
    #[error("events[{0}].every: must be above zero")]
    ZeroEvery(usize),
    #[error("events[{0}].factor: must be above zero")]
    NonPositiveFactor(usize),
}

impl Scenario {
    /// Parses and checks scenario text; `origin` (a file name or `built-in NAME`) starts
    /// every error message, and TOML errors carry their line and column.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let sc: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Toml {
            origin: origin.to_string(),
            source,
        })?;
        sc.check().map_err(|problem| ScenarioError::Invalid {
            origin: origin.to_string(),
            problem,
        })?;
        Ok(sc)
    }

    fn check(&self) -> Result<(), Problem> {
        if self.servers.is_empty() {
            return Err(Problem::NoServers);
        }
        for (i, s) in self.servers.iter().enumerate() {
            if self.servers[..i].iter().any(|o| o.name == s.name) {
                return Err(Problem::DuplicateServer {
                    index: i,
                    name: s.name.clone(),
                });
            }
            if s.workers == 0 {
                return Err(Problem::NoWorkers(i));
            }
            if s.memory_per_request_mb < 0.0 || s.memory_limit_mb < 0.0 {
                return Err(Problem::NegativeMemory(i));
            }
        }
        if self.traffic.is_empty() {
            return Err(Problem::NoTraffic);
        }
        for (i, p) in self.traffic.iter().enumerate() {
            if !(0.0..=1_000_000.0).contains(&p.rate) {
                return Err(Problem::RateOutOfRange(i));
            }
            if i > 0 && p.at < self.traffic[i - 1].at {
                return Err(Problem::PhasesOutOfOrder(i));
            }
        }
        if self.keys.count == 0 {
            return Err(Problem::NoKeys);
        }
        for (i, e) in self.events.iter().enumerate() {
            if !self.servers.iter().any(|s| s.name == e.server) {
                return Err(Problem::UnknownServer {
                    index: i,
                    server: e.server.clone(),
                });
            }
            if e.every.is_some_and(|d| d.get().is_zero()) {
                return Err(Problem::ZeroEvery(i));
            }
            if e.factor <= 0.0 {
                return Err(Problem::NonPositiveFactor(i));
            }
        }
        Ok(())
    }

    /// The scenario with the servers and settings of a real configuration: its first
    /// frontend's backend (or its first backend). Each configured server behaves like the
    /// scenario server of the same name, or else like the scenario's servers in turn.
    pub fn with_config(
        mut self,
        cfg: &Config,
    ) -> Result<(Scenario, config::Backend), ScenarioError> {
        let name = cfg
            .frontends
            .first()
            .and_then(|f| f.backend.clone())
            .or_else(|| cfg.backends.keys().next().cloned())
            .ok_or(ScenarioError::NoBackend)?;
        let backend = cfg
            .backends
            .get(&name)
            .ok_or_else(|| ScenarioError::UnknownBackend(name.clone()))?
            .clone();
        let servers = backend
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let model = self
                    .servers
                    .iter()
                    .find(|m| m.name == s.name)
                    .unwrap_or(&self.servers[i % self.servers.len()]);
                ServerModel {
                    name: s.name.clone(),
                    weight: s.weight,
                    max_connections: s.max_connections,
                    backup: s.backup,
                    ..model.clone()
                }
            })
            .collect();
        self.servers = servers;
        // Events about servers the configuration does not have are dropped.
        let names: Vec<String> = self.servers.iter().map(|s| s.name.clone()).collect();
        self.events.retain(|e| names.contains(&e.server));
        self.settings = Settings {
            max_queue: backend.max_queue,
            queue_timeout: backend.queue_timeout,
            retries: backend.retries,
            hash_balance_factor: backend.hash_balance_factor,
            health_interval: backend.health.interval,
            rise: backend.health.rise,
            fall: backend.health.fall,
        };
        self.check()?;
        Ok((self, backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_times_parse() {
        assert_eq!(Service::parse("const:20ms"), Ok(Service::Const(20_000_000)));
        assert_eq!(Service::parse("exp:1s"), Ok(Service::Exp(1_000_000_000)));
        assert!(Service::parse("uniform:9ms-1ms").is_err());
        assert!(Service::parse("gauss:1ms").is_err());
    }

    #[test]
    fn errors_name_the_origin_and_place() {
        let e = Scenario::parse("name = \"x\"\nduration = 5\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("my.toml: ") && e.contains("line 2"), "{e}");
        let text = "name = \"x\"\nduration = \"5s\"\ntraffic = [{ at = \"0s\", rate = 1 }]\n[[servers]]\nname = \"a\"\nservice = \"const:1ms\"\n[[events]]\nat = \"1s\"\nserver = \"b\"\naction = \"crash\"\n";
        let e = Scenario::parse(text, "my.toml").unwrap_err().to_string();
        assert_eq!(e, "my.toml: events[0].server: no server named `b`");
    }
}

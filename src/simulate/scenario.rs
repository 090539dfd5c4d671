//! A simulation scenario: servers as they really behave (workers, service time, memory),
//! the traffic, what happens when, and the seed. Written in TOML; see `builtins.rs` for
//! complete examples.

use serde::{Deserialize, Deserializer};

use crate::config::{self, Config, Dur};

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
    pub fn parse(text: &str) -> Result<Self, String> {
        let ns = |t: &str| Dur::parse(t).map(|d| d.get().as_nanos() as u64);
        match text.split_once(':') {
            Some(("const", d)) => Ok(Service::Const(ns(d)?)),
            Some(("exp", d)) => Ok(Service::Exp(ns(d)?)),
            Some(("uniform", r)) => {
                let (lo, hi) = r
                    .split_once('-')
                    .ok_or_else(|| format!("`{text}`: write uniform:LOW-HIGH"))?;
                let (lo, hi) = (ns(lo)?, ns(hi)?);
                if lo > hi {
                    return Err(format!("`{text}`: LOW is above HIGH"));
                }
                Ok(Service::Uniform(lo, hi))
            }
            _ => Err(format!(
                "`{text}` is not a service time; write const:20ms, exp:50ms or uniform:10ms-90ms"
            )),
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

impl Scenario {
    /// Parses and checks scenario text; `origin` (a file name or `built-in NAME`) starts
    /// every error message, and TOML errors carry their line and column.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, String> {
        let sc: Scenario = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        sc.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(sc)
    }

    fn check(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("servers: at least one server is needed".into());
        }
        for (i, s) in self.servers.iter().enumerate() {
            if self.servers[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("servers[{i}].name: `{}` is used twice", s.name));
            }
            if s.workers == 0 {
                return Err(format!("servers[{i}].workers: must be at least 1"));
            }
            if s.memory_per_request_mb < 0.0 || s.memory_limit_mb < 0.0 {
                return Err(format!("servers[{i}]: memory cannot be negative"));
            }
        }
        if self.traffic.is_empty() {
            return Err("traffic: at least one phase is needed".into());
        }
        for (i, p) in self.traffic.iter().enumerate() {
            if !(0.0..=1_000_000.0).contains(&p.rate) {
                return Err(format!(
                    "traffic[{i}].rate: between 0 and 1000000 per second"
                ));
            }
            if i > 0 && p.at < self.traffic[i - 1].at {
                return Err(format!("traffic[{i}].at: phases must be in time order"));
            }
        }
        if self.keys.count == 0 {
            return Err("keys.count: must be at least 1".into());
        }
        for (i, e) in self.events.iter().enumerate() {
            if !self.servers.iter().any(|s| s.name == e.server) {
                return Err(format!(
                    "events[{i}].server: no server named `{}`",
                    e.server
                ));
            }
            if e.every.is_some_and(|d| d.get().is_zero()) {
                return Err(format!("events[{i}].every: must be above zero"));
            }
            if e.factor <= 0.0 {
                return Err(format!("events[{i}].factor: must be above zero"));
            }
        }
        Ok(())
    }

    /// The scenario with the servers and settings of a real configuration: its first
    /// frontend's backend (or its first backend). Each configured server behaves like the
    /// scenario server of the same name, or else like the scenario's servers in turn.
    pub fn with_config(mut self, cfg: &Config) -> Result<(Scenario, config::Backend), String> {
        let name = cfg
            .frontends
            .first()
            .map(|f| f.backend.clone())
            .or_else(|| cfg.backends.keys().next().cloned())
            .ok_or("the configuration has no backend")?;
        let backend = cfg
            .backends
            .get(&name)
            .ok_or_else(|| format!("the configuration has no backend `{name}`"))?
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
        let e = Scenario::parse("name = \"x\"\nduration = 5\n", "my.toml").unwrap_err();
        assert!(e.starts_with("my.toml: ") && e.contains("line 2"), "{e}");
        let text = "name = \"x\"\nduration = \"5s\"\ntraffic = [{ at = \"0s\", rate = 1 }]\n[[servers]]\nname = \"a\"\nservice = \"const:1ms\"\n[[events]]\nat = \"1s\"\nserver = \"b\"\naction = \"crash\"\n";
        let e = Scenario::parse(text, "my.toml").unwrap_err();
        assert_eq!(e, "my.toml: events[0].server: no server named `b`");
    }
}

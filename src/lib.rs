//! fulcrum: an HTTP and TCP load balancer that never lets one server be crushed.
//!
//! The layout follows the concerns, and dependencies run one way, from the bottom up
//! (`scripts/check-structure` keeps it so):
//! - foundations: `config` (the file), `events` (state changes), `metrics` (lock-free
//!   request metrics), `tasks` (one handle for every task), `upstream` (connections to
//!   servers), `http_client` (fulcrum's own outgoing calls);
//! - `balance` (choosing a server) and `pool` (servers, their live state and health
//!   checks), one layer: candidates are pool servers, snapshots hold balance selectors;
//! - `proxy` (the data path), `alerts` (webhooks), `simulate` (the offline advisor);
//! - `app` (a running instance: state, reload, maintenance);
//! - `admin` (API, dashboard, metrics), then `runtime` (process, logging, signals),
//!   `ctl`, `demo` and `cli`.

// A panic on input from a client, a server, a file or the API would take the whole
// balancer down: fallible values are handled, never unwrapped (tests may: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod balance;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod events;
pub mod http_client;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod runtime;
pub mod simulate;
pub mod tasks;
pub mod upstream;

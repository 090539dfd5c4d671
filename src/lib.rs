//! fulcrum: an HTTP and TCP load balancer that never lets one server be crushed.
//!
//! The layout follows the concerns: `config` (the file), `balance` (choosing a server),
//! `pool` (servers, their live state and health checks), `proxy` (the data path), `admin`
//! (API, dashboard, metrics), `metrics` (lock-free request metrics), `events` (state
//! changes), `alerts` (webhooks), `app` (a running instance), `simulate` (the offline
//! algorithm advisor), `cli`, `ctl`, `demo`, `completions` and `systemd` (running as a
//! notify service).

#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod balance;
pub mod cli;
pub mod completions;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod events;
pub mod http_client;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod simulate;
pub mod systemd;

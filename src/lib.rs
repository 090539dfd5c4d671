//! fulcrum: an HTTP and TCP load balancer that never lets one server be crushed.
//!
//! The layout follows the concerns: `config` (the file), `balance` (choosing a server),
//! `pool` (servers, their live state and health checks), `proxy` (the data path), `admin`
//! (API, dashboard, metrics), `events` (state changes), `app` (a running instance),
//! `simulate` (the offline algorithm advisor), `cli` and `demo`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod pool;
pub mod proxy;
pub mod simulate;

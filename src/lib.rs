//! fulcrum: an HTTP and TCP load balancer that never lets one server be crushed.
//!

// A panic on input from a client, a server, a file or the API would take the whole
// balancer down: fallible values are handled, never unwrapped (tests may: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod balance;
pub mod buffers;
pub mod certs;
pub mod cli;
/// `[cluster]`: runtime state shared with other instances through etcd.
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod events;
/// File descriptors: the soft limit raised at start, the client limit it allows, the reserve.
pub mod fds;
/// fulcrum's own HTTP/1.1 framing codec (sans-IO: heads, body decoders, chunked encoder).
pub mod h1;
pub mod http_client;
pub mod metrics;
/// fulcrum's own pressure (memory against `max_memory`, free fds): shed, then pause.
pub mod overload;
pub mod pool;
pub mod proxy;
pub mod resolve;
pub mod route;
pub mod runtime;
pub mod simulate;
pub mod systemd;
pub mod tasks;
pub mod upstream;
pub mod workers;

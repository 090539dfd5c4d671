//! Backends and their servers: live state in atomics, the selection snapshot behind one
//! `ArcSwap`, and the active health checks that write the state the request path reads.

pub mod agent;
mod backend;
pub mod capacity;
mod clock;
pub mod health;
pub mod maintenance;
pub mod outlier;
mod probe;
pub mod queue;
pub mod resolve;
pub mod retry_budget;
mod server;
pub mod slow_start;

pub use backend::{Backend, NoSlot, Snapshot};
pub use clock::now_ms;
pub use server::{Health, Server, ServerId, ServerState, Slot};

#[cfg(test)]
mod protect_tests;

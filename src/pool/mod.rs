//! Backends and their servers: live state in atomics, the selection snapshot behind one
//! `ArcSwap`, and the active health checks that write the state the request path reads.

mod backend;
pub mod health;
pub mod maintenance;
mod maintenance_file;
mod server;

pub use backend::{Backend, NoSlot, Snapshot};
pub use server::{Health, Server, ServerState, Slot};

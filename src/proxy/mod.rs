//! The data path: listeners, HTTP forwarding, TCP relaying, connections to servers.

pub mod access_log;
pub mod body;
mod bridge;
pub mod conn;
pub mod deadlines;
pub mod error;
mod frontend;
mod grpc;
mod h1;
mod h2_upstream;
mod headers;
pub mod http;
pub mod listener;
mod proxy_protocol;
pub mod request_id;
mod retry;
mod stall;
pub mod tcp;
pub mod tls;
mod tunnel;

pub use error::Refusal;
pub use frontend::Frontend;
pub use listener::{Protocol, Shared};

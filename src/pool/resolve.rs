//! Server addresses resolved without blocking the runtime and within a time limit: the
//! lookups of `crate::resolve`, under the name start-up, reload and the health checks use.

pub use crate::resolve::{RESOLVE_TIMEOUT, ResolveError, resolve, resolve_within};

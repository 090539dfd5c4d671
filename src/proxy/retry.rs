//! When a request may go to another server, and at what cost.
//!
//! A failed connect has sent nothing, so any request may try another server. Beyond that,
//! only a request that is safe to repeat (idempotent method) and has no body (so its head
//! alone can be sent again) is retried, once per `retries`, on a server not yet tried, when
//! the first answered 502/503 or broke the connection before a response head. Those retries
//! cost the server real work, so they are bounded by the backend's retry budget.

use http::{Method, StatusCode, request::Parts};
use http_body::Body;

use crate::balance;
use crate::pool::{Backend, NoSlot, ServerId, Slot};

use super::error::Refusal;

/// Whether a method is one whose request may be repeated (of those fulcrum retries).
pub fn idempotent(method: &[u8]) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ]
    .iter()
    .any(|m| m.as_str().as_bytes() == method)
}

/// Whether a request may be sent again after a server saw it: idempotent and bodiless.
pub fn replayable(parts: &Parts, body: &impl Body) -> bool {
    idempotent(parts.method.as_str().as_bytes()) && body.is_end_stream()
}

/// Answers from a server that another server may do better with.
pub fn retry_status(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The first server for a request: waits in the queue when every server is at its limit.
pub async fn first_slot(backend: &Backend, req: &balance::Request<'_>) -> Result<Slot, Refusal> {
    backend.acquire_or_wait(req).await.map_err(|e| match e {
        NoSlot::NoCandidates | NoSlot::AllTried => Refusal::NoServer,
        NoSlot::AllBusy | NoSlot::QueueFull => Refusal::QueueFull,
        NoSlot::QueueTimeout => Refusal::QueueTimeout,
    })
}

/// A server not in `tried` with a free slot, for another attempt; never waits (a retry that
/// queues would hold its client twice as long). `budgeted`: the retry is taken from the
/// retry budget, and is refused when the budget is spent.
pub fn next_slot(
    backend: &Backend,
    req: &balance::Request<'_>,
    tried: &[ServerId],
    budgeted: bool,
) -> Option<Slot> {
    let slot = backend.acquire(req, tried).ok()?;
    if budgeted && !backend.retry_budget.try_retry() {
        tracing::debug!(backend = %backend.name, "retry budget spent; not retrying");
        return None;
    }
    Some(slot)
}

//! `GET /api/v1/events`: the event bus as server-sent events, one JSON event per message
//! (the default `message` type, so a browser's `onmessage` sees every one).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;

use super::AdminState;

/// Streams events published from now on, until the client leaves or fulcrum stops; 503
/// when `max_event_streams` are open already.
pub async fn events(State(st): State<AdminState>) -> Response {
    let Ok(permit) = Arc::clone(&st.event_streams).try_acquire_owned() else {
        let max = st.limits.max_event_streams;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": format!("{max} event streams are open already, the admin listener's limit")
            })),
        )
            .into_response();
    };
    stream(&st, permit).into_response()
}

/// The stream itself; it holds its subscriber `permit` until it ends or is dropped.
fn stream(
    st: &AdminState,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let rx = st.app.events().subscribe();
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        let msg = match rx.recv().await {
            Ok(e) => SseEvent::default().data(e.to_json()),
            // A reader that fell behind is told so, and goes on with the newest events.
            Err(RecvError::Lagged(n)) => SseEvent::default().comment(format!("{n} events missed")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(msg), (rx, permit)))
    });
    // Ends with fulcrum, so a dashboard left open never holds up a graceful shutdown.
    let stream = stream.take_until(st.app.tasks().stopping().clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

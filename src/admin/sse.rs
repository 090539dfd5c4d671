//! `GET /api/v1/events`: the event bus as server-sent events, one JSON event per message
//! (the default `message` type, so a browser's `onmessage` sees every one).

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::AdminState;

/// Streams events published from now on, until the client leaves or fulcrum stops.
pub async fn events(
    State(st): State<AdminState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.app.events().subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let msg = match rx.recv().await {
            Ok(e) => SseEvent::default().data(e.to_json()),
            // A reader that fell behind is told so, and goes on with the newest events.
            Err(RecvError::Lagged(n)) => SseEvent::default().comment(format!("{n} events missed")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(msg), rx))
    });
    // Ends with fulcrum, so a dashboard left open never holds up a graceful shutdown.
    let stream = stream.take_until(st.app.tasks().stopping().clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

//! The admin plane: API, dashboard and metrics on `[admin] bind`, built with axum.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::app::App;

/// Every admin route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// 200 while the process serves: for an orchestrator's liveness probe.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves the admin plane until fulcrum stops.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let stop = app.stop.clone();
    let result = axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("admin listener failed: {e}");
    }
}

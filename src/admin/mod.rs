//! The admin plane: API, dashboard and metrics on `[admin] bind`, built with axum and served
//! by an accept loop of its own with timeouts and limits (see [`listener`]).
//!
//! Every request but `GET /healthz` must name this listener in `Host` (else 421, see
//! `guard`); every call but `GET /`, `GET /metrics` and `GET /healthz` needs
//! `Authorization: Bearer TOKEN` (see [`token`]); anything else gets 401.

mod api;
mod cluster;
mod guard;
pub mod listener;
mod metrics;
mod sse;
pub mod status;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
pub use listener::Limits;
use metrics::FulcrumCollector;

/// The dashboard at `GET /`: one self-contained page (HTML, CSS and plain JS, no external
/// resources) that reads the authenticated API with the token the user enters.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The dashboard's Content-Security-Policy. It may not be framed (`frame-ancestors 'none'`,
/// with `X-Frame-Options: DENY` for older browsers: no clickjacking of its buttons), it loads
/// nothing from elsewhere, and it talks only to this listener. Its one script and one style
/// sheet are inline and it sets `style` attributes, hence `'unsafe-inline'` for both; it
/// builds every element from text (no `innerHTML`), so nothing an API caller writes (a
/// maintenance reason) can become script.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// What every admin handler can reach.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub app: Arc<App>,
    token: Arc<str>,
    registry: Arc<Registry>,
    limits: Limits,
    /// One permit per open event stream (`GET /api/v1/events`).
    event_streams: Arc<Semaphore>,
}

/// Every admin route, guarded by the `Host` check, the body limit and `token`.
pub fn router(app: Arc<App>, token: &str, limits: Limits) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FulcrumCollector {
        app: Arc::clone(&app),
    }));
    let state = AdminState {
        app,
        token: token.into(),
        registry: Arc::new(registry),
        limits,
        event_streams: Arc::new(Semaphore::new(limits.max_event_streams)),
    };
    let server = "/api/v1/backends/{backend}/servers/{server}";
    let api = Router::new()
        .route("/api/v1/status", get(api::status))
        .route(
            &format!("{server}/maintenance"),
            post(api::start_maintenance).delete(api::end_maintenance),
        )
        .route(&format!("{server}/weight"), put(api::set_weight))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/cluster", get(cluster::cluster))
        .route("/api/v1/events", get(sse::events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::check_host,
        ))
        .with_state(state)
}

/// 401 unless the request carries the admin token.
async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if token::equal(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "missing or wrong admin token (Authorization: Bearer TOKEN)"
            })),
        )
            .into_response(),
    }
}

/// 200 while the process serves: for an orchestrator's liveness probe.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(DASHBOARD),
    )
}

/// Prometheus text (OpenMetrics) with every family the README's metrics reference names.
async fn metrics_text(State(st): State<AdminState>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.registry) {
        tracing::error!("cannot encode metrics: {e}");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Serves the admin plane until fulcrum stops, with the default [`Limits`]. Spawn it with
/// the instance's task handle (`app.tasks().spawn`): every connection is a serving task
/// too, so shutdown lets admin requests in flight finish.
pub async fn serve(listener: TcpListener, app: Arc<App>, token: String) {
    serve_with(listener, app, token, Limits::default()).await;
}

/// [`serve`] with other limits (tests use short timeouts).
pub async fn serve_with(listener: TcpListener, app: Arc<App>, token: String, limits: Limits) {
    let router = router(Arc::clone(&app), &token, limits);
    listener::accept_loop(listener, app, router, limits).await;
}

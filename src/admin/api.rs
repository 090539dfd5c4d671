//! The admin API's calls that act: maintenance, weight, reload. Errors are
//! `{"error": "..."}` with 400 (bad input), 404 (no such backend or server) or 500 (a
//! maintenance change that cannot be saved, and so was not made).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use super::status::{ServerStatus, Status};
use crate::app::App;
use crate::config::{Dur, MAX_WEIGHT};
use crate::pool::maintenance::End;
use crate::pool::{Backend, Server};

/// An error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

/// 500: the state could not be saved, so the change was not applied; 503 when the cluster
/// store (etcd) is unreachable.
fn unsaved(e: crate::app::StateError) -> ApiError {
    let status = match e {
        crate::app::StateError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|e| bad(format!("bad request body: {}", e.body_text())))
}

fn find(app: &App, b: &str, s: &str) -> Result<(Arc<Backend>, Arc<Server>), ApiError> {
    let not_found = |m: String| ApiError(StatusCode::NOT_FOUND, m);
    let backend = app
        .backend(b)
        .ok_or_else(|| not_found(format!("no backend named `{b}`")))?;
    let server = backend
        .server(s)
        .ok_or_else(|| not_found(format!("backend `{b}` has no server `{s}`")))?;
    Ok((backend, server))
}

fn done(server: &Server, extra: serde_json::Value) -> Json<serde_json::Value> {
    let mut v = json!({ "ok": true, "server": ServerStatus::of(server) });
    if let (Some(map), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    Json(v)
}

/// `GET /api/v1/status`.
pub async fn status(State(st): State<AdminState>) -> Json<Status> {
    Json(Status::of(&st.app))
}

/// `POST .../maintenance` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    #[serde(rename = "for")]
    length: String,
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/backends/{b}/servers/{s}/maintenance`.
pub async fn start_maintenance(
    State(st): State<AdminState>,
    Path((b, s)): Path<(String, String)>,
    req: Result<Json<MaintenanceRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (backend, server) = find(&st.app, &b, &s)?;
    let req = body(req)?;
    let length = Dur::parse(&req.length).map_err(|e| bad(format!("`for`: {e}")))?;
    let max = st.app.config().admin.max_maintenance;
    if length.get().is_zero() {
        return Err(bad("`for` must be longer than zero"));
    }
    if length > max {
        return Err(bad(format!(
            "`for` is {length}, longer than the {max} that admin.max_maintenance allows"
        )));
    }
    let (app, target) = (Arc::clone(&st.app), Arc::clone(&server));
    let change = async move {
        app.start_maintenance(&backend, &target, length.get(), req.reason)
            .await
    };
    own_task(&st.app, change).await?.map_err(unsaved)?;
    Ok(done(&server, json!({})))
}

/// `DELETE /api/v1/backends/{b}/servers/{s}/maintenance`: ends it now (idempotent).
pub async fn end_maintenance(
    State(st): State<AdminState>,
    Path((b, s)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (backend, server) = find(&st.app, &b, &s)?;
    let (app, target) = (Arc::clone(&st.app), Arc::clone(&server));
    let change = async move { app.end_maintenance(&backend, &target, End::Ended).await };
    let ended = own_task(&st.app, change).await?.map_err(unsaved)?.is_some();
    Ok(done(&server, json!({ "ended": ended })))
}

/// Runs a change of state as a task of its own: a client that hangs up while the change is
/// being saved never leaves the state file and what serves disagreeing.
async fn own_task<T, F>(app: &App, change: F) -> Result<T, ApiError>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    app.tasks().spawn(change).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change was interrupted: {e}"),
        )
    })
}

/// `PUT .../weight` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    weight: i64,
}

/// `PUT /api/v1/backends/{b}/servers/{s}/weight`: effective for the next request, whatever
/// the algorithm, because the selection structure is rebuilt at once.
pub async fn set_weight(
    State(st): State<AdminState>,
    Path((b, s)): Path<(String, String)>,
    req: Result<Json<WeightRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (backend, server) = find(&st.app, &b, &s)?;
    let w = body(req)?.weight;
    let w = u32::try_from(w)
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| {
            bad(format!(
                "weight must be between 1 and {MAX_WEIGHT}, not {w}"
            ))
        })?;
    let (app, target) = (Arc::clone(&st.app), Arc::clone(&server));
    let change = async move { app.change_weight(&backend, &target, w).await };
    own_task(&st.app, change).await?.map_err(unsaved)?;
    Ok(done(&server, json!({})))
}

/// `POST /api/v1/reload`.
pub async fn reload(State(st): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    st.app.reload().await.map_err(|e| bad(e.to_string()))?;
    Ok(Json(json!({ "ok": true })))
}

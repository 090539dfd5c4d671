//! `GET /api/v1/cluster`: the members of the cluster as this instance last saw them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::AdminState;
use crate::cluster::Record;

/// The answer: the interface's `leader` and `instances`, plus this instance's own name and
/// whether it reaches etcd now (its view is the last one it saw while it did).
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub leader: Option<String>,
    pub instances: Vec<Record>,
    pub instance: String,
    pub store: &'static str,
}

/// 404 without `[cluster]`.
pub async fn cluster(State(st): State<AdminState>) -> Response {
    let Some(c) = st.app.cluster() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "this instance has no [cluster] section" })),
        )
            .into_response();
    };
    let view = c.view();
    let mut instances = view.instances.clone();
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    Json(ClusterStatus {
        leader: view.leader.clone(),
        instances,
        instance: c.name().to_string(),
        store: if c.available() {
            "reachable"
        } else {
            "unreachable"
        },
    })
    .into_response()
}
